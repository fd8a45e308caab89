"""The activation API on nnsight (issue 22, part 3): `run` as in interp_core.activations (TransformerLens names,
records, edits, gradients, the same `Run` back), executed by nnsight's tracer instead of our hooks, so that the
same request can be served by a model nnsight wraps.

    >>> run(bundle, ids, record=["blocks.0.attn.hook_z"]).acts        # equal to activations.run's within 1e-5
    >>> run(bundle, ids, edits={"blocks.1.hook_resid_pre": activations.zero(pos=3)})

Each name is read where activations reads it (`activations._point`: a module's input or output and how the
activation is cut from it), in the order the forward pass reaches them, as nnsight requires: a module's input
before anything inside it runs, its output after its last submodule. Edits assign the module's input or output;
gradients are taken from the same leaves as activations.run's. hook_pattern is recorded from the attention
module's second output (the probabilities our attention implementation returns); editing it is refused (the
probabilities are used inside the attention function, which nnsight reaches only through its source-level
access).

Runs locally (nnsight's own execution on the bundle's model). Remote execution on NDIF needs nnsight's
LanguageModel on a hub id and an API key; it is not wired in yet (issue 22).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from weakref import WeakKeyDictionary

import torch

from interp_core import activations
from interp_core.activations import Edit, Metric, Run
from interp_core.loading import ModelBundle

_wrapped: WeakKeyDictionary = WeakKeyDictionary()  # model -> its nnsight wrapper
_orders: WeakKeyDictionary = WeakKeyDictionary()  # model -> activations.call_order
_wrapped_lock = threading.Lock()


def wrapped(bundle: ModelBundle):
    """The nnsight wrapper (nnsight.NNsight) of the bundle's model, made once per model."""
    from nnsight import NNsight

    with _wrapped_lock:
        if bundle.model not in _wrapped:
            _wrapped[bundle.model] = NNsight(bundle.model)
        return _wrapped[bundle.model]


def _envoy(root, path: str):
    """The nnsight envoy of the module at `path` ("transformer.h.0.attn")."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _pattern_point(bundle: ModelBundle, name, state) -> activations.ActivationPoint:
    """hook_pattern, read only: the attention module's second output, the probabilities our attention
    implementation returns. Replacing them there would not change the output already computed from them."""
    if name.text in state.edits or name.text in state.grad:
        raise ValueError(f"{name.text}: through nnsight hook_pattern can be recorded, not edited or differentiated")
    block = bundle.adapter.blocks(bundle.model)[name.layer]
    return activations.ActivationPoint(bundle.adapter.attention(block), False, lambda out: out[1], None)


def _ordered_points(bundle: ModelBundle, names, state) -> list[tuple[str, object, list]]:
    """(module path, point, names) per activation point, in the order the forward pass reaches them: a module's
    input when it is entered, its output when it is left (activations.call_order)."""
    with _wrapped_lock:
        if bundle.model not in _orders:
            _orders[bundle.model] = activations.call_order(bundle)
        order = _orders[bundle.model]
    path = {module: name for name, module in bundle.model.named_modules()}
    groups: dict[tuple[int, bool, str], tuple[object, list]] = {}
    for name in names:
        point = activations.activation_point(bundle, name) or _pattern_point(bundle, name, state)
        groups.setdefault((id(point.module), point.pre, name.kind), (point, []))[1].append(name)
    ordered = sorted(groups.values(), key=lambda g: order[g[0].module][0 if g[0].pre else 1])
    return [(path[point.module], point, names) for point, names in ordered]


def run(
    bundle: ModelBundle,
    ids: torch.Tensor,
    record: Iterable[str] | Mapping[str, Callable | None] = (),
    edits: Mapping[str, Edit | Iterable[Edit]] | None = None,
    grad: Iterable[str] = (),
    metric: Metric | None = None,
    attention_mask: torch.Tensor | None = None,
    logits_to_keep: int = 1,
) -> Run:
    """activations.run's contract, through nnsight (see the module docstring)."""
    grad = list(grad)
    if grad and metric is None:
        raise ValueError("Gradients need a metric to differentiate")
    state, parsed = activations.request(bundle, record, edits, grad)
    points = _ordered_points(bundle, parsed, state)
    ids = ids.to(bundle.device)
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(bundle.device)
    model, out = wrapped(bundle), {}
    with bundle.lock, torch.set_grad_enabled(bool(grad)):
        with model.trace(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=logits_to_keep):
            for path, point, names in points:
                envoy = _envoy(model, path)
                value = envoy.input if point.pre else envoy.output
                act, changed = state.visit(names, point.read(value))
                if changed and point.pre:
                    envoy.input = point.write(value, act)
                elif changed:
                    envoy.output = point.write(value, act)
            logits = model.output.logits
            out["logits"] = logits.detach()
            if metric is not None:
                value = metric(logits, state.live)
                out["metric"] = value.detach()
                if grad:
                    out["grads"] = torch.autograd.grad(value, [state.live[n] for n in grad])
    grads = dict(zip(grad, out.get("grads", ()), strict=False))
    return Run(logits=out["logits"], acts=state.kept, grads={n: g.detach() for n, g in grads.items()},
               metric=out.get("metric"))
