"""Attention patterns from a cached trace: one head's (or a layer's mean) pattern, and a score card per head.

Each layer's pattern [head, query_pos, key_pos] is computed from the trace when asked (`trace.layer_pattern`),
one layer at a time: a trace keeps no attention.

    >>> pattern = attention_pattern(bundle, trace, layer=1, head=3)    # or head=None: mean of the layer's heads
    >>> pattern.weights.shape                                      # [query_pos, key_pos]
    >>> summary = head_summaries(bundle, trace)                    # every head, one layer at a time
    >>> summary.prev_token[1, 3]                                   # mean attention from i to i-1

Head scores (all averaged over the query positions 1..pos-1; query 0 can only attend to itself, so including it
would pull every head towards a "self" / "first-token" head):
    entropy     = mean_i  -sum_j A[i, j] log A[i, j]           (nats; 0 = always one key, log(i+1) = uniform)
    prev_token  = mean_i  A[i, i-1]                            (1 for a pure previous-token head)
    first_token = mean_i  A[i, 0]                              (attention sink / "rest" position)
    self_score  = mean_i  A[i, i]
A one-token prompt has no query positions >= 1, so its scores are NaN.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.loading import ModelBundle
from interp_core.tokens import token_labels
from interp_core.trace import Trace, layer_pattern

HEAD_METRICS = {  # column name -> (axis title, one-line meaning); shared by the charts and the pages
    "prev_token": ("previous-token score", "mean attention from each token to the token just before it"),
    "first_token": ("first-token (sink) score", "mean attention to the first token of the prompt"),
    "self_score": ("self score", "mean attention from each token to itself"),
    "entropy": ("entropy (nats)", "spread of attention: 0 = one key, high = spread over many keys"),
}


@dataclass(frozen=True, eq=False)
class AttentionPattern:
    """One attention pattern over a prompt: a single head, or the mean of one layer's heads (head None)."""

    weights: torch.Tensor  # [query_pos, key_pos] rows sum to 1, upper triangle (key > query) 0
    tokens: list[str]  # [pos] readable tokens of the prompt
    layer: int
    head: int | None  # None = mean over the layer's heads

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if tuple(self.weights.shape) != (n, n):
            raise ValueError(f"AttentionPattern.weights has shape {tuple(self.weights.shape)}, expected {(n, n)}")

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def title(self) -> str:
        """"L1H3" or "L1 mean of heads"."""
        return f"L{self.layer}H{self.head}" if self.head is not None else f"L{self.layer} mean of heads"

    def attention_from(self, query_pos: int) -> torch.Tensor:
        """How much `query_pos` attends to each key, [key_pos]; NaN for the masked keys after it."""
        row = self.weights[query_pos].clone()  # [key_pos]
        row[query_pos + 1 :] = float("nan")
        return row

    def attention_to(self, key_pos: int) -> torch.Tensor:
        """How much each query attends to `key_pos`, [query_pos]; NaN for the queries before it (masked)."""
        col = self.weights[:, key_pos].clone()  # [query_pos]
        col[:key_pos] = float("nan")
        return col

    def to_frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Tidy rows (query_pos, key_pos, query, key, query_label, key_label, weight) for key <= query.

        Only the positions in [start, stop) appear (as both query and key), so long prompts can be shown in
        windows. The masked upper triangle has no rows, so a heatmap leaves it blank.
        """
        stop = self.n_pos if stop is None else stop
        if not 0 <= start < stop <= self.n_pos:
            raise ValueError(f"Window [{start}, {stop}) is not inside 0..{self.n_pos}")
        labels = token_labels(self.tokens)
        q, k = torch.tril_indices(stop - start, stop - start)  # each [n_cells], key <= query
        q, k = (q + start).tolist(), (k + start).tolist()
        return pd.DataFrame({
            "layer": self.layer,
            "head": "mean" if self.head is None else str(self.head),
            "query_pos": q,
            "key_pos": k,
            "query": [self.tokens[i] for i in q],
            "key": [self.tokens[j] for j in k],
            "query_label": [labels[i] for i in q],
            "key_label": [labels[j] for j in k],
            "weight": self.weights[q, k].tolist(),
        })


def attention_pattern(bundle: ModelBundle, trace: Trace, layer: int, head: int | None = None) -> AttentionPattern:
    """The pattern of head `head` of `layer` (or the mean over the layer's heads when head is None)."""
    if not 0 <= layer < trace.n_layers:
        raise ValueError(f"layer {layer} is not in 0..{trace.n_layers - 1}")
    if head is not None and not 0 <= head < trace.n_heads:
        raise ValueError(f"head {head} is not in 0..{trace.n_heads - 1}")
    per_layer = layer_pattern(bundle, trace, layer)  # [head, query_pos, key_pos]
    weights = per_layer.mean(0) if head is None else per_layer[head]  # [query_pos, key_pos]
    return AttentionPattern(weights=weights, tokens=list(trace.tokens), layer=layer, head=head)


@dataclass(frozen=True, eq=False)
class HeadSummary:
    """Scores of every head on one prompt (see the module docstring for the formulas)."""

    entropy: torch.Tensor  # [layer, head] nats, mean over query positions >= 1
    prev_token: torch.Tensor  # [layer, head] in [0, 1]
    first_token: torch.Tensor  # [layer, head] in [0, 1]
    self_score: torch.Tensor  # [layer, head] in [0, 1]

    def __post_init__(self) -> None:
        shape = tuple(self.entropy.shape)
        if len(shape) != 2:
            raise ValueError(f"HeadSummary.entropy has shape {shape}, expected [layer, head]")
        for name in ("prev_token", "first_token", "self_score"):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"HeadSummary.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")

    @property
    def n_layers(self) -> int:
        return self.entropy.shape[0]

    @property
    def n_heads(self) -> int:
        return self.entropy.shape[1]

    def to_frame(self) -> pd.DataFrame:
        """One row per head: layer, head, head_label ("L1H3"), entropy, prev_token, first_token, self_score."""
        layers, heads = torch.meshgrid(torch.arange(self.n_layers), torch.arange(self.n_heads), indexing="ij")
        frame = pd.DataFrame({
            "layer": layers.flatten().tolist(),
            "head": heads.flatten().tolist(),
            "head_label": [f"L{layer}H{head}" for layer, head in zip(layers.flatten().tolist(),
                                                                        heads.flatten().tolist(), strict=True)],
        })
        for name in HEAD_METRICS:
            frame[name] = getattr(self, name).flatten().tolist()
        return frame


def head_summaries(bundle: ModelBundle, trace: Trace) -> HeadSummary:
    """Score every head of the trace's prompt (see the module docstring), one layer's pattern at a time."""
    return summarise_heads(layer_pattern(bundle, trace, layer) for layer in range(trace.n_layers))


def summarise_heads(patterns: Iterable[torch.Tensor]) -> HeadSummary:
    """The HeadSummary of layers' patterns, each [head, query_pos, key_pos], taken one at a time."""
    scores = [layer_head_scores(pattern) for pattern in patterns]
    return HeadSummary(*(torch.stack([layer[i] for layer in scores]) for i in range(4)))


def layer_head_scores(pattern: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(entropy, prev_token, first_token, self_score), each [head], of one layer's pattern [head, query_pos,
    key_pos]; NaN for a one-token prompt."""
    if pattern.dim() != 3 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"pattern must be [head, query_pos, key_pos], got {tuple(pattern.shape)}")
    n_heads, n_pos, _ = pattern.shape
    if n_pos < 2:
        return tuple(torch.full((n_heads,), float("nan")) for _ in range(4))
    a = pattern.float()
    queries = torch.arange(1, n_pos)  # [query_pos - 1] the queries that have an earlier token
    plogp = torch.where(a > 0, a * a.clamp_min(1e-30).log(), torch.zeros_like(a))  # 0 log 0 = 0
    entropy = -plogp.sum(-1)[..., 1:].mean(-1)
    return entropy, a[:, queries, queries - 1].mean(-1), a[:, 1:, 0].mean(-1), a[:, queries, queries].mean(-1)


def default_window(n_pos: int, size: int) -> tuple[int, int]:
    """The window [start, stop) of at most `size` positions shown first for a long prompt: the last ones."""
    return max(0, n_pos - size), n_pos
