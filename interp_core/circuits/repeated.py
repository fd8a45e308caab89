"""Random token sequences repeated twice, [BOS] A A: the detectors' input, per-token loss, and ablation on them.

    >>> run = run_repeated(bundle, length=20, seed=0)          # 8 random sequences [BOS] A A, one forward
    >>> run.scores.score("induction")                          # [layer, head] in [0, 1]
    >>> run.copy_loss(1), run.copy_loss(2)                     # mean loss (nats) on the first and second copy
    >>> heads = run.scores.top_heads("induction", k=2)
    >>> run_repeated(bundle, length=20, seed=0, ablate=heads).copy_loss(2)      # induction gone: loss rises

Random tokens cannot be predicted the first time; a model with induction heads predicts the second copy by
finding the earlier occurrence of the current token and copying the token after it (Olsson et al. 2022), so its
loss on the second copy falls far below the first. The detectors (`detectors`) are scored on these sequences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from interp_core import activations
from interp_core.circuits.ablation import ABLATIONS, ablation_edits, check_heads, head_z_means, z_names
from interp_core.circuits.detectors import CircuitInputError, Head, HeadScores, Progress, head_label, score_heads
from interp_core.loading import ModelBundle
from interp_core.names import act_name
from interp_core.settings import limits
from interp_core.tokens import readable_token, special_token_ids, token_labels, token_texts

N_SEQUENCES = 8  # random sequences averaged by the detectors: enough that one unlucky draw does not decide
DEFAULT_LENGTH = 20  # tokens per copy; two copies plus BOS fit every supported model's context


@dataclass(frozen=True, eq=False)
class RepeatedTokens:
    """Random token sequences, each repeated twice: [BOS] A A. Tokens within one copy are all different."""

    ids: torch.LongTensor  # [batch, pos] with pos = prefix + 2 * length
    length: int  # tokens per copy (n)
    seed: int  # the generator's seed: the same seed, length and model give the same ids
    prefix: int  # 1 when a BOS token is prepended, else 0

    def __post_init__(self) -> None:
        if self.ids.dim() != 2 or self.ids.shape[1] != self.prefix + 2 * self.length:
            raise ValueError(f"RepeatedTokens.ids has shape {tuple(self.ids.shape)}, expected "
                             f"[batch, {self.prefix + 2 * self.length}]")
        first = self.ids[:, self.prefix: self.prefix + self.length]
        if not torch.equal(first, self.ids[:, self.prefix + self.length:]):
            raise ValueError("RepeatedTokens.ids: the second copy differs from the first")

    @property
    def n_pos(self) -> int:
        return int(self.ids.shape[1])

    def copy_of(self, pos: int) -> int:
        """0 for the BOS prefix, 1 for a position in the first copy, 2 for one in the second."""
        return 0 if pos < self.prefix else 1 if pos < self.prefix + self.length else 2


def random_token_pool(bundle: ModelBundle) -> torch.LongTensor:
    """Ids a random sequence may use: every token of the tokenizer that is not special and fits the unembedding."""
    n_vocab = min(len(bundle.tokenizer), bundle.d_vocab)
    special = set(special_token_ids(bundle))
    return torch.tensor([i for i in range(n_vocab) if i not in special], dtype=torch.long)


def max_repeat_length(bundle: ModelBundle, prepend_bos: bool = True) -> int:
    """The longest copy that fits twice (plus BOS) into limits().max_prompt_tokens and the model's context."""
    cap = min(limits().max_prompt_tokens, bundle.n_ctx) - int(prepend_bos)
    return max(1, min(cap // 2, len(random_token_pool(bundle))))


def _bos_id(bundle: ModelBundle) -> int | None:
    tokenizer = bundle.tokenizer
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return None if bos is None else int(bos)


def repeated_tokens(
    bundle: ModelBundle,
    length: int = DEFAULT_LENGTH,
    seed: int = 0,
    n_sequences: int = N_SEQUENCES,
    prepend_bos: bool = True,
) -> RepeatedTokens:
    """`n_sequences` rows of [BOS] A A with A `length` distinct random non-special tokens, drawn from `seed`.

    BOS is the tokenizer's BOS token (its EOS when it has none, as GPT-2's <|endoftext|> is both); it gives the
    sequence a fixed first token, as TransformerLens does. Raises CircuitInputError when two copies do not fit
    limits().max_prompt_tokens or the model's context.
    """
    bos = _bos_id(bundle) if prepend_bos else None
    prefix = int(bos is not None)
    longest = max_repeat_length(bundle, bool(prefix))
    if not 1 <= int(length) <= longest:
        raise CircuitInputError(
            f"A copy of {length} tokens does not fit: two copies{' plus BOS' if prefix else ''} must stay within "
            f"max_prompt_tokens = {limits().max_prompt_tokens} and the model's context of {bundle.n_ctx} tokens. "
            f"Pick a length from 1 to {longest}."
        )
    if not 1 <= int(n_sequences) <= 256:
        raise ValueError(f"n_sequences must be 1..256, got {n_sequences}")
    pool = random_token_pool(bundle)
    generator = torch.Generator().manual_seed(int(seed))
    rows = [pool[torch.randperm(len(pool), generator=generator)[:length]] for _ in range(n_sequences)]
    first = torch.stack(rows)  # [batch, length]
    parts = [torch.full((n_sequences, 1), bos, dtype=torch.long)] if prefix else []
    ids = torch.cat(parts + [first, first], dim=1)  # [batch, pos]
    return RepeatedTokens(ids=ids, length=int(length), seed=int(seed), prefix=prefix)


@dataclass(frozen=True, eq=False)
class RepeatedRun:
    """One batched forward over repeated random tokens: detector scores, a pattern to show, per-token loss."""

    sequences: RepeatedTokens
    tokens: list[str]  # [pos] readable tokens of sequence 0 (the one whose patterns are shown)
    attention: torch.Tensor  # [layer, head, query_pos, key_pos] of sequence 0
    loss: torch.Tensor  # [batch, pos - 1] nats; loss[b, t] = -log p(ids[b, t + 1] | ids[b, :t + 1])
    scores: HeadScores  # measured on all sequences of this run (with the ablation, if any)
    ablated: tuple[Head, ...] = ()  # heads ablated during this run
    ablation: str = "none"  # "none", "zero" or "mean"

    def __post_init__(self) -> None:
        n_batch, n_pos = self.sequences.ids.shape
        n_layers, n_heads = self.scores.n_layers, self.scores.n_heads
        expected = {"attention": (n_layers, n_heads, n_pos, n_pos), "loss": (n_batch, n_pos - 1)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"RepeatedRun.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        if len(self.tokens) != n_pos:
            raise ValueError(f"RepeatedRun.tokens has {len(self.tokens)} entries, expected {n_pos}")

    def _target_copy(self) -> torch.Tensor:
        """[pos - 1] the copy (0 BOS, 1 first, 2 second) of the token that loss[:, t] predicts (t + 1)."""
        return torch.tensor([self.sequences.copy_of(t + 1) for t in range(self.sequences.n_pos - 1)])

    def copy_loss(self, copy: int) -> float:
        """Mean loss (nats) over all sequences of predicting the tokens of copy 1 or 2.

        Copy 1 excludes position 0, which nothing predicts; copy 2 includes its first token, which follows the
        last token of copy 1 and so cannot be copied (as in the organism's evaluation).
        """
        if copy not in (1, 2):
            raise ValueError("copy must be 1 or 2")
        return float(self.loss[:, self._target_copy() == copy].mean())

    def loss_frame(self) -> pd.DataFrame:
        """Tidy rows per predicted position: position, copy, position_in_copy, token, label, loss (mean nats
        over the sequences), loss_seq0 (sequence 0 only), ablation."""
        labels = token_labels(self.tokens)
        mean = self.loss.mean(0)
        rows = []
        for t in range(self.sequences.n_pos - 1):
            pos = t + 1
            copy = self.sequences.copy_of(pos)
            rows.append({"position": pos, "copy": {1: "first copy", 2: "second copy"}.get(copy, "BOS"),
                         "position_in_copy": (pos - self.sequences.prefix) % self.sequences.length,
                         "token": self.tokens[pos], "label": labels[pos], "loss": float(mean[t]),
                         "loss_seq0": float(self.loss[0, t]), "ablation": self.ablation_label})
        return pd.DataFrame(rows)

    @property
    def ablation_label(self) -> str:
        """"no ablation" or e.g. "zero-ablated L1H2, L2H0"."""
        if not self.ablated:
            return "no ablation"
        return f"{self.ablation}-ablated " + ", ".join(head_label(*h) for h in self.ablated)


def run_repeated(
    bundle: ModelBundle,
    length: int = DEFAULT_LENGTH,
    seed: int = 0,
    n_sequences: int = N_SEQUENCES,
    prepend_bos: bool = True,
    ablate: Iterable[Head] = (),
    mode: str = "zero",
    progress: Progress | None = None,
) -> RepeatedRun:
    """Run [BOS] A A (see `repeated_tokens`) through the model once, optionally with `ablate` heads zero- or
    mean-ablated (mean over every sequence of this batch and its positions 1 onwards, position 0 left out as in
    `ablation.head_z_means`; one extra forward), and return the
    detector scores, sequence 0's attention and the per-token loss."""
    sequences = repeated_tokens(bundle, length, seed, n_sequences, prepend_bos)
    heads = check_heads(bundle, ablate)
    if mode not in ABLATIONS:
        raise CircuitInputError(f"Unknown ablation {mode!r}; pick one of {', '.join(ABLATIONS)}.")
    ids = sequences.ids.to(bundle.device)  # [batch, pos]
    if progress:
        progress(0.0, "Running the repeated random tokens")
    means = head_z_means(bundle, ids) if heads and mode == "mean" else None
    patterns = [act_name("pattern", layer) for layer in range(bundle.n_layers)]

    def cpu(x: torch.Tensor) -> torch.Tensor:
        return x.detach().float().cpu()

    with torch.no_grad():
        out = activations.run(bundle, ids, edits=ablation_edits(bundle, heads, mode, means) if heads else None,
                              record={name: cpu for name in patterns + z_names(bundle)}, logits_to_keep=0)
    attention = torch.stack([out.acts[name] for name in patterns], dim=1)  # [batch, layer, head, q, k]
    z = [out.acts[name] for name in z_names(bundle)]  # each [batch, pos, head, d_head]
    loss = torch.stack([F.cross_entropy(row[:-1].float(), row_ids[1:], reduction="none")  # float32 one row at a
                        for row, row_ids in zip(out.logits, ids, strict=True)]).cpu()  # time: [batch, pos - 1]
    if progress:
        progress(0.7, "Scoring the heads")
    source = f"{n_sequences} random sequences of {length} tokens repeated twice (seed {seed})"
    scores = score_heads(bundle, lambda layer: attention[:, layer], torch.stack(z, dim=1), sequences.ids, source)
    tokens = [readable_token(t) for t in token_texts(bundle, sequences.ids[0])]
    if progress:
        progress(1.0, "Done")
    return RepeatedRun(sequences=sequences, tokens=tokens, attention=attention[0], loss=loss, scores=scores,
                       ablated=heads, ablation=mode if heads else "none")

