"""What the Circuit discovery page shows besides charts, as plain values: the headline numbers of a circuit and the
circuit as JSON (nodes, edges, scores, faithfulness, task, model) for download."""

from __future__ import annotations

import torch

from interp_core.discovery.graph import Graph
from interp_core.discovery.scores import EdgeScores
from interp_core.figures import Metric


def circuit_nodes(graph: Graph, circuit: torch.Tensor) -> list[str]:
    """Names of the nodes the circuit's edges touch, in graph order."""
    used = {graph.senders[s] for s, _ in circuit.nonzero().tolist()}
    used |= {n for _, r in circuit.nonzero().tolist() for n in graph.fed_by(graph.receivers[r])}
    order = [*graph.senders, *(n for r in graph.receivers for n in graph.fed_by(r))]
    return list(dict.fromkeys(n.name for n in order if n in used))


def circuit_metrics(circuit: torch.Tensor, graph: Graph, faithfulness: float) -> tuple[Metric, Metric, Metric]:
    n = int(circuit.sum())
    return (Metric("Edges in the circuit", f"{n:,} of {graph.n_edges:,}", help=f"{n / graph.n_edges:.1%} of the "
                   "graph, after pruning the edges on no path from the input to the logits"),
            Metric("Nodes", str(len(circuit_nodes(graph, circuit)))),
            Metric("Faithfulness (held-out pairs)", f"{faithfulness:.3f}", help="(m(circuit) - m(corrupted)) / "
                   "(m(clean) - m(corrupted)), m the mean logit difference over pairs the scores never saw"))


def circuit_json(scores: EdgeScores, circuit: torch.Tensor, faithfulness: float, model: str, task: str) -> dict:
    graph = scores.graph
    edges = [{"sender": graph.senders[s].name, "receiver": graph.receivers[r].name, "score": float(scores.scores[s, r])}
             for s, r in circuit.nonzero().tolist()]
    return {"model": model, "task": task, "method": scores.method, "steps": scores.steps,
            "faithfulness": faithfulness, "graph_edges": graph.n_edges, "nodes": circuit_nodes(graph, circuit),
            "edges": edges}


def edge_list(circuit: torch.Tensor) -> tuple[tuple[int, int], ...]:
    """The circuit's (sender, receiver) pairs: a hashable key for caching what depends on it."""
    return tuple(map(tuple, circuit.nonzero().tolist()))


def circuit_from(graph: Graph, edges: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """The [sender, receiver] mask of an `edge_list`."""
    circuit = torch.zeros_like(graph.edges)
    for s, r in edges:
        circuit[s, r] = True
    return circuit


def graph_caption(graph: Graph) -> str:
    """The graph's size and what each scorer does, with the papers they follow."""
    return (f"This model's graph: {len(graph.senders)} senders, {len(graph.receivers)} receivers, {graph.n_edges:,} "
            "edges. EAP: one backward pass (Syed et al. 2023). EAP-IG: gradients averaged over inputs interpolated "
            "from corrupted to clean (Hanna et al. 2024). Exact: one forward pass per edge. ACDC: cut edges one by "
            "one while the behaviour moves less than 0.02 (Conmy et al. 2023).")
