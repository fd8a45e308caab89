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
clean one. The receivers are recomputed from their inputs with the adapter's weights (q, k, v and the MLP, as in
tests/test_adapter_weights.py) by edits of hook_q, hook_k, hook_v and hook_mlp_out, and the logits' input by an
edit of the last hook_resid_post. A head's output is z_h W_O[h] (its layer's b_O is the same in every run).
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


def _names(layer: int) -> dict[str, str]:
    prefix = f"blocks.{layer}."
    return {kind: prefix + name for kind, name in (("resid_pre", "hook_resid_pre"), ("z", "attn.hook_z"),
            ("attn_out", "hook_attn_out"), ("mlp_out", "hook_mlp_out"), ("q", "attn.hook_q"),
            ("k", "attn.hook_k"), ("v", "attn.hook_v"), ("resid_post", "hook_resid_post"))}


def _head_outputs(bundle: ModelBundle, z: torch.Tensor, layer: int) -> torch.Tensor:
    """[head, batch, pos, d_model] each head's z_h W_O[h] from z [batch, pos, head, d_head]."""
    return torch.einsum("bphd,hdm->hbpm", z, bundle.adapter.W_O(bundle.model, layer))


def sender_outputs(bundle: ModelBundle, graph: Graph, ids: torch.Tensor) -> torch.Tensor:
    """[sender, batch, pos, d_model] what every sender writes on ids [batch, pos] (one plain forward pass)."""
    record = [INPUT] + [_names(layer)[k] for layer in range(graph.n_layers) for k in ("z", "mlp_out")]
    with torch.no_grad():
        acts = activations.run(bundle, ids, record=record, fused_attention=True).acts
    parts = [acts[INPUT][None]]
    for layer in range(graph.n_layers):
        names = _names(layer)
        parts += [_head_outputs(bundle, acts[names["z"]], layer), acts[names["mlp_out"]][None]]
    return torch.cat(parts)


@dataclass(frozen=True, eq=False)
class GraphRun:
    logits: torch.Tensor  # [batch, d_vocab] at the last position, detached
    metric: torch.Tensor | None  # the metric's value, detached
    grads: torch.Tensor | None  # [receiver, batch, pos, d_model] d metric / d receiver input


class _Receivers:
    """The edits that recompute every receiver from its own input: the run's stream where it reads, plus the cut
    edges' corrupt - current differences, plus (for gradients) a zero leaf of its own."""

    def __init__(self, bundle: ModelBundle, graph: Graph, live: dict, cut: torch.Tensor | None,
                 corrupt: torch.Tensor | None, leaves: torch.Tensor | None) -> None:
        self.bundle, self.graph, self.live = bundle, graph, live
        self.cut, self.corrupt, self.leaves = cut, corrupt, leaves
        self.heads_out: dict[int, torch.Tensor] = {}  # layer -> [head, batch, pos, d_model] of this run

    def outputs(self, n_senders: int) -> torch.Tensor:
        """[n_senders, batch, pos, d_model] this run's outputs of the first senders (input, then each layer's
        heads and MLP), from the activations seen so far; each layer's head outputs computed once per run."""
        parts, count = [self.live[INPUT][None]], 1
        for layer in range(self.graph.n_layers):
            if count >= n_senders:
                break
            if layer not in self.heads_out:
                self.heads_out[layer] = _head_outputs(self.bundle, self.live[_names(layer)["z"]], layer)
            parts.append(self.heads_out[layer])
            count += self.graph.n_heads
            if count < n_senders:
                parts.append(self.live[_names(layer)["mlp_out"]][None])
                count += 1
        return torch.cat(parts)[:n_senders]

    def extra(self, receivers: list[int]) -> torch.Tensor:
        """[n, batch, pos, d_model] what the receivers' inputs get on top of the stream where they read."""
        extra = 0.0 if self.leaves is None else self.leaves[receivers]
        if self.cut is not None:
            n_senders = 1 + max(self.graph.edges[:, receivers].nonzero()[:, 0].tolist())  # all that write earlier
            differences = self.corrupt[:n_senders] - self.outputs(n_senders)
            weights = self.cut[:n_senders, receivers].to(differences.dtype)  # [sender, n]
            extra = extra + torch.einsum("sn,sbpd->nbpd", weights, differences)
        return extra

    def qkv(self, layer: int, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
        adapter, model = self.bundle.adapter, self.bundle.model
        weight = {"q": adapter.W_Q, "k": adapter.W_K, "v": adapter.W_V}[kind](model, layer)  # [n, d_model, d_head]
        bias = {"q": adapter.b_Q, "k": adapter.b_K, "v": adapter.b_V}[kind](model, layer)  # [n, d_head]
        norm = norm_form(self.bundle, adapter.attn_norm(adapter.blocks(model)[layer]))
        receivers = self.graph.receivers_of(kind, layer)

        def edit(act: torch.Tensor) -> torch.Tensor:  # [batch, pos, n, d_head]
            x = self.live[_names(layer)["resid_pre"]][None] + self.extra(receivers)
            x = norm(x.expand(len(receivers), *x.shape[1:]))  # [n, batch, pos, d_model]
            return (torch.einsum("nbpm,nmd->bpnd", x, weight) + bias).to(act.dtype)

        return edit

    def mlp(self, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        adapter, model = self.bundle.adapter, self.bundle.model
        block = adapter.blocks(model)[layer]
        norm, act_fn = norm_form(self.bundle, adapter.mlp_norm(block)), adapter.neuron_activation(block)
        w_in, b_in, w_out, b_out = (adapter.W_in(model, layer), adapter.b_in(model, layer),
                                    adapter.W_out(model, layer), adapter.b_out(model, layer))
        w_gate, b_gate = adapter.W_gate(model, layer), adapter.b_gate(model, layer)
        receiver = self.graph.receivers_of("mlp", layer)
        names = _names(layer)

        def edit(out: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model]
            stream = self.live[names["resid_pre"]]
            if not self.graph.parallel:
                stream = stream + self.live[names["attn_out"]]
            x = norm((stream[None] + self.extra(receiver))[0])
            pre = x @ w_in + b_in
            post = act_fn(pre) if w_gate is None else act_fn(x @ w_gate + b_gate) * pre
            return (post @ w_out + b_out).to(out.dtype)

        return edit

    def logits(self) -> Callable[[torch.Tensor], torch.Tensor]:
        receiver = self.graph.receivers_of("logits", self.graph.n_layers)

        def edit(resid: torch.Tensor) -> torch.Tensor:
            return resid + self.extra(receiver)[0]

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
    cut = None if cut is None or not bool((cut & graph.edges).any()) else cut & graph.edges
    leaves = None
    if receiver_grads:
        leaves = torch.zeros(len(graph.receivers), *ids.shape, bundle.d_model, device=bundle.device,
                             requires_grad=True)
    live: dict[str, torch.Tensor] = {}
    receivers = _Receivers(bundle, graph, live, cut, corrupt, leaves)
    edits: dict[str, object] = {} if input_edit is None else {"hook_embed": input_edit}
    if cut is not None or leaves is not None:
        for layer in range(graph.n_layers):
            names = _names(layer)
            edits.update({names[kind]: receivers.qkv(layer, kind) for kind in ("q", "k", "v")})
            edits[names["mlp_out"]] = receivers.mlp(layer)
        edits[_names(graph.n_layers - 1)["resid_post"]] = receivers.logits()
    record = [INPUT] + [_names(layer)[k] for layer in range(graph.n_layers)
                        for k in ("resid_pre", "z", "attn_out", "mlp_out")]
    with activations.hooks_on(bundle, record=record, edits=edits, fused_attention=True) as state, \
            torch.set_grad_enabled(receiver_grads):
        receivers.live = state.live
        logits = activations.forward(bundle, ids)[:, -1]
        value = None if metric is None else metric(logits)
        grads = torch.autograd.grad(value, leaves)[0].detach() if receiver_grads else None
    return GraphRun(logits=logits.detach(), metric=None if value is None else value.detach(), grads=grads)
