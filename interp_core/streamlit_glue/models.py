"""The models and results every session shares: the cached model per reference (reloaded when its files change),
the byte-bounded result cache for pages' analyses, and hosted mode's settings from Streamlit secrets."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from interp_core.attention import AttentionPattern, attention_pattern
from interp_core.caches import forget_fingerprint, memoize
from interp_core.errors import ModelLoadError
from interp_core.loading import ModelBundle, default_dtype, dtype_name, fingerprint_in, load_model, weights_fingerprint
from interp_core.settings import HUB_MODELS, SHIPPED_MODEL, is_hosted, limits, max_memory
from interp_core.trace import Trace

LOCAL_FOLDER = "Local folder..."  # picker entry that reveals the free-text box
SECRET_KEYS = ("INTERP_HOSTED", "INTERP_ALLOWED_MODELS")  # read from st.secrets when not in the environment


@dataclass(frozen=True)
class Selection:
    """What the sidebar resolved to: model reference, prompt, the loaded model and its forward pass."""

    ref: str  # the reference handed to load_model: shipped name, hub id or folder path
    prompt: str  # exactly as typed (the trace may hold a truncated version)
    bundle: ModelBundle
    trace: Trace


def apply_secrets() -> None:
    """Copy INTERP_HOSTED and INTERP_ALLOWED_MODELS from Streamlit secrets into the environment, where
    `interp_core.settings` reads them, unless the environment already sets them. A TOML list of model ids is
    joined with commas; `INTERP_HOSTED = true` counts like "1". Without a secrets file nothing changes."""
    if not st.secrets.load_if_toml_exists():  # False for a missing or unreadable secrets file, never raises
        return
    for key in SECRET_KEYS:
        if key in os.environ or key not in st.secrets:
            continue
        value = st.secrets[key]
        os.environ[key] = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


apply_secrets()  # before `limits()` is read below (the model cache's size)


def default_model_ref() -> str:
    """The reference selected by default: `INTERP_DEFAULT_MODEL` when set, else the shipped organism."""
    return os.environ.get("INTERP_DEFAULT_MODEL", "").strip() or SHIPPED_MODEL


def model_options() -> list[str]:
    """Picker entries in order: default model, hub models (hosted: the allow-list), then the folder entry."""
    if is_hosted():
        extra = [m.strip() for m in os.environ.get("INTERP_ALLOWED_MODELS", "").split(",") if m.strip()]
        candidates = [default_model_ref(), SHIPPED_MODEL, *extra]
    else:
        candidates = [default_model_ref(), SHIPPED_MODEL, *HUB_MODELS, LOCAL_FOLDER]
    return list(dict.fromkeys(candidates))  # drop duplicates, keep order


@st.cache_resource(max_entries=limits().max_models_loaded, show_spinner="Loading the model...")
def _loaded_bundle(ref: str, files: str, dtype: str) -> ModelBundle:
    try:
        caps = max_memory()  # INTERP_MAX_MEMORY: spread over devices and disk
    except ValueError as error:
        raise ModelLoadError(str(error)) from error
    return load_model(ref, dtype, caps)


_CURRENT: dict[tuple[str, str], tuple[str, str]] = {}  # (ref, dtype) -> (files key of its bundle, its fingerprint)


def cached_bundle(ref: str, dtype: str | None = None) -> ModelBundle:
    """The loaded model for `ref` in `dtype` (a name in loading.DTYPES; None: loading.default_dtype), shared
    read-only by every session (failures are not cached); each precision is a model of its own.

    Keyed on (ref, weights_fingerprint(ref), dtype), a few stat calls per page run: a folder retrained in place
    (new sizes or modification times of its weight, config or tokenizer files) is loaded again, and the old model
    and every trace and result of its weights are dropped from the caches. A hub model downloaded by its first
    load had no files to fingerprint before it; it stays under that first key while its files are unchanged.
    """
    dtype = dtype_name(dtype) if dtype else default_dtype(ref)
    files = weights_fingerprint(ref)
    current = _CURRENT.get((ref, dtype))
    if current is not None and current[0] == "" and current[1] == fingerprint_in(files, dtype):
        files = ""  # loaded (downloaded) before its files could be fingerprinted: the very same files
    bundle = _loaded_bundle(ref, files, dtype)
    _CURRENT[(ref, dtype)] = (files, bundle.fingerprint)
    if current is not None and current[0] != files:  # replaced in place: the old entries can never be hit again
        _loaded_bundle.clear(ref, current[0], dtype)
        forget_fingerprint(current[1])
    return bundle


def cached_result(spinner: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator for a page's analysis: its results go to the byte-bounded result cache shared by every session
    (interp_core.caches.memoize; cap limits().result_cache_bytes, least recently used evicted), in place of
    st.cache_data and its entry counts.

        @cached_result(spinner="Computing input × gradient...")
        def cached_importance(_bundle, _trace, ref: str, prompt: str):
            return input_x_gradient(_bundle, _trace)

    The key is the function (file, name, code) and its arguments as st.cache_data would hash them - arguments
    whose name starts with "_" are not hashed - plus the weights' fingerprint of every ModelBundle argument and
    of every "_" argument that came out of the caches (the sidebar's trace, an earlier cached result), so a
    folder retrained in place never gets the old weights' results. `spinner` shows on a miss only (a
    progress bar drawn inside the function shows on a miss only too). The result is shared: never mutate it.
    """
    return memoize(around_miss=(lambda: st.spinner(spinner)) if spinner else None)


def cached_pattern(sel: Selection, layer: int, head: int | None) -> AttentionPattern:
    """attention.attention_pattern of the sidebar's trace (head None: the layer's mean), once per prompt, layer
    and head: a rerun would otherwise recompute the layer's pattern and redraw its chart from a new object."""
    return _pattern(sel.bundle, sel.trace, sel.ref, sel.prompt, layer, head)


@cached_result()
def _pattern(_bundle: ModelBundle, _trace: Trace, ref: str, prompt: str, layer: int, head: int | None):
    return attention_pattern(_bundle, _trace, layer, head)
