"""Direct logit attribution: how much each component's output writes towards a target token's logit, and which
tokens one component promotes and suppresses, from a cached trace (no forward pass).

The last residual stream is a sum of components,
    resid[L] = embed + sum_l ( sum_h z_lh @ W_O[l, h] + b_O[l] + mlp_out[l] )
and the final norm is affine in its input once its scale s is fixed:
    LayerNorm(x) = (x - mean(x)) / s * g + b,   s = sqrt(var(x) + eps)       (GPT-2, GPT-NeoX)
    RMSNorm(x)   =  x / s * g,                  s = sqrt(mean(x^2) + eps)    (Llama-style)
With s taken from the ACTUAL final residual (the one the model normed), each component c writes
    dla(c) = ((c - mean(c)) / s * g) . W_U[target]        (no centring for RMSNorm)
and  sum_c dla(c) + (b . W_U[target] + b_U[target]) = the model's logit for the target, exactly.
(components.final_norm_linear is that frozen norm.)

    >>> dla = direct_logit_attribution(bundle, trace, pos=-1, target_id=lens.target_id)
    >>> float(dla.values.sum()) == float(trace.last_logits[lens.target_id])   # up to float error
    >>> component_token_effects(bundle, trace, pos=-1, component="L1H2").to_frame()
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.components import b_O, final_norm_linear, head_outputs, logits_at, unembed
from interp_core.lens.lens import check_target, decode_ids
from interp_core.loading import ModelBundle
from interp_core.trace import Trace


def _resolve_pos(trace: Trace, pos: int) -> int:
    if not -trace.n_pos <= pos < trace.n_pos:
        raise ValueError(f"position {pos} is not in 0..{trace.n_pos - 1}")
    return pos % trace.n_pos


@dataclass(frozen=True, eq=False)
class ComponentVectors:
    """What each component wrote into the residual stream at one position; they sum to resid[L, pos]."""

    labels: list[str]  # [component] "embed", "L0H1", "L0 attn bias", "L0 MLP"
    kinds: list[str]  # [component] "embed" | "head" | "attn_bias" | "mlp"
    layers: list[int | None]  # [component] None for the embeddings
    heads: list[int | None]  # [component] None except for heads
    vectors: torch.Tensor  # [component, d_model]

    def __post_init__(self) -> None:
        n = self.vectors.shape[0]
        if not len(self.labels) == len(self.kinds) == len(self.layers) == len(self.heads) == n:
            raise ValueError(f"ComponentVectors: {n} vectors but label lists of other lengths")

    def index(self, label: str) -> int:
        """Position of the component called `label`; raises ValueError for an unknown one."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise ValueError(f"Unknown component {label!r}; known: {', '.join(self.labels)}") from None


def component_vectors(bundle: ModelBundle, trace: Trace, pos: int) -> ComponentVectors:
    """Split resid[n_layers, pos] into embeddings, each head, each attention bias (when non-zero), each MLP."""
    pos = _resolve_pos(trace, pos)
    labels, kinds, layers, heads = ["embed"], ["embed"], [None], [None]
    vectors = [trace.resid[0, pos]]  # each [d_model]
    for layer in range(trace.n_layers):
        per_head = head_outputs(bundle, trace.head_z[layer, pos], layer)  # [head, d_model]
        for head in range(trace.n_heads):
            labels.append(f"L{layer}H{head}")
            kinds.append("head")
            layers.append(layer)
            heads.append(head)
            vectors.append(per_head[head])
        bias = b_O(bundle, layer)  # [d_model]
        if torch.count_nonzero(bias):  # Llama-style projections have no bias: leave out an all-zero row
            labels.append(f"L{layer} attn bias")
            kinds.append("attn_bias")
            layers.append(layer)
            heads.append(None)
            vectors.append(bias)
        labels.append(f"L{layer} MLP")
        kinds.append("mlp")
        layers.append(layer)
        heads.append(None)
        vectors.append(trace.mlp_out[layer, pos])
    return ComponentVectors(labels=labels, kinds=kinds, layers=layers, heads=heads,
                            vectors=torch.stack(vectors))  # [component, d_model]


def _unembed_row(bundle: ModelBundle, token_id: int) -> tuple[torch.Tensor, float]:
    """W_U[token_id] [d_model] and b_U[token_id] (0 without a bias), float32 on CPU."""
    weight = bundle.adapter.unembed_weight(bundle.model)  # [d_vocab, d_model]
    bias = bundle.adapter.unembed_bias(bundle.model)  # [d_vocab] or None
    row = weight[token_id].detach().to("cpu", torch.float32)
    return row, 0.0 if bias is None else float(bias[token_id])


@dataclass(frozen=True, eq=False)
class LogitAttribution:
    """Direct logit attribution of one target token at one position: every component's share of its logit.

    The last component is the constant "final-norm bias" term (b . W_U[t] + b_U[t]); `values.sum()` equals
    `logit` up to float error.
    """

    labels: list[str]  # [component] "embed", "L0H1", "L0 attn bias", "L0 MLP", ..., "final-norm bias"
    kinds: list[str]  # [component] "embed" | "head" | "attn_bias" | "mlp" | "bias"
    layers: list[int | None]  # [component]
    heads: list[int | None]  # [component]
    values: torch.Tensor  # [component] logit units
    logit: float  # the model's own logit for the target at `pos`
    pos: int  # 0-based position
    target_id: int
    target_token: str  # readable
    scale: float  # the final norm's scale s on the actual final residual

    def __post_init__(self) -> None:
        n = self.values.shape[0]
        lengths = {len(self.labels), len(self.kinds), len(self.layers), len(self.heads)}
        if self.values.dim() != 1 or lengths != {n}:
            raise ValueError(f"LogitAttribution: {tuple(self.values.shape)} values do not match the label lists")

    @property
    def bias_term(self) -> float:
        """The constant final-norm (and unembedding) bias term."""
        return float(self.values[self.kinds.index("bias")])

    @property
    def components(self) -> list[str]:
        """The labels of the components that write into the residual stream (all but the bias term), in order."""
        return [label for label, kind in zip(self.labels, self.kinds, strict=True) if kind != "bias"]

    @property
    def top_component(self) -> str:
        """The component with the largest |contribution| (the bias term left out)."""
        frame = self.to_frame()
        return str(frame[frame["kind"] != "bias"]["component"].iloc[0])

    @property
    def summary(self) -> str:
        """One Markdown sentence: what the numbers are, and that components plus bias add up to the logit."""
        return (f"How much each component's output writes towards the logit of the target at position {self.pos}: "
                f"its output through the final norm (scale {self.scale:.3f}, taken from the actual final residual) "
                "times the unembedding direction. Components plus the bias term sum to "
                f"**{float(self.values.sum()):.4f}**; the model's logit is **{self.logit:.4f}**.")

    def to_frame(self) -> pd.DataFrame:
        """One row per component, ranked by |contribution|: rank, component, kind, layer, head, row ("embed",
        "L0", ...), column ("embed", "H0", "attn bias", "MLP", "bias"), contribution, target, pos."""
        def column(kind: str, head: int | None) -> str:
            return {"embed": "embed", "attn_bias": "attn bias", "mlp": "MLP", "bias": "bias"}.get(kind, f"H{head}")

        frame = pd.DataFrame({
            "component": self.labels,
            "kind": self.kinds,
            "layer": pd.array(self.layers, dtype="Int64"),
            "head": pd.array(self.heads, dtype="Int64"),
            "row": ["embed" if k == "embed" else "bias" if k == "bias" else f"L{layer}"
                    for k, layer in zip(self.kinds, self.layers, strict=True)],
            "column": [column(k, h) for k, h in zip(self.kinds, self.heads, strict=True)],
            "contribution": self.values.tolist(),
            "target": self.target_token,
            "pos": self.pos,
        })
        frame = frame.iloc[frame["contribution"].abs().argsort()[::-1]].reset_index(drop=True)
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame


def direct_logit_attribution(bundle: ModelBundle, trace: Trace, pos: int, target_id: int) -> LogitAttribution:
    """How much each component writes towards `target_id`'s logit at `pos` (see the module docstring)."""
    pos = _resolve_pos(trace, pos)
    target_id = check_target(bundle, target_id)
    parts = component_vectors(bundle, trace, pos)
    lin = final_norm_linear(bundle, trace.resid[-1, pos])
    w_u, b_u = _unembed_row(bundle, target_id)  # [d_model], float
    values = lin(parts.vectors) @ w_u  # [component]
    bias = float(lin.bias @ w_u) + b_u
    return LogitAttribution(
        labels=parts.labels + ["final-norm bias"],
        kinds=parts.kinds + ["bias"],
        layers=parts.layers + [None],
        heads=parts.heads + [None],
        values=torch.cat([values, torch.tensor([bias])]),
        logit=float(logits_at(bundle, trace, pos)[target_id]),
        pos=pos,
        target_id=target_id,
        target_token=decode_ids(bundle, torch.tensor([target_id]))[target_id],
        scale=lin.scale,
    )


@dataclass(frozen=True, eq=False)
class TokenEffects:
    """The tokens whose logits one component's output raises and lowers most (direct effect, logit units)."""

    component: str  # e.g. "L1H2" or "L0 MLP"
    pos: int
    promoted_ids: torch.LongTensor  # [k] largest direct effect first
    promoted_values: torch.Tensor  # [k]
    suppressed_ids: torch.LongTensor  # [k] most negative first
    suppressed_values: torch.Tensor  # [k]
    promoted_tokens: list[str]  # [k] readable
    suppressed_tokens: list[str]  # [k] readable

    def __post_init__(self) -> None:
        k = self.promoted_ids.shape[0]
        for name in ("promoted_values", "suppressed_ids", "suppressed_values"):
            if tuple(getattr(self, name).shape) != (k,):
                raise ValueError(f"TokenEffects.{name} has shape {tuple(getattr(self, name).shape)}, expected {(k,)}")
        if len(self.promoted_tokens) != k or len(self.suppressed_tokens) != k:
            raise ValueError("TokenEffects token lists must have k entries")

    def to_frame(self) -> pd.DataFrame:
        """Rows: direction ("promoted" / "suppressed"), rank, token, token_id, logit_effect, component, pos."""
        k = self.promoted_ids.shape[0]
        return pd.DataFrame({
            "direction": ["promoted"] * k + ["suppressed"] * k,
            "rank": list(range(1, k + 1)) * 2,
            "token": self.promoted_tokens + self.suppressed_tokens,
            "token_id": self.promoted_ids.tolist() + self.suppressed_ids.tolist(),
            "logit_effect": self.promoted_values.tolist() + self.suppressed_values.tolist(),
            "component": self.component,
            "pos": self.pos,
        })


def component_token_effects(bundle: ModelBundle, trace: Trace, pos: int, component: str, k: int = 10) -> TokenEffects:
    """The `k` tokens whose logits `component`'s output at `pos` raises most and lowers most, through the final
    norm frozen at the actual final residual's scale (the same linearisation as direct_logit_attribution)."""
    pos = _resolve_pos(trace, pos)
    parts = component_vectors(bundle, trace, pos)
    vector = parts.vectors[parts.index(component)]  # [d_model]
    lin = final_norm_linear(bundle, trace.resid[-1, pos])
    effects = unembed(bundle, lin(vector), with_bias=False).cpu()  # [d_vocab] float32
    k = max(1, min(int(k), effects.shape[0]))
    up, down = effects.topk(k), (-effects).topk(k)
    names = decode_ids(bundle, torch.cat([up.indices, down.indices]))
    return TokenEffects(
        component=component,
        pos=pos,
        promoted_ids=up.indices,
        promoted_values=up.values,
        suppressed_ids=down.indices,
        suppressed_values=-down.values,
        promoted_tokens=[names[i] for i in up.indices.tolist()],
        suppressed_tokens=[names[i] for i in down.indices.tolist()],
    )

