"""The graph circuit discovery scores, as in hannamw/EAP-IG (`src/eap/graph.py`): senders are the input embeddings,
every attention head and every MLP; receivers are every head's query, key and value inputs, every MLP's input and
the logits; an edge runs from each sender to each receiver that reads what it writes.

    >>> graph = build_graph(bundle)          # the organism: 21 senders, 53 receivers, 479 edges
    >>> graph.edge_names()[:2]               # ['input->a0.h0<q>', 'input->a0.h0<k>']

A head of layer l writes after every node of earlier layers and is read by the heads of later layers, by its own
layer's MLP (unless the block is parallel, GPT-NeoX: then its MLP reads the block input) and by the logits. Under
grouped-query attention a key or value receiver is a key-value head, shared by the query heads of its group.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from interp_core.loading import ModelBundle


@dataclass(frozen=True)
class Node:
    """A sender or a receiver: its kind ("input", "head", "mlp"; receivers "q", "k", "v", "mlp", "logits"), the
    layer it belongs to (-1 for the input, n_layers for the logits) and its head (or key-value head) index."""

    kind: str
    layer: int
    head: int = -1

    @property
    def name(self) -> str:
        """EAP-IG's names: input, a{layer}.h{head}, m{layer}, logits; a head receiver adds <q>, <k> or <v>."""
        if self.kind in ("input", "logits"):
            return self.kind
        if self.kind == "mlp":
            return f"m{self.layer}"
        suffix = "" if self.kind == "head" else f"<{self.kind}>"
        return f"a{self.layer}.h{self.head}{suffix}"


@dataclass(frozen=True, eq=False)
class Graph:
    """Senders, receivers and which sender -> receiver pairs are edges (edges[s, r])."""

    senders: tuple[Node, ...]
    receivers: tuple[Node, ...]
    edges: torch.Tensor  # [sender, receiver] bool
    n_layers: int
    n_heads: int
    n_kv_heads: int
    parallel: bool  # attention and MLP both read the block input (GPT-NeoX)

    def __post_init__(self) -> None:
        if tuple(self.edges.shape) != (len(self.senders), len(self.receivers)) or self.edges.dtype != torch.bool:
            raise ValueError(f"Graph.edges is {tuple(self.edges.shape)} {self.edges.dtype}, expected bool "
                             f"[{len(self.senders)}, {len(self.receivers)}]")

    @property
    def n_edges(self) -> int:
        return int(self.edges.sum())

    @cached_property
    def edge_index(self) -> torch.Tensor:
        """[edge, 2] (sender, receiver) index of every edge, in sender-major order."""
        return self.edges.nonzero()

    def edge_names(self) -> list[str]:
        return [f"{self.senders[s].name}->{self.receivers[r].name}" for s, r in self.edge_index.tolist()]

    def receivers_of(self, kind: str, layer: int) -> list[int]:
        """Indices of the receivers of `kind` in `layer`, in head order."""
        return self._receiver_index.get((kind, layer), [])

    @cached_property
    def _receiver_index(self) -> dict[tuple[str, int], list[int]]:
        index: dict[tuple[str, int], list[int]] = {}
        for i, node in enumerate(self.receivers):
            index.setdefault((node.kind, node.layer), []).append(i)
        return index

    def fed_by(self, receiver: Node) -> list[Node]:
        """The node(s) whose computation `receiver` feeds: its head, its MLP or the logits (a key or value
        receiver under grouped-query attention feeds every query head of its group)."""
        if receiver.kind in ("mlp", "logits"):
            return [Node(receiver.kind, receiver.layer)]
        if receiver.kind == "q":
            return [Node("head", receiver.layer, receiver.head)]
        group = self.n_heads // self.n_kv_heads
        return [Node("head", receiver.layer, h) for h in range(receiver.head * group, (receiver.head + 1) * group)]


def _reads(sender: Node, receiver: Node, parallel: bool) -> bool:
    """Whether `receiver` reads what `sender` writes (a later layer, or a head's own layer's MLP)."""
    if sender.kind == "input" or receiver.kind == "logits":
        return True
    if receiver.kind == "mlp" and sender.kind == "head" and not parallel:
        return sender.layer <= receiver.layer
    return sender.layer < receiver.layer


def build_graph(bundle: ModelBundle) -> Graph:
    """The graph of `bundle`'s model (see the module docstring)."""
    model, adapter = bundle.model, bundle.adapter
    n_layers, n_heads, n_kv = bundle.n_layers, adapter.n_heads(model), adapter.n_kv_heads(model)
    parallel = adapter.parallel_residual(model)
    senders = [Node("input", -1)]
    receivers = []
    for layer in range(n_layers):
        senders += [Node("head", layer, h) for h in range(n_heads)] + [Node("mlp", layer)]
        receivers += [Node("q", layer, h) for h in range(n_heads)]
        receivers += [Node(kind, layer, h) for kind in ("k", "v") for h in range(n_kv)]
        receivers.append(Node("mlp", layer))
    receivers.append(Node("logits", n_layers))
    edges = torch.tensor([[_reads(s, r, parallel) for r in receivers] for s in senders], dtype=torch.bool)
    return Graph(tuple(senders), tuple(receivers), edges, n_layers, n_heads, n_kv, parallel)
