"""Head detectors: attention scores, the copying proxy and the OV copying score of every head, and HeadScores.

    >>> scores = prompt_head_scores(bundle, trace)             # the detectors on the user's prompt (no forward)
    >>> scores.score("induction")                              # [layer, head] in [0, 1]
    >>> scores.top_heads("induction", k=2)                     # [(layer, head), ...] best first
    >>> scores.caption("induction")                            # what it measures, and TransformerLens' scale

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

Normalisation, compared with TransformerLens. Each attention score above is a mean over the query rows that
qualify (the "over ..." column). TransformerLens' head detector (transformer_lens/head_detector.py:
`detect_head` with its default error_measure="mul", `compute_head_attention_similarity_score`) multiplies the
same attention by a 0/1 detection pattern and divides the sum by the sum of the whole pattern, that is by ALL
query rows (each row of attention sums to 1), qualifying or not. For its three heads (previous_token_head,
duplicate_token_head, induction_head) on one sequence:
    ours = theirs x (all query rows) / (qualifying rows)
For a list of sequences it averages the per-sequence scores, so the relation holds over a batch when every
sequence has the same number of qualifying rows, as [BOS] A A does. There, induction qualifies the n queries of
the second copy out of 2n + 1 rows: theirs = ours x n / (2n + 1), about 0.49x ours for n = 20. (Its induction
pattern also counts key q itself when t_{q-1} = t_q; ours stops at k < q. [BOS] A A has no such pair.)
`HeadScores.query_rows` holds the two counts and `HeadScores.transformer_lens_factor` their ratio; the Circuits
page states it beside the scores.

Copying asks whether a head's output raises the logit of the token it attends to. The behavioural "copying"
score is a direct-effect proxy: DLA_q(t) is the direct logit effect of the head's output at q on token t
(through W_U and the final norm with its scale frozen); the score is the share of the head's attention that
lands on the context token (a token at a position <= q) its output raises most. Chance level is about
1 / (number of distinct tokens in context). "ov_copying" is Olsson et al.'s weight-based counterpart (see
`ov_copying_scores`): positive when the OV circuit maps tokens mostly onto themselves, -1 for an anti-copying
head. Both are shown: the proxy says what a head does on this input, the eigenvalues what its weights can do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from interp_core.adapters.base import stored
from interp_core.components import final_norm_form, head_outputs, norm_form
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
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
VOCAB_SLICE = 8192  # vocabulary rows per product in ov_copying_scores (GPT-2 small: 24 MiB of float32 a slice)
TRANSFORMER_LENS_NAMES = {  # our detector -> TransformerLens' head name (transformer_lens/head_detector.py)
    "previous": "previous_token_head",
    "duplicate": "duplicate_token_head",
    "induction": "induction_head",
}


class CircuitInputError(UserInputError):
    """A detector or ablation request that cannot run (sequence too long, unknown head, ...)."""


def head_label(layer: int, head: int) -> str:
    """"L1H3" for layer 1, head 3."""
    return f"L{layer}H{head}"


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


def _after_first(ids: torch.Tensor) -> torch.Tensor:
    """[batch, query_pos] True for every query after position 0 (the queries of previous, first and copying)."""
    return (torch.arange(ids.shape[-1]) >= 1)[None].expand(ids.shape[0], ids.shape[-1])


def _keys_and_queries(ids: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """For ids [batch, pos]: the keys each duplicate and induction sum runs over ([batch, query_pos, key_pos]),
    and the queries each attention detector averages over ([batch, query_pos]), as in the module docstring."""
    n = ids.shape[-1]
    earlier = _earlier_same(ids)  # [batch, query_pos, key_pos]
    # induction keys: k = j + 1 for an earlier occurrence j, and k < q (never the query itself)
    induction_keys = torch.zeros_like(earlier)
    induction_keys[:, :, 1:] = earlier[:, :, :-1]
    induction_keys &= torch.ones(n, n, dtype=torch.bool).tril(-1)
    after_query0 = _after_first(ids)
    keys = {"induction": induction_keys, "duplicate": earlier}
    queries = {"induction": induction_keys.any(-1), "duplicate": earlier.any(-1), "previous": after_query0,
               "first": after_query0, "copying": after_query0}
    return keys, queries


def query_rows(ids: torch.Tensor) -> dict[str, tuple[int, int]]:
    """For ids [batch, pos]: detector -> (query rows its mean runs over, all batch * pos query rows), for every
    detector but ov_copying (which reads no attention). The ratio relates our scores to TransformerLens'."""
    _, queries = _keys_and_queries(ids)
    return {name: (int(mask.sum()), mask.numel()) for name, mask in queries.items()}


def attention_scores(attention: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four attention-only detectors for attention [batch, layer, head, query_pos, key_pos] on ids
    [batch, pos]: {"induction", "duplicate", "previous", "first"} -> [layer, head] (NaN when no query qualifies).
    """
    attention = attention.float()
    n = ids.shape[-1]
    keys, queries = _keys_and_queries(ids)
    previous = torch.zeros(attention.shape[:-1])  # [batch, layer, head, query_pos]
    if n > 1:
        previous[..., 1:] = torch.diagonal(attention, offset=-1, dim1=-2, dim2=-1)
    return {
        "induction": _masked_mean((attention * keys["induction"][:, None, None]).sum(-1), queries["induction"]),
        "duplicate": _masked_mean((attention * keys["duplicate"][:, None, None]).sum(-1), queries["duplicate"]),
        "previous": _masked_mean(previous, queries["previous"]),
        "first": _masked_mean(attention[..., 0], queries["first"]),
    }


def copying_scores(
    bundle: ModelBundle, attention: torch.Tensor, z: torch.Tensor, ids: torch.Tensor, first_layer: int = 0
) -> torch.Tensor:
    """Copying score [layer, head] (see the module docstring) from attention [batch, layer, head, query_pos,
    key_pos], head z [batch, layer, pos, head, d_head] and ids [batch, pos]; the layer axis starts at the
    model's layer `first_layer`."""
    n_batch, n_layers, n_heads, n_pos, _ = attention.shape
    w_u = bundle.adapter.unembed_weight(bundle.model).detach()  # [d_vocab, d_model], read row by row below
    per_query = torch.zeros(n_batch, n_layers, n_heads, n_pos)
    for b in range(n_batch):
        unique, where = torch.unique(ids[b], return_inverse=True)  # where: [pos] index of each token in unique
        first_seen = torch.full((len(unique),), n_pos, dtype=torch.long).scatter_reduce(
            0, where, torch.arange(n_pos), reduce="amin")  # [n_unique] first position of each token
        in_context = first_seen[None, :] <= torch.arange(n_pos)[:, None]  # [query_pos, n_unique]
        w_ctx = w_u[unique.to(w_u.device)].to("cpu", torch.float32)  # [n_unique, d_model]
        for layer in range(n_layers):
            out = head_outputs(bundle, z[b, layer], first_layer + layer)  # [pos, head, d_model]
            # the final norm's linear part with its positive per-position scale left out: it changes no ranking
            dla = final_norm_form(bundle).linear(out) @ w_ctx.T  # [pos, head, n_unique]
            dla = dla.masked_fill(~in_context[:, None, :], float("-inf"))
            best = dla.argmax(-1)  # [pos, head] index into unique
            hit = where[None, None, :] == best.T[:, :, None]  # [head, query_pos, key_pos]
            per_query[b, layer] = (attention[b, layer].float() * hit).sum(-1)  # [head, query_pos]
    return _masked_mean(per_query, _after_first(ids))


def _norm_matrix(bundle: ModelBundle, norm: nn.Module) -> torch.Tensor:
    """The linear part of a norm as a [d_model, d_model] matrix acting on row vectors: x -> (x - mean x) * gamma
    for LayerNorm, x * gamma for RMSNorm (float64, CPU; the kind measured, components.norm_form). Its positive
    per-token scale is left out. It is NormForm.linear applied to the rows of the identity."""
    return norm_form(bundle, norm).linear(torch.eye(bundle.d_model, dtype=torch.float64))


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
    w_e = stored(adapter.token_embedding(model), "weight").detach()  # [d_vocab, d_model]
    w_u = adapter.unembed_weight(model).detach()  # [d_vocab, d_model] (nn.Linear layout)
    n_vocab = min(w_e.shape[0], w_u.shape[0])
    # N_f @ W_U @ W_E: [d_model, d_model]; the one product over the vocabulary, on the model's device, summed over
    # slices of it (a half-precision model's weights are never copied whole to float32)
    ue = sum((w_u[i:i + VOCAB_SLICE].T.float() @ w_e[i:i + VOCAB_SLICE].float()).to("cpu", torch.float64)
             for i in range(0, n_vocab, VOCAB_SLICE))
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
    query_rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # detector -> (qualifying, all) rows

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

    def transformer_lens_factor(self, detector: str) -> float | None:
        """theirs / ours: what TransformerLens' head detector gives for `detector` here relative to our score,
        (qualifying query rows) / (all query rows) (see the module docstring); None for a detector it does not
        have, or when no query qualifies."""
        qualifying, total = self.query_rows.get(detector, (0, 0))
        if detector not in TRANSFORMER_LENS_NAMES or qualifying == 0:
            return None
        return qualifying / total

    def caption(self, detector: str) -> str:
        """What `detector` measures and what it was measured on; for the detectors TransformerLens also has, how
        its head detector's numbers relate to these (the same attention divided by all query rows)."""
        text = f"Measured on {self.source}. {DETECTORS[detector].capitalize()}."
        factor = self.transformer_lens_factor(detector)
        if factor is not None:
            qualifying, total = self.query_rows[detector]
            text += (f" Each score is a mean over the {qualifying} query rows that qualify. TransformerLens' "
                     f"head_detector (detect_head, \"{TRANSFORMER_LENS_NAMES[detector]}\") divides the same sum by "
                     f"all {total} query rows, so its scores here are {factor:.2f}x these.")
        return text

    def note(self, detector: str) -> str | None:
        """Why every head's `detector` score is undefined (NaN) on this input, in words; None when it is defined."""
        if not bool(self.score(detector).isnan().all()):
            return None
        if self.query_rows.get("previous", (0, 0))[0] == 0:  # one token: no query after position 0
            return "Detectors need at least two tokens: type a longer prompt in the sidebar."
        return (f"No token occurs twice in {self.source}, so the induction and duplicate-token scores are undefined "
                "there (grey). Repeat a phrase to measure them.")

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


def score_heads(bundle: ModelBundle, layer_attention: Callable[[int], torch.Tensor], z: torch.Tensor,
                ids: torch.Tensor, source: str) -> HeadScores:
    """Every detector from layer_attention(layer) -> attention [batch, head, query_pos, key_pos], head z
    [batch, layer, pos, head, d_head] and ids [batch, pos]; `source` says in words what the input was. One
    layer's attention at a time: a long prompt's patterns of every layer are never held together."""
    per_layer: dict[str, list[torch.Tensor]] = {}
    for layer in range(bundle.n_layers):
        attention = layer_attention(layer)[:, None]  # [batch, 1, head, q, k]
        by_name = attention_scores(attention, ids)
        by_name["copying"] = copying_scores(bundle, attention, z[:, layer:layer + 1], ids, first_layer=layer)
        for name, score in by_name.items():  # each [1, head]
            per_layer.setdefault(name, []).append(score)
        del attention
    by_name = {name: torch.cat(scores) for name, scores in per_layer.items()}  # [layer, head]
    by_name["ov_copying"] = ov_copying_scores(bundle)  # weights only: the same for every input and ablation
    return HeadScores(torch.stack([by_name[d] for d in DETECTORS]), tuple(DETECTORS), source, query_rows(ids))


def prompt_head_scores(bundle: ModelBundle, trace: Trace) -> HeadScores:
    """The detectors on the prompt of a cached trace (no forward pass), each layer's pattern computed from the
    trace when it is scored. Induction and duplicate scores are NaN when no token of the prompt occurs twice."""
    return score_heads(bundle, lambda layer: layer_pattern(bundle, trace, layer)[None], trace.head_z[None],
                       trace.token_ids[None], "the prompt")
