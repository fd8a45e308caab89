"""Known truth for features: for each label a generator knows per token, the latent that matches it best, with its
precision (of the tokens where the latent fires, the share that carry the label) and recall (of the labelled
tokens, the share where it fires). "Best" is the highest F1, the harmonic mean of the two, as SAEBench's
feature-absorption and sparse-probing metrics pick one latent per concept. Beside it, the precise match: over every
latent and every activation threshold ("the latent fires above t"), the highest recall at precision >= PRECISE
(0.9); issue 20's bar is precision >= 0.9 and recall >= 0.5. A threshold is how a dashboard's top quantiles are
read: a latent's strongest activations are often precise where its weakest are not. Both fall short where a
latent tracks a wider concept (every name, not only IOI names) or a concept splits over several latents.

    >>> truth = known_truth(bundle, sae, card_rows(bundle.tokenizer))   # from the SAE's fired table of them
    >>> truth.to_frame()         # label, latent, precision, recall, f1, labelled tokens
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.features.card import FiredTable, fired_table
from interp_core.features.sae import SAE
from interp_core.loading import ModelBundle
from interp_core.organism.corpus import LABELS
from interp_core.organism.token_labels import LabelledRows

PRECISE = 0.9  # the precision a precise match needs


@dataclass(frozen=True)
class LabelMatch:
    label: str
    description: str
    latent: int  # the highest F1
    precision: float
    recall: float
    f1: float
    labelled_tokens: int
    precise_latent: int  # the highest recall at precision >= PRECISE; -1 when no latent is that precise
    precise_threshold: float  # ... counting the tokens where it fires at or above this activation
    precise_precision: float
    precise_recall: float


@dataclass(frozen=True, eq=False)
class KnownTruth:
    """One LabelMatch per label, over `n_tokens` tokens."""

    matches: tuple[LabelMatch, ...]
    n_tokens: int

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([m.__dict__ for m in self.matches])

    @property
    def n_met(self) -> int:
        """Labels whose precise match also has recall >= 0.5 (issue 20's bar)."""
        return sum(m.precise_latent >= 0 and m.precise_recall >= 0.5 for m in self.matches)


def _precise(table: FiredTable, labelled: torch.Tensor, n: int) -> tuple[int, float, float, float]:
    """(latent, threshold, precision, recall) of the highest recall at precision >= PRECISE, counting a latent's
    entries down from its largest; (-1, 0, 0, 0) when none is that precise. The table is sorted by latent, then
    value descending, so each entry's running count within its latent is the tokens at or above its value."""
    start = torch.searchsorted(table.latent, table.latent)  # [entry] where its latent's entries begin
    hits = labelled.double().cumsum(0)
    hits = hits - torch.cat([hits.new_zeros(1), hits])[start]  # labelled entries of its latent up to it
    rank = torch.arange(1, len(labelled) + 1, dtype=torch.double) - start
    # a threshold sits between distinct values: only an entry whose next one in its latent is smaller ends a cut
    last = torch.ones_like(labelled)
    last[:-1] = (table.latent[1:] != table.latent[:-1]) | (table.value[1:] < table.value[:-1])
    recall = torch.where(last & (hits / rank >= PRECISE), hits / max(n, 1), -1.0)
    if not bool((recall > 0).any()):
        return -1, 0.0, 0.0, 0.0
    best = int(recall.argmax())
    return int(table.latent[best]), float(table.value[best]), float(hits[best] / rank[best]), float(recall[best])


def label_matches(table: FiredTable, labels: dict[str, torch.Tensor],
                  descriptions: dict[str, str] | None = None) -> KnownTruth:
    """The best latent per label from a fired table and labels {name: [row, pos] bool} of its corpus."""
    count = torch.bincount(table.latent, minlength=table.d_sae).double()  # [latent] tokens where each fires
    matches = []
    for name, mask in labels.items():
        labelled = mask.flatten()[table.token]  # [entry] whether the entry's token has the label
        hits = torch.bincount(table.latent[labelled], minlength=table.d_sae).double()
        n = int(mask.sum())
        precision = hits / count.clamp(min=1)
        recall = hits / max(n, 1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        best = int(f1.argmax())
        matches.append(LabelMatch(name, (descriptions or {}).get(name, name), best, float(precision[best]),
                                  float(recall[best]), float(f1[best]), n, *_precise(table, labelled, n)))
    return KnownTruth(tuple(matches), table.n_tokens)


def known_truth(bundle: ModelBundle, sae: SAE, rows: LabelledRows, table: FiredTable | None = None) -> KnownTruth:
    """The best-matching latent of `sae` for each label of `rows` (see the module docstring); `table`, when
    given, is `sae`'s fired table of rows.ids already computed."""
    if table is None:
        table = fired_table(bundle, sae, rows.ids)
    elif not torch.equal(table.ids, rows.ids) or table.sae_digest != sae.digest:
        raise ValueError("The fired table is of another corpus or SAE")
    return label_matches(table, rows.labels, LABELS)
