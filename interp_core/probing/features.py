"""Probing features: the residual stream at every layer for one token (or the mean) of every example, read through
the activation API in memory-bounded batches.

    >>> feats = extract_features(bundle, data, token="last")   # resid [layer + 1, example, d_model]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from interp_core import activations
from interp_core.budget import tokens_per_batch
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
from interp_core.names import act_name
from interp_core.probing.examples import (
    TOKEN_CHOICES,
    ProbeDataError,
    ProbeDataset,
    ProbeExample,
    Progress,
    quote,
)
from interp_core.settings import limits
from interp_core.tokens import decode, encode

FEATURE_BATCH = 32  # most texts per forward pass; fewer when the hidden states would outgrow the memory budget


@dataclass(frozen=True, eq=False)
class ProbeFeatures:
    """The residual stream at every layer for one token (or the mean) of every example."""

    resid: np.ndarray  # [layer + 1, example, d_model] float32; [0] embeddings, [-1] last block output pre-norm
    positions: np.ndarray  # [example] int: the token read (-1 for the mean over tokens)
    n_tokens: np.ndarray  # [example] int: tokens of the example's text (special tokens included)
    token_types: tuple[str, ...]  # [example] readable text of the token read ("" for the mean)
    token: str  # "last", "mean" or "labelled"
    ref: str  # the model reference (ModelBundle.ref)
    fingerprint: str  # the dataset's fingerprint

    def __post_init__(self) -> None:
        if self.resid.ndim != 3:
            raise ValueError(f"resid must be [layer + 1, example, d_model], got shape {self.resid.shape}")
        n = self.resid.shape[1]
        for name in ("positions", "n_tokens"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({n},)")
        if len(self.token_types) != n:
            raise ValueError(f"token_types has {len(self.token_types)} entries, expected {n}")
        if self.token not in TOKEN_CHOICES:
            raise ValueError(f"token must be one of {tuple(TOKEN_CHOICES)}, got {self.token!r}")

    @property
    def n_layers(self) -> int:
        """Number of blocks (the features hold n_layers + 1 residual-stream layers)."""
        return self.resid.shape[0] - 1

    @property
    def d_model(self) -> int:
        return self.resid.shape[2]


def _resolve_position(example: ProbeExample, token: str, special: list[int],
                      offsets: list[tuple[int, int]] | None, n_tokens: int) -> int:
    """The token index read for `example` (-1: mean). Raises ProbeDataError when it cannot be found."""
    if token == "mean":
        return -1
    if token == "last":
        real = [i for i, s in enumerate(special) if not s]
        return real[-1] if real else n_tokens - 1
    if example.token_index is not None:
        if example.token_index >= n_tokens:
            raise ProbeDataError(
                f"token_index {example.token_index} is out of range for {quote(example.text)}: this model "
                f"splits it into {n_tokens} tokens (indexes 0 to {n_tokens - 1}). Check the index on the "
                "Attention page.")
        return example.token_index
    start, end = example.span
    hits = [i for i, (s, e) in enumerate(offsets) if not special[i] and s < end and e > start]
    if not hits:
        raise ProbeDataError(f"No token of this model covers the word {quote(example.text[start:end])} in "
                             f"{quote(example.text)}.")
    return hits[-1]  # the word's LAST sub-token: in a causal model the only one that has seen the whole word


def extract_features(bundle: ModelBundle, dataset: ProbeDataset, token: str = "last",
                     batch_size: int = FEATURE_BATCH, progress: Progress | None = None) -> ProbeFeatures:
    """The residual stream at every layer for every example of `dataset`: ProbeFeatures.resid
    [layer + 1, example, d_model] (float32, CPU).

    `token`: "last" (the text's last non-special token), "mean" (the mean over the text's non-special tokens)
    or "labelled" (the labelled word's last sub-token, found with the fast tokenizer's offset mapping, or the
    row's token_index). Each distinct text runs once; texts go through the model in right-padded batches with
    an attention mask (padding after the text leaves every real token's position unchanged), one no-grad
    forward per batch (`activations.run`). The last layer is the last block's output before the final norm.
    Everything is checked before the first forward: a text longer than min(limits().max_prompt_tokens, n_ctx)
    tokens, a token_index out of range or a word no token covers raises
    ProbeDataError.
    """
    if token not in dataset.token_choices:
        raise UserInputError(f"The token choice '{token}' does not fit this dataset; choose one of "
                             f"{', '.join(dataset.token_choices)}.")
    tokenizer = bundle.tokenizer
    needs_offsets = token == "labelled" and any(e.span is not None for e in dataset.examples)
    if needs_offsets and not getattr(tokenizer, "is_fast", False):
        raise UserInputError("Finding the labelled word needs a fast tokenizer (with offset mapping); this model's "
                             "tokenizer is a slow one. Pick the last token or the mean instead.")
    cap = min(limits().max_prompt_tokens, bundle.n_ctx)

    texts = list(dict.fromkeys(e.text for e in dataset.examples))  # distinct texts, first appearance order
    text_index = {t: i for i, t in enumerate(texts)}
    encoded = []  # per text: (ids, special mask, offsets)
    for t in texts:
        enc = encode(bundle, t, return_special_tokens_mask=True, return_offsets_mapping=needs_offsets)
        ids = list(enc["input_ids"])
        if not ids:
            raise ProbeDataError(f"The text {quote(t)} became no tokens at all.")
        if len(ids) > cap:
            raise ProbeDataError(f"The text {quote(t)} is {len(ids)} tokens long; the limit is {cap} tokens "
                                 "(max_prompt_tokens, or the model's context). Shorten it or leave it out.")
        special = list(enc.get("special_tokens_mask") or [0] * len(ids))
        offsets = [tuple(o) for o in enc["offset_mapping"]] if needs_offsets else None
        encoded.append((ids, special, offsets))

    positions = np.array([_resolve_position(e, token, encoded[text_index[e.text]][1], encoded[text_index[e.text]][2],
                                            len(encoded[text_index[e.text]][0])) for e in dataset.examples],
                         dtype=np.int64)  # [example]
    n_tokens = np.array([len(encoded[text_index[e.text]][0]) for e in dataset.examples], dtype=np.int64)
    examples_of: list[list[int]] = [[] for _ in texts]  # text -> its examples
    for i, e in enumerate(dataset.examples):
        examples_of[text_index[e.text]].append(i)

    n_layers, d_model = bundle.n_layers, bundle.d_model
    resid = np.zeros((n_layers + 1, len(dataset), d_model), dtype=np.float32)  # [layer + 1, example, d_model]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))  # similar lengths pad less
    resid_names = [act_name("resid_pre", layer) for layer in range(n_layers)] + [act_name("resid_post",
                                                                                        n_layers - 1)]
    token_budget = tokens_per_batch(bundle, kept_layers=n_layers + 1)  # the records keep every layer
    batches: list[list[int]] = [[]]
    for i in order:  # ascending length: a batch's width is its last text's length
        if batches[-1] and (len(batches[-1]) >= batch_size
                            or (len(batches[-1]) + 1) * len(encoded[i][0]) > token_budget):
            batches.append([])
        batches[-1].append(i)
    done = 0
    for batch in batches:
        width = max(len(encoded[i][0]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # [batch, pos]
        mask = torch.zeros((len(batch), width), dtype=torch.long)  # [batch, pos] 1 = real token
        for row, i in enumerate(batch):
            ids = encoded[i][0]
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        with torch.no_grad():  # one activations.run per batch: other requests get the model in between
            acts = activations.run(bundle, input_ids, record=resid_names, attention_mask=mask,
                                   fused_attention=True).acts
        layers = [acts.pop(name) for name in resid_names]  # [batch, pos, d_model] each
        for layer, hidden in enumerate(layers):  # one layer on the CPU at a time
            hidden = hidden.float().cpu().numpy()  # [batch, pos, d_model]
            for row, i in enumerate(batch):
                ids, special, _ = encoded[i]
                for e in examples_of[i]:
                    if positions[e] >= 0:
                        resid[layer, e] = hidden[row, positions[e]]
                    else:  # mean over the text's own tokens (special tokens such as BOS left out: attention sinks)
                        keep = ~np.array(special, dtype=bool) if not all(special) else np.ones(len(ids), bool)
                        resid[layer, e] = hidden[row, :len(ids)][keep].mean(axis=0)
        del layers
        done += len(batch)
        if progress is not None:
            progress(done / len(texts), f"Running the model: {done} / {len(texts)} texts")

    token_types = []
    for e, p in zip(dataset.examples, positions, strict=True):
        if p < 0:
            token_types.append("")
        else:
            token_types.append(decode(bundle, [encoded[text_index[e.text]][0][p]]).strip().lower())
    return ProbeFeatures(resid=resid, positions=positions, n_tokens=n_tokens, token_types=tuple(token_types),
                         token=token, ref=bundle.ref, fingerprint=dataset.fingerprint)


def with_token_types(dataset: ProbeDataset, features: ProbeFeatures) -> ProbeDataset:
    """For an uploaded token-level dataset without a word_type column, make each example's control word type the
    text of the token it reads (known only once the model has tokenised it), or the (text, token_index) pair
    for a token that is only whitespace; examples that have a word type, and sentence-level datasets, stay."""
    if dataset.level != "token" or all(e.word_type is not None for e in dataset.examples):
        return dataset
    examples = tuple(e if e.word_type is not None else replace(e, word_type=t or f"{e.text}\x1f{e.token_index}")
                     for e, t in zip(dataset.examples, features.token_types, strict=True))
    return replace(dataset, examples=examples)
