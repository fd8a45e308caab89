"""Many users at once: analyses running in parallel threads on ONE shared model give exactly what each gives
alone, the trace cache stays under its byte cap however many prompts arrive, and a failure inside one analysis's hook
leaves no hook behind, no lock held and the other threads' results untouched.

Streamlit serves every session from one process, one thread per script run, and the model comes from
st.cache_resource - so threads sharing a ModelBundle is exactly the hosted situation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from helpers import all_patterns, hook_count, make_tiny_bundle

from interp_core import activations, budget
from interp_core import trace as trace_mod
from interp_core.attribution import input_x_gradient, integrated_gradients
from interp_core.caches import TraceCache, default_trace_cache, nbytes
from interp_core.patching import activation_patching, attribution_patching, task_from_prompts
from interp_core.settings import HOSTED_LIMITS, limits
from interp_core.trace import run_trace

PROMPTS = [
    "The capital of France is",
    "When Mary and John went to the store, John gave a drink to",
    "The cat sat on the mat and the dog sat on the",
    "Attention heads move information between positions.",
]
PAIR = ("The capital of France is", "The capital of Italy is", " Paris", " Rome")
N_THREADS = 8


@pytest.fixture(scope="module")
def bundle():
    """A bundle of its own (not the session-wide fixture) so hook counts see only this file's work; warmed up
    because transformers adds hooks of its own the first time attention weights are asked for."""
    shared = make_tiny_bundle("gpt2", ref="tiny-gpt2-concurrency")
    run_trace(shared, PROMPTS[0])
    return shared


def analyses(bundle) -> dict[str, callable]:
    """name -> zero-argument job returning a dict of tensors (its result)."""
    task = task_from_prompts(bundle, *PAIR)
    jobs = {}
    for i, prompt in enumerate(PROMPTS):
        jobs[f"trace{i}"] = lambda p=prompt: _trace_tensors(bundle, run_trace(bundle, p))
        jobs[f"ig{i}"] = lambda p=prompt: _attr_tensors(integrated_gradients(bundle, p, n_steps=8))
    jobs["input_x_gradient"] = lambda: _attr_tensors(input_x_gradient(bundle, PROMPTS[1]))
    jobs["exact_resid"] = lambda: {"values": activation_patching(bundle, task, "resid").values}
    jobs["exact_head"] = lambda: {"values": activation_patching(bundle, task, "head").values}
    jobs["attribution_patching"] = lambda: {k: v.values for k, v in attribution_patching(bundle, task).items()}
    return jobs


def _trace_tensors(bundle, t) -> dict[str, torch.Tensor]:
    return {"last_logits": t.last_logits, "attention": all_patterns(bundle, t), "resid": t.resid,
            "head_z": t.head_z, "mlp_out": t.mlp_out}


def _attr_tensors(a) -> dict[str, torch.Tensor]:
    return {"scores": a.scores, "per_dim": a.per_dim}


def assert_same(name: str, got: dict, want: dict) -> None:
    assert got.keys() == want.keys(), name
    for key in want:
        assert torch.equal(got[key], want[key]), f"{name}.{key} differs from the same analysis run alone"


def test_mixed_analyses_in_parallel_equal_each_run_alone(bundle):
    jobs = analyses(bundle)
    alone = {name: job() for name, job in jobs.items()}  # one at a time: the reference
    hooks_before = hook_count(bundle.model)
    order = [name for name in jobs for _ in range(3)]  # every analysis three times, interleaved at random
    random.Random(0).shuffle(order)
    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        results = list(pool.map(lambda name: (name, jobs[name]()), order))
    assert len(results) == len(order)
    for name, got in results:
        assert_same(name, got, alone[name])
    assert hook_count(bundle.model) == hooks_before
    assert not any(p.requires_grad or p.grad is not None for p in bundle.model.parameters())
    assert_lock_free(bundle)
    print(f"\nresults digest: {digest(results)}")  # `pytest -s`: equal digests across runs = identical results


def digest(results) -> str:
    """sha256 over every (name, tensor) of `results` in a fixed order."""
    h = hashlib.sha256()
    for name, got in sorted(results, key=lambda item: item[0]):
        for key in sorted(got):
            h.update(f"{name}.{key}".encode())
            h.update(got[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def assert_lock_free(bundle) -> None:
    """No thread holds bundle.lock: another thread can take it at once (and gives it back)."""
    acquired: list[bool] = []

    def probe() -> None:
        got = bundle.lock.acquire(timeout=5)
        acquired.append(got)
        if got:
            bundle.lock.release()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert acquired == [True], "a thread still holds bundle.lock"


def test_many_different_prompts_keep_the_trace_cache_under_its_byte_cap(bundle):
    prompts = [f"The number {i} is" for i in range(40)]
    cap = 5 * max(nbytes(run_trace(bundle, p)) for p in prompts)  # room for at least five
    cache = TraceCache(max_bytes=cap)
    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        list(pool.map(lambda p: cache.get(bundle, p), prompts))
    assert 5 <= len(cache) < 40 and cache.used_bytes <= cap
    assert cache.misses == 40
    for prompt in prompts[-3:]:  # the most recently used survive
        cache.get(bundle, prompt)
    assert {key[2] for key in cache.keys()} >= set(prompts[-3:])
    assert cache.used_bytes <= cap
    assert default_trace_cache().max_bytes == limits().trace_cache_bytes


def test_same_prompt_from_many_threads_runs_one_forward_pass(bundle):
    cache = TraceCache(max_bytes=2**30)
    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        traces = list(pool.map(lambda _: cache.get(bundle, PROMPTS[2]), range(16)))
    assert cache.misses == 1
    assert all(t is traces[0] for t in traces)


def test_exception_inside_one_analysis_hook_leaves_no_hooks_and_other_threads_unaffected(bundle, monkeypatch):
    jobs = analyses(bundle)
    names = ["ig0", "exact_head", "trace1", "attribution_patching"]
    alone = {name: jobs[name]() for name in names}
    hooks_before = hook_count(bundle.model)
    real_cpu = trace_mod._cpu  # called inside run_trace's hooks

    def failing_cpu(x):
        if threading.current_thread().name.startswith("faulty"):
            raise RuntimeError("injected failure inside a trace hook")
        return real_cpu(x)

    monkeypatch.setattr(trace_mod, "_cpu", failing_cpu)
    errors: list[BaseException] = []
    results: dict[str, list] = {name: [] for name in names}

    def faulty() -> None:
        for _ in range(3):
            try:
                run_trace(bundle, PROMPTS[3])
            except RuntimeError as error:
                errors.append(error)

    def healthy(name: str) -> None:
        for _ in range(2):
            results[name].append(jobs[name]())

    threads = [threading.Thread(target=faulty, name=f"faulty-{i}") for i in range(2)]
    threads += [threading.Thread(target=healthy, args=(name,), name=f"healthy-{name}") for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 6 and all("injected failure" in str(e) for e in errors)
    for name in names:
        assert len(results[name]) == 2
        for got in results[name]:
            assert_same(name, got, alone[name])
    assert hook_count(bundle.model) == hooks_before
    assert_lock_free(bundle)


def test_exception_in_a_hook_during_a_forward_removes_every_hook_and_releases_the_lock(bundle):
    before = hook_count(bundle.model)

    def boom(act):
        raise ValueError("boom")

    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="boom"):
        activations.run(bundle, ids, edits={f"blocks.{layer}.hook_mlp_out": boom for layer in range(bundle.n_layers)})
    assert hook_count(bundle.model) == before
    assert_lock_free(bundle)
    assert torch.equal(run_trace(bundle, PROMPTS[0]).last_logits, run_trace(bundle, PROMPTS[0]).last_logits)


@pytest.mark.slow  # a 256-step integrated-gradients job on a GPT-2-small-shaped model, twice
def test_a_short_trace_overtakes_a_long_integrated_gradients_job_and_both_equal_their_solo_runs(gpt2_small_shaped,
                                                                                              monkeypatch):
    """Fair sharing as an ordering property: the job releases the fair model lock between its memory-bounded
    chunks, so a trace asked for while the job runs gets the model at the next chunk boundary."""
    small_chunks = dataclasses.replace(limits(), ig_batch_memory_mb=HOSTED_LIMITS.ig_batch_memory_mb)
    monkeypatch.setattr(budget, "limits", lambda: small_chunks)  # the hosted memory budget
    bundle, prompt, short = gpt2_small_shaped, "The capital of France is", "Mary gave"
    solo_trace = run_trace(bundle, short)
    solo_ig = integrated_gradients(bundle, prompt, n_steps=256)
    order, chunks, started = [], [], threading.Event()

    def long_job():
        result = integrated_gradients(bundle, prompt, n_steps=256,
                                      progress=lambda done, message: (chunks.append(done), started.set()))
        order.append("integrated gradients")
        return result

    def short_job():
        started.wait(timeout=600)  # the job holds the model for its second chunk now
        result = run_trace(bundle, short)
        order.append("trace")
        return result

    with ThreadPoolExecutor(max_workers=2) as pool:
        ig, trace = pool.submit(long_job), pool.submit(short_job)
        ig, trace = ig.result(), trace.result()
    assert len(chunks) >= 3  # the trace arrives while chunks are still to come: the ordering says something
    assert order == ["trace", "integrated gradients"]
    torch.testing.assert_close(ig.scores, solo_ig.scores, rtol=0, atol=0)
    torch.testing.assert_close(trace.resid, solo_trace.resid, rtol=0, atol=0)
    torch.testing.assert_close(trace.last_logits, solo_trace.last_logits, rtol=0, atol=0)
