"""Head ablation: a head's z (the input of the attention output projection, split by head) set to zero, or to
its mean over reference inputs, so the head writes nothing (zero) or a constant (mean).

    >>> edits = ablation_edits(bundle, [(1, 2)], "zero")           # {"blocks.1.attn.hook_z": edit} for run()
    >>> ablate_heads(bundle, ids, [(1, 2)], "mean").to_frame()      # the last position's top tokens, before / after

Mean ablation leaves position 0 out of the mean by default (`exclude_pos0=True`). At position 0 a query can
attend only to itself, so every head's z there is that token's own value vector v_0, while every later z is a
mix over many keys; and position 0 is where attention sinks sit (Xiao et al. 2023, "Efficient Streaming
Language Models with Attention Sinks"), so v_0 is often unlike any other value. A mean over every position is
pulled towards that one odd vector; the mean over positions 1 onwards is the head's typical output. (An input
of one token has nothing else, so its mean is position 0's z.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core import activations
from interp_core.circuits.detectors import CircuitInputError, Head, head_label
from interp_core.loading import ModelBundle
from interp_core.names import act_name
from interp_core.tokens import readable_token, token_texts

ABLATIONS: dict[str, str] = {  # mode -> what the head writes, as the Circuits page offers it
    "zero": "zero (the head writes nothing)",
    "mean": "mean (the head writes its average output over positions 1 onwards; position 0, the attention sink, "
            "is left out)",
}


def check_heads(bundle: ModelBundle, heads: Iterable[Head]) -> tuple[Head, ...]:
    """`heads` as sorted, distinct (layer, head) ints; raises CircuitInputError for a head the model lacks."""
    checked = []
    for layer, head in heads:
        if not (0 <= int(layer) < bundle.n_layers and 0 <= int(head) < bundle.n_heads):
            raise CircuitInputError(f"There is no head L{layer}H{head}: this model has {bundle.n_layers} layers "
                                    f"of {bundle.n_heads} heads.")
        checked.append((int(layer), int(head)))
    return tuple(sorted(set(checked)))


def z_names(bundle: ModelBundle) -> list[str]:
    """The hook_z name of every layer, blocks.0.attn.hook_z first."""
    return [act_name("z", layer) for layer in range(bundle.n_layers)]


def _first_kept(n_pos: int, exclude_pos0: bool) -> int:
    """The first position a mean of z keeps: 1 when position 0 is left out and is not the only one, else 0."""
    return int(exclude_pos0 and n_pos > 1)


def head_z_means(bundle: ModelBundle, ids: torch.Tensor, exclude_pos0: bool = True) -> torch.Tensor:
    """Each head's z averaged over every row of ids [batch, pos] and over positions 1 onwards (every position
    when `exclude_pos0` is False or pos is 1; see the module docstring): [layer, head, d_head]."""
    start = _first_kept(ids.shape[-1], exclude_pos0)

    def mean(z: torch.Tensor) -> torch.Tensor:  # [batch, pos, head, d_head] -> [head, d_head]
        return z[:, start:].float().mean(dim=(0, 1)).cpu()

    with torch.no_grad():
        acts = activations.run(bundle, ids, record={name: mean for name in z_names(bundle)}).acts
    return torch.stack([acts[name] for name in z_names(bundle)])  # [layer, head, d_head]


def ablation_edits(
    bundle: ModelBundle,
    heads: Sequence[Head],
    mode: str,
    means: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> dict[str, activations.Edit]:
    """Edits of hook_z that set the z of `heads` to zero ("zero") or to means[layer, head] ("mean", means
    [layer, head, d_head]), in every batch row or only in `rows` [n]."""
    if mode not in ABLATIONS:
        raise CircuitInputError(f"Unknown ablation {mode!r}; pick one of {', '.join(ABLATIONS)}.")
    if mode == "mean" and means is None:
        raise ValueError("mean ablation needs the heads' mean z (head_z_means)")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def make(layer: int, layer_heads: list[int]):
        def edit(z: torch.Tensor) -> torch.Tensor:  # [batch, pos, head, d_head]
            z = z.clone()
            picked = slice(None) if rows is None else rows.to(z.device)
            for head in layer_heads:
                z[picked, :, head] = 0.0 if mode == "zero" else means[layer, head].to(z.device, z.dtype)
            return z
        return edit

    return {act_name("z", layer): make(layer, hs) for layer, hs in by_layer.items()}


# -- ablation on one prompt -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HeadAblation:
    """The next-token prediction at the last position of a prompt with and without some heads ablated."""

    heads: tuple[Head, ...]
    mode: str  # "zero" or "mean"
    top_tokens_before: list[str]  # [k] readable, most likely first
    top_probs_before: torch.Tensor  # [k]
    top_tokens_after: list[str]  # [k]
    top_probs_after: torch.Tensor  # [k]
    logit_diff_before: float  # logit(answer) - logit(foil) without ablation; NaN without answer and foil
    logit_diff_after: float  # the same with the heads ablated

    def __post_init__(self) -> None:
        k = len(self.top_tokens_before)
        for name in ("top_probs_before", "top_probs_after"):
            if tuple(getattr(self, name).shape) != (k,):
                raise ValueError(f"HeadAblation.{name} has shape {tuple(getattr(self, name).shape)}, expected {(k,)}")
        if len(self.top_tokens_after) != k:
            raise ValueError("HeadAblation: top_tokens_after and top_tokens_before differ in length")

    @property
    def label(self) -> str:
        return f"{self.mode}-ablated " + ", ".join(head_label(*h) for h in self.heads)

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows: rank, token_before, prob_before, token_after, prob_after."""
        return pd.DataFrame({
            "rank": list(range(1, len(self.top_tokens_before) + 1)),
            "token_before": self.top_tokens_before, "prob_before": self.top_probs_before.tolist(),
            "token_after": self.top_tokens_after, "prob_after": self.top_probs_after.tolist(),
        })


def ablate_heads(
    bundle: ModelBundle,
    ids: torch.Tensor,
    heads: Iterable[Head],
    mode: str = "zero",
    reference_ids: Sequence[torch.Tensor] = (),
    answer_id: int | None = None,
    foil_id: int | None = None,
    top_k: int = 5,
    exclude_pos0: bool = True,
) -> HeadAblation:
    """Ablate `heads` on the prompt ids [pos] and compare the last position's prediction with the intact run.

    Mean ablation uses each head's z averaged over the positions of `reference_ids` (default: the prompt),
    position 0 of each left out unless `exclude_pos0` is False (see the module docstring).
    Both runs are rows of one batched forward, so the only difference between them is the ablation.
    """
    heads = check_heads(bundle, heads)
    if not heads:
        raise CircuitInputError("Pick at least one head to ablate.")
    means = None
    if mode == "mean":
        refs = list(reference_ids) or [ids]
        counts = [r.shape[-1] - _first_kept(r.shape[-1], exclude_pos0) for r in refs]  # positions averaged
        per_ref = [head_z_means(bundle, r[None], exclude_pos0) * c for r, c in zip(refs, counts, strict=True)]
        means = torch.stack(per_ref).sum(0) / sum(counts)  # [layer, head, d_head]; sums over positions / count
    rows = torch.tensor([1])  # row 0 intact, row 1 ablated
    batch = ids.to(bundle.device)[None].repeat(2, 1)  # [2, pos]
    with torch.no_grad():
        logits = activations.run(bundle, batch, edits=ablation_edits(bundle, heads, mode, means, rows=rows)
                                 ).logits[:, -1].float().cpu()  # [2, d_vocab]
    probs = logits.softmax(-1)
    top = probs.topk(top_k, dim=-1)  # values, indices [2, k]

    def words(row: int) -> list[str]:
        return [readable_token(t) for t in token_texts(bundle, top.indices[row])]

    def diff(row: int) -> float:
        if answer_id is None or foil_id is None:
            return float("nan")
        return float(logits[row, answer_id] - logits[row, foil_id])

    return HeadAblation(heads=heads, mode=mode, top_tokens_before=words(0), top_probs_before=top.values[0],
                        top_tokens_after=words(1), top_probs_after=top.values[1], logit_diff_before=diff(0),
                        logit_diff_after=diff(1))
