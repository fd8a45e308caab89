"""The recorded eager attention every model is loaded with: transformers' eager arithmetic, written in place
into a trace's tensor only for the forward pass that records it."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import FAMILIES, make_tiny_model, make_tiny_tokenizer

from interp_core.loading import bundle_from_model
from interp_core.recorded_attention import recording_attention_into
from interp_core.trace import run_trace

PROMPT = "When Mary and John went to the store, John gave a drink to"


def eager_and_recorded(family: str):
    """The same tiny model twice: transformers' own eager attention, and wrapped in a bundle (recorded)."""
    tokenizer = make_tiny_tokenizer(add_bos=family == "llama")
    eager = make_tiny_model(family, vocab_size=len(tokenizer))
    bundle = bundle_from_model(make_tiny_model(family, vocab_size=len(tokenizer)), tokenizer, f"tiny-{family}")
    return eager, bundle


@pytest.mark.parametrize("family", FAMILIES)
def test_trace_attention_and_logits_equal_transformers_eager(family):
    eager, bundle = eager_and_recorded(family)
    trace = run_trace(bundle, PROMPT)
    with torch.no_grad():
        out = eager(trace.token_ids[None], output_attentions=True)
    expected = torch.stack([a[0] for a in out.attentions])
    torch.testing.assert_close(trace.attention, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(trace.logits, out.logits[0], rtol=0, atol=1e-5)


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


def test_a_recording_takes_only_its_own_forward_pass(gpt2_bundle):
    model, n = gpt2_bundle.model, gpt2_bundle.n_layers
    ids = torch.randint(3, len(gpt2_bundle.tokenizer), (1, 7))
    target = torch.full((n, gpt2_bundle.n_heads, 7, 7), -1.0)
    with recording_attention_into(target) as written:
        worker = threading.Thread(target=lambda: model(ids))  # another request: a thread has its own context
        worker.start()
        worker.join()
        assert written == set() and (target == -1).all()
        with torch.enable_grad():  # a gradient pass is never written in place
            model(ids)
        assert written == set()
        with torch.no_grad():
            model(torch.cat([ids, ids]))  # a batch does not fit the slot
        assert written == set()
        with torch.no_grad():
            expected = model(ids, output_attentions=True).attentions
        assert written == set(range(n))
    torch.testing.assert_close(target, torch.stack([a[0] for a in expected]), rtol=0, atol=0)
    with torch.no_grad():
        model(ids)  # after the block: nothing is written
    torch.testing.assert_close(target, torch.stack([a[0] for a in expected]), rtol=0, atol=0)
