"""Head detectors, per-token loss on repeated random tokens, and head ablation.

    >>> run = run_repeated(bundle, length=20, seed=0)          # 8 random sequences [BOS] A A, one forward
    >>> run.scores.score("induction")                          # [layer, head] in [0, 1]
    >>> run.copy_loss(1), run.copy_loss(2)                     # mean loss (nats) on the first and second copy
    >>> heads = run.scores.top_heads("induction", k=2)
    >>> run_repeated(bundle, length=20, seed=0, ablate=heads).copy_loss(2)      # induction gone: loss rises
    >>> prompt_head_scores(bundle, trace)                      # the same detectors on the user's prompt (no forward)

Detectors (Olsson et al. 2022; `/work/shared/notes/algorithms.md`); all but ov_copying are mean attention
weights in [0, 1]:
    previous  = mean_q A[q, q-1]                       over queries q >= 1
    first     = mean_q A[q, 0]                         over queries q >= 1 (the attention sink)
    duplicate = mean_q sum_{j<q, t_j = t_q} A[q, j]    over queries whose token occurred before
    induction = mean_q sum_{j+1<q, t_j = t_q} A[q, j+1] over the same queries (attend to the token AFTER the
                earlier occurrence: prefix matching)
    copying   = mean_q sum_k A[q, k] [t_k = argmax_{t in context(q)} DLA_q(t)]   over queries q >= 1
                (a behavioural, direct-effect proxy for copying)
    ov_copying = sum_i lambda_i / sum_i |lambda_i| over the eigenvalues of the head's OV circuit
                W_E W_V W_O W_U, in [-1, 1] (weights only; the same for every input)
On [BOS] A A with the tokens of A all different (our generator draws them without replacement), the duplicate
and induction sums reduce to the usual offsets: key q - n and key q - n + 1 for the queries of the second copy.

Copying asks whether a head's output raises the logit of the token it attends to. The behavioural "copying"
score is a direct-effect proxy: DLA_q(t) is the direct logit effect of the head's output at q on token t
(through W_U and the final norm with its scale frozen); the score is the share of the head's attention that
lands on the context token (a token at a position <= q) its output raises most. Chance level is about
1 / (number of distinct tokens in context). "ov_copying" is Olsson et al.'s weight-based counterpart (see
`ov_copying_scores`): positive when the OV circuit maps tokens mostly onto themselves, -1 for an anti-copying
head. Both are shown: the proxy says what a head does on this input, the eigenvalues what its weights can do.

Ablation replaces a head's z (the input of the attention output projection, split by head) by zero, or by its
mean over every position of reference inputs, so the head writes nothing (zero) or a constant (mean).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from interp_core import activations
from interp_core.components import W_O, final_norm_form, norm_form
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
from interp_core.names import act_name
from interp_core.settings import limits
from interp_core.tokens import readable_token, token_labels, token_texts
from interp_core.trace import Trace, layer_pattern

Progress = Callable[[float, str], None]
Head = tuple[int, int]  # (layer, head)

DETECTORS: dict[str, str] = {  # name -> what it measures (shown beside the heatmaps)
    "induction": "attention from a repeated token to the token right after its earlier occurrence",
    "duplicate": "attention from a repeated token to its own earlier occurrence",
    "previous": "attention from each token to the token just before it",
    "first": "attention to the first token (the attention sink)",
    "copying": "share of the head's attention on the context token its output raises most "
               "(a direct-effect proxy for copying)",
    "ov_copying": "copying by the head's weights alone: eigenvalues of its token-to-logit OV circuit, "
                  "their sum over the sum of their sizes (-1 anti-copying, 0 none, +1 copying)",
}
ABLATIONS = ("zero", "mean")
N_SEQUENCES = 8  # random sequences averaged by the detectors: enough that one unlucky draw does not decide
DEFAULT_LENGTH = 20  # tokens per copy; two copies plus BOS fit every supported model's context


class CircuitInputError(UserInputError):
    """A detector or ablation request that cannot run (sequence too long, unknown head, ...)."""


def head_label(layer: int, head: int) -> str:
    """"L1H3" for layer 1, head 3."""
    return f"L{layer}H{head}"


# -- repeated random tokens -------------------------------------------------------------------------------


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
    special = set(bundle.tokenizer.all_special_ids or ())
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


# -- detector maths (pure functions of attention and ids) -----------------------------------------------


def _earlier_same(ids: torch.Tensor) -> torch.Tensor:
    """[batch, query_pos, key_pos] True where key < query holds the same token as the query."""
    n = ids.shape[-1]
    same = ids[:, :, None] == ids[:, None, :]  # [batch, query_pos, key_pos]
    return same & torch.ones(n, n, dtype=torch.bool).tril(-1)


def _masked_mean(per_query: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of per_query [batch, layer, head, query_pos] over the valid (batch, query) pairs -> [layer, head]."""
    weights = valid[:, None, None, :].to(per_query.dtype)  # [batch, 1, 1, query_pos]
    count = weights.sum(dim=(0, 3))
    total = (per_query * weights).sum(dim=(0, 3))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def attention_scores(attention: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four attention-only detectors for attention [batch, layer, head, query_pos, key_pos] on ids
    [batch, pos]: {"induction", "duplicate", "previous", "first"} -> [layer, head] (NaN when no query qualifies).
    """
    attention = attention.float()
    n = ids.shape[-1]
    after_query0 = torch.arange(n) >= 1  # [query_pos]
    valid_any = after_query0[None].expand(ids.shape[0], n)  # [batch, query_pos]
    earlier = _earlier_same(ids)  # [batch, query_pos, key_pos]
    # induction keys: k = j + 1 for an earlier occurrence j, and k < q (never the query itself)
    induction_keys = torch.zeros_like(earlier)
    induction_keys[:, :, 1:] = earlier[:, :, :-1]
    induction_keys &= torch.ones(n, n, dtype=torch.bool).tril(-1)
    previous = torch.zeros(attention.shape[:-1])  # [batch, layer, head, query_pos]
    if n > 1:
        previous[..., 1:] = torch.diagonal(attention, offset=-1, dim1=-2, dim2=-1)
    return {
        "induction": _masked_mean((attention * induction_keys[:, None, None]).sum(-1), induction_keys.any(-1)),
        "duplicate": _masked_mean((attention * earlier[:, None, None]).sum(-1), earlier.any(-1)),
        "previous": _masked_mean(previous, valid_any),
        "first": _masked_mean(attention[..., 0], valid_any),
    }


def _norm_linear(bundle: ModelBundle, x: torch.Tensor) -> torch.Tensor:
    """The final norm with its scale frozen, applied to a component x [..., d_model]: gamma * (x - mean x) for
    LayerNorm, gamma * x for RMSNorm (a positive per-position scale is left out; it changes no ranking)."""
    form = final_norm_form(bundle)
    if form.centre:
        x = x - x.mean(dim=-1, keepdim=True)
    return x * form.weight.to(x.device, x.dtype)


def copying_scores(
    bundle: ModelBundle, attention: torch.Tensor, z: torch.Tensor, ids: torch.Tensor
) -> torch.Tensor:
    """Copying score [layer, head] (see the module docstring) from attention [batch, layer, head, query_pos,
    key_pos], head z [batch, layer, pos, head, d_head] and ids [batch, pos]."""
    n_batch, n_layers, n_heads, n_pos, _ = attention.shape
    w_u = bundle.adapter.unembed_weight(bundle.model).detach().to("cpu", torch.float32)  # [d_vocab, d_model]
    per_query = torch.zeros(n_batch, n_layers, n_heads, n_pos)
    for b in range(n_batch):
        unique, where = torch.unique(ids[b], return_inverse=True)  # where: [pos] index of each token in unique
        first_seen = torch.full((len(unique),), n_pos, dtype=torch.long).scatter_reduce(
            0, where, torch.arange(n_pos), reduce="amin")  # [n_unique] first position of each token
        in_context = first_seen[None, :] <= torch.arange(n_pos)[:, None]  # [query_pos, n_unique]
        w_ctx = w_u[unique]  # [n_unique, d_model]
        for layer in range(n_layers):
            out = torch.einsum("phd,hdm->phm", z[b, layer].float(), W_O(bundle, layer))  # [pos, head, d_model]
            dla = _norm_linear(bundle, out) @ w_ctx.T  # [pos, head, n_unique]
            dla = dla.masked_fill(~in_context[:, None, :], float("-inf"))
            best = dla.argmax(-1)  # [pos, head] index into unique
            hit = where[None, None, :] == best.T[:, :, None]  # [head, query_pos, key_pos]
            per_query[b, layer] = (attention[b, layer].float() * hit).sum(-1)  # [head, query_pos]
    valid = (torch.arange(n_pos) >= 1)[None].expand(n_batch, n_pos)
    return _masked_mean(per_query, valid)


def _norm_matrix(bundle: ModelBundle, norm: nn.Module) -> torch.Tensor:
    """The linear part of a norm as a [d_model, d_model] matrix acting on row vectors: x -> (x - mean x) * gamma
    for LayerNorm, x * gamma for RMSNorm (float64, CPU; the kind measured, components.norm_form). Its positive
    per-token scale is left out."""
    form = norm_form(bundle, norm)
    matrix = torch.diag(form.weight.double())
    if form.centre:
        matrix = (torch.eye(bundle.d_model, dtype=torch.float64) - 1.0 / bundle.d_model) @ matrix
    return matrix


def ov_copying_scores(bundle: ModelBundle) -> torch.Tensor:
    """Olsson et al.'s OV copying score of every head, [layer, head] in [-1, 1], from the weights alone.

    Each head's full OV circuit maps a token to logits, in TransformerLens' row-vector convention
    x @ W_E @ N_l @ W_V[kv] @ W_O[h] @ N_f @ W_U, with W_E [d_vocab, d_model] the token embedding (position
    embeddings left out), W_U [d_model, d_vocab] and kv = h // (n_heads // n_kv_heads) under grouped-query
    attention. The score is the summary statistic of "A Mathematical Framework for Transformer Circuits"
    (Elhage et al. 2021), used for copying heads in Olsson et al. 2022 and TransformerLens' demos:
    sum_i lambda_i / sum_i |lambda_i| over its eigenvalues (real: complex ones come in conjugate pairs). It is
    +1 when every eigenvalue is positive (the head raises the logits of the tokens it attends to), -1 when all
    are negative. The [d_vocab, d_vocab] matrix is never built: its nonzero eigenvalues are those of the
    [d_head, d_head] product W_O[h] @ N_f @ W_U @ W_E @ N_l @ W_V[kv] (AB and BA share them).

    Norms: N_l (the layer's attention norm, which W_E passes through on its direct path to the head) and N_f
    (the final norm) are their linear parts: mean-centring for LayerNorm, then the gain gamma; the positive
    per-token scale 1 / rms is dropped (the score does not change when the matrix is multiplied by a positive
    number) and so are biases (beta, b_V, b_O). This is what TransformerLens computes on a model loaded with its
    defaults (fold_ln and centre_writing_weights fold gamma and the centring into W_V and W_U).
    """
    adapter, model = bundle.adapter, bundle.model
    w_e = adapter.token_embedding(model).weight.detach()  # [d_vocab, d_model]
    w_u = adapter.unembed_weight(model).detach()  # [d_vocab, d_model] (nn.Linear layout)
    n_vocab = min(w_e.shape[0], w_u.shape[0])
    # N_f @ W_U @ W_E: [d_model, d_model]; the one product over the vocabulary, on the model's device
    ue = (w_u[:n_vocab].T.float() @ w_e[:n_vocab].float()).to("cpu", torch.float64)
    ue = _norm_matrix(bundle, adapter.final_norm(model)) @ ue
    group = bundle.n_heads // adapter.n_kv_heads(model)
    scores = torch.zeros(bundle.n_layers, bundle.n_heads)
    for layer, block in enumerate(adapter.blocks(model)):
        middle = ue @ _norm_matrix(bundle, adapter.attn_norm(block))  # [d_model, d_model]
        w_v = adapter.W_V(model, layer).detach().to("cpu", torch.float64)  # [kv_head, d_model, d_head]
        w_v = w_v.repeat_interleave(group, dim=0)  # [head, d_model, d_head]
        w_o = adapter.W_O(model, layer).detach().to("cpu", torch.float64)  # [head, d_head, d_model]
        eig = torch.linalg.eigvals(w_o @ middle @ w_v)  # [head, d_head] complex
        size = eig.abs().sum(-1)
        scores[layer] = torch.where(size > 0, eig.sum(-1).real / size.clamp(min=1e-300), torch.nan).float()
    return scores


# -- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HeadScores:
    """Every detector's score for every head, on one input (random repeated tokens or a prompt)."""

    scores: torch.Tensor  # [detector, layer, head] in [0, 1] (ov_copying in [-1, 1]); NaN: no query qualifies
    detectors: tuple[str, ...]  # names of the first axis, keys of DETECTORS
    source: str  # what the scores were measured on, in words

    def __post_init__(self) -> None:
        if self.scores.dim() != 3 or self.scores.shape[0] != len(self.detectors):
            raise ValueError(f"HeadScores.scores has shape {tuple(self.scores.shape)}, expected "
                             f"[{len(self.detectors)}, layer, head]")
        unknown = set(self.detectors) - set(DETECTORS)
        if unknown:
            raise ValueError(f"HeadScores: unknown detectors {sorted(unknown)}")

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[1])

    @property
    def n_heads(self) -> int:
        return int(self.scores.shape[2])

    def score(self, detector: str) -> torch.Tensor:
        """The [layer, head] scores of one detector."""
        if detector not in self.detectors:
            raise ValueError(f"No {detector!r} scores here; known: {', '.join(self.detectors)}")
        return self.scores[self.detectors.index(detector)]

    def top_heads(self, detector: str, k: int = 3, min_score: float = 0.0) -> list[Head]:
        """Up to `k` (layer, head) pairs with the highest `detector` score, at least `min_score`, best first."""
        flat = torch.nan_to_num(self.score(detector), nan=-1.0).flatten()
        order = torch.argsort(flat, descending=True)[:k]
        return [(int(i) // self.n_heads, int(i) % self.n_heads) for i in order if flat[i] >= min_score]

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows: detector, layer, head, head_label, score, source."""
        rows = []
        for d, name in enumerate(self.detectors):
            for layer in range(self.n_layers):
                for head in range(self.n_heads):
                    value = float(self.scores[d, layer, head])
                    rows.append({"detector": name, "layer": layer, "head": head,
                                 "head_label": head_label(layer, head), "score": value, "source": self.source})
        return pd.DataFrame(rows)

    def wide_frame(self) -> pd.DataFrame:
        """One row per head: layer, head, head_label, then one column per detector (NaN kept)."""
        frame = pd.DataFrame({"layer": [layer for layer in range(self.n_layers) for _ in range(self.n_heads)],
                              "head": list(range(self.n_heads)) * self.n_layers})
        frame["head_label"] = [head_label(layer, head) for layer, head in zip(frame["layer"], frame["head"],
                                                                               strict=True)]
        for d, name in enumerate(self.detectors):
            frame[name] = self.scores[d].flatten().tolist()  # [layer * head], layer-major like the rows
        return frame


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


# -- ablation hooks ----------------------------------------------------------------------------------------


def _check_heads(bundle: ModelBundle, heads: Iterable[Head]) -> tuple[Head, ...]:
    checked = []
    for layer, head in heads:
        if not (0 <= int(layer) < bundle.n_layers and 0 <= int(head) < bundle.n_heads):
            raise CircuitInputError(f"There is no head L{layer}H{head}: this model has {bundle.n_layers} layers "
                                    f"of {bundle.n_heads} heads.")
        checked.append((int(layer), int(head)))
    return tuple(sorted(set(checked)))


def _z_names(bundle: ModelBundle) -> list[str]:
    return [act_name("z", layer) for layer in range(bundle.n_layers)]


def head_z_means(bundle: ModelBundle, ids: torch.Tensor) -> torch.Tensor:
    """Each head's z averaged over every row and position of ids [batch, pos]: [layer, head, d_head]."""
    def mean(z: torch.Tensor) -> torch.Tensor:  # [batch, pos, head, d_head] -> [head, d_head]
        return z.float().mean(dim=(0, 1)).cpu()

    with torch.no_grad():
        acts = activations.run(bundle, ids, record={name: mean for name in _z_names(bundle)}).acts
    return torch.stack([acts[name] for name in _z_names(bundle)])  # [layer, head, d_head]


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


# -- running -----------------------------------------------------------------------------------------------


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
    mean-ablated (mean over every sequence and position of this batch; one extra forward), and return the
    detector scores, sequence 0's attention and the per-token loss."""
    sequences = repeated_tokens(bundle, length, seed, n_sequences, prepend_bos)
    heads = _check_heads(bundle, ablate)
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
                              record={name: cpu for name in patterns + _z_names(bundle)}, logits_to_keep=0)
    attention = torch.stack([out.acts[name] for name in patterns], dim=1)  # [batch, layer, head, q, k]
    z = [out.acts[name] for name in _z_names(bundle)]  # each [batch, pos, head, d_head]
    logits = out.logits.float()  # [batch, pos, d_vocab]
    loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none").cpu()  # [batch, pos-1]
    if progress:
        progress(0.7, "Scoring the heads")
    cpu_ids = sequences.ids
    by_name = attention_scores(attention, cpu_ids)
    by_name["copying"] = copying_scores(bundle, attention, torch.stack(z, dim=1), cpu_ids)
    by_name["ov_copying"] = ov_copying_scores(bundle)  # weights only: the same with or without an ablation
    source = f"{n_sequences} random sequences of {length} tokens repeated twice (seed {seed})"
    scores = HeadScores(torch.stack([by_name[d] for d in DETECTORS]), tuple(DETECTORS), source)
    tokens = [readable_token(t) for t in token_texts(bundle, cpu_ids[0])]
    if progress:
        progress(1.0, "Done")
    return RepeatedRun(sequences=sequences, tokens=tokens, attention=attention[0], loss=loss, scores=scores,
                       ablated=heads, ablation=mode if heads else "none")


def prompt_head_scores(bundle: ModelBundle, trace: Trace) -> HeadScores:
    """The detectors on the prompt of a cached trace (no forward pass). Induction and duplicate scores are NaN
    when no token of the prompt occurs twice."""
    ids = trace.token_ids[None]  # [batch=1, pos]
    attention = torch.stack([layer_pattern(bundle, trace, layer) for layer in range(trace.n_layers)])[None]
    by_name = attention_scores(attention, ids)  # attention: [batch=1, layer, head, query_pos, key_pos]
    by_name["copying"] = copying_scores(bundle, attention, trace.head_z[None], ids)
    by_name["ov_copying"] = ov_copying_scores(bundle)  # weights only
    return HeadScores(torch.stack([by_name[d] for d in DETECTORS]), tuple(DETECTORS), "the prompt")


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
) -> HeadAblation:
    """Ablate `heads` on the prompt ids [pos] and compare the last position's prediction with the intact run.

    Mean ablation uses each head's z averaged over every position of `reference_ids` (default: the prompt).
    Both runs are rows of one batched forward, so the only difference between them is the ablation.
    """
    heads = _check_heads(bundle, heads)
    if not heads:
        raise CircuitInputError("Pick at least one head to ablate.")
    means = None
    if mode == "mean":
        refs = list(reference_ids) or [ids]
        per_ref = [head_z_means(bundle, r[None]) * r.shape[-1] for r in refs]  # sums over positions
        means = torch.stack(per_ref).sum(0) / sum(r.shape[-1] for r in refs)  # [layer, head, d_head]
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
