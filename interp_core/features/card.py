"""A feature's dashboard card from a corpus of token rows, in the layout of SAEDashboard (sae_vis) and Neuronpedia:
top-activating contexts, contexts sampled from equal-width activation intervals, the tokens the decoder direction
promotes and suppresses, the activation and logit histograms and the density; and the top features of one prompt.

Every non-zero latent activation over the corpus is kept once, sparse (`fired_table`); a card reads one latent's
entries from it. The intervals follow SAEDashboard's `sequence_data_generator.py` (`get_indices_dict`): the range
from 0 to the latent's max activation cut into `n_bins` equal-width intervals, highest first, each with up to
`per_bin` contexts drawn at random (seeded); here an interval is (low, high], so zeros are never in one and the
intervals are disjoint, and its share is of all corpus tokens (SAEDashboard's "CONTAINS x%").

    >>> table = fired_table(bundle, sae, rows)              # rows [row, pos] token ids, capped by the caller
    >>> card = feature_card(bundle, sae, table, latent=7)   # contexts, logit effects, histograms, density
    >>> card.to_frame(); card.neuronpedia_json("organism")
    >>> top_features(bundle, sae, trace).to_frame()          # the most active latents at each token of a prompt
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core import activations, budget
from interp_core.components import W_O, final_norm_form
from interp_core.errors import UserInputError
from interp_core.features.sae import SAE
from interp_core.lens.lens import decode_ids
from interp_core.loading import ModelBundle
from interp_core.trace import Trace

Progress = Callable[[float, str], None]

ROWS_PER_PASS = 64  # corpus rows per forward pass (also bounded by the memory budget)
CHUNK_FLOATS = 1 << 22  # latents encoded at once: 16 MiB of float32, whatever d_sae is
WINDOW_BEFORE, WINDOW_AFTER = 12, 4  # tokens shown before and after a context's peak
N_BINS = 10  # SAEDashboard's n_quantiles
HIST_BINS = 40  # SAEDashboard's histogram bins
N_LOGITS = 10  # promoted and suppressed tokens shown (SAEDashboard's logits table rows)
RESIDUAL_KINDS = {"embed", "pos_embed", "resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_in"}
_READABLE = str.maketrans({"␣": " ", "↵": "\n", "⇥": "\t"})


class FeatureError(UserInputError):
    """A latent or a feature setting that does not fit the SAE."""


def check_latent(sae: SAE, latent: int) -> int:
    """`latent` as an int; raises FeatureError when the SAE has no such latent."""
    if isinstance(latent, bool) or not isinstance(latent, numbers.Integral) or not 0 <= latent < sae.d_sae:
        raise FeatureError(f"Latent {latent!r} does not exist: this SAE has latents 0 to {sae.d_sae - 1}.")
    return int(latent)


# -- every non-zero activation over a corpus --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FiredTable:
    """Every non-zero latent activation of `sae` over corpus rows `ids`, sorted by latent, then value descending."""

    token: torch.LongTensor  # [n] flat token index row * pos + p
    latent: torch.LongTensor  # [n]
    value: torch.Tensor  # [n] float32, > 0 for the ReLU-based architectures
    ids: torch.LongTensor  # [row, pos] the corpus
    d_sae: int
    hook_name: str
    sae_digest: str  # SAE.digest of the SAE that made it

    def __post_init__(self) -> None:
        n = self.token.shape[0]
        if self.ids.dim() != 2 or any(t.shape != (n,) for t in (self.latent, self.value)):
            shapes = [tuple(t.shape) for t in (self.token, self.latent, self.value)]
            raise ValueError(f"FiredTable: ids {tuple(self.ids.shape)} must be [row, pos] and token, latent and "
                             f"value one [n] each, not {shapes}")
        if n > 1 and bool((self.latent[1:] < self.latent[:-1]).any()):
            raise ValueError("FiredTable: entries must be sorted by latent (then value descending)")

    @property
    def n_tokens(self) -> int:
        return self.ids.numel()

    def entries(self, latent: int) -> tuple[torch.LongTensor, torch.Tensor]:
        """(token [m], value [m]) where `latent` fires, largest value first."""
        start, end = torch.searchsorted(self.latent, torch.tensor([latent, latent + 1])).tolist()
        return self.token[start:end], self.value[start:end]

    def latent_activations(self, latent: int) -> torch.Tensor:
        """[row, pos] float32: `latent`'s activation at every corpus token (zeros where it does not fire)."""
        token, value = self.entries(latent)
        dense = torch.zeros(self.n_tokens)
        dense[token] = value
        return dense.view(self.ids.shape)

    def densities(self) -> torch.Tensor:
        """[d_sae] the share of corpus tokens on which each latent fires."""
        return torch.bincount(self.latent, minlength=self.d_sae).float() / max(self.n_tokens, 1)


def _nonzero_latents(sae: SAE, acts: torch.Tensor) -> tuple[torch.LongTensor, torch.LongTensor, torch.Tensor]:
    """(token, latent, value) of the non-zero latents of acts [token, d_in], encoded CHUNK_FLOATS at a time."""
    step = max(1, CHUNK_FLOATS // sae.d_sae)
    parts = []
    for start in range(0, acts.shape[0], step):
        f = sae.encode(acts[start:start + step])  # [chunk, d_sae]
        where = f.nonzero()  # [m, 2] (token in chunk, latent)
        parts.append((where[:, 0] + start, where[:, 1], f[where[:, 0], where[:, 1]]))
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def fired_table(bundle: ModelBundle, sae: SAE, ids: torch.Tensor, progress: Progress | None = None) -> FiredTable:
    """Every non-zero activation of `sae` on corpus rows ids [row, pos] (the caller caps their number), one
    `activations.run` per batch of rows; `progress(fraction, text)` after each batch."""
    if ids.dim() != 2 or ids.numel() == 0:
        raise FeatureError("The corpus is empty: give at least one row of tokens.")
    rows = min(ROWS_PER_PASS, budget.rows_per_chunk(bundle, ids.shape[1], keep=1, grad=False))
    parts = []
    for start in range(0, len(ids), rows):
        with torch.no_grad():
            acts = activations.run(bundle, ids[start:start + rows], record=[sae.hook_name],
                                   fused_attention=True).acts[sae.hook_name]  # [batch, pos, d_in]
        token, latent, value = _nonzero_latents(sae, acts.float().cpu().flatten(0, 1))
        parts.append((token + start * ids.shape[1], latent, value))
        if progress is not None:
            done = min(start + rows, len(ids))
            progress(done / len(ids), f"Encoding the corpus: {done:,} of {len(ids):,} rows")
    token, latent, value = (torch.cat(column) for column in zip(*parts, strict=True))
    by_value = torch.sort(value, descending=True, stable=True).indices
    order = by_value[torch.sort(latent[by_value], stable=True).indices]  # by latent, then value descending
    return FiredTable(token[order], latent[order], value[order], ids.cpu(), sae.d_sae, sae.hook_name, sae.digest)


# -- one feature's card -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """One corpus token where the latent fires, with a window of tokens around it."""

    row: int
    pos: int
    activation: float  # the latent's value at (row, pos)
    tokens: tuple[str, ...]  # [window] readable tokens, WINDOW_BEFORE before the peak to WINDOW_AFTER after
    values: tuple[float, ...]  # [window] the latent's activation at each window token
    peak: int  # index of (row, pos) in the window

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.values) or not 0 <= self.peak < len(self.tokens):
            raise ValueError(f"Context: {len(self.tokens)} tokens, {len(self.values)} values, peak {self.peak}")


@dataclass(frozen=True, eq=False)
class Histogram:
    """Counts of values in equal-width bins (empty when there are no values)."""

    counts: torch.Tensor  # [bins] float (whole numbers)
    edges: torch.Tensor  # [bins + 1]

    def __post_init__(self) -> None:
        if self.edges.shape[0] != self.counts.shape[0] + (1 if self.counts.numel() else 0):
            raise ValueError(f"Histogram: {self.counts.shape[0]} counts but {self.edges.shape[0]} edges")

    @classmethod
    def of(cls, values: torch.Tensor, bins: int = HIST_BINS) -> Histogram:
        if values.numel() == 0:
            return cls(torch.zeros(0), torch.zeros(0))
        return cls(*torch.histogram(values.float(), bins=bins))

    @property
    def midpoints(self) -> torch.Tensor:
        """[bins] the centre of each bin (SAEDashboard's bar_values)."""
        return (self.edges[:-1] + self.edges[1:]) / 2


@dataclass(frozen=True, eq=False)
class FeatureCard:
    """One latent's dashboard over a corpus of `n_tokens` tokens (see the module docstring).

    `bins[i]` is (label, contexts) and `bin_bounds[i]` its (low, high, share of corpus tokens): first "top" (the
    k highest activations; low is the k-th highest), then the intervals from the highest down.
    """

    latent: int
    hook_name: str
    density: float  # share of corpus tokens where it fires
    n_tokens: int
    max_activation: float  # 0 for a dead latent
    bins: tuple[tuple[str, tuple[Context, ...]], ...]  # [bin]
    bin_bounds: tuple[tuple[float, float, float], ...]  # [bin] (low, high, share)
    promoted: tuple[tuple[str, float], ...]  # [N_LOGITS] (token, logit effect), largest first
    suppressed: tuple[tuple[str, float], ...]  # [N_LOGITS] most negative first
    histogram: Histogram  # of the non-zero activations
    logit_histogram: Histogram  # of the decoder direction's logit effect on every token of the vocabulary
    dead: bool  # fires on no corpus token

    def __post_init__(self) -> None:
        if len(self.bins) != len(self.bin_bounds):
            raise ValueError(f"FeatureCard: {len(self.bins)} bins but {len(self.bin_bounds)} bounds")
        if self.dead != (self.density == 0) or not 0 <= self.density <= 1:
            raise ValueError(f"FeatureCard: density {self.density} with dead={self.dead}")

    def to_frame(self) -> pd.DataFrame:
        """One row per context: bin, row, pos, activation, peak_token, text (the window's tokens joined)."""
        return pd.DataFrame(
            [{"bin": label, "row": c.row, "pos": c.pos, "activation": c.activation, "peak_token": c.tokens[c.peak],
              "text": "".join(c.tokens)} for label, contexts in self.bins for c in contexts],
            columns=["bin", "row", "pos", "activation", "peak_token", "text"])

    def neuronpedia_json(self, model_id: str, source_set: str = "workbench") -> dict:
        """This card as one feature of Neuronpedia's upload format, with its activations nested: the field names of
        SAEDashboard's `sae_dashboard/neuronpedia/neuronpedia_export.py` (dataclasses `Feature` and `Activation`;
        `layer` is the source id "{layer}-{source_set}" as its `_build_source_id` writes it). As there, the top
        group has binMin -1, binMax the max activation and binContains -1 (`neuronpedia_converter.py`), and
        lists are rounded to 3 decimals. Tokens are the raw texts (the readable marks turned back)."""
        match = re.match(r"blocks\.(\d+)\.", self.hook_name)
        layer = f"{match.group(1) if match else self.hook_name}-{source_set}"
        ids = {"modelId": model_id, "layer": layer, "index": str(self.latent)}
        return {
            **ids, "hookName": self.hook_name, "maxActApprox": round(self.max_activation, 3),
            "frac_nonzero": self.density,
            "pos_str": [_raw(t) for t, _ in self.promoted], "pos_values": _rounded(v for _, v in self.promoted),
            "neg_str": [_raw(t) for t, _ in self.suppressed], "neg_values": _rounded(v for _, v in self.suppressed),
            "freq_hist_data_bar_heights": _rounded(self.histogram.counts.tolist()),
            "freq_hist_data_bar_values": _rounded(self.histogram.midpoints.tolist()),
            "logits_hist_data_bar_heights": _rounded(self.logit_histogram.counts.tolist()),
            "logits_hist_data_bar_values": _rounded(self.logit_histogram.midpoints.tolist()),
            "activations": [_activation_json(ids, c, bounds, label == "top")
                            for (label, contexts), bounds in zip(self.bins, self.bin_bounds, strict=True)
                            for c in contexts],
        }


def _raw(token: str) -> str:
    return token.translate(_READABLE)


def _rounded(values) -> list[float]:
    return [round(float(v), 3) for v in values]


def _activation_json(ids: dict, context: Context, bounds: tuple[float, float, float], top: bool) -> dict:
    values = _rounded(context.values)
    low, high, share = (-1.0, bounds[1], -1.0) if top else bounds
    return {**ids, "tokens": [_raw(t) for t in context.tokens], "values": values, "maxValue": max(values),
            "maxValueTokenIndex": values.index(max(values)), "minValue": min(values),
            "binMin": round(low, 3), "binMax": round(high, 3), "binContains": share,
            "qualifyingTokenIndex": context.peak}


def decoder_direction(bundle: ModelBundle, sae: SAE, latent: int) -> torch.Tensor | None:
    """What one unit of `latent` writes into the residual stream, [d_model] float32: W_dec[latent] for an SAE on
    the residual stream or a block's output; through W_O for hook_z (one head's or all heads'), as SAEDashboard
    does; through W_out for mlp.hook_post. None for other activations (q, k, v, the final norm's output)."""
    name = activations.parse_name(bundle, sae.hook_name)
    row = sae.W_dec[latent].float()  # [d_in]
    if name.kind in RESIDUAL_KINDS:
        return row
    if name.kind == "z":
        w_o = W_O(bundle, name.layer)  # [head, d_head, d_model]
        return row @ (w_o.flatten(0, 1) if name.head is None else w_o[name.head])
    if name.kind == "post":
        return row @ bundle.adapter.W_out(bundle.model, name.layer).detach().to("cpu", torch.float32)
    return None


def logit_effects(bundle: ModelBundle, sae: SAE, latent: int) -> torch.Tensor:
    """[d_vocab] float32: the decoder direction's direct effect on every logit, W_U @ final_norm_linear(direction)
    with the norm's scale at 1 (`NormForm.linear`; no activation scale needed). SAEDashboard computes W_dec @ W_U
    after TransformerLens folded the final norm's weight into W_U; this is the same up to a positive factor (and,
    for LayerNorm, a constant over the vocabulary), so rankings and signs agree. Empty when the SAE's activation
    has no direction in the residual stream (see decoder_direction)."""
    direction = decoder_direction(bundle, sae, latent)
    if direction is None:
        return torch.zeros(0)
    weight = bundle.adapter.unembed_weight(bundle.model).detach()  # [d_vocab, d_model]
    normed = final_norm_form(bundle).linear(direction, scale=1.0)  # [d_model]
    return (weight @ normed.to(weight.device, weight.dtype)).to("cpu", torch.float32)


def _token_effects(bundle: ModelBundle, effects: torch.Tensor) -> tuple[tuple, tuple]:
    """(promoted, suppressed): the N_LOGITS tokens with the largest and the most negative effects."""
    k = min(N_LOGITS, effects.shape[0])
    up, down = effects.topk(k), (-effects).topk(k)
    names = decode_ids(bundle, torch.cat([up.indices, down.indices]))
    return (tuple((names[int(i)], float(v)) for i, v in zip(up.indices, up.values, strict=True)),
            tuple((names[int(i)], -float(v)) for i, v in zip(down.indices, down.values, strict=True)))


def _contexts(bundle: ModelBundle, table: FiredTable, latent: int, tokens: torch.Tensor) -> tuple[Context, ...]:
    """The Context of each flat corpus token in `tokens` [m]."""
    if tokens.numel() == 0:
        return ()
    dense = table.latent_activations(latent)  # [row, pos]
    n_pos = table.ids.shape[1]
    spans = []  # (row, pos, window start, window end)
    for token in tokens.tolist():
        row, pos = divmod(token, n_pos)
        spans.append((row, pos, max(0, pos - WINDOW_BEFORE), min(n_pos, pos + WINDOW_AFTER + 1)))
    names = decode_ids(bundle, torch.cat([table.ids[r, s:e] for r, _, s, e in spans]))
    return tuple(Context(row, pos, float(dense[row, pos]), tuple(names[i] for i in table.ids[row, s:e].tolist()),
                         tuple(dense[row, s:e].tolist()), pos - s) for row, pos, s, e in spans)


def _interval_bins(token: torch.Tensor, value: torch.Tensor, n_tokens: int, per_bin: int,
                   seed: int) -> list[tuple[str, torch.Tensor, tuple[float, float, float]]]:
    """(label, sampled tokens, (low, high, share)) of each interval (low, high] of 0..max, highest first."""
    edges = torch.linspace(0, float(value[0]), N_BINS + 1).tolist()
    edges[-1] = float(value[0])  # the max itself, whatever linspace rounded it to
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(N_BINS - 1, -1, -1):
        low, high = edges[i], edges[i + 1]
        inside = ((value > low) & (value <= high)).nonzero().flatten()
        picked = inside[torch.randperm(len(inside), generator=generator)[:per_bin]].sort().values  # by value
        out.append((f"{low:.3g} to {high:.3g}", token[picked], (low, high, len(inside) / n_tokens)))
    return out


def feature_card(bundle: ModelBundle, sae: SAE, table: FiredTable, latent: int, k: int = 20, per_bin: int = 5,
                 seed: int = 0) -> FeatureCard:
    """The card of `latent` over `table`'s corpus: the `k` top contexts, then up to `per_bin` seeded random
    contexts from each of N_BINS activation intervals (module docstring), logit effects (`logit_effects`),
    histograms. A latent that never fires gives a card with `dead` set and no contexts."""
    latent = check_latent(sae, latent)
    if table.sae_digest != sae.digest:
        raise ValueError("The fired table was computed with another SAE")
    if k < 1 or per_bin < 0:
        raise FeatureError(f"Show at least one top context and no negative number per bin (got {k} and {per_bin}).")
    token, value = table.entries(latent)
    effects = logit_effects(bundle, sae, latent)
    promoted, suppressed = _token_effects(bundle, effects) if effects.numel() else ((), ())
    bins, bounds = [], []
    if token.numel():
        top = min(k, token.numel())
        bins.append(("top", _contexts(bundle, table, latent, token[:top])))
        bounds.append((float(value[top - 1]), float(value[0]), top / table.n_tokens))
        for label, picked, bound in _interval_bins(token, value, table.n_tokens, per_bin, seed):
            bins.append((label, _contexts(bundle, table, latent, picked)))
            bounds.append(bound)
    return FeatureCard(
        latent=latent, hook_name=sae.hook_name, density=token.numel() / table.n_tokens, n_tokens=table.n_tokens,
        max_activation=float(value[0]) if token.numel() else 0.0, bins=tuple(bins), bin_bounds=tuple(bounds),
        promoted=promoted, suppressed=suppressed, histogram=Histogram.of(value), logit_histogram=Histogram.of(effects),
        dead=token.numel() == 0)


# -- one prompt's top features ----------------------------------------------------------------------------------


DENSE = 0.1  # a latent firing on more of a corpus than this is dense: not the page's first pick


@dataclass(frozen=True, eq=False)
class PromptFeatures:
    """The `k` most active latents at each token of one prompt, and every non-zero activation (`table`)."""

    tokens: tuple[str, ...]  # [pos] readable
    latents: torch.LongTensor  # [pos, k] most active first; -1 where fewer than k latents fire
    values: torch.Tensor  # [pos, k] float32; 0 where fewer than k latents fire
    table: FiredTable  # the prompt as a one-row corpus

    def __post_init__(self) -> None:
        n_pos = len(self.tokens)
        if self.latents.dim() != 2 or self.latents.shape[0] != n_pos or self.values.shape != self.latents.shape:
            raise ValueError(f"PromptFeatures: {n_pos} tokens, latents {tuple(self.latents.shape)}, values "
                             f"{tuple(self.values.shape)}; expected [pos, k] each")

    def specific_latent(self, densities: torch.Tensor | None = None, max_density: float = DENSE) -> int:
        """The most active latent at the last token among those firing on under `max_density` of a corpus
        (`densities` [d_sae], FiredTable.densities): a latent that fires everywhere says little about this prompt.
        Without densities, or where every shown latent is denser, the most active; 0 where none fires."""
        fired = [int(latent) for latent in self.latents[-1] if latent >= 0]
        specific = [latent for latent in fired if densities is None or float(densities[latent]) < max_density]
        return (specific or fired or [0])[0]

    def latent_values(self, latent: int) -> torch.Tensor:
        """[pos] float32: `latent`'s activation at each token (for colouring the prompt by a feature)."""
        return self.table.latent_activations(latent)[0]

    def to_frame(self) -> pd.DataFrame:
        """One row per (token, active latent): pos, token, rank (1 = most active), latent, activation."""
        pos, rank = (self.values > 0).nonzero(as_tuple=True)
        return pd.DataFrame({"pos": pos.tolist(), "token": [self.tokens[p] for p in pos.tolist()],
                             "rank": (rank + 1).tolist(), "latent": self.latents[pos, rank].tolist(),
                             "activation": self.values[pos, rank].tolist()})


def top_features(bundle: ModelBundle, sae: SAE, trace_or_ids: Trace | torch.Tensor, k: int = 5) -> PromptFeatures:
    """The `k` most active latents of `sae` at each token of a prompt (a Trace, or token ids [pos])."""
    if k < 1:
        raise FeatureError(f"Show at least one latent per token (got {k}).")
    ids = trace_or_ids.token_ids if isinstance(trace_or_ids, Trace) else trace_or_ids
    table = fired_table(bundle, sae, ids.reshape(1, -1))
    n_pos, k = ids.shape[0], min(k, sae.d_sae)
    by_value = torch.sort(table.value, descending=True, stable=True).indices
    order = by_value[torch.sort(table.token[by_value], stable=True).indices]  # by token, then value descending
    token = table.token[order]
    counts = torch.bincount(token, minlength=n_pos)
    rank = torch.arange(len(token)) - (counts.cumsum(0) - counts)[token]  # 0 for each token's largest
    keep = rank < k
    latents, values = torch.full((n_pos, k), -1, dtype=torch.long), torch.zeros(n_pos, k)
    latents[token[keep], rank[keep]] = table.latent[order][keep]
    values[token[keep], rank[keep]] = table.value[order][keep]
    if isinstance(trace_or_ids, Trace):
        tokens = tuple(trace_or_ids.tokens)
    else:
        names = decode_ids(bundle, ids)
        tokens = tuple(names[i] for i in ids.tolist())
    return PromptFeatures(tokens, latents, values, table)
