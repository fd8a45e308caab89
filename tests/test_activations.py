"""The activation API: every TransformerLens name reads what the model computes, edits reach the forward pass,
gradients are the model's own, and nothing is left behind (every family)."""

from __future__ import annotations

import pytest
import torch
from helpers import hook_count

from interp_core import activations
from interp_core.activations import add, replace, zero

PROMPT = "When Mary and John went to the store, John gave a drink to"


def every_name(bundle) -> list[str]:
    names = ["hook_embed", "ln_final.hook_normalized"] + (["hook_pos_embed"] if bundle.family == "gpt2" else [])
    for layer in range(bundle.n_layers):
        names += [f"blocks.{layer}.{hook}" for hook in (
            "hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
            "hook_attn_out", "hook_mlp_in", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")]
    return names


def ids_of(bundle) -> torch.Tensor:
    return torch.tensor([bundle.tokenizer(PROMPT)["input_ids"]])


def test_records_equal_the_models_own_hidden_states(tiny_bundle):
    ids = ids_of(tiny_bundle)
    with torch.no_grad():
        own = tiny_bundle.model(ids, output_hidden_states=True)
        acts = activations.run(tiny_bundle, ids, record=every_name(tiny_bundle), logits_to_keep=0)
    torch.testing.assert_close(acts.logits, own.logits, rtol=0, atol=0)
    last = tiny_bundle.n_layers - 1
    for layer in range(tiny_bundle.n_layers):
        torch.testing.assert_close(acts.acts[f"blocks.{layer}.hook_resid_pre"], own.hidden_states[layer])
        resid_mid = acts.acts[f"blocks.{layer}.hook_resid_pre"] + acts.acts[f"blocks.{layer}.hook_attn_out"]
        mlp_reads = acts.acts[f"blocks.{layer}.hook_resid_pre"] if tiny_bundle.adapter.parallel_residual(
            tiny_bundle.model) else resid_mid
        torch.testing.assert_close(acts.acts[f"blocks.{layer}.hook_mlp_in"], mlp_reads, atol=1e-6, rtol=0)
        following = acts.acts[f"blocks.{layer}.hook_resid_post"]
        torch.testing.assert_close(resid_mid + acts.acts[f"blocks.{layer}.hook_mlp_out"], following, atol=1e-6,
                                   rtol=0)
    torch.testing.assert_close(acts.acts["ln_final.hook_normalized"], own.hidden_states[-1])
    embed = acts.acts["hook_embed"] + acts.acts.get("hook_pos_embed", 0)
    torch.testing.assert_close(embed, own.hidden_states[0])
    assert acts.acts[f"blocks.{last}.hook_resid_post"].shape == own.hidden_states[-1].shape


def test_layouts_follow_transformer_lens_and_z_is_pattern_times_v(tiny_bundle):
    """hook_z = hook_pattern @ hook_v head by head (kv heads repeated under grouped-query attention): the q, k, v
    and pattern layouts are the ones the model computes with, for every family's q/k/v packing."""
    ids = ids_of(tiny_bundle)
    b, n_heads, d_head = tiny_bundle, tiny_bundle.n_heads, tiny_bundle.d_head
    n_kv = b.adapter.n_kv_heads(b.model)
    acts = activations.run(b, ids, record=every_name(b)).acts
    n_pos = ids.shape[1]
    for layer in range(b.n_layers):
        name = f"blocks.{layer}."
        assert acts[name + "attn.hook_q"].shape == (1, n_pos, n_heads, d_head)
        assert acts[name + "attn.hook_k"].shape == acts[name + "attn.hook_v"].shape == (1, n_pos, n_kv, d_head)
        assert acts[name + "attn.hook_pattern"].shape == (1, n_heads, n_pos, n_pos)
        assert acts[name + "mlp.hook_post"].shape[:2] == (1, n_pos)
        v = acts[name + "attn.hook_v"].repeat_interleave(n_heads // n_kv, dim=2)  # [1, pos, head, d_head]
        z = torch.einsum("bhqk,bkhd->bqhd", acts[name + "attn.hook_pattern"], v)
        torch.testing.assert_close(z, acts[name + "attn.hook_z"], atol=1e-6, rtol=0)
        out = acts[name + "mlp.hook_post"] @ b.adapter.W_out(b.model, layer) + b.adapter.b_out(b.model, layer)
        torch.testing.assert_close(out, acts[name + "hook_mlp_out"], atol=1e-6, rtol=0)


def test_an_edit_that_changes_nothing_leaves_every_output_bit_equal(tiny_bundle):
    """Every name's write path (re-packing q/k/v, heads, tuples) rebuilds exactly what the module produced."""
    ids = ids_of(tiny_bundle)
    with torch.no_grad():
        plain = activations.run(tiny_bundle, ids).logits
        names = every_name(tiny_bundle) + ["blocks.0.attn.hook_z[1]", "blocks.1.attn.hook_v[1]",
                                           "blocks.0.attn.hook_pattern[2]"]
        edited = activations.run(tiny_bundle, ids, edits={name: lambda x: x.clone() for name in names}).logits
    torch.testing.assert_close(edited, plain, rtol=0, atol=0)


def test_zeroing_one_head_changes_only_that_head(tiny_bundle):
    ids = ids_of(tiny_bundle)
    out = activations.run(tiny_bundle, ids, edits={"blocks.1.attn.hook_z[2]": zero()},
                          record=["blocks.1.attn.hook_z", "blocks.0.attn.hook_z"])
    plain = activations.run(tiny_bundle, ids, record=["blocks.1.attn.hook_z"])
    z, z0 = out.acts["blocks.1.attn.hook_z"], plain.acts["blocks.1.attn.hook_z"]
    assert z[:, :, 2].abs().max() == 0 and z0[:, :, 2].abs().max() > 0
    torch.testing.assert_close(z[:, :, [0, 1, 3]], z0[:, :, [0, 1, 3]], rtol=0, atol=0)  # layer 1 reads layer 0 only
    assert not torch.equal(out.logits, plain.logits)


def test_steering_adds_a_vector_where_asked(tiny_bundle):
    ids = ids_of(tiny_bundle)
    vector = torch.randn(tiny_bundle.d_model, generator=torch.Generator().manual_seed(0))
    name = "blocks.1.hook_resid_pre"
    plain = activations.run(tiny_bundle, ids, record=[name]).acts[name]
    steered = activations.run(tiny_bundle, ids, edits={name: add(vector, pos=3)}, record=[name])
    expected = plain.clone()
    expected[:, 3] += vector
    torch.testing.assert_close(steered.acts[name], expected, rtol=0, atol=0)
    by_replacing = activations.run(tiny_bundle, ids, edits={name: replace(expected)})
    torch.testing.assert_close(steered.logits, by_replacing.logits, rtol=0, atol=0)


def test_a_pattern_edit_reaches_the_head_output(tiny_bundle):
    ids = ids_of(tiny_bundle)
    n = ids.shape[1]
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    out = activations.run(tiny_bundle, ids, edits={"blocks.0.attn.hook_pattern[1]": replace(uniform)},
                          record=["blocks.0.attn.hook_v", "blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern"])
    kv = 1 // (tiny_bundle.n_heads // tiny_bundle.adapter.n_kv_heads(tiny_bundle.model))
    v = out.acts["blocks.0.attn.hook_v"][0, :, kv]  # [pos, d_head]
    torch.testing.assert_close(out.acts["blocks.0.attn.hook_pattern"][0, 1], uniform)
    torch.testing.assert_close(out.acts["blocks.0.attn.hook_z"][0, :, 1], uniform @ v, atol=1e-6, rtol=0)


def test_gradient_with_respect_to_the_embeddings_equals_a_plain_backward_pass(tiny_bundle):
    ids = ids_of(tiny_bundle)
    target = 7
    out = activations.run(tiny_bundle, ids, grad=["hook_embed"], metric=lambda logits, acts: logits[0, -1, target])
    embeds = tiny_bundle.adapter.token_embedding(tiny_bundle.model)(ids).detach().requires_grad_(True)
    tiny_bundle.model(inputs_embeds=embeds).logits[0, -1, target].backward()
    torch.testing.assert_close(out.grads["hook_embed"], embeds.grad, atol=1e-6, rtol=1e-5)
    assert out.metric is not None and not out.metric.requires_grad


@pytest.mark.parametrize("name", ["blocks.1.hook_resid_pre", "blocks.0.attn.hook_z[3]", "blocks.0.attn.hook_k",
                                  "blocks.1.mlp.hook_post"])
def test_gradients_match_finite_differences_at_inner_activations(tiny_bundle, name):
    ids = ids_of(tiny_bundle)

    def metric(logits, acts):
        return logits[0, -1].log_softmax(-1)[5]

    out = activations.run(tiny_bundle, ids, grad=[name], metric=metric, record=[name])
    direction = torch.randn(out.acts[name].shape, generator=torch.Generator().manual_seed(1))
    eps = 1e-2

    def moved(sign: float) -> float:
        with torch.no_grad():
            run = activations.run(tiny_bundle, ids, edits={name: add(sign * eps * direction)})
        return float(metric(run.logits.double(), {}))

    numeric = (moved(1.0) - moved(-1.0)) / (2 * eps)
    analytic = float((out.grads[name] * direction).sum())
    assert analytic == pytest.approx(numeric, rel=2e-2, abs=1e-4)
    assert abs(analytic) > 1e-4  # the check above is not vacuous


def test_recomputed_blocks_give_the_same_gradients(tiny_bundle):
    ids = ids_of(tiny_bundle)
    names = ["hook_embed", "blocks.1.attn.hook_z", "blocks.0.hook_resid_post"]

    def metric(logits, acts):
        return logits[0, -1, 3]

    kept = activations.run(tiny_bundle, ids, grad=names, metric=metric)
    recomputed = activations.run(tiny_bundle, ids, grad=names, metric=metric, recompute=True)
    for name in names:
        torch.testing.assert_close(recomputed.grads[name], kept.grads[name], atol=1e-6, rtol=1e-5)


def test_bad_names_and_requests_raise_before_anything_runs(tiny_bundle):
    ids = ids_of(tiny_bundle)
    before = hook_count(tiny_bundle.model)
    bad = ["blocks.0.hook_nothing", "hook_resid_pre", "blocks.9.hook_resid_pre", "blocks.0.hook_embed",
           "blocks.0.attn.hook_z[99]", "blocks.0.hook_resid_pre[1]"]
    if tiny_bundle.family != "gpt2":
        bad.append("hook_pos_embed")  # rotary models have no learned position embedding
    for name in bad:
        with pytest.raises(ValueError):
            activations.run(tiny_bundle, ids, record=[name])
    with pytest.raises(ValueError, match="metric"):
        activations.run(tiny_bundle, ids, grad=["hook_embed"])
    with pytest.raises(ValueError, match="hook_pattern"):
        activations.run(tiny_bundle, ids, record=["blocks.0.attn.hook_pattern"], fused_attention=True)
    assert hook_count(tiny_bundle.model) == before


def test_fused_attention_gives_the_same_records_and_gradients(tiny_bundle):
    ids = ids_of(tiny_bundle)
    names = ["hook_embed", "blocks.1.hook_resid_post"]

    def metric(logits, acts):
        return logits[0, -1, 3]

    eager = activations.run(tiny_bundle, ids, record=names, grad=names, metric=metric)
    fused = activations.run(tiny_bundle, ids, record=names, grad=names, metric=metric, fused_attention=True)
    for name in names:
        torch.testing.assert_close(fused.acts[name], eager.acts[name], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused.grads[name], eager.grads[name], atol=1e-5, rtol=1e-4)
