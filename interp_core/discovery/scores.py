"""Edge scores: how much the metric would change if one edge carried its corrupted value.

    >>> eap = edge_scores(bundle, graph, data, method="eap")           # one clean backward pass per batch
    >>> eap_ig = edge_scores(bundle, graph, data, method="eap_ig", steps=5)
    >>> exact = edge_scores(bundle, graph, data, method="exact")       # one forward pass per edge

- EAP (Syed et al. 2023): s(u -> v) = sum over pairs and positions of (a_u^corrupt - a_u^clean) . dm/dx_v, the
  gradient of the metric m with respect to v's input on the clean run.
- EAP-IG, the input variant (Hanna et al. 2024; hannamw/EAP-IG): the same with the gradient averaged over runs on
  the interpolated token embeddings e_corrupt + alpha (e_clean - e_corrupt), alpha = k/m for k = 0..m-1 (their
  code's left Riemann sum; m = 5 in their experiments).
- Exact: m(clean run with only u -> v corrupted) - m(clean run), by graph_run's edge cutting.
m is the mean logit difference over the task's pairs (pairs.py), so a score is in logits; a negative score means
corrupting the edge lowers the answer's lead. Rank edges by |score| (`Circuit` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.activations import embed_tokens
from interp_core.discovery.graph import Graph
from interp_core.discovery.graph_run import run_on_graph, sender_outputs
from interp_core.discovery.pairs import PairBatch, PairData
from interp_core.loading import ModelBundle

METHODS = {"eap": "EAP (one backward pass)", "eap_ig": "EAP-IG (integrated gradients on the inputs)",
           "exact": "Exact (one forward pass per edge)"}
LEAF_BUDGET_BYTES = 256 * 2**20  # the receivers' gradient leaves of one batch
Progress = Callable[[float, str], None]


@dataclass(frozen=True, eq=False)
class EdgeScores:
    """scores[s, r] for every edge of `graph` (0 where there is no edge), by `method`, on the task `task`."""

    graph: Graph
    scores: torch.Tensor  # [sender, receiver] float64
    method: str
    task: str
    steps: int = 0  # EAP-IG's steps (0 for the others)

    def __post_init__(self) -> None:
        if tuple(self.scores.shape) != tuple(self.graph.edges.shape):
            raise ValueError(f"EdgeScores.scores has shape {tuple(self.scores.shape)}, expected "
                             f"{tuple(self.graph.edges.shape)}")

    def edge_values(self) -> torch.Tensor:
        """[edge] the scores in graph.edge_index order."""
        index = self.graph.edge_index
        return self.scores[index[:, 0], index[:, 1]]

    def to_frame(self) -> pd.DataFrame:
        index = self.graph.edge_index.tolist()
        return pd.DataFrame({
            "edge": self.graph.edge_names(),
            "sender": [self.graph.senders[s].name for s, _ in index],
            "receiver": [self.graph.receivers[r].name for _, r in index],
            "score": self.edge_values().tolist(),
            "method": self.method,
        })


def _rows_per_batch(graph: Graph, n_pos: int, d_model: int) -> int:
    return max(1, LEAF_BUDGET_BYTES // (len(graph.receivers) * n_pos * d_model * 4))


def _gradients(bundle: ModelBundle, graph: Graph, batch: PairBatch, n_total: int, steps: int) -> torch.Tensor:
    """[receiver, pair, pos, d_model] d m / d receiver input on the clean run (steps = 0), or averaged over the
    interpolated inputs (EAP-IG)."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return batch.logit_difference(logits).sum() / n_total

    if steps == 0:
        return run_on_graph(bundle, graph, batch.clean, receiver_grads=True, metric=metric).grads
    clean, corrupt = embed_tokens(bundle, batch.clean).float(), embed_tokens(bundle, batch.corrupt).float()
    total = 0.0  # the path and the sum of gradients in float32, whatever the model's dtype
    for k in range(steps):
        alpha = k / steps
        point = corrupt + alpha * (clean - corrupt)
        total = total + run_on_graph(bundle, graph, batch.clean, receiver_grads=True, metric=metric,
                                     input_edit=lambda act, point=point: point.to(act.dtype)).grads.float()
    return total / steps


def edge_scores(bundle: ModelBundle, graph: Graph, data: PairData, method: str = "eap_ig", steps: int = 5,
                progress: Progress | None = None, max_exact_edges: int | None = None) -> EdgeScores:
    """Every edge's score by `method` (see the module docstring), batched over the task's pairs."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; pick one of {', '.join(METHODS)}")
    if method == "exact":
        return _exact_scores(bundle, graph, data, progress, max_exact_edges)
    steps = steps if method == "eap_ig" else 0
    if method == "eap_ig" and steps < 1:
        raise ValueError("EAP-IG needs at least one step")
    scores = torch.zeros(graph.edges.shape, dtype=torch.float64)
    batches = [b for first in data.batches() for b in _split(first, _rows_per_batch(
        graph, first.clean.shape[1], bundle.d_model))]
    for i, batch in enumerate(batches):
        difference = sender_outputs(bundle, graph, batch.corrupt) - sender_outputs(bundle, graph, batch.clean)
        grads = _gradients(bundle, graph, batch, len(data), steps)
        scores += torch.einsum("sbpd,rbpd->sr", difference.double(), grads.double())
        if progress:
            progress((i + 1) / len(batches), f"{METHODS[method]}: batch {i + 1} of {len(batches)}")
    return EdgeScores(graph, scores * graph.edges, method, data.name, steps)


def _split(batch: PairBatch, rows: int) -> list[PairBatch]:
    n = len(batch.answer)
    return [PairBatch(batch.clean[i:i + rows], batch.corrupt[i:i + rows], batch.answer[i:i + rows],
                      batch.foil[i:i + rows]) for i in range(0, n, rows)]


def mean_metric(bundle: ModelBundle, graph: Graph, data: PairData, cut: torch.Tensor | None = None,
                corrupted: list[torch.Tensor] | None = None, which: str = "clean") -> float:
    """The mean logit difference over the pairs: of the clean (or corrupt) prompts, or of the clean prompts with
    the edges in `cut` corrupted (`corrupted`: each batch's corrupt sender outputs, from `corrupt_outputs`)."""
    total = 0.0
    for i, batch in enumerate(data.batches()):
        ids = batch.corrupt if which == "corrupt" else batch.clean
        with torch.no_grad():
            logits = run_on_graph(bundle, graph, ids, cut=cut,
                                  corrupt=None if cut is None else corrupted[i]).logits
        total += float(batch.logit_difference(logits).double().sum())
    return total / len(data)


def corrupt_outputs(bundle: ModelBundle, graph: Graph, data: PairData) -> list[torch.Tensor]:
    """Each batch's [sender, pair, pos, d_model] outputs on the corrupted prompts (in data.batches() order)."""
    return [sender_outputs(bundle, graph, batch.corrupt) for batch in data.batches()]


def _exact_scores(bundle: ModelBundle, graph: Graph, data: PairData, progress: Progress | None,
                  max_edges: int | None) -> EdgeScores:
    if max_edges is not None and graph.n_edges > max_edges:
        raise ValueError(f"Exact edge patching runs one pass per edge: {graph.n_edges} edges is over the cap of "
                         f"{max_edges}. Use EAP-IG on a graph this size.")
    corrupted = corrupt_outputs(bundle, graph, data)
    clean = mean_metric(bundle, graph, data)
    scores = torch.zeros(graph.edges.shape, dtype=torch.float64)
    index = graph.edge_index.tolist()
    for i, (s, r) in enumerate(index):
        cut = torch.zeros_like(graph.edges)
        cut[s, r] = True
        scores[s, r] = mean_metric(bundle, graph, data, cut, corrupted) - clean
        if progress and (i % 20 == 0 or i == len(index) - 1):
            progress((i + 1) / len(index), f"Exact edge patching: edge {i + 1} of {len(index)}")
    return EdgeScores(graph, scores, "exact", data.name)
