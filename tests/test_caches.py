"""Caches bounded by bytes (interp_core.caches): what `nbytes` counts, least-recently-used eviction under a byte
cap, one computation per key, result keys that carry the weights' fingerprint, and a model folder retrained in
place getting a new fingerprint, a new model and fresh traces."""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_tiny_model, make_tiny_tokenizer, save_tiny_model

from interp_core import caches
from interp_core.cache_keys import origin_of
from interp_core.caches import ByteLRU, TraceCache, cached_trace, default_trace_cache, memoize, nbytes
from interp_core.loading import bundle_from_model, load_model, weights_fingerprint
from interp_core.settings import Limits

MiB = 2**20


# -- nbytes ----------------------------------------------------------------------------------------------------


class _Marker:
    pass


@dataclass(frozen=True, eq=False)
class _Result:
    values: torch.Tensor
    view: torch.Tensor
    frame: pd.DataFrame
    arrays: tuple
    meta: dict


def test_nbytes_counts_each_storage_once_and_walks_into_containers(gpt2_bundle):
    base = torch.zeros(1000, dtype=torch.float32)  # 4000 bytes
    assert nbytes(base) == 4000
    assert nbytes(base[:10]) == 4000  # a view keeps its whole storage alive
    assert 4000 < nbytes([base, base[5:], base.view(10, 100)]) < 2 * 4000  # one storage, counted once
    array = np.zeros((10, 100), dtype=np.float64)  # 8000 bytes
    assert nbytes(array) == 8000 and 8000 < nbytes((array, array[2:], array.T)) < 2 * 8000
    frame = pd.DataFrame({"x": np.arange(100, dtype=np.int64), "name": ["token"] * 100})
    result = _Result(values=base, view=base[3:], frame=frame, arrays=(array, array[1:]), meta={"bundle": gpt2_bundle})
    counted = nbytes(result)
    assert counted >= 4000 + 8000 + int(frame.memory_usage(deep=True, index=True).sum())
    model_bytes = sum(p.numel() * p.element_size() for p in gpt2_bundle.model.parameters())
    assert counted < 4000 + 8000 + model_bytes  # the bundle a result refers to is shared, not counted
    assert nbytes(gpt2_bundle) == 0


def test_nbytes_of_a_trace_is_its_tensors_storage(gpt2_bundle):
    trace = caches.TraceCache(MiB).get(gpt2_bundle, "The capital of France is")
    tensors = [v for v in vars(trace).values() if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    assert sum(storages.values()) <= nbytes(trace) < sum(storages.values()) + 64 * 1024  # + tokens, small fields


# -- the byte-bounded LRU --------------------------------------------------------------------------------------


def test_lru_evicts_least_recently_used_to_stay_under_its_byte_cap():
    cache = ByteLRU(max_bytes=300)
    for key in "abc":
        cache.put(key, "x", size=100)
    assert cache.lookup("a") == "x"  # "a" becomes the most recently used
    cache.put("d", "x", size=100)  # evicts "b"
    assert cache.keys() == ["c", "a", "d"] and cache.used_bytes == 300
    cache.put("e", "x", size=250)  # evicts "c", "a" and "d"
    assert cache.keys() == ["e"] and cache.used_bytes == 250 and cache.evictions == 4
    assert not cache.put("huge", "x", size=301)  # larger than the cap: not kept, nothing evicted for it
    assert cache.keys() == ["e"]
    cache.resize(200)
    assert len(cache) == 0 and cache.used_bytes == 0


def test_a_value_larger_than_the_cap_is_returned_but_not_kept():
    cache = ByteLRU(max_bytes=1000)
    big = torch.zeros(1000)  # 4000 bytes
    assert cache.get_or_compute("big", lambda: big) is big
    assert "big" not in cache and cache.used_bytes == 0 and cache.misses == 1


def test_concurrent_misses_of_one_key_compute_once_and_a_failure_is_not_cached():
    cache = ByteLRU(max_bytes=MiB)
    calls: list[int] = []
    started, release = threading.Event(), threading.Event()

    def slow():
        calls.append(1)
        started.set()
        release.wait(30)
        return torch.ones(10)

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(cache.get_or_compute, "k", slow) for _ in range(8)]
        started.wait(30)
        release.set()
        values = [f.result() for f in futures]
    assert len(calls) == 1 and all(v is values[0] for v in values)
    assert (cache.misses, cache.hits) == (1, 7)

    attempts: list[int] = []

    def failing():
        attempts.append(1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("bad", failing)
    assert "bad" not in cache
    assert cache.get_or_compute("bad", lambda: "fine") == "fine"  # the failure was not remembered


# -- 200 prompts on a GPT-2-small-shaped model -----------------------------------------------------------------


@pytest.fixture
def one_torch_thread():
    """One intra-op thread while tracing: on a busy 2-core machine torch's two threads wait on each other (a
    15-token GPT-2-small trace took ~1.9 s with two, ~0.1 s with one); the results are the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_trace_cap(monkeypatch):
    """The process-wide trace cache at 64 MiB (limits monkeypatched), emptied before and after."""
    monkeypatch.setattr(caches, "limits", lambda: Limits(trace_cache_bytes=64 * MiB))
    default_trace_cache().clear()
    yield 64 * MiB
    default_trace_cache().clear()


@pytest.mark.slow  # 200 GPT-2-small traces of 13-21 tokens (+ 49 hits): ~35 s on a busy 2-core machine
def test_200_prompts_keep_the_trace_cache_under_its_cap_evicting_least_recently_used(gpt2_small_shaped,
                                                                                    small_trace_cap,
                                                                                    one_torch_thread):
    bundle, cap = gpt2_small_shaped, small_trace_cap
    cache = default_trace_cache()
    assert cache.max_bytes == cap
    prompts = [f"Prompt {i}: the cat sat on the mat {i % 7}." for i in range(200)]  # 13-21 tokens
    order = []
    for i, prompt in enumerate(prompts):
        order.append(prompt)
        if i >= 5 and i % 4 == 0:
            order.append(prompts[i - 5])  # a recent one again: a hit, and now the most recently used
    expected: OrderedDict[tuple, int] = OrderedDict()  # a reference LRU: key -> bytes
    hits, misses = cache.hits, cache.misses
    for step, prompt in enumerate(order):
        trace = cached_trace(bundle, prompt)
        key = (bundle.ref, bundle.fingerprint, prompt, None)
        size = nbytes(trace)
        if key in expected:
            expected.move_to_end(key)
        else:
            expected[key] = size
            while sum(expected.values()) > cap:
                expected.popitem(last=False)
        assert cache.used_bytes <= cap
        assert cache.keys() == list(expected), f"step {step}: not least-recently-used order"
        assert cache.entry_bytes(key) == size
    assert len(set(prompts)) == 200
    assert (cache.misses - misses, cache.hits - hits) == (200, len(order) - 200)  # revisits were hits
    assert cache.evictions > 0 and cache.used_bytes > cap - 2 * max(expected.values())  # it filled up


# -- result keys -----------------------------------------------------------------------------------------------


def test_memoize_keys_on_the_fingerprint_of_bundles_and_of_traces_from_the_cache(gpt2_bundle):
    cache = ByteLRU(MiB)
    runs: list[str] = []
    misses: list[int] = []

    class Spinner:
        def __enter__(self):
            misses.append(1)

        def __exit__(self, *exc):
            return False

    @memoize(around_miss=Spinner, cache=lambda: cache)
    def summary(_trace, ref: str, prompt: str, scale: float = 1.0):
        runs.append(prompt)
        return {"norm": float(_trace.resid.norm()) * scale}

    prompt = "The capital of France is"
    other = bundle_from_model(gpt2_bundle.model, gpt2_bundle.tokenizer, gpt2_bundle.ref)  # same ref, new bundle
    assert other.fingerprint != gpt2_bundle.fingerprint
    traces = TraceCache(MiB)
    first = traces.get(gpt2_bundle, prompt)
    assert origin_of(first) == (gpt2_bundle.fingerprint,)
    a = summary(first, gpt2_bundle.ref, prompt)
    assert summary(first, gpt2_bundle.ref, prompt, 1.0) is a  # defaults filled in: the same key
    assert summary(traces.get(other, prompt), other.ref, prompt) is not a  # same ref and prompt, other weights
    assert runs == [prompt, prompt] and len(misses) == 2  # the spinner only on misses

    @memoize(cache=lambda: cache)
    def by_bundle(_bundle, ref: str):
        return _Marker()

    assert by_bundle(gpt2_bundle, "r") is by_bundle(gpt2_bundle, "r")
    assert by_bundle(other, "r") is not by_bundle(gpt2_bundle, "r")
    with pytest.raises(TypeError, match="_tensor"):
        memoize(cache=lambda: cache)(lambda tensor: 0)(torch.zeros(2))  # identity-hashed: refused


def test_a_result_computed_from_a_cached_result_inherits_its_fingerprint(gpt2_bundle):
    cache = ByteLRU(MiB)
    other = bundle_from_model(gpt2_bundle.model, gpt2_bundle.tokenizer, gpt2_bundle.ref)

    @memoize(cache=lambda: cache)
    def features(_bundle, ref: str):
        return _Marker()

    @memoize(cache=lambda: cache)
    def report(_features, ref: str):
        return _Marker()

    f1, f2 = features(gpt2_bundle, "r"), features(other, "r")
    assert origin_of(f1) == (gpt2_bundle.fingerprint,)
    assert report(f1, "r") is report(f1, "r")
    assert report(f2, "r") is not report(f1, "r")


# -- a folder retrained in place -------------------------------------------------------------------------------


def test_a_folder_retrained_in_place_gets_a_new_fingerprint_and_fresh_traces(tmp_path):
    folder = save_tiny_model("gpt2", tmp_path / "model")
    first = load_model(str(folder))
    assert first.fingerprint.startswith("files-") and first.fingerprint == weights_fingerprint(str(folder))
    assert load_model(str(folder)).fingerprint == first.fingerprint  # unchanged files: the same fingerprint
    (folder / "notes.txt").write_text("not a model file")  # files the model does not read do not count
    assert weights_fingerprint(str(folder)) == first.fingerprint

    cache = TraceCache(64 * MiB)
    prompt = "The capital of France is"
    old = cache.get(first, prompt)
    make_tiny_model("gpt2", vocab_size=len(make_tiny_tokenizer()), seed=1).save_pretrained(folder)  # retrained
    assert weights_fingerprint(str(folder)) != first.fingerprint
    second = load_model(str(folder))
    assert second.fingerprint == weights_fingerprint(str(folder))
    new = cache.get(second, prompt)
    assert new is not old and cache.misses == 2
    assert not torch.equal(new.last_logits, old.last_logits)  # the new weights' output, not the old one's


def test_the_glue_reloads_a_folder_retrained_in_place(tmp_path):
    from interp_core import streamlit_glue

    folder = str(save_tiny_model("gpt2", tmp_path / "model"))
    first = streamlit_glue.cached_bundle(folder)
    assert streamlit_glue.cached_bundle(folder) is first  # unchanged: the cached model
    old_trace = cached_trace(first, "The capital of France is")
    old_key = ("r", first.fingerprint)
    caches.default_result_cache().put(old_key, "a result of the old weights")
    make_tiny_model("gpt2", vocab_size=len(make_tiny_tokenizer()), seed=1).save_pretrained(folder)
    second = streamlit_glue.cached_bundle(folder)
    assert second is not first and second.fingerprint != first.fingerprint
    assert streamlit_glue.cached_bundle(folder) is second
    # the old weights' entries are gone (they could never be hit again)
    assert (first.ref, first.fingerprint, "The capital of France is", None) not in default_trace_cache()
    assert old_key not in caches.default_result_cache()
    assert cached_trace(second, "The capital of France is") is not old_trace


def test_a_hub_id_is_fingerprinted_from_its_cached_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert weights_fingerprint("someone/tiny") == ""  # not downloaded: nothing to fingerprint
    repo = tmp_path / "models--someone--tiny"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    for name, blob in (("config.json", "c0"), ("model.safetensors", "w0")):
        (blobs / blob).write_bytes(b"x" * 10)
        (snapshot / name).symlink_to(blobs / blob)  # as the hub cache stores them
    first = weights_fingerprint("someone/tiny")
    assert first.startswith("files-")
    (blobs / "w0").write_bytes(b"y" * 20)  # the linked weights changed
    assert weights_fingerprint("someone/tiny") not in ("", first)


def test_a_function_redefined_by_the_next_script_run_hits_and_an_edited_one_misses():
    cache = ByteLRU(MiB)
    source = """
@memoize(cache=lambda: cache)
def analysis(_bundle, ref, n):
    step = lambda v: v + {add}
    return [step(n)]
"""
    results = []
    for add in (1, 1, 2):  # Streamlit re-executes a page's script on every run; the third run has an edit
        namespace = {"memoize": memoize, "cache": cache}
        exec(compile(source.format(add=add), "/pages/9_Example.py", "exec"), namespace)
        results.append(namespace["analysis"](object(), "r", 3))
    assert results[1] is results[0] and results[2] == [5]
    assert (cache.hits, cache.misses) == (1, 2)
