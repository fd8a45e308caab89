"""Information-flow routes for one prompt (Ferrando & Voita 2024; facebookresearch/llm-transparency-tool,
`routes/contributions.py`): how much each part of a residual sum contributes to it, per layer and token.

    >>> found = contributions(bundle, trace)         # from the sidebar's trace, one layer's pattern at a time
    >>> found.attention[3, -1]                       # [source] shares of the last token's sum after layer 3's attention
    >>> route_edges(found, threshold=0.04)           # the routes into the last token, as edges

For a sum y = sum_i x_i, the proximity of a part is p_i = max(0, ||y||_1 - ||y - x_i||_1) and its importance
c_i = p_i / sum_j p_j. After layer l's attention the sum at token t is its input resid_pre[t], one part per head h
and source token s, A_h[t, s] (v_s + b_V) W_O^h, and the output bias b_O; after the MLP it is that sum plus the MLP's
output. Unlike the tool, b_O is a part of its own here, so the parts rebuild the sum exactly (`rebuild_error`);
like the tool, a part that points away from the sum gets importance 0 (the clipping hides what suppresses).
A parallel block (GPT-NeoX) is read the same way: its MLP's sum is the block input, the attention and the MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.components import norm_form
from interp_core.loading import ModelBundle
from interp_core.trace import Trace, layer_pattern


@dataclass(frozen=True, eq=False)
class Contributions:
    """Importances per layer and target token (each sum's shares add up to 1 unless every part is clipped)."""

    tokens: list[str]  # [pos]
    attention: torch.Tensor  # [layer, target, source] the source token's parts, every head summed
    heads: torch.Tensor  # [layer, target, head] each head's parts, every source summed
    attn_residual: torch.Tensor  # [layer, target] the block input's share of the sum after attention
    attn_bias: torch.Tensor  # [layer, target] b_O's share
    mlp: torch.Tensor  # [layer, target] the MLP output's share of the sum after the MLP
    mlp_residual: torch.Tensor  # [layer, target]
    rebuild_error: float  # max |sum of parts - the sum| over layers, tokens and dimensions

    def __post_init__(self) -> None:
        n_layers, n_pos = self.attn_residual.shape
        if tuple(self.attention.shape) != (n_layers, n_pos, n_pos) or len(self.tokens) != n_pos:
            raise ValueError(f"Contributions.attention is {tuple(self.attention.shape)}, expected "
                             f"[{n_layers}, {n_pos}, {n_pos}]")

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, target, source) attention share, plus the residual, bias and MLP shares."""
        n_layers, n_pos = self.attn_residual.shape
        rows = [{"layer": layer, "target": t, "source": s, "part": "attention", "share": float(self.attention[layer,
                 t, s])} for layer in range(n_layers) for t in range(n_pos) for s in range(t + 1)]
        for name, values in (("residual (attention)", self.attn_residual), ("b_O", self.attn_bias),
                             ("mlp", self.mlp), ("residual (mlp)", self.mlp_residual)):
            rows += [{"layer": layer, "target": t, "source": t, "part": name, "share": float(values[layer, t])}
                     for layer in range(n_layers) for t in range(n_pos)]
        return pd.DataFrame(rows)


def _proximity(total: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """[..., part] max(0, ||y||_1 - ||y - x_i||_1) for sums y [..., d] and parts [..., part, d]."""
    return (total.abs().sum(-1)[..., None] - (total[..., None, :] - parts).abs().sum(-1)).clamp(min=0)


def _shares(*proximities: torch.Tensor) -> list[torch.Tensor]:
    """Each proximity [target, ...] divided by every part's at the same target (the importances c_i)."""
    norm = sum(p.flatten(1).sum(1) for p in proximities).clamp(min=1e-12)
    return [p / norm.view(-1, *[1] * (p.dim() - 1)) for p in proximities]


def _head_proximity(pattern: torch.Tensor, written: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    """[target, head, source] the proximity of each head and source's part of each sum after attention. A source
    after the target has attention 0: its part is 0 and so is its proximity, which is not computed."""
    n_heads, n_pos, _ = written.shape
    out = torch.zeros(n_pos, n_heads, n_pos)
    for t in range(n_pos):
        distance = (pattern[:, t, :t + 1, None] * written[:, :t + 1]).sub_(mid[t]).abs_().sum(-1)  # [head, source]
        out[t, :, :t + 1] = (mid[t].abs().sum() - distance).clamp_(min=0)
    return out


def _written_values(bundle: ModelBundle, resid: torch.Tensor, layer: int) -> torch.Tensor:
    """[head, source, d_model] what each head writes per unit of attention to each source: (v_s + b_V) W_O^h, from
    the layer's input resid [pos, d_model], in float32 whatever the model's dtype."""
    model, adapter = bundle.model, bundle.adapter
    x = norm_form(bundle, adapter.attn_norm(adapter.blocks(model)[layer]))(resid.to(bundle.device, torch.float32))
    v = torch.einsum("sm,hmd->hsd", x, adapter.W_V(model, layer).float()) + adapter.b_V(model, layer).float()[:, None]
    v = v.repeat_interleave(bundle.n_heads // v.shape[0], dim=0)  # GQA: each query head reads its group's value
    return torch.einsum("hsd,hdm->hsm", v, adapter.W_O(model, layer).float()).cpu()


def contributions(bundle: ModelBundle, trace: Trace) -> Contributions:
    """The importances of every part of every residual sum of `trace` (see the module docstring)."""
    model, adapter = bundle.model, bundle.adapter
    n_layers, n_pos, n_heads = trace.n_layers, trace.n_pos, bundle.n_heads
    attention = torch.zeros(n_layers, n_pos, n_pos)
    heads = torch.zeros(n_layers, n_pos, n_heads)
    residual, bias, mlp, mlp_residual = (torch.zeros(n_layers, n_pos) for _ in range(4))
    error = 0.0
    with torch.no_grad():
        for layer in range(n_layers):
            written = _written_values(bundle, trace.resid[layer], layer)
            pattern, b_o = layer_pattern(bundle, trace, layer), adapter.b_O(model, layer).float().cpu()
            resid, mid = trace.resid[layer], trace.resid[layer] + trace.attn_out[layer]
            rebuilt = resid + b_o + torch.einsum("hts,hsd->td", pattern, written)
            error = max(error, float((rebuilt - mid).abs().max()))
            residual_share, bias_share, by_pair = _shares(_proximity(mid, resid[:, None]), _proximity(
                mid, b_o.expand(n_pos, 1, -1)), _head_proximity(pattern, written, mid))
            residual[layer], bias[layer] = residual_share[:, 0], bias_share[:, 0]
            attention[layer], heads[layer] = by_pair.sum(1), by_pair.sum(2)
            after = _shares(_proximity(trace.resid[layer + 1], torch.stack([mid, trace.mlp_out[layer]], 1)))[0]
            mlp_residual[layer], mlp[layer] = after[:, 0], after[:, 1]
    return Contributions(list(trace.tokens), attention, heads, residual, bias, mlp, mlp_residual, error)


def route_edges(found: Contributions, threshold: float, target: int = -1) -> pd.DataFrame:
    """The routes into token `target` at the top: walking down from it, every attention share (source -> target)
    and residual share (a token to itself) of at least `threshold` from a token already on a route. Columns:
    layer, source, target, share, kind ("attention" or "residual")."""
    n_layers, n_pos = found.attn_residual.shape
    live, rows = {target % n_pos}, []
    for layer in reversed(range(n_layers)):
        below = set()
        for t in sorted(live):
            if float(found.attn_residual[layer, t]) >= threshold:
                rows.append({"layer": layer, "source": t, "target": t, "share": float(found.attn_residual[layer, t]),
                             "kind": "residual"})
                below.add(t)
            for s in (found.attention[layer, t] >= threshold).nonzero().flatten().tolist():
                rows.append({"layer": layer, "source": s, "target": t, "share": float(found.attention[layer, t, s]),
                             "kind": "attention"})
                below.add(s)
        live = below
    return pd.DataFrame(rows, columns=["layer", "source", "target", "share", "kind"])
