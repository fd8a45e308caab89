"""Process-wide caches bounded by bytes: traces (`cached_trace`) and analysis results (`memoize`).

    >>> trace = cached_trace(bundle, "The capital of France is")   # one forward pass; later calls hit the cache
    >>> @memoize()
    ... def lens_of(_bundle, _trace, ref, prompt):                  # `_` arguments are not hashed (result_key)
    ...     return logit_lens(_bundle, _trace)

Every entry counts its tensors' bytes (`nbytes`) against a cap from `Limits` (trace_cache_bytes,
result_cache_bytes); the least recently used entries are evicted to stay under it, and a value larger than the
whole cap is returned but not kept. Keys include the model's `ModelBundle.fingerprint`, so results of a folder's
old weights are never served once it is retrained in place. Concurrent misses of one key compute it once (the
other threads wait for that result), as the sessions of one Streamlit process share these caches.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from functools import wraps
from inspect import signature
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
import torch

from interp_core.cache_keys import code_digest, remember_origin, result_key
from interp_core.loading import ModelBundle
from interp_core.settings import limits

if TYPE_CHECKING:
    from interp_core.trace import Trace

V = TypeVar("V")
_MISSING = object()

# Referenced by results but shared, not owned by any cache entry: counted as 0 bytes (never walked into).
_SHARED = (ModelBundle, torch.nn.Module, types.ModuleType, type, types.FunctionType, types.MethodType,
           types.BuiltinFunctionType, weakref.ref)


def nbytes(value: object) -> int:
    """Bytes of memory `value` holds: torch tensors by their storage (each storage counted once, so views and
    tensors sharing memory are not counted twice), numpy arrays by their base buffer (once), pandas objects by
    `memory_usage(deep=True)`, walking into dataclasses, tuples, lists, sets, dicts and objects' attributes.
    Strings and other leaves count `sys.getsizeof`; models and bundles count 0 (shared, not owned)."""
    seen_storage: set[tuple] = set()
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, _SHARED) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            total += _tensor_bytes(obj, seen_storage)
        elif isinstance(obj, np.ndarray):
            root = obj
            while isinstance(root.base, np.ndarray):  # a view: count the array that owns the buffer, once
                root = root.base
            if root is obj:
                total += obj.nbytes
            elif id(root) not in seen:
                seen.add(id(root))
                total += root.nbytes
        elif isinstance(obj, pd.DataFrame):
            total += int(obj.memory_usage(deep=True, index=True).sum())
        elif isinstance(obj, pd.Series | pd.Index):
            total += int(obj.memory_usage(deep=True))
        elif isinstance(obj, str | bytes | bytearray | int | float | complex | bool):
            total += sys.getsizeof(obj)
        elif isinstance(obj, dict):
            total += sys.getsizeof(obj)
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            total += sys.getsizeof(obj)
            stack.extend(obj)
        elif dataclasses.is_dataclass(obj):
            total += sys.getsizeof(obj)
            stack.extend(getattr(obj, f.name, None) for f in dataclasses.fields(obj))
        elif isinstance(getattr(obj, "__dict__", None), dict):
            total += sys.getsizeof(obj)
            stack.extend(vars(obj).values())
        else:
            total += sys.getsizeof(obj)
    return total


def _tensor_bytes(tensor: torch.Tensor, seen_storage: set[tuple]) -> int:
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse and other layouts without one storage
        return tensor.element_size() * tensor.nelement()
    key = (storage.device.type, storage.device.index, storage.data_ptr(), storage.nbytes())
    if key in seen_storage:
        return 0
    seen_storage.add(key)
    return int(storage.nbytes())


# -- the cache -------------------------------------------------------------------------------------------------


class _Flight:
    """One computation in progress; threads that miss the same key wait for it."""

    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = _MISSING  # stays _MISSING when the computation raised


class ByteLRU:
    """A thread-safe LRU whose entries count `nbytes(value)` against `max_bytes`.

    `get_or_compute(key, compute)` returns the cached value or runs `compute()` once per key however many threads
    miss it at the same time (they wait and get the same object; when it raises, one of them tries again). A value
    larger than `max_bytes` is returned but not kept. `hits` and `misses` count `get_or_compute` calls (a miss is
    one `compute()` that returned), `evictions` the entries dropped to make room.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("a cache needs max_bytes >= 0")
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()  # key -> (value, bytes)
        self._used = 0
        self._lock = threading.Lock()  # guards the fields above; never held while computing
        self._flights: dict[Hashable, _Flight] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    @property
    def used_bytes(self) -> int:
        """Bytes counted by the entries kept now (always <= max_bytes)."""
        with self._lock:
            return self._used

    def keys(self) -> list[Hashable]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def entry_bytes(self, key: Hashable) -> int:
        """The bytes counted for `key`'s entry (KeyError when it is not cached)."""
        with self._lock:
            return self._entries[key][1]

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self._used = 0

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key satisfies `predicate`; returns how many were dropped."""
        with self._lock:
            doomed = [key for key in self._entries if predicate(key)]
            for key in doomed:
                self._used -= self._entries.pop(key)[1]
        return len(doomed)

    def resize(self, max_bytes: int) -> None:
        """Change the cap, evicting least recently used entries until the rest fit."""
        if max_bytes < 0:
            raise ValueError("a cache needs max_bytes >= 0")
        with self._lock:
            self.max_bytes = int(max_bytes)
            self._evict_to_fit()

    def lookup(self, key: Hashable, default: object = None) -> object:
        """The cached value for `key` (made the most recently used), or `default`; computes nothing."""
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key][0]

    def put(self, key: Hashable, value: V, size: int | None = None) -> bool:
        """Keep `value` under `key` (counted as `size`, default nbytes(value)); False when it is larger than the
        cap and was not kept."""
        size = nbytes(value) if size is None else int(size)
        with self._lock:
            return self._store(key, value, size)

    def _store(self, key: Hashable, value: object, size: int) -> bool:
        old = self._entries.pop(key, None)
        if old is not None:
            self._used -= old[1]
        if size > self.max_bytes:
            return False
        self._entries[key] = (value, size)
        self._used += size
        self._evict_to_fit()
        return True

    def _evict_to_fit(self) -> None:
        while self._used > self.max_bytes and self._entries:
            _, (_, size) = self._entries.popitem(last=False)  # the least recently used
            self._used -= size
            self.evictions += 1

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value for `key`, else `compute()` (run once however many threads miss `key` together)."""
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[0]
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight()
            if not leader:
                flight.done.wait()
                if flight.value is not _MISSING:
                    with self._lock:
                        self.hits += 1
                    return flight.value
                continue  # the computing thread raised: try again (one waiter becomes the next leader)
            try:
                value = compute()
                size = nbytes(value)  # outside the lock: it walks the value
                with self._lock:
                    self.misses += 1
                    self._store(key, value, size)
                flight.value = value
                return value
            finally:
                with self._lock:
                    self._flights.pop(key, None)
                flight.done.set()


# -- traces ----------------------------------------------------------------------------------------------------


class TraceCache(ByteLRU):
    """The byte-bounded LRU of traces, keyed on (bundle.ref, bundle.fingerprint, prompt, max_tokens).

    Concurrent requests for the same key wait for one forward pass instead of running their own.
    """

    def get(self, bundle: ModelBundle, prompt: str, max_tokens: int | None = None) -> Trace:
        """The cached trace for this model, prompt and token cap, running `run_trace` on a miss."""

        def compute() -> Trace:
            from interp_core import trace as trace_module  # at call time: trace.py re-exports this module

            trace = trace_module.run_trace(bundle, prompt, max_tokens)
            remember_origin(trace, (bundle.fingerprint,))
            return trace

        return self.get_or_compute((bundle.ref, bundle.fingerprint, prompt, max_tokens), compute)


_defaults: dict[str, ByteLRU] = {}
_defaults_lock = threading.Lock()


def _default(name: str, cls: type[ByteLRU], max_bytes: int) -> ByteLRU:
    with _defaults_lock:
        cache = _defaults.get(name)
        if cache is None:
            cache = _defaults[name] = cls(max_bytes)
        elif cache.max_bytes != max_bytes:  # the limits changed (hosted mode switched on, a test's limits)
            cache.resize(max_bytes)
        return cache


def default_trace_cache() -> TraceCache:
    """The process-wide trace cache used by `cached_trace`, capped at limits().trace_cache_bytes."""
    return _default("trace", TraceCache, limits().trace_cache_bytes)


def default_result_cache() -> ByteLRU:
    """The process-wide cache of analysis results used by `memoize`, capped at limits().result_cache_bytes."""
    return _default("result", ByteLRU, limits().result_cache_bytes)


def cached_trace(bundle: ModelBundle, prompt: str, max_tokens: int | None = None) -> Trace:
    """`run_trace` through the process-wide byte-bounded cache (see TraceCache)."""
    return default_trace_cache().get(bundle, prompt, max_tokens)


def forget_fingerprint(fingerprint: str) -> int:
    """Drop every trace and result in the process-wide caches whose key names `fingerprint` (weights replaced
    in place: those entries can never be hit again, so their memory is freed now); returns how many."""
    with _defaults_lock:
        held = list(_defaults.values())
    return sum(cache.discard(lambda key: _mentions(key, fingerprint)) for cache in held)


def _mentions(key: Hashable, fingerprint: str) -> bool:
    stack = [key]
    while stack:
        part = stack.pop()
        if isinstance(part, tuple | frozenset):
            stack.extend(part)
        elif isinstance(part, str) and part == fingerprint:
            return True
    return False


# -- analysis results ------------------------------------------------------------------------------------------


def memoize(around_miss: Callable[[], AbstractContextManager] | None = None,
            cache: Callable[[], ByteLRU] = default_result_cache) -> Callable[[Callable[..., V]], Callable[..., V]]:
    """Decorator: cache a function's results in the byte-bounded result cache, keyed by `result_key` on its
    arguments (defaults filled in) plus the function's file, name and code, so that two pages' functions of the
    same name, or an edited function, never share entries.

    `around_miss()` (for example a spinner) is entered around the computation on a miss only. The result is the
    cached object itself, shared by every caller: never mutate it.
    """

    def decorate(fn: Callable[..., V]) -> Callable[..., V]:
        sig = signature(fn)
        name = repr((fn.__code__.co_filename, fn.__qualname__, code_digest(fn.__code__)))

        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> V:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            key, fingerprints = result_key(name, bound.arguments)

            def compute() -> V:
                with around_miss() if around_miss is not None else nullcontext():
                    value = fn(*args, **kwargs)
                remember_origin(value, fingerprints)
                return value

            return cache().get_or_compute(key, compute)

        return wrapper

    return decorate
