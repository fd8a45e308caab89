"""The logit lens, residual-stream statistics and the model's own next-token prediction, from a cached trace.

Nothing here runs the model forward; the final norm and the unembedding are applied to recorded activations.

Logit lens (nostalgebraist 2020; tuned-lens' `PredictionTrajectory` does the same). Row l of the result reads the
residual stream resid[l] (row 0 = embeddings, row l = output of block l-1, the last row = output of the last
block) as if the model stopped there:
    logits_l = unembed(final_norm(resid[l]))         the norm's statistics recomputed on resid[l] itself
Reusing the last layer's norm scale instead would make early layers look nearly uniform (TransformerLens #1076).
The last row is therefore the model's own output. Per row and position we keep the top-k tokens, the entropy
H(p_l) and the forward KL(p_final || p_l) (nats), and the probability and rank of a target token.

    >>> lens = logit_lens(bundle, trace)                          # target: the model's top-1 next token
    >>> lens.target_rank[:, -1]                                   # [layer + 1] rank at the last position
    >>> lens_target(bundle, trace, pos=3, typed="␣Paris").target_id    # the token a user typed, checked
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.components import logits_at, resid_to_logits
from interp_core.errors import TargetTokenError
from interp_core.lens.tuned import TunedLens
from interp_core.loading import ModelBundle
from interp_core.tokens import readable_token, single_token_id, token_labels, token_texts
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


def decode_ids(bundle: ModelBundle, ids: torch.Tensor) -> dict[int, str]:
    """Readable text of every distinct id in `ids` (decoded once each)."""
    unique = sorted(set(ids.flatten().tolist()))
    return dict(zip(unique, (readable_token(t) for t in token_texts(bundle, unique)), strict=True))


def check_target(bundle: ModelBundle, target_id: int) -> int:
    """`target_id` as an int; raises ValueError when it is not a token of the unembedding."""
    if not 0 <= int(target_id) < bundle.d_vocab:
        raise ValueError(f"target id {target_id} is not in 0..{bundle.d_vocab - 1}")
    return int(target_id)


@dataclass(frozen=True)
class LensTarget:
    """The token the Logit Lens page tracks at one position: the one typed, else the model's own top-1."""

    target_id: int
    default_text: str  # the model's top-1 next token at the position, readable
    problem: str | None = None  # why the typed text was not used (it is not one token), in words


def lens_target(bundle: ModelBundle, trace: Trace, pos: int, typed: str = "") -> LensTarget:
    """`typed` as one token id (its readable marks ␣ ↵ ⇥ read as space, newline and tab); when it is empty, the
    model's top-1 prediction after `pos`, and when it is not one token, that top-1 with `problem` saying why."""
    default_id = int(logits_at(bundle, trace, pos).argmax())
    default_text = decode_ids(bundle, torch.tensor([default_id]))[default_id]
    if not typed:
        return LensTarget(default_id, default_text)
    try:
        return LensTarget(single_token_id(bundle, typed.replace("␣", " ").replace("↵", "\n").replace("⇥", "\t")),
                          default_text)
    except TargetTokenError as exc:
        return LensTarget(default_id, default_text, f"{exc} Showing the model's top-1 token {default_text} instead.")


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
    lens_name: str = "Logit lens"  # or "Tuned lens": what decoded the rows

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

    def trajectory_frame(self, pos: int) -> pd.DataFrame:
        """The target through the layers at one position (negative counts from the end): one row per layer with
        layer, layer_label, pos, pos_label, target, target_prob, target_rank, top1, top1_prob."""
        frame = self.to_frame()
        return frame[frame["pos"] == pos % self.n_pos][["layer", "layer_label", "pos", "pos_label", "target",
                                                        "target_prob", "target_rank", "top1", "top1_prob"]]


LENS_POSITIONS_PER_CHUNK = 128  # GPT-2 small: ~26 MB per [positions, d_vocab] tensor, not 206 MB at 1024


def logit_lens(
    bundle: ModelBundle,
    trace: Trace,
    target_id: int | None = None,
    k: int = 5,
    progress: Progress | None = None,
    tuned: TunedLens | None = None,
) -> LensResult:
    """The logit lens of `trace` (see the module docstring), or with `tuned` the tuned lens (each row translated
    first; tuned.py). `target_id` defaults to the model's top-1 next token at the last position. Reduces each
    layer to top-k inside torch; never holds [layer, pos, d_vocab]."""
    if target_id is None:
        target_id = int(trace.last_logits.argmax())
    target_id = check_target(bundle, target_id)
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
                    resid = trace.resid[layer, rows]
                    if tuned is not None:
                        resid = tuned.translate(resid, layer)
                    logp = torch.log_softmax(resid_to_logits(bundle, resid).float(), -1)
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
    names = decode_ids(bundle, torch.cat([top_ids.flatten(), torch.tensor([target_id])]))
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
        lens_name="Logit lens" if tuned is None else "Tuned lens",
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
    names = decode_ids(bundle, top.indices)
    return NextTokenPredictions(
        token_ids=top.indices,
        tokens=[names[i] for i in top.indices.tolist()],
        probs=top.values,
        logits=logits[top.indices].float(),
    )
