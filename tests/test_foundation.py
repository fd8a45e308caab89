"""Properties of one forward pass (Trace), the hook context manager, thread safety and the trace cache."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from helpers import all_patterns, hook_count, make_tiny_bundle

import interp_core.trace as trace_module
from interp_core import activations
from interp_core.caches import TraceCache, cached_trace, nbytes
from interp_core.components import apply_final_norm, b_O, head_outputs, logits_at, resid_to_logits, unembed
from interp_core.trace import Trace, run_trace

PROMPT = "The capital of France is Paris. When Mary and John went to the store,"
ATOL = 1e-5


def _model_outputs(bundle, trace):
    """The model's own outputs for the trace's tokens, from a separate plain forward pass."""
    with torch.no_grad():
        return bundle.model(
            input_ids=trace.token_ids[None], output_attentions=True, output_hidden_states=True, use_cache=False
        )


def test_attention_on_demand_rows_sum_to_one_and_equal_model_output_attentions(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    patterns = all_patterns(tiny_bundle, trace)  # each layer from its input trace.resid[layer]
    assert torch.allclose(patterns.sum(-1), torch.ones(patterns.shape[:-1]), atol=ATOL)
    upper = torch.triu(torch.ones(trace.n_pos, trace.n_pos, dtype=torch.bool), diagonal=1)
    assert patterns[..., upper].abs().max() == 0  # causal: no attention to later tokens
    own = torch.stack([a[0] for a in _model_outputs(tiny_bundle, trace).attentions])
    torch.testing.assert_close(patterns, own, rtol=0, atol=1e-6)
    assert patterns.std() > 0.01  # not uniform: the check above is not vacuous


def test_trace_keeps_only_what_grows_with_pos_times_d_model(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    d, n, pos = tiny_bundle.d_model, tiny_bundle.n_layers, trace.n_pos
    floats = (n + 1) * pos * d + 3 * n * pos * d + tiny_bundle.d_vocab  # resid, z, attn_out, mlp_out, logits
    assert trace.nbytes == 4 * floats + 8 * pos  # + the token ids
    assert not hasattr(trace, "attention")


def test_final_norm_of_last_resid_unembedded_equals_logits(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    own = _model_outputs(tiny_bundle, trace).logits[0]  # [pos, d_vocab]
    assert torch.allclose(unembed(tiny_bundle, apply_final_norm(tiny_bundle, trace.resid[-1])), own, atol=ATOL)
    assert torch.allclose(resid_to_logits(tiny_bundle, trace.resid[-1]), own, atol=ATOL)
    assert torch.allclose(trace.last_logits, own[-1], atol=ATOL)
    for pos in range(trace.n_pos):
        assert torch.allclose(logits_at(tiny_bundle, trace, pos), own[pos], atol=ATOL)
    assert torch.equal(logits_at(tiny_bundle, trace, -1), trace.last_logits)


def test_resid_last_is_pre_norm_and_earlier_equal_hidden_states(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    hidden = _model_outputs(tiny_bundle, trace).hidden_states
    for layer in range(trace.n_layers):
        assert torch.allclose(trace.resid[layer], hidden[layer][0], atol=ATOL)
    # hidden_states[-1] is already normed; resid[-1] is not, and norming it gives hidden_states[-1]
    assert not torch.allclose(trace.resid[-1], hidden[-1][0], atol=1e-3)
    assert torch.allclose(apply_final_norm(tiny_bundle, trace.resid[-1]), hidden[-1][0], atol=ATOL)


def test_resid_zero_is_token_plus_position_embedding(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    adapter, model = tiny_bundle.adapter, tiny_bundle.model
    expected = adapter.token_embedding(model).weight[trace.token_ids]
    pos_embed = adapter.position_embedding(model)
    if pos_embed is not None:
        expected = expected + pos_embed.weight[: trace.n_pos]
    assert torch.allclose(trace.resid[0], expected, atol=ATOL)


def test_resid_is_sum_of_previous_resid_attn_out_and_mlp_out(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    for layer in range(trace.n_layers):
        rebuilt = trace.resid[layer] + trace.attn_out[layer] + trace.mlp_out[layer]
        assert torch.allclose(trace.resid[layer + 1], rebuilt, atol=ATOL)


def test_head_outputs_summed_plus_b_O_equal_attention_module_output(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    # the attention modules' outputs, recorded in a forward pass of their own
    names = [f"blocks.{layer}.hook_attn_out" for layer in range(trace.n_layers)]
    with torch.no_grad():
        acts = activations.run(tiny_bundle, trace.token_ids[None], record=names).acts
    module_out = [acts[name][0] for name in names]
    for layer in range(trace.n_layers):
        heads = head_outputs(tiny_bundle, trace, layer)  # [pos, head, d_model]
        assert heads.shape == (trace.n_pos, tiny_bundle.n_heads, tiny_bundle.d_model)
        rebuilt = heads.sum(1) + b_O(tiny_bundle, layer)
        assert b_O(tiny_bundle, layer).abs().max() > 0  # biases are random in the tiny models
        assert torch.allclose(rebuilt, trace.attn_out[layer], atol=ATOL)
        assert torch.allclose(rebuilt, module_out[layer], atol=ATOL)


def test_final_norm_recomputes_statistics_on_its_input(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    x = trace.resid[1]
    # LayerNorm and RMSNorm are scale invariant only if the statistics come from the tensor itself
    assert torch.allclose(apply_final_norm(tiny_bundle, 3.0 * x), apply_final_norm(tiny_bundle, x), atol=1e-3)


def test_trace_is_detached_float32_on_cpu(gpt2_bundle):
    trace = run_trace(gpt2_bundle, PROMPT)
    for name in ("last_logits", "resid", "head_z", "attn_out", "mlp_out"):
        tensor = getattr(trace, name)
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu" and not tensor.requires_grad
    assert trace.token_ids.dtype == torch.long


def test_trace_rejects_inconsistent_shapes(gpt2_bundle):
    trace = run_trace(gpt2_bundle, PROMPT)
    fields = {name: getattr(trace, name) for name in trace.__dataclass_fields__}
    with pytest.raises(ValueError, match="mlp_out"):
        Trace(**{**fields, "mlp_out": trace.mlp_out[:, :-1]})
    with pytest.raises(ValueError, match="tokens"):
        Trace(**{**fields, "tokens": trace.tokens[:-1]})


def test_no_hook_left_on_any_module_after_trace(tiny_bundle):
    run_trace(tiny_bundle, PROMPT)  # transformers installs its own permanent output-capture hooks on first use
    before = hook_count(tiny_bundle.model)
    run_trace(tiny_bundle, PROMPT)
    assert hook_count(tiny_bundle.model) == before


def test_no_hook_left_and_lock_released_after_exception_in_hook(gpt2_bundle):
    run_trace(gpt2_bundle, PROMPT)
    before = hook_count(gpt2_bundle.model)

    def boom(act):
        raise RuntimeError("boom")

    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(RuntimeError, match="boom"):
        with activations.hooks_on(gpt2_bundle, edits={"blocks.1.hook_mlp_out": boom},
                                  record=["blocks.1.hook_resid_pre"]):
            assert hook_count(gpt2_bundle.model) == before + 2
            activations.forward(gpt2_bundle, ids)
    assert hook_count(gpt2_bundle.model) == before
    acquired = []

    def try_lock():  # from another thread: the lock must be free again
        if gpt2_bundle.lock.acquire(timeout=5):
            acquired.append(True)
            gpt2_bundle.lock.release()

    worker = threading.Thread(target=try_lock)
    worker.start()
    worker.join()
    assert acquired == [True]


def test_eight_threads_tracing_one_bundle_match_sequential_runs(gpt2_bundle):
    prompts = [f"{PROMPT} {word}" for word in ("a", "b", "the cat", "Rome", "Mary", "tabs\tx", "x\ny", "dog")]
    sequential = [run_trace(gpt2_bundle, p) for p in prompts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda p: run_trace(gpt2_bundle, p), prompts))
    for seq, par in zip(sequential, parallel, strict=True):
        assert seq.tokens == par.tokens
        for name in ("token_ids", "last_logits", "resid", "head_z", "attn_out", "mlp_out"):
            assert torch.equal(getattr(seq, name), getattr(par, name)), name


def _counting_run_trace(monkeypatch):
    calls = []
    real = trace_module.run_trace

    def counting(bundle, prompt, max_tokens=None):
        calls.append((bundle.ref, prompt, max_tokens))
        return real(bundle, prompt, max_tokens)

    monkeypatch.setattr(trace_module, "run_trace", counting)
    return calls


def test_trace_cache_evicts_least_recently_used(gpt2_bundle, monkeypatch):
    sizes = {nbytes(run_trace(gpt2_bundle, p)) for p in "abc"}
    assert len(sizes) == 1  # one token each: traces of one size
    calls = _counting_run_trace(monkeypatch)
    cache = TraceCache(max_bytes=2 * sizes.pop())  # room for two
    cache.get(gpt2_bundle, "a")
    cache.get(gpt2_bundle, "b")
    cache.get(gpt2_bundle, "a")  # hit: "a" becomes the most recently used
    cache.get(gpt2_bundle, "c")  # evicts "b"
    ref, fingerprint = gpt2_bundle.ref, gpt2_bundle.fingerprint
    assert cache.keys() == [(ref, fingerprint, "a", None), (ref, fingerprint, "c", None)]
    cache.get(gpt2_bundle, "b")  # miss again
    assert [c[1] for c in calls] == ["a", "b", "c", "b"]
    assert (cache.hits, cache.misses, len(cache)) == (1, 4, 2)
    assert cache.used_bytes == cache.max_bytes


def test_trace_cache_runs_one_forward_per_ref_prompt_and_max_tokens(gpt2_bundle, monkeypatch):
    calls = _counting_run_trace(monkeypatch)
    cache = TraceCache(max_bytes=2**30)
    with ThreadPoolExecutor(max_workers=8) as pool:
        traces = list(pool.map(lambda _: cache.get(gpt2_bundle, PROMPT), range(8)))
    assert len(calls) == 1 and all(t is traces[0] for t in traces)
    cache.get(gpt2_bundle, PROMPT, 4)  # another max_tokens is another key
    other = make_tiny_bundle("gpt2", ref="another-model")
    cache.get(other, PROMPT)  # another ref is another key
    cache.get(other, PROMPT)
    assert len(calls) == 3 and cache.misses == 3


def test_cached_trace_returns_the_same_trace_object(gpt2_bundle):
    assert cached_trace(gpt2_bundle, PROMPT) is cached_trace(gpt2_bundle, PROMPT)


def test_the_final_norms_kind_is_measured_not_read_off_its_class_name(tiny_bundle):
    """A norm of an unknown class that computes a LayerNorm or RMSNorm is recognised by what it computes; one
    that computes neither is refused with a clear error instead of being treated as the nearest kind."""
    from torch import nn

    from interp_core.components import NormForm, norm_form
    from interp_core.errors import UnsupportedArchitectureError

    norm = tiny_bundle.adapter.final_norm(tiny_bundle.model)
    form = norm_form(tiny_bundle, norm)
    assert isinstance(form, NormForm) and form.centre == isinstance(norm, nn.LayerNorm)
    x = torch.randn(4, tiny_bundle.d_model)
    with torch.no_grad():
        torch.testing.assert_close(form(x), norm(x), atol=1e-6, rtol=0)

    class Renamed(type(norm)):  # same arithmetic, a name no code knows
        pass

    renamed = Renamed.__new__(Renamed)
    renamed.__dict__.update(norm.__dict__)
    assert norm_form(tiny_bundle, renamed).centre == form.centre

    class Doubling(nn.Module):  # neither kind: scales by a learned gain without normalising
        def __init__(self):
            super().__init__()
            self.weight, self.eps = nn.Parameter(torch.full((tiny_bundle.d_model,), 2.0)), 1e-5

        def forward(self, x):
            return x * self.weight

    with pytest.raises(UnsupportedArchitectureError, match="neither a LayerNorm nor an RMSNorm"):
        norm_form(tiny_bundle, Doubling())
