"""The eager attention every model is loaded with: transformers' eager arithmetic, its probabilities handed to
pattern hooks only in the thread that set them, and a loud error for any argument it does not implement."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import FAMILIES, all_patterns, make_tiny_model, make_tiny_tokenizer

from interp_core.errors import UnsupportedArchitectureError
from interp_core.loading import bundle_from_model
from interp_core.recorded_attention import attention_weights_unused, pattern_hooks, recorded_attention
from interp_core.trace import run_trace

PROMPT = "When Mary and John went to the store, John gave a drink to"


def eager_and_recorded(family: str):
    """The same tiny model twice: transformers' own eager attention, and wrapped in a bundle (recorded)."""
    tokenizer = make_tiny_tokenizer(add_bos=family == "llama")
    eager = make_tiny_model(family, vocab_size=len(tokenizer))
    bundle = bundle_from_model(make_tiny_model(family, vocab_size=len(tokenizer)), tokenizer, f"tiny-{family}")
    return eager, bundle


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_on_demand_and_logits_equal_transformers_eager(family):
    eager, bundle = eager_and_recorded(family)
    trace = run_trace(bundle, PROMPT)
    with torch.no_grad():
        out = eager(trace.token_ids[None], output_attentions=True)
    expected = torch.stack([a[0] for a in out.attentions])
    torch.testing.assert_close(all_patterns(bundle, trace), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(trace.last_logits, out.logits[0, -1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_without_a_recording_batches_padding_and_gradients_work_as_eager(family):
    eager, bundle = eager_and_recorded(family)
    ids = torch.randint(3, len(bundle.tokenizer), (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding on one row
    with torch.no_grad():
        ours = bundle.model(ids, attention_mask=mask, output_attentions=True)
        theirs = eager(ids, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=0, atol=1e-5)
    for a, b in zip(ours.attentions, theirs.attentions, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    embeds = bundle.model.get_input_embeddings()(ids).requires_grad_(True)
    bundle.model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1].sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_pattern_hooks_see_only_their_own_threads_forward_passes(gpt2_bundle):
    model, n = gpt2_bundle.model, gpt2_bundle.n_layers
    ids = torch.randint(3, len(gpt2_bundle.tokenizer), (1, 7))
    seen = {layer: [] for layer in range(n)}
    hooks = {layer: (lambda w, layer=layer: seen[layer].append(w.clone()) or w) for layer in range(n)}
    with pattern_hooks(hooks), torch.no_grad():
        worker = threading.Thread(target=lambda: model(ids))  # another request: a thread has its own context
        worker.start()
        worker.join()
        assert all(not s for s in seen.values())
        expected = model(ids, output_attentions=True).attentions
    assert all(len(seen[layer]) == 1 for layer in range(n))
    for layer in range(n):
        torch.testing.assert_close(seen[layer][0], expected[layer], rtol=0, atol=0)
    with torch.no_grad():
        model(ids)  # after the block: no hook runs
    assert all(len(seen[layer]) == 1 for layer in range(n))


def test_a_pattern_hook_can_replace_the_probabilities(gpt2_bundle):
    ids = torch.randint(3, len(gpt2_bundle.tokenizer), (1, 7))
    uniform = torch.tril(torch.ones(7, 7)) / torch.arange(1, 8)[:, None]
    with torch.no_grad():
        plain = gpt2_bundle.model(ids).logits
        with pattern_hooks({0: lambda w: uniform.expand_as(w).clone()}):
            out = gpt2_bundle.model(ids, output_attentions=True)
    torch.testing.assert_close(out.attentions[0][0, 0], uniform)
    assert not torch.allclose(out.logits, plain)


@pytest.mark.parametrize("argument", [{"softcap": 30.0}, {"s_aux": torch.zeros(4)}, {"sliding_window": 3},
                                      {"something_new": 1}])
def test_an_argument_the_attention_does_not_implement_raises(gpt2_bundle, argument):
    module = gpt2_bundle.adapter.attention(gpt2_bundle.adapter.blocks(gpt2_bundle.model)[0])
    q = torch.randn(1, 4, 5, 8)
    with pytest.raises(UnsupportedArchitectureError, match=next(iter(argument))):
        recorded_attention(module, q, q, q, None, **argument)
    recorded_attention(module, q, q, q, None, sliding_window=5, softcap=None)  # changes nothing: accepted


def _saved_shapes(fn) -> list[tuple[int, ...]]:
    """Shapes of every tensor autograd saves for the backward pass while `fn` runs."""
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_unused_gives_the_same_outputs_and_gradients_without_keeping_probabilities(family):
    eager, bundle = eager_and_recorded(family)
    n_pos = 11
    ids = torch.randint(3, len(bundle.tokenizer), (2, n_pos))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding on one row

    def forward_and_grad():
        embeds = bundle.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        out = bundle.model(inputs_embeds=embeds, attention_mask=mask, output_attentions=True)
        (grad,) = torch.autograd.grad(out.logits[:, -1].logsumexp(-1).sum(), embeds)
        return out, grad

    expected_out, expected_grad = forward_and_grad()
    with attention_weights_unused():
        shapes = _saved_shapes(forward_and_grad)
        out, grad = forward_and_grad()
    def is_probabilities(shape):  # [batch, head, query_pos, key_pos]
        return len(shape) == 4 and shape[1] == bundle.n_heads and shape[-2:] == (n_pos, n_pos)

    assert any(is_probabilities(s) for s in _saved_shapes(forward_and_grad))  # eager keeps them
    assert not any(is_probabilities(s) for s in shapes)  # only the [batch, 1, pos, pos] mask, once for all
    assert all(a is None for a in out.attentions)
    torch.testing.assert_close(out.logits, expected_out.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_weights_unused_is_per_thread_and_gives_way_to_a_pattern_hook(gpt2_bundle):
    model, n = gpt2_bundle.model, gpt2_bundle.n_layers
    ids = torch.randint(3, len(gpt2_bundle.tokenizer), (1, 7))
    seen, hooked = [], []
    with attention_weights_unused(), torch.no_grad():
        worker = threading.Thread(target=lambda: seen.append(model(ids, output_attentions=True).attentions))
        worker.start()
        worker.join()
        with pattern_hooks({layer: lambda w: hooked.append(w.clone()) or w for layer in range(n)}):
            model(ids)
    assert all(a is not None for a in seen[0])  # another request still gets its weights
    assert len(hooked) == n
    torch.testing.assert_close(torch.stack(hooked), torch.stack(seen[0]), rtol=0, atol=0)
