"""Rows of organism tokens with the generator's labels per token (corpus.LABELS): the known truth a sparse
autoencoder's features are checked against, and text to train one on.

    >>> rows = labelled_rows(bundle.tokenizer, n_rows=512, seed=21)
    >>> rows.ids.shape, rows.labels["country"].shape      # [row, pos] each; labels are bool

Text rows are built as the organism's training rows were (`train.RowSampler.text_row`): documents of the corpus
mixture, each tokenised on its own and followed by EOS, until the row is full. A token carries a label when its
characters overlap a labelled span. Induction rows are random tokens with one random sequence (10-40 tokens)
repeated right after itself, amid random tokens; the second copy's tokens carry "second_copy".
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from interp_core.organism.corpus import LABELS, CorpusMix, held_out_name_pairs, labelled_document

INDUCTION_SHARE = 0.25  # of the rows (the organism trained on 30% induction rows in its first phase)
COPY_LENGTHS = (10, 40)  # a repeated sequence's length, as in training
# Seeds of each use's draws, so that none reads another's text: the Features page's cards and known-truth table,
# and the page's own SAE training (the shipped SAE trains and is measured on organism.train's rows).
CARD_SEED, APP_TRAINING_SEED = 41, 45
CARD_ROWS = 512  # 65,536 tokens


@dataclass(frozen=True, eq=False)
class LabelledRows:
    """Token ids [row, pos] and, per label of corpus.LABELS, a bool mask [row, pos]."""

    ids: torch.Tensor
    labels: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        for name, mask in self.labels.items():
            if tuple(mask.shape) != tuple(self.ids.shape) or mask.dtype != torch.bool:
                raise ValueError(f"LabelledRows.labels[{name!r}] must be bool of shape {tuple(self.ids.shape)}")

    @property
    def n_tokens(self) -> int:
        return self.ids.numel()


def _document_tokens(tokenizer, rng: random.Random, mix: CorpusMix, held_out) -> tuple[list[int], list[set[str]]]:
    """One document's token ids (EOS appended) and each token's labels."""
    doc = labelled_document(rng, mix, held_out)
    encoded = tokenizer(doc.text, return_offsets_mapping=True)
    labels = [{name for name, a, b in doc.spans if start < b and end > a and end > start}
              for start, end in encoded["offset_mapping"]]
    return encoded["input_ids"] + [tokenizer.eos_token_id], labels + [set()]


def _text_row(tokenizer, rng: random.Random, n_ctx: int, mix: CorpusMix, held_out):
    ids: list[int] = []
    labels: list[set[str]] = []
    while len(ids) < n_ctx:
        doc_ids, doc_labels = _document_tokens(tokenizer, rng, mix, held_out)
        ids, labels = ids + doc_ids, labels + doc_labels
    return ids[:n_ctx], labels[:n_ctx]


def _induction_row(rng: random.Random, vocab: list[int], n_ctx: int):
    length = rng.randint(*COPY_LENGTHS)
    row = [rng.choice(vocab) for _ in range(n_ctx)]
    start = rng.randint(0, n_ctx - 2 * length)
    row[start + length: start + 2 * length] = row[start: start + length]
    labels = [{"second_copy"} if start + length <= i < start + 2 * length else set() for i in range(n_ctx)]
    return row, labels


def labelled_rows(tokenizer, n_rows: int, seed: int, n_ctx: int = 128,
                  induction_share: float = INDUCTION_SHARE) -> LabelledRows:
    """`n_rows` rows of `n_ctx` tokens, seeded (see the module docstring)."""
    rng, mix, held_out = random.Random(seed), CorpusMix(), held_out_name_pairs()
    special = set(tokenizer.all_special_ids)
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    rows, row_labels = [], []
    for _ in range(n_rows):
        ids, labels = (_induction_row(rng, vocab, n_ctx) if rng.random() < induction_share
                       else _text_row(tokenizer, rng, n_ctx, mix, held_out))
        rows.append(ids)
        row_labels.append(labels)
    masks = {name: torch.tensor([[name in token for token in labels] for labels in row_labels], dtype=torch.bool)
             for name in LABELS}
    return LabelledRows(torch.tensor(rows, dtype=torch.long), masks)


def card_rows(tokenizer) -> LabelledRows:
    """The corpus the Features page's cards and known-truth table read on the organism."""
    return labelled_rows(tokenizer, CARD_ROWS, CARD_SEED)
