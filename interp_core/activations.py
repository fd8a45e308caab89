"""The one way to read and change a model's activations: TransformerLens names on every supported family.

    >>> acts = run(bundle, ids, record=["blocks.0.attn.hook_z"]).acts           # record: [batch, pos, head, d_head]
    >>> run(bundle, ids, edits={"blocks.1.attn.hook_z[3]": zero()})              # patch, ablate, steer
    >>> run(bundle, ids, grad=["hook_embed"], metric=lambda logits, acts: logits[:, -1, 7].sum()).grads

`ids` is a batch of token ids [batch, pos]. Every call holds `bundle.lock` from the first hook to the last
gradient and always removes its hooks, so one request's hooks never meet another's forward pass; a long job
calls `run` once per chunk and so lets other requests in between (the lock is fair). This is the only module
that registers hooks.

Names (TransformerLens' HookedTransformer; `[h]` after a per-head name selects head h):
    hook_embed, hook_pos_embed (GPT-2 only)                      [batch, pos, d_model]
    blocks.{l}.hook_resid_pre, hook_attn_out, hook_mlp_out, hook_resid_post   [batch, pos, d_model]
    blocks.{l}.attn.hook_q, hook_k, hook_v, hook_z              [batch, pos, head, d_head] (k, v: kv heads)
    blocks.{l}.attn.hook_pattern                                [batch, head, query_pos, key_pos]
    blocks.{l}.hook_mlp_in                                      [batch, pos, d_model] (the MLP's norm's input:
        resid_pre + attn_out, or resid_pre in a parallel block; TransformerLens' use_hook_mlp_in)
    blocks.{l}.mlp.hook_post                                    [batch, pos, d_mlp] (the neurons)
    ln_final.hook_normalized                                    [batch, pos, d_model]
hook_q and hook_k are taken before the rotary embedding, as in TransformerLens. An edit `fn(act) -> act` sees
the activation after earlier edits; records and gradients see it after every edit at that name.
"""

from __future__ import annotations

import itertools
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.utils.checkpoint
from torch import nn

from interp_core.budget import map_tensors_if_large
from interp_core.loading import ModelBundle
from interp_core.recorded_attention import attention_weights_unused, pattern_hooks

Edit = Callable[[torch.Tensor], torch.Tensor]
Metric = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]

_NAME = re.compile(r"^(?:blocks\.(\d+)\.)?([a-z_.]+?)(?:\[(\d+)\])?$")
NAME_KINDS = {  # name without the block prefix -> kind
    "hook_embed": "embed", "hook_pos_embed": "pos_embed", "ln_final.hook_normalized": "ln_final",
    "hook_resid_pre": "resid_pre", "attn.hook_q": "q", "attn.hook_k": "k", "attn.hook_v": "v",
    "attn.hook_pattern": "pattern", "attn.hook_z": "z", "hook_attn_out": "attn_out", "hook_mlp_in": "mlp_in",
    "mlp.hook_post": "post", "hook_mlp_out": "mlp_out", "hook_resid_post": "resid_post",
}
GLOBAL_KINDS = {"embed", "pos_embed", "ln_final"}
_PER_HEAD = {"q": 2, "k": 2, "v": 2, "z": 2, "pattern": 1}  # kind -> the head dimension of its activation


@dataclass(frozen=True)
class HookName:
    """A parsed activation name: kind, layer (None for embed, pos_embed, ln_final) and head (None: all)."""

    kind: str
    layer: int | None
    head: int | None
    text: str

    def select(self, act: torch.Tensor) -> torch.Tensor:
        """This name's part of the whole activation (one head's slice for a `[h]` name)."""
        return act if self.head is None else act.select(_PER_HEAD[self.kind], self.head)

    def merge(self, act: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """The whole activation with this name's part replaced by `part` (a new tensor for a `[h]` name)."""
        if self.head is None:
            return part
        return torch.cat([act.narrow(_PER_HEAD[self.kind], 0, self.head), part.unsqueeze(_PER_HEAD[self.kind]),
                          act.narrow(_PER_HEAD[self.kind], self.head + 1, act.shape[_PER_HEAD[self.kind]]
                                     - self.head - 1)], dim=_PER_HEAD[self.kind])


def parse_name(bundle: ModelBundle, name: str) -> HookName:
    """Parse and check a TransformerLens name such as "blocks.2.attn.hook_z[5]"; raises ValueError."""
    match = _NAME.match(name)
    kind = NAME_KINDS.get(match.group(2)) if match else None
    if kind is None:
        raise ValueError(f"Unknown activation name {name!r}; known: {', '.join(NAME_KINDS)} (with blocks.{{l}}.)")
    layer = None if match.group(1) is None else int(match.group(1))
    head = None if match.group(3) is None else int(match.group(3))
    if (kind in GLOBAL_KINDS) != (layer is None):
        raise ValueError(f"{name!r}: {'no' if kind in GLOBAL_KINDS else 'a'} block index belongs in this name")
    if layer is not None and not 0 <= layer < bundle.n_layers:
        raise ValueError(f"{name!r}: this model has blocks 0 to {bundle.n_layers - 1}")
    if head is not None:
        heads = bundle.adapter.n_kv_heads(bundle.model) if kind in ("k", "v") else bundle.n_heads
        if kind not in _PER_HEAD or not 0 <= head < heads:
            raise ValueError(f"{name!r}: a head index belongs only on q, k, v, z or pattern, from 0 to {heads - 1}")
    if kind == "pos_embed" and bundle.adapter.position_embedding(bundle.model) is None:
        raise ValueError(f"{name!r}: this model has no learned position embedding (it is rotary)")
    return HookName(kind, layer, head, name)


# -- edits ------------------------------------------------------------------------------------------------


def _index(rows, pos) -> tuple:
    return (slice(None) if rows is None else rows, slice(None) if pos is None else pos)


def replace(value: torch.Tensor | float, rows=None, pos=None) -> Edit:
    """An edit that sets act[rows, pos] (dims 0 and 1; all when None) to `value`, broadcast."""
    def edit(act: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        act[_index(rows, pos)] = value.to(act.device, act.dtype) if torch.is_tensor(value) else value
        return act
    return edit


def add(vector: torch.Tensor, rows=None, pos=None) -> Edit:
    """An edit that adds `vector` (broadcast) to act[rows, pos]: steering."""
    def edit(act: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        act[_index(rows, pos)] += vector.to(act.device, act.dtype)
        return act
    return edit


def zero(rows=None, pos=None) -> Edit:
    """An edit that sets act[rows, pos] to zero: zero ablation."""
    return replace(0.0, rows, pos)


# -- where each name lives ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationPoint:
    """A module and how to read and write one kind of activation at it (pre: its input, else its output)."""

    module: nn.Module
    pre: bool
    read: Callable[[torch.Tensor], torch.Tensor]  # module input/output tensor -> activation (TL layout)
    write: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (tensor, new activation) -> new tensor


def _split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    return x.view(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)


def _qkv_point(bundle: ModelBundle, block: nn.Module, kind: str) -> ActivationPoint:
    """hook_q/k/v: the per-head part of the q/k/v projection output(s), as the adapter splits them (GPT-2's
    c_attn q | k | v, GPT-NeoX's per-head interleaved query_key_value, Llama's separate projections)."""
    adapter, model, index = bundle.adapter, bundle.model, "qkv".index(kind)
    modules = adapter.qkv_projections(block)
    if isinstance(modules, tuple):  # one projection per kind: its output is [batch, pos, n * d_head]
        n = bundle.n_heads if kind == "q" else adapter.n_kv_heads(model)
        return ActivationPoint(modules[index], False, partial(_split_heads, n_heads=n),
                               lambda out, act: act.flatten(-2))

    def write(out: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        parts = list(adapter.split_qkv(model, out))
        parts[index] = act
        return adapter.merge_qkv(*parts)

    return ActivationPoint(modules, False, lambda out: adapter.split_qkv(model, out)[index], write)


def _first(value):
    return value[0] if isinstance(value, tuple) else value


def activation_point(bundle: ModelBundle, name: HookName) -> ActivationPoint | None:
    """Where `name` lives; None for hook_pattern (read inside the attention function)."""
    adapter, model = bundle.adapter, bundle.model
    same = (lambda x: x), (lambda x, act: act)
    if name.kind == "pattern":
        return None
    if name.kind == "embed":
        return ActivationPoint(adapter.token_embedding(model), False, *same)
    if name.kind == "pos_embed":
        return ActivationPoint(adapter.position_embedding(model), False, *same)
    if name.kind == "ln_final":
        return ActivationPoint(adapter.final_norm(model), False, *same)
    block = adapter.blocks(model)[name.layer]
    if name.kind in ("q", "k", "v"):
        return _qkv_point(bundle, block, name.kind)
    if name.kind == "resid_pre":
        return ActivationPoint(block, True, *same)
    if name.kind == "z":
        return ActivationPoint(adapter.attn_out_proj(block), True, partial(_split_heads, n_heads=bundle.n_heads),
                      lambda x, act: act.flatten(-2))
    if name.kind == "attn_out":  # the attention module returns (output, weights)
        return ActivationPoint(adapter.attention(block), False, _first, lambda out, act: (act, *out[1:]))
    if name.kind == "mlp_in":
        return ActivationPoint(adapter.mlp_norm(block), True, *same)
    if name.kind == "post":
        return ActivationPoint(adapter.mlp_out_proj(block), True, *same)
    if name.kind == "mlp_out":
        return ActivationPoint(adapter.mlp(block), False, *same)
    return ActivationPoint(block, False, _first,  # resid_post: the block's output
                  lambda out, act: (act, *out[1:]) if isinstance(out, tuple) else act)


# -- one forward pass with hooks -----------------------------------------------------------------------------


@dataclass
class _Hooks:
    """Per-call state: what to record, edit and differentiate, and what was seen."""

    records: dict[str, Callable | None]  # name -> reducer applied before keeping (None: keep as is)
    edits: dict[str, list[Edit]]
    grad: set[str]
    live: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> the activation in the graph
    kept: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> recorded (reduced, detached)

    def visit(self, names: list[HookName], act: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """`act` after the edits of `names` (one activation point), each name recorded; and whether the
        module's value must be rebuilt from it (an edit, or a gradient that needs it in the graph)."""
        changed = False
        for name in names:
            part = name.select(act)
            for edit in self.edits.get(name.text, ()):
                part = edit(part)
            if name.text in self.grad and name.text not in self.live and not part.requires_grad:
                part = part.detach().requires_grad_(True)  # gradients start here
            if name.text not in self.live:  # first call only: a recomputed block calls its hooks again
                self.live[name.text] = part
                reducer = self.records.get(name.text, False)
                if reducer is not False:
                    self.kept[name.text] = (part if reducer is None else reducer(part)).detach()
            if name.text in self.edits or name.text in self.grad:
                act, changed = name.merge(act, part), True
        return act, changed

    def visit_pattern(self, names: list[HookName], weights: torch.Tensor) -> torch.Tensor:
        return self.visit(names, weights)[0]


def _module_hook(state: _Hooks, names: list[HookName], point: ActivationPoint):
    def visit(value):
        act, changed = state.visit(names, point.read(value))
        return point.write(value, act) if changed else None  # None: the module's value stays

    if point.pre:
        def hook(module, args):
            new = visit(args[0])
            return None if new is None else (new, *args[1:])
    else:
        def hook(module, args, out):
            return visit(out)
    return hook


def request(bundle: ModelBundle, record, edits, grad) -> tuple[_Hooks, list[HookName]]:
    """One call's state (what to record, edit and differentiate) and its parsed names, edits first."""
    records = dict(record) if isinstance(record, Mapping) else {name: None for name in record}
    edit_lists = {n: [e] if callable(e) else list(e) for n, e in (edits or {}).items()}
    state = _Hooks(records=records, edits=edit_lists, grad=set(grad))
    return state, [parse_name(bundle, n) for n in dict.fromkeys([*edit_lists, *records, *state.grad])]


@contextmanager
def hooks_on(
    bundle: ModelBundle,
    record: Iterable[str] | Mapping[str, Callable | None] = (),
    edits: Mapping[str, Edit | Iterable[Edit]] | None = None,
    grad: Iterable[str] = (),
    fused_attention: bool = False,
    recompute: bool = False,
) -> Iterator[_Hooks]:
    """Hold `bundle.lock` and install the hooks for one or more forward passes; yields the per-call state
    (`.kept`: recorded activations, `.live`: the same in the autograd graph). Always removes every hook.

    `fused_attention`: attention through torch's fused kernel (no [head, pos, pos] probabilities; for passes
    that never read hook_pattern). `recompute`: a backward pass recomputes each block from its input instead
    of keeping its activations (torch.utils.checkpoint), for gradient passes too big for memory.
    """
    state, parsed = request(bundle, record, edits, grad)
    by_point: dict[tuple[int, bool, str], tuple[ActivationPoint, list[HookName]]] = {}  # q, k, v share a module
    patterns: dict[int, list[HookName]] = {}
    for name in parsed:
        point = activation_point(bundle, name)
        if point is None:
            patterns.setdefault(name.layer, []).append(name)
            continue
        by_point.setdefault((id(point.module), point.pre, name.kind), (point, []))[1].append(name)
    if patterns and fused_attention:
        raise ValueError("hook_pattern needs the probabilities: do not ask for fused attention with it")
    with bundle.lock, ExitStack() as stack:
        for point, names in by_point.values():
            hook = _module_hook(state, names, point)
            register = point.module.register_forward_pre_hook if point.pre else point.module.register_forward_hook
            stack.callback(register(hook).remove)
        if patterns:
            stack.enter_context(pattern_hooks({layer: partial(state.visit_pattern, names)
                                               for layer, names in patterns.items()}))
        if fused_attention:
            stack.enter_context(attention_weights_unused())
        if recompute:
            stack.enter_context(_recomputed_blocks(bundle))
        yield state


def forward(bundle: ModelBundle, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            logits_to_keep: int = 1) -> torch.Tensor:
    """The model's logits [batch, logits_to_keep, d_vocab] for ids [batch, pos] (a mask of ones by default)."""
    _contiguous_unembedding_input(bundle.model)
    ids = ids.to(bundle.device)
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(bundle.device)
    return bundle.model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=logits_to_keep).logits


_CONTIGUOUS = weakref.WeakSet()  # models whose unembedding already makes its input contiguous


def _contiguous_unembedding_input(model: nn.Module) -> None:
    """Give the unembedding a contiguous input (once per model; callers hold the lock). transformers slices the
    last positions (logits_to_keep) out of [batch, pos, d_model]; torch's CPU matmul of that strided slice in
    bfloat16 expands the weight once per row (measured, GPT-2 small, 32 rows: 7 s and 2.4 GB against 0.03 s)."""
    if model not in _CONTIGUOUS:
        model.get_output_embeddings().register_forward_pre_hook(lambda module, args: (args[0].contiguous(),))
        _CONTIGUOUS.add(model)


def call_order(bundle: ModelBundle) -> dict[nn.Module, tuple[int, int]]:
    """For each module the model calls: when one forward pass (two tokens) first enters it and last leaves it,
    as counters over every call (what nnsight's tracer needs: each value asked for in that order)."""
    order: dict[nn.Module, list[int]] = {}
    clock = itertools.count()

    def enter(module, args):
        order.setdefault(module, [next(clock), -1])

    def leave(module, args, out):
        order[module][1] = next(clock)

    with bundle.lock, ExitStack() as stack, torch.no_grad():
        for module in bundle.model.modules():
            stack.callback(module.register_forward_pre_hook(enter).remove)
            stack.callback(module.register_forward_hook(leave).remove)
        forward(bundle, torch.zeros(1, 2, dtype=torch.long))
    return {module: (first, last) for module, (first, last) in order.items()}


def embed_tokens(bundle: ModelBundle, ids: torch.Tensor) -> torch.Tensor:
    """The token embedding (hook_embed) of ids [...] -> [..., d_model], detached. Under the lock: a module of the
    shared model may carry another request's hook while that request's forward pass runs."""
    with bundle.lock, torch.no_grad():
        return bundle.adapter.token_embedding(bundle.model)(ids.to(bundle.device)).detach()


@dataclass(frozen=True, eq=False)
class Run:
    """What one `run` call saw: the kept logits, the recorded activations and the requested gradients."""

    logits: torch.Tensor  # [batch, logits_to_keep, d_vocab], detached
    acts: dict[str, torch.Tensor]  # name -> recorded activation (after the reducer), detached, model device
    grads: dict[str, torch.Tensor]  # name -> d metric / d activation, same shape as the activation
    metric: torch.Tensor | None  # the metric's value, detached (None without a metric)


def run(
    bundle: ModelBundle,
    ids: torch.Tensor,
    record: Iterable[str] | Mapping[str, Callable | None] = (),
    edits: Mapping[str, Edit | Iterable[Edit]] | None = None,
    grad: Iterable[str] = (),
    metric: Metric | None = None,
    attention_mask: torch.Tensor | None = None,
    logits_to_keep: int = 1,
    fused_attention: bool = False,
    recompute: bool = False,
) -> Run:
    """One forward pass over ids [batch, pos] with `record`ed and `edits`ed activations (see the module
    docstring); with `grad` names and a `metric(logits, live_acts) -> scalar`, also one backward pass giving
    d metric / d activation for each grad name (its value after the edits). Records may be a mapping from name
    to a reducer applied before keeping (e.g. `lambda x: x[:, -1]`)."""
    grad = list(grad)
    if grad and metric is None:
        raise ValueError("Gradients need a metric to differentiate")
    map_tensors_if_large(bundle, *ids.shape)  # long prompts' activations go back to the system when freed
    with hooks_on(bundle, record, edits, grad, fused_attention, recompute) as state, \
            torch.set_grad_enabled(bool(grad)):
        logits = forward(bundle, ids, attention_mask, logits_to_keep)
        value = grads = None
        if metric is not None:
            value = metric(logits, state.live)
        if grad:
            missing = [n for n in grad if n not in state.live]
            if missing:
                raise RuntimeError(f"No forward pass reached {', '.join(missing)}; the adapter does not match")
            grads = dict(zip(grad, torch.autograd.grad(value, [state.live[n] for n in grad]), strict=True))
    return Run(logits=logits.detach(), acts=state.kept, grads={n: g.detach() for n, g in (grads or {}).items()},
               metric=None if value is None else value.detach())


# -- recomputed blocks ---------------------------------------------------------------------------------------


@contextmanager
def _recomputed_blocks(bundle: ModelBundle) -> Iterator[None]:
    """Inside the block a backward pass recomputes each transformer block from its input (torch.utils.checkpoint)
    instead of keeping its activations: it holds one block's activations at a time plus every block's input.

    The blocks' `forward` is wrapped for the duration (the caller holds the lock) and always restored; an
    enclosing recomputed block's wrapping is left in place. Hooks inside a block run again when it is recomputed
    (`_Hooks.visit` keeps only the first call's records)."""
    blocks = bundle.adapter.blocks(bundle.model)
    with bundle.lock:
        before = [vars(block).get("forward") for block in blocks]  # None: the class's forward
        try:
            for block, wrapped in zip(blocks, before, strict=True):
                if wrapped is None:
                    block.forward = partial(_checkpointed, block.forward)
            yield
        finally:
            for block, wrapped in zip(blocks, before, strict=True):
                if wrapped is None:
                    vars(block).pop("forward", None)


def _checkpointed(forward_fn: Callable, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward_fn(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward_fn, *args, use_reentrant=False, **kwargs)
