"""Logit lens, direct logit attribution and residual-stream statistics, all from a cached trace.

Nothing here runs the model forward; the final norm and the unembedding are applied to recorded activations.

Logit lens (nostalgebraist 2020; tuned-lens' `PredictionTrajectory` does the same). Row l of the result reads the
residual stream resid[l] (row 0 = embeddings, row l = output of block l-1, the last row = output of the last
block) as if the model stopped there:
    logits_l = unembed(final_norm(resid[l]))         the norm's statistics recomputed on resid[l] itself
Reusing the last layer's norm scale instead would make early layers look nearly uniform (TransformerLens #1076).
The last row is therefore the model's own output. Per row and position we keep the top-k tokens, the entropy
H(p_l) and the forward KL(p_final || p_l) (nats), and the probability and rank of a target token.

Direct logit attribution. The last residual stream is a sum of components,
    resid[L] = embed + sum_l ( sum_h z_lh @ W_O[l, h] + b_O[l] + mlp_out[l] )
and the final norm is affine in its input once its scale s is fixed:
    LayerNorm(x) = (x - mean(x)) / s * g + b,   s = sqrt(var(x) + eps)       (GPT-2, GPT-NeoX)
    RMSNorm(x)   =  x / s * g,                  s = sqrt(mean(x^2) + eps)    (Llama-style)
With s taken from the ACTUAL final residual (the one the model normed), each component c writes
    dla(c) = ((c - mean(c)) / s * g) . W_U[target]        (no centring for RMSNorm)
and  sum_c dla(c) + (b . W_U[target] + b_U[target]) = the model's logit for the target, exactly.

    >>> lens = logit_lens(bundle, trace)                          # target: the model's top-1 next token
    >>> lens.target_rank[:, -1]                                   # [layer + 1] rank at the last position
    >>> dla = direct_logit_attribution(bundle, trace, pos=-1, target_id=lens.target_id)
    >>> float(dla.values.sum()) == float(trace.logits[-1, lens.target_id])   # up to float error
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.components import W_O, b_O, final_norm_form, logits_at, resid_to_logits
from interp_core.loading import ModelBundle
from interp_core.tokens import readable_token, token_labels, token_texts
from interp_core.trace import Trace

Progress = Callable[[float, str], None]

LENS_METRICS = {  # column -> (title, meaning); the colour choices of the lens heatmap
    "top1_prob": ("top-1 probability", "probability of the lens' most likely token"),
    "entropy": ("entropy (nats)", "how spread out the lens' prediction is"),
    "kl_to_final": ("KL(final || layer) (nats)", "how far this layer's prediction is from the model's output"),
    "target_prob": ("target probability", "probability of the target token"),
}


def resid_labels(n_layers: int) -> list[str]:
    """Names of the residual-stream rows: "embed", then "block 0" .. "block n-1" (the output of that block)."""
    return ["embed"] + [f"block {layer}" for layer in range(n_layers)]


def _decode(bundle: ModelBundle, ids: torch.Tensor) -> dict[int, str]:
    """Readable text of every distinct id in `ids` (decoded once each)."""
    unique = sorted(set(ids.flatten().tolist()))
    return dict(zip(unique, (readable_token(t) for t in token_texts(bundle, unique)), strict=True))


def _resolve_pos(trace: Trace, pos: int) -> int:
    if not -trace.n_pos <= pos < trace.n_pos:
        raise ValueError(f"position {pos} is not in 0..{trace.n_pos - 1}")
    return pos % trace.n_pos


def _check_target(bundle: ModelBundle, target_id: int) -> int:
    if not 0 <= int(target_id) < bundle.d_vocab:
        raise ValueError(f"target id {target_id} is not in 0..{bundle.d_vocab - 1}")
    return int(target_id)


# ---------------------------------------------------------------------------------------------------------------
# Logit lens
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LensResult:
    """The logit lens of one prompt: row l = resid[l] decoded (see the module docstring)."""

    tokens: list[str]  # [pos] readable prompt tokens
    layer_labels: list[str]  # [layer + 1] "embed", "block 0", ...
    top_ids: torch.LongTensor  # [layer + 1, pos, k] most likely next tokens, best first
    top_probs: torch.Tensor  # [layer + 1, pos, k] their probabilities
    top_tokens: list[list[list[str]]]  # [layer + 1][pos][k] their readable text
    entropy: torch.Tensor  # [layer + 1, pos] nats
    kl_to_final: torch.Tensor  # [layer + 1, pos] KL(p_final || p_layer) in nats; last row 0
    target_id: int
    target_token: str  # readable text of target_id
    target_prob: torch.Tensor  # [layer + 1, pos]
    target_rank: torch.LongTensor  # [layer + 1, pos] 1 = the most likely token

    def __post_init__(self) -> None:
        rows, n_pos, k = self.top_ids.shape
        if len(self.layer_labels) != rows or len(self.tokens) != n_pos:
            raise ValueError(f"LensResult: {rows} rows x {n_pos} positions do not match the labels and tokens")
        if tuple(self.top_probs.shape) != (rows, n_pos, k):
            raise ValueError(f"LensResult.top_probs has shape {tuple(self.top_probs.shape)}, "
                             f"expected {(rows, n_pos, k)}")
        if len(self.top_tokens) != rows or any(len(r) != n_pos for r in self.top_tokens):
            raise ValueError("LensResult.top_tokens must be [layer + 1][pos][k]")
        for name in ("entropy", "kl_to_final", "target_prob", "target_rank"):
            if tuple(getattr(self, name).shape) != (rows, n_pos):
                raise ValueError(f"LensResult.{name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"expected {(rows, n_pos)}")

    @property
    def n_rows(self) -> int:
        """Residual-stream rows: n_layers + 1."""
        return self.top_ids.shape[0]

    @property
    def n_pos(self) -> int:
        return self.top_ids.shape[1]

    @property
    def k(self) -> int:
        return self.top_ids.shape[2]

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, position): layer (0 = embeddings), layer_label, pos, token, pos_label, top1,
        top1_prob, entropy, kl_to_final, target, target_prob, target_rank, top_k (e.g. "␣Paris 0.61 · ␣the 0.05")."""
        labels = token_labels(self.tokens)
        records = []
        for layer in range(self.n_rows):
            for pos in range(self.n_pos):
                names = self.top_tokens[layer][pos]
                probs = self.top_probs[layer, pos].tolist()
                records.append({
                    "layer": layer,
                    "layer_label": self.layer_labels[layer],
                    "pos": pos,
                    "token": self.tokens[pos],
                    "pos_label": labels[pos],
                    "top1": names[0],
                    "top1_prob": probs[0],
                    "entropy": float(self.entropy[layer, pos]),
                    "kl_to_final": float(self.kl_to_final[layer, pos]),
                    "target": self.target_token,
                    "target_prob": float(self.target_prob[layer, pos]),
                    "target_rank": int(self.target_rank[layer, pos]),
                    "top_k": " · ".join(f"{n} {p:.3f}" for n, p in zip(names, probs, strict=True)),
                })
        return pd.DataFrame.from_records(records)


LENS_POSITIONS_PER_CHUNK = 128  # GPT-2 small: ~26 MB per [positions, d_vocab] tensor, not 206 MB at 1024


def logit_lens(
    bundle: ModelBundle,
    trace: Trace,
    target_id: int | None = None,
    k: int = 5,
    progress: Progress | None = None,
) -> LensResult:
    """The logit lens of `trace` (see the module docstring). `target_id` defaults to the model's top-1 next
    token at the last position. Reduces each layer to top-k inside torch; never holds [layer, pos, d_vocab]."""
    if target_id is None:
        target_id = int(trace.last_logits.argmax())
    target_id = _check_target(bundle, target_id)
    k = max(1, min(int(k), bundle.d_vocab))
    n_rows, n_pos = trace.n_layers + 1, trace.n_pos
    top_ids = torch.zeros(n_rows, n_pos, k, dtype=torch.long)
    top_probs = torch.zeros(n_rows, n_pos, k)
    entropy, kl = torch.zeros(n_rows, n_pos), torch.zeros(n_rows, n_pos)
    target_prob = torch.zeros(n_rows, n_pos)
    target_rank = torch.zeros(n_rows, n_pos, dtype=torch.long)

    with torch.no_grad():
        for start in range(0, n_pos, LENS_POSITIONS_PER_CHUNK):  # a few [positions, d_vocab] tensors at a time
            rows = slice(start, min(start + LENS_POSITIONS_PER_CHUNK, n_pos))
            final_logp = torch.log_softmax(resid_to_logits(bundle, trace.resid[-1, rows]).float(), -1)
            final_p = final_logp.exp()
            for layer in range(n_rows):
                if progress:
                    done = (start * n_rows + layer * (rows.stop - start)) / (n_pos * n_rows)
                    progress(done, f"Decoding {resid_labels(trace.n_layers)[layer]}")
                if layer == n_rows - 1:
                    logp = final_logp
                else:
                    logp = torch.log_softmax(resid_to_logits(bundle, trace.resid[layer, rows]).float(), -1)
                p = logp.exp()  # [positions, d_vocab]
                entropy[layer, rows] = -(p * logp).sum(-1)
                kl[layer, rows] = (final_p * (final_logp - logp)).sum(-1).clamp_min(0.0)  # float error dips < 0
                values, ids = logp.topk(k, dim=-1)  # [positions, k]
                top_ids[layer, rows], top_probs[layer, rows] = ids, values.exp()
                target_logp = logp[:, target_id]  # [positions]
                target_prob[layer, rows] = target_logp.exp()
                target_rank[layer, rows] = (logp > target_logp[:, None]).sum(-1) + 1  # 1 + tokens more likely
    if progress:
        progress(1.0, "Logit lens done")
    names = _decode(bundle, torch.cat([top_ids.flatten(), torch.tensor([target_id])]))
    top_tokens = [[[names[i] for i in cell] for cell in row] for row in top_ids.tolist()]
    return LensResult(
        tokens=list(trace.tokens),
        layer_labels=resid_labels(trace.n_layers),
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=top_tokens,
        entropy=entropy,
        kl_to_final=kl,
        target_id=target_id,
        target_token=names[target_id],
        target_prob=target_prob,
        target_rank=target_rank,
    )


# ---------------------------------------------------------------------------------------------------------------
# Direct logit attribution
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FinalNormLinear:
    """The final norm frozen at the scale of one actual residual vector: x -> (centre(x) / scale) * weight.

    Applying it to each component and adding `bias` reproduces final_norm(sum of components) exactly.
    """

    centre: bool  # LayerNorm subtracts the mean; RMSNorm does not
    scale: float  # s: sqrt(var + eps) or sqrt(mean square + eps) of the actual final residual
    weight: torch.Tensor  # [d_model] g
    bias: torch.Tensor  # [d_model] b (zeros for RMSNorm)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_model] -> its share of the normed vector, [..., d_model]."""
        if self.centre:
            x = x - x.mean(-1, keepdim=True)
        return x / self.scale * self.weight


def final_norm_linear(bundle: ModelBundle, resid: torch.Tensor) -> FinalNormLinear:
    """Freeze the model's final norm at the scale of `resid` [d_model] (the actual last residual vector).

    The norm's kind (LayerNorm or RMSNorm) is measured on probe vectors (components.final_norm_form), which raises
    UnsupportedArchitectureError for any other final norm.
    """
    form = final_norm_form(bundle)
    scale = float(form.scale(resid.detach().to("cpu", torch.float32)))
    return FinalNormLinear(centre=form.centre, scale=scale, weight=form.weight, bias=form.bias)


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
        per_head = torch.einsum("hd,hdm->hm", trace.head_z[layer, pos], W_O(bundle, layer))  # [head, d_model]
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
    target_id = _check_target(bundle, target_id)
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
        target_token=_decode(bundle, torch.tensor([target_id]))[target_id],
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
    weight = bundle.adapter.unembed_weight(bundle.model).detach()  # [d_vocab, d_model]
    effects = (weight @ lin(vector).to(weight.device, weight.dtype)).to("cpu", torch.float32)  # [d_vocab]
    k = max(1, min(int(k), effects.shape[0]))
    up, down = effects.topk(k), (-effects).topk(k)
    names = _decode(bundle, torch.cat([up.indices, down.indices]))
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


# ---------------------------------------------------------------------------------------------------------------
# Residual stream evolution
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ResidualEvolution:
    """How the residual stream changes through the layers, per position."""

    tokens: list[str]  # [pos]
    layer_labels: list[str]  # [layer + 1] "embed", "block 0", ...
    norms: torch.Tensor  # [layer + 1, pos] L2 norm of resid[l]
    cosine: torch.Tensor  # [layer, pos] cos(resid[l], resid[l + 1]): how much block l turned the vector

    def __post_init__(self) -> None:
        rows, n_pos = self.norms.shape
        if len(self.tokens) != n_pos or len(self.layer_labels) != rows:
            raise ValueError("ResidualEvolution: labels do not match the norms' shape [layer + 1, pos]")
        if tuple(self.cosine.shape) != (rows - 1, n_pos):
            raise ValueError(f"ResidualEvolution.cosine has shape {tuple(self.cosine.shape)}, "
                             f"expected {(rows - 1, n_pos)}")

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, position): layer, layer_label, pos, token, pos_label, norm, cosine_to_previous
        (cosine between this row and the one before; empty for the embeddings)."""
        labels = token_labels(self.tokens)
        rows, n_pos = self.norms.shape
        cos = torch.cat([torch.full((1, n_pos), float("nan")), self.cosine])  # [layer + 1, pos]
        return pd.DataFrame({
            "layer": [layer for layer in range(rows) for _ in range(n_pos)],
            "layer_label": [self.layer_labels[layer] for layer in range(rows) for _ in range(n_pos)],
            "pos": list(range(n_pos)) * rows,
            "token": list(self.tokens) * rows,
            "pos_label": labels * rows,
            "norm": self.norms.flatten().tolist(),
            "cosine_to_previous": cos.flatten().tolist(),
        })


def residual_evolution(trace: Trace) -> ResidualEvolution:
    """Residual norm per layer and position, and the cosine between consecutive layers (from the trace)."""
    resid = trace.resid.float()  # [layer + 1, pos, d_model]
    return ResidualEvolution(
        tokens=list(trace.tokens),
        layer_labels=resid_labels(trace.n_layers),
        norms=resid.norm(dim=-1),
        cosine=torch.nn.functional.cosine_similarity(resid[:-1], resid[1:], dim=-1),  # [layer, pos]
    )


# ---------------------------------------------------------------------------------------------------------------
# The model's own next-token prediction
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NextTokenPredictions:
    """The model's top-k next tokens after the prompt (from the trace's logits at the last position)."""

    token_ids: torch.LongTensor  # [k] most likely first
    tokens: list[str]  # [k] readable
    probs: torch.Tensor  # [k]
    logits: torch.Tensor  # [k]

    def __post_init__(self) -> None:
        k = self.token_ids.shape[0]
        if len(self.tokens) != k or tuple(self.probs.shape) != (k,) or tuple(self.logits.shape) != (k,):
            raise ValueError(f"NextTokenPredictions fields must all have {k} entries")

    def to_frame(self) -> pd.DataFrame:
        """One row per prediction: rank (1 = top), token, token_id, probability, logit."""
        return pd.DataFrame({
            "rank": range(1, len(self.tokens) + 1),
            "token": self.tokens,
            "token_id": self.token_ids.tolist(),
            "probability": self.probs.tolist(),
            "logit": self.logits.tolist(),
        })


def next_token_predictions(bundle: ModelBundle, trace: Trace, k: int = 10) -> NextTokenPredictions:
    """The model's `k` most likely next tokens with their probabilities (softmax of trace.last_logits)."""
    logits = trace.last_logits  # [d_vocab]
    top = torch.softmax(logits.float(), -1).topk(max(1, min(int(k), logits.shape[0])))
    names = _decode(bundle, top.indices)
    return NextTokenPredictions(
        token_ids=top.indices,
        tokens=[names[i] for i in top.indices.tolist()],
        probs=top.values,
        logits=logits[top.indices].float(),
    )
