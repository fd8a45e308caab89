"""The model run on a graph (graph.py): every receiver computed from an input of its own, so that single edges can
be cut, or differentiated, through the activation API.

    >>> outputs = sender_outputs(bundle, graph, corrupt_ids)                    # [sender, batch, pos, d_model]
    >>> logits = run_on_graph(bundle, graph, clean_ids, cut=cut, corrupt=outputs).logits   # edges in `cut` corrupted
    >>> run_on_graph(bundle, graph, clean_ids, receiver_grads=True, metric=m).grads        # d m / d receiver input

A receiver's input is the residual stream where it reads (a layer's input for its heads' q, k and v; the stream
after the layer's attention for its MLP, or the layer's input in a parallel block; the last layer's output for the
logits), which is the sum of every earlier sender's output plus the biases. Cutting an edge u -> r adds
(corrupt output of u - this run's output of u) to r's input only (EAP-IG's `evaluate_graph`): with every edge
cut, each receiver reads the corrupted run's stream, so the model gives the corrupted output; with none cut, the
clean one. A head's q, k and v are recomputed from their own inputs with the adapter's weights (as in
tests/test_adapter_weights.py) by edits of hook_q, hook_k and hook_v; an MLP's input is an edit of hook_mlp_in, the
logits' an edit of the last hook_resid_post. A receiver none of whose edges is cut is left as the model computes
it. A head's output is z_h W_O[h] (its layer's b_O is the same in every run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp_core import activations
from interp_core.components import norm_form
from interp_core.discovery.graph import Graph
from interp_core.loading import ModelBundle

INPUT = "blocks.0.hook_resid_pre"
SUM_KEPT_ABOVE = 0.5  # a receiver group with more of its edges cut sums its kept edges' differences instead


def _names(layer: int) -> dict[str, str]:
    prefix = f"blocks.{layer}."
    return {kind: prefix + name for kind, name in (("resid_pre", "hook_resid_pre"), ("z", "attn.hook_z"),
            ("attn_out", "hook_attn_out"), ("mlp_in", "hook_mlp_in"), ("mlp_out", "hook_mlp_out"), ("q", "attn.hook_q"),
            ("k", "attn.hook_k"), ("v", "attn.hook_v"), ("resid_post", "hook_resid_post"))}


def _head_outputs(bundle: ModelBundle, z: torch.Tensor, layer: int) -> torch.Tensor:
    """[head, batch, pos, d_model] each head's z_h W_O[h] from z [batch, pos, head, d_head]."""
    return torch.einsum("bphd,hdm->hbpm", z, bundle.adapter.W_O(bundle.model, layer))


def sender_outputs(bundle: ModelBundle, graph: Graph, ids: torch.Tensor) -> torch.Tensor:
    """[sender, batch, pos, d_model] what every sender writes on ids [batch, pos] (one plain forward pass)."""
    return sender_outputs_and_final(bundle, graph, ids)[0]


def sender_outputs_and_final(bundle: ModelBundle, graph: Graph, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sender_outputs, [batch, pos, d_model] the last block's output: what the logits read) from one pass."""
    final = _names(graph.n_layers - 1)["resid_post"]
    record = [INPUT, final] + [_names(layer)[k] for layer in range(graph.n_layers) for k in ("z", "mlp_out")]
    with torch.no_grad():
        acts = activations.run(bundle, ids, record=record, fused_attention=True).acts
    parts = [acts[INPUT][None]]
    for layer in range(graph.n_layers):
        names = _names(layer)
        parts += [_head_outputs(bundle, acts[names["z"]], layer), acts[names["mlp_out"]][None]]
    return torch.cat(parts), acts[final]


@dataclass(frozen=True, eq=False)
class GraphRun:
    logits: torch.Tensor  # [batch, d_vocab] at the last position, detached
    metric: torch.Tensor | None  # the metric's value, detached
    grads: torch.Tensor | None  # [receiver, batch, pos, d_model] d metric / d receiver input


def _span(*groups: list[int]) -> range:
    """The receivers of consecutive groups (a layer's q, k and v receivers follow each other) as one range."""
    return range(groups[0][0], groups[-1][-1] + 1)


class _Receivers:
    """The edits that recompute every receiver from its own input: the run's stream where it reads, plus the cut
    edges' corrupt - current differences, plus (for gradients) a zero leaf of its own."""

    def __init__(self, bundle: ModelBundle, graph: Graph, live: dict, cut: torch.Tensor | None,
                 corrupt: torch.Tensor | None, leaves: bool) -> None:
        self.bundle, self.graph, self.live = bundle, graph, live
        self.cut, self.corrupt = cut, corrupt
        self.leaves: dict[int, torch.Tensor] | None = {} if leaves else None  # first receiver -> zero leaf
        self.differences = None if cut is None else torch.empty_like(corrupt)  # corrupt - this run's outputs
        self.known = 0  # senders whose differences are filled in
        self.totals: dict[int, torch.Tensor | float] = {0: 0.0}  # n -> the first n senders' differences summed
        self.attention_inputs: dict[int, torch.Tensor] = {}  # layer -> its q, k, v receivers' normalised inputs

    def _next_senders(self, first: int) -> tuple[int, torch.Tensor]:
        """(stop, [stop - first, batch, pos, d_model]) this run's outputs of the senders from `first`: the input,
        or one layer's heads, or its MLP."""
        if first == 0:
            return 1, self.live[INPUT][None]
        layer, offset = divmod(first - 1, self.graph.n_heads + 1)
        if offset == 0:
            return first + self.graph.n_heads, _head_outputs(self.bundle, self.live[_names(layer)["z"]], layer)
        return first + 1, self.live[_names(layer)["mlp_out"]][None]

    def wanted(self, receivers: range) -> bool:
        """Whether the receivers' inputs differ from the stream: an edge into one is cut, or it has a leaf."""
        if self.leaves is not None:
            return True
        return self.cut is not None and bool(self.cut[:, receivers.start:receivers.stop].any())

    def _leaf(self, receivers: range, like: torch.Tensor) -> torch.Tensor:
        """[n, batch, pos, d_model] zeros to differentiate, one tensor per group of receivers (a slice of one
        tensor for all would make every group's backward fill a gradient of the whole)."""
        leaf = torch.zeros(len(receivers), *like.shape, dtype=like.dtype, device=like.device, requires_grad=True)
        self.leaves[receivers.start] = leaf
        return leaf

    def gradients(self, value: torch.Tensor) -> torch.Tensor:
        """[receiver, batch, pos, d_model] d value / d every receiver's input."""
        order = sorted(self.leaves)
        return torch.cat(torch.autograd.grad(value, [self.leaves[first] for first in order])).detach()

    def _fill_differences(self, n_senders: int) -> None:
        """Each sender's corrupt - current difference (once per run) and their sums over the first senders."""
        while self.known < n_senders:
            stop, outputs = self._next_senders(self.known)
            difference = self.differences[self.known:stop]
            torch.sub(self.corrupt[self.known:stop], outputs, out=difference)
            self.totals[stop] = self.totals[self.known] + difference.sum(0)
            self.known = stop

    def _weighted(self, weights: torch.Tensor) -> torch.Tensor | float:
        """[n, batch, pos, d_model] sum over senders s of weights[s, n] * difference[s], for weights [s, n] bool,
        over the senders with any weight only (0 if none has)."""
        rows = weights.any(1).nonzero().flatten()
        if len(rows) == 0:
            return 0.0
        differences = self.differences[:len(weights)] if len(rows) == len(weights) else self.differences[rows]
        return torch.einsum("sn,sbpd->nbpd", weights[rows].to(differences.dtype), differences)

    def inputs(self, receivers: range, stream: torch.Tensor) -> torch.Tensor:
        """[n, batch, pos, d_model] the receivers' inputs, from the `stream` [batch, pos, d_model] where they read
        ([1, ...] when they are all the same). A receiver reads every sender before it, so the cut edges' sum is
        the total of those senders' differences less the kept edges' (whichever edges are fewer are summed)."""
        x = stream[None]
        if self.cut is not None:
            n_senders = 1 + max(self.graph.edges[:, receivers.start:receivers.stop].nonzero()[:, 0].tolist())
            self._fill_differences(n_senders)
            cut = self.cut[:n_senders, receivers.start:receivers.stop]  # [sender, n]
            if int(cut.sum()) > SUM_KEPT_ABOVE * cut.numel():
                x = (stream + self.totals[n_senders])[None] - self._weighted(~cut)
            else:
                x = x + self._weighted(cut)
        return x if self.leaves is None else x + self._leaf(receivers, stream)

    def qkv(self, layer: int, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
        adapter, model = self.bundle.adapter, self.bundle.model
        weight = {"q": adapter.W_Q, "k": adapter.W_K, "v": adapter.W_V}[kind](model, layer)  # [n, d_model, d_head]
        bias = {"q": adapter.b_Q, "k": adapter.b_K, "v": adapter.b_V}[kind](model, layer)  # [n, d_head]
        every = _span(*(self.graph.receivers_of(k, layer) for k in "qkv"))
        mine = _span(self.graph.receivers_of(kind, layer))

        def edit(act: torch.Tensor) -> torch.Tensor:  # [batch, pos, n, d_head]
            if layer not in self.attention_inputs:  # once for the layer's q, k and v receivers
                norm = norm_form(self.bundle, adapter.attn_norm(adapter.blocks(model)[layer]))
                self.attention_inputs[layer] = norm(self.inputs(every, self.live[_names(layer)["resid_pre"]]))
            x = self.attention_inputs[layer]  # [n or 1, batch, pos, d_model]
            if len(x) == 1:  # every head reads the same input
                return (torch.einsum("bpm,nmd->bpnd", x[0], weight) + bias).to(act.dtype)
            x = x[mine.start - every.start:mine.stop - every.start]
            return (torch.einsum("nbpm,nmd->bpnd", x, weight) + bias).to(act.dtype)

        return edit

    def stream(self, receiver: range) -> Callable[[torch.Tensor], torch.Tensor]:
        """The edit of the stream one receiver reads: an MLP's input, or the last layer's output (the logits')."""
        def edit(act: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model]
            return self.inputs(receiver, act)[0]

        return edit


def run_on_graph(bundle: ModelBundle, graph: Graph, ids: torch.Tensor, cut: torch.Tensor | None = None,
                 corrupt: torch.Tensor | None = None, receiver_grads: bool = False,
                 metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 input_edit: Callable[[torch.Tensor], torch.Tensor] | None = None) -> GraphRun:
    """One forward pass over ids [batch, pos] with the edges in `cut` ([sender, receiver] bool) fed the `corrupt`
    senders' outputs ([sender, batch, pos, d_model], from `sender_outputs`), and with `receiver_grads` the
    gradient of `metric(logits [batch, d_vocab]) -> scalar` with respect to every receiver's input. `input_edit`
    changes hook_embed first (EAP-IG's interpolated inputs)."""
    if cut is not None and (corrupt is None or tuple(cut.shape) != tuple(graph.edges.shape)):
        raise ValueError("Cutting edges needs a [sender, receiver] mask and the corrupted senders' outputs")
    if cut is not None and receiver_grads:
        raise ValueError("A run either cuts edges or differentiates receivers, not both")
    cut = None if cut is None or not bool((cut & graph.edges).any()) else cut & graph.edges
    receivers = _Receivers(bundle, graph, {}, cut, corrupt, receiver_grads)
    edits: dict[str, object] = {} if input_edit is None else {"hook_embed": input_edit}
    for layer in range(graph.n_layers):
        names = _names(layer)
        edits.update({names[kind]: receivers.qkv(layer, kind) for kind in ("q", "k", "v")
                      if receivers.wanted(_span(graph.receivers_of(kind, layer)))})
        mlp = _span(graph.receivers_of("mlp", layer))
        if receivers.wanted(mlp):
            edits[names["mlp_in"]] = receivers.stream(mlp)
    final = _span(graph.receivers_of("logits", graph.n_layers))
    if receivers.wanted(final):
        edits[_names(graph.n_layers - 1)["resid_post"]] = receivers.stream(final)
    record = [INPUT] + [_names(layer)[k] for layer in range(graph.n_layers)
                        for k in ("resid_pre", "z", "mlp_out")]
    with activations.hooks_on(bundle, record=record, edits=edits, fused_attention=True) as state, \
            torch.set_grad_enabled(receiver_grads):
        receivers.live = state.live
        logits = activations.forward(bundle, ids)[:, -1]
        value = None if metric is None else metric(logits)
        grads = receivers.gradients(value) if receiver_grads else None
    return GraphRun(logits=logits.detach(), metric=None if value is None else value.detach(), grads=grads)
