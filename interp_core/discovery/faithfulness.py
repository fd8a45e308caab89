"""Circuits from edge scores, and how much of the behaviour each carries.

    >>> circuit = top_edges(scores, n_edges=40)              # the 40 edges of largest |score|, pruned
    >>> faithfulness(bundle, graph, data, circuit)           # 1 = the whole model's behaviour, 0 = the corrupted
    >>> curve = faithfulness_curve(bundle, scores, data)     # ~20 circuit sizes, with random circuits beside

A circuit is a set of edges; the model runs on the clean prompts with every edge outside it fed its corrupted value
(graph_run, as EAP-IG's `evaluate_graph`). Faithfulness is (m(circuit) - m(corrupt)) / (m(clean) - m(corrupt)) with
m the mean logit difference over the pairs: the full graph gives 1 and the empty graph 0. Pruning keeps only edges
on a path from the input to the logits (an edge into a node nothing reads, or out of a node nothing feeds, carries
nothing of the input's difference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from interp_core.discovery.graph import Graph, Node
from interp_core.discovery.pairs import PairData
from interp_core.discovery.scores import EdgeScores, corrupt_outputs, mean_metric
from interp_core.loading import ModelBundle

N_POINTS = 20  # circuit sizes on a faithfulness curve


def prune(graph: Graph, keep: torch.Tensor) -> torch.Tensor:
    """`keep` ([sender, receiver] bool) less every edge that is not on a path from the input to the logits."""
    keep = keep & graph.edges
    fed = {Node("input", -1)}  # nodes reached from the input
    for s, node in enumerate(graph.senders):  # senders are in topological order
        if node in fed:
            for r in keep[s].nonzero().flatten().tolist():
                fed.update(graph.fed_by(graph.receivers[r]))
    read = {Node("logits", graph.n_layers)}  # nodes whose output reaches the logits
    for s in reversed(range(len(graph.senders))):
        targets = [n for r in keep[s].nonzero().flatten().tolist() for n in graph.fed_by(graph.receivers[r])]
        if any(t in read for t in targets):
            read.add(graph.senders[s])
    ok_sender = torch.tensor([node in fed for node in graph.senders])
    ok_receiver = torch.tensor([any(n in read for n in graph.fed_by(r)) for r in graph.receivers])
    return keep & ok_sender[:, None] & ok_receiver[None, :]


def top_edges(scores: EdgeScores, n_edges: int) -> torch.Tensor:
    """The circuit of the `n_edges` edges with the largest |score| (ties broken by edge order), pruned."""
    values = scores.edge_values().abs()
    order = torch.argsort(values, descending=True, stable=True)[:n_edges]
    keep = torch.zeros_like(scores.graph.edges)
    chosen = scores.graph.edge_index[order]
    keep[chosen[:, 0], chosen[:, 1]] = True
    return prune(scores.graph, keep)


@dataclass(frozen=True, eq=False)
class Baselines:
    """The clean and corrupted mean logit differences and each batch's corrupted sender outputs."""

    clean: float
    corrupt: float
    corrupted: list[torch.Tensor]

    @classmethod
    def measure(cls, bundle: ModelBundle, graph: Graph, data: PairData) -> Baselines:
        return cls(mean_metric(bundle, graph, data), mean_metric(bundle, graph, data, which="corrupt"),
                   corrupt_outputs(bundle, graph, data))


def faithfulness(bundle: ModelBundle, graph: Graph, data: PairData, circuit: torch.Tensor,
                 baselines: Baselines | None = None) -> float:
    """(m(circuit) - m(corrupt)) / (m(clean) - m(corrupt)) over the pairs (see the module docstring)."""
    base = baselines or Baselines.measure(bundle, graph, data)
    if abs(base.clean - base.corrupt) < 1e-9:
        raise ValueError("The clean and corrupted prompts give the same logit difference: nothing to recover")
    cut = graph.edges & ~circuit
    value = mean_metric(bundle, graph, data, cut, base.corrupted)
    return (value - base.corrupt) / (base.clean - base.corrupt)


@dataclass(frozen=True, eq=False)
class FaithfulnessCurve:
    """Faithfulness against the number of edges kept (before pruning), for one scorer and for random circuits."""

    method: str
    sizes: tuple[int, ...]
    kept: tuple[int, ...]  # edges left after pruning
    faithfulness: tuple[float, ...]
    random: tuple[float, ...]  # the mean over random circuits of the same size

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"edges": self.sizes, "edges_after_pruning": self.kept,
                             "faithfulness": self.faithfulness, "random": self.random, "method": self.method})


def curve_sizes(n_edges: int, n_points: int = N_POINTS) -> tuple[int, ...]:
    """About `n_points` circuit sizes from 0 to every edge, denser among small circuits (geometric)."""
    sizes = np.unique(np.round(np.geomspace(1, n_edges, n_points - 1)).astype(int))
    return (0, *map(int, sizes))


def faithfulness_curve(bundle: ModelBundle, scores: EdgeScores, data: PairData, n_points: int = N_POINTS,
                       n_random: int = 3, seed: int = 0, baselines: Baselines | None = None,
                       progress=None) -> FaithfulnessCurve:
    """Faithfulness of the top-n circuit for ~n_points sizes n, and of `n_random` random circuits of each size."""
    graph = scores.graph
    base = baselines or Baselines.measure(bundle, graph, data)
    sizes = curve_sizes(graph.n_edges, n_points)
    generator = torch.Generator().manual_seed(seed)
    random_scores = [EdgeScores(graph, torch.rand(graph.edges.shape, generator=generator, dtype=torch.float64)
                                * graph.edges, "random", scores.task) for _ in range(n_random)]
    kept, values, random = [], [], []
    for i, size in enumerate(sizes):
        circuit = top_edges(scores, size)
        kept.append(int(circuit.sum()))
        values.append(faithfulness(bundle, graph, data, circuit, base))
        random.append(float(np.mean([faithfulness(bundle, graph, data, top_edges(r, size), base)
                                     for r in random_scores])) if random_scores else float("nan"))
        if progress:
            progress((i + 1) / len(sizes), f"Faithfulness: circuit {i + 1} of {len(sizes)}")
    return FaithfulnessCurve(scores.method, sizes, tuple(kept), tuple(values), tuple(random))
