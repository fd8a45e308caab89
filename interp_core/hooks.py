"""Temporary hooks on a shared model: registered under the bundle's lock and always removed.

    >>> seen = []
    >>> with hooked(bundle, forward=[(bundle.adapter.mlp(block), lambda mod, args, out: seen.append(out))]):
    ...     bundle.model(ids)

Forward hooks are `fn(module, args, output)` (return a value to replace the output); pre-hooks are
`fn(module, args)` (return a tuple to replace the positional arguments). See `torch.nn.Module.register_*_hook`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.utils.checkpoint
from torch import nn

from interp_core.loading import ModelBundle

HookSpec = tuple[nn.Module, Callable]


@contextmanager
def hooked(
    bundle: ModelBundle,
    forward: Iterable[HookSpec] = (),
    pre: Iterable[HookSpec] = (),
) -> Iterator[None]:
    """Hold `bundle.lock`, register the hooks, yield, then remove every hook (also on an exception).

    The lock is re-entrant, so a function that already holds it may call another that uses `hooked`. Every
    forward pass whose result depends on hooks, and every gradient computation, must run inside this block so
    that no other request's forward pass sees the hooks.
    """
    with bundle.lock:
        handles = []
        try:
            for module, fn in pre or ():
                handles.append(module.register_forward_pre_hook(fn))
            for module, fn in forward or ():
                handles.append(module.register_forward_hook(fn))
            yield
        finally:
            for handle in handles:
                handle.remove()


@contextmanager
def recomputed_blocks(bundle: ModelBundle) -> Iterator[None]:
    """Hold `bundle.lock`; inside the block a backward pass recomputes each transformer block's activations from
    its input (torch.utils.checkpoint) instead of keeping them, so a gradient pass holds one block's activations
    at a time plus every block's input. Forward passes without gradients run as they are.

    The blocks' `forward` is wrapped for the duration and always restored; the lock keeps every other request's
    forward pass out meanwhile. Hooks on the blocks themselves run once; hooks inside a block run again when it
    is recomputed.
    """
    blocks = bundle.adapter.blocks(bundle.model)
    with bundle.lock:
        before = [vars(block).get("forward") for block in blocks]  # None: the class's forward
        try:
            for block, wrapped in zip(blocks, before, strict=True):
                if wrapped is None:  # else an enclosing recomputed_blocks wrapped it already
                    block.forward = partial(_checkpointed, block.forward)
            yield
        finally:
            for block, wrapped in zip(blocks, before, strict=True):
                if wrapped is None:
                    vars(block).pop("forward", None)


def _checkpointed(forward: Callable, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
