"""Cache keys of analysis results, and where a cached value came from: which models' weights it was computed from.

    >>> key, fingerprints = result_key("lens_of", {"_bundle": bundle, "_trace": trace, "prompt": "Hi"})

A ModelBundle argument counts as its (ref, fingerprint); an argument named with a leading "_" (as in
st.cache_data) is not hashed, but when it came out of the caches its models' fingerprints count instead
(`remember_origin`, `origin_of`); every other argument is hashed by value. `code_digest` keys a function on its
code, so an edited function never reads its old results.
"""

from __future__ import annotations

import hashlib
import threading
import types
import weakref
from collections.abc import Hashable, Mapping

import numpy as np
import torch

from interp_core.loading import ModelBundle

_origins: dict[int, tuple[weakref.ref, tuple[str, ...]]] = {}  # id(value) -> (weak reference, fingerprints)
_origins_lock = threading.RLock()  # re-entrant: a weakref callback may run (garbage collection) while it is held


def remember_origin(value: object, fingerprints: tuple[str, ...]) -> None:
    """Record that `value` was computed from the models with these fingerprints, for as long as it lives (values
    that cannot be weakly referenced, such as tuples and dicts, are not recorded)."""
    key = id(value)

    def forget(ref: weakref.ref) -> None:
        with _origins_lock:
            if _origins.get(key, (None,))[0] is ref:
                del _origins[key]

    try:
        ref = weakref.ref(value, forget)
    except TypeError:
        return
    with _origins_lock:
        _origins[key] = (ref, tuple(fingerprints))


def origin_of(value: object) -> tuple[str, ...] | None:
    """The fingerprints `remember_origin` recorded for this very object, or None."""
    with _origins_lock:
        entry = _origins.get(id(value))
    return entry[1] if entry is not None and entry[0]() is value else None


# -- keys ----------------------------------------------------------------------------------------------------


def result_key(name: str, arguments: Mapping[str, object]) -> tuple[tuple, tuple[str, ...]]:
    """(cache key, model fingerprints it depends on) for a call of the function `name` with `arguments`.

    - a ModelBundle argument counts as its (ref, fingerprint), whatever its name;
    - an argument whose name starts with "_" (as in st.cache_data) is not hashed; when it came out of these
      caches (a trace, an earlier result: see remember_origin) the fingerprints of its models count instead,
      so a result computed from a trace of the old weights is never served for the new ones;
    - every other argument is hashed by value: lists and dicts become tuples. A value hashed by identity only
      (a tensor, an array, a plain object) is refused with TypeError: ids are reused once an object is freed.
    """
    parts: list[object] = [name]
    fingerprints: list[str] = []
    for param, value in arguments.items():
        if isinstance(value, ModelBundle):
            parts.append((param, "model", value.ref, value.fingerprint))
            fingerprints.append(value.fingerprint)
        elif param.startswith("_"):
            origin = origin_of(value)
            if origin is not None:
                parts.append((param, "from", origin))
                fingerprints.extend(origin)
        else:
            parts.append((param, _by_value(param, value)))
    return tuple(parts), tuple(dict.fromkeys(fingerprints))


def _by_value(param: str, value: object) -> Hashable:
    if value is None or value is Ellipsis:
        return value
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(_by_value(param, v) for v in value))
    if isinstance(value, dict):
        return ("dict", *sorted(((repr(k), _by_value(param, v)) for k, v in value.items()), key=lambda kv: kv[0]))
    if isinstance(value, set | frozenset):
        return frozenset(_by_value(param, v) for v in value)
    if isinstance(value, torch.Tensor | np.ndarray) or type(value).__hash__ in (None, object.__hash__):
        raise TypeError(
            f"argument {param!r} ({type(value).__name__}) has no value hash to key a cached result on; "
            f"name it _{param} (not hashed) and pass what identifies it as another argument"
        )
    return value


def code_digest(code: types.CodeType) -> str:
    """A hash of a function's bytecode and constants, nested functions included, stable across the script runs
    that redefine it (a nested code object's repr would name its memory address)."""
    digest = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        digest.update(code_digest(const).encode() if isinstance(const, types.CodeType) else repr(const).encode())
    digest.update(repr(code.co_names).encode())
    return digest.hexdigest()[:16]
