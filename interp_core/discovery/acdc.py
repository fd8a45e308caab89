"""ACDC (Conmy et al. 2023, "Towards Automated Circuit Discovery"): start from the full graph and, visiting the
receivers from the logits back to the input, try cutting each incoming edge; keep it cut when the metric moves by
less than a threshold.

    >>> found = acdc(bundle, graph, data, threshold=0.02)
    >>> found.circuit, found.faithfulness, found.evaluations

The metric here is the task's normalised logit difference (faithfulness.py: 1 = clean, 0 = corrupted), so the
threshold is a share of the behaviour; the paper also uses the KL divergence to the model's output. Edges are tried
in sender order (the input first) within each receiver. A node none of whose outputs is read any more (every
outgoing edge cut) has its incoming edges cut without trying them: they cannot change the output. About one
forward pass over the task's pairs per edge tried: fine on the organism (479 edges), tens of minutes on GPT-2 small.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp_core.discovery.faithfulness import Baselines
from interp_core.discovery.graph import Graph
from interp_core.discovery.pairs import PairData
from interp_core.discovery.scores import EdgeScores, mean_metric
from interp_core.loading import ModelBundle

DEFAULT_THRESHOLD = 0.02


@dataclass(frozen=True, eq=False)
class AcdcResult:
    """The circuit ACDC kept, its faithfulness, how many edges it tried, and each tried edge's |change|."""

    circuit: torch.Tensor  # [sender, receiver] bool
    faithfulness: float
    evaluations: int
    threshold: float
    changes: EdgeScores  # the metric's change when each edge was tried (0 for edges cut untried)


def _reverse_receivers(graph: Graph) -> list[int]:
    """Receiver indices from the logits back: later layers first, a layer's MLP before its heads."""
    order = {"logits": 3, "mlp": 2, "q": 1, "k": 1, "v": 1}
    return sorted(range(len(graph.receivers)), key=lambda r: (graph.receivers[r].layer,
                                                              order[graph.receivers[r].kind]), reverse=True)


def acdc(bundle: ModelBundle, graph: Graph, data: PairData, threshold: float = DEFAULT_THRESHOLD,
         progress=None) -> AcdcResult:
    """ACDC on `data` (see the module docstring)."""
    base = Baselines.measure(bundle, graph, data)
    span = base.clean - base.corrupt
    if abs(span) < 1e-9:
        raise ValueError("The clean and corrupted prompts give the same logit difference: nothing to recover")

    def normalised(cut: torch.Tensor) -> float:
        return (mean_metric(bundle, graph, data, cut, base.corrupted) - base.corrupt) / span

    kept = graph.edges.clone()
    changes = torch.zeros(graph.edges.shape, dtype=torch.float64)
    current, evaluations = 1.0, 0
    sender_of = {node: i for i, node in enumerate(graph.senders)}
    receivers = _reverse_receivers(graph)
    for step, r in enumerate(receivers):
        fed_nodes = graph.fed_by(graph.receivers[r])
        read = graph.receivers[r].kind == "logits" or any(kept[sender_of[n]].any() for n in fed_nodes)
        for s in kept[:, r].nonzero().flatten().tolist():
            if not read:
                kept[s, r] = False
                continue
            kept[s, r] = False
            value = normalised(graph.edges & ~kept)
            evaluations += 1
            changes[s, r] = value - current
            if abs(value - current) < threshold:
                current = value
            else:
                kept[s, r] = True
        if progress:
            progress((step + 1) / len(receivers), f"ACDC: receiver {step + 1} of {len(receivers)}")
    return AcdcResult(kept, current, evaluations, threshold, EdgeScores(graph, changes, "acdc", data.name))
