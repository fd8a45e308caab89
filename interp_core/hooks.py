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
