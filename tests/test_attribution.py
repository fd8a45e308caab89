"""Input attribution: integrated gradients on the token embeddings, saliency, input x gradient, occlusion,
continuations and deletion curves - checked against Captum, known identities and separate forward passes."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from helpers import hook_count

from interp_core import activations, budget
from interp_core import attribution as attr_mod
from interp_core.attribution import (
    AOPC_DEFINITION,
    DEFAULTS,
    METHODS,
    Attribution,
    AttributionSettings,
    AttributionSettingsError,
    Baseline,
    ContrastTarget,
    NextTokenTarget,
    aopc,
    attribute,
    attribute_continuation,
    compare_methods,
    completeness_verdict,
    contrast_suggestion,
    deletion_curve,
    deletion_verdict,
    input_x_gradient,
    integrated_gradients,
    neutral_token_id,
    occlusion,
    quadrature,
    saliency,
    special_positions,
    target_from_text,
)
from interp_core.attribution import baselines as baselines_mod
from interp_core.errors import PromptError, TargetTokenError, UserInputError
from interp_core.settings import Limits, limits
from interp_core.tokens import readable_token, token_texts

PROMPT = "The capital of France is"
TARGET_ID = 5  # an arbitrary vocabulary entry, so the target is not always the top-1


def ids_of(bundle, text=PROMPT) -> torch.Tensor:
    return torch.tensor(bundle.tokenizer(text)["input_ids"])


def neutral_ids(bundle, ids: torch.Tensor) -> torch.Tensor:
    """The neutral-token baseline as token ids: every position the neutral token, except the special tokens (BOS,
    ...), which every baseline keeps as they are."""
    return torch.where(special_positions(bundle, ids), ids, torch.full_like(ids, neutral_token_id(bundle)))


def log_prob(bundle, input_ids: torch.Tensor, token: int) -> float:
    """log p(token) after input_ids [pos] from an ordinary forward pass on token ids (no embeddings touched)."""
    with torch.no_grad():
        logits = bundle.model(input_ids=input_ids[None], use_cache=False).logits[0, -1]
    return float(torch.log_softmax(logits, -1)[token])


# -- integrated gradients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["zero", "token"])
@pytest.mark.parametrize("target", [NextTokenTarget(TARGET_ID), NextTokenTarget(None), ContrastTarget(5, 9)])
def test_ig_completeness_relative_delta_below_one_percent_with_64_gauss_legendre_steps(tiny_bundle, baseline, target):
    result = integrated_gradients(tiny_bundle, PROMPT, target, baseline=baseline, n_steps=64)
    assert abs(result.target_value - result.baseline_value) > 1e-3  # a real gap to explain
    assert result.relative_delta < 0.01
    assert result.delta == pytest.approx(result.per_dim.double().sum().item()
                                         - (result.target_value - result.baseline_value))


def test_ig_matches_captum_layer_integrated_gradients_on_the_embedding_layer(tiny_bundle):
    captum = pytest.importorskip("captum.attr")
    bundle = tiny_bundle
    ids = ids_of(bundle)[None]  # [batch=1, pos]

    def forward(input_ids):  # the same target function: next-token log-prob of TARGET_ID
        logits = bundle.model(input_ids=input_ids, use_cache=False).logits[:, -1]
        return torch.log_softmax(logits, -1)[:, TARGET_ID]

    lig = captum.LayerIntegratedGradients(forward, bundle.adapter.token_embedding(bundle.model))
    baseline_ids = neutral_ids(bundle, ids[0])[None]  # Llama's BOS stays BOS in our baseline, so in Captum's too
    expected, delta = lig.attribute(ids, baselines=baseline_ids, n_steps=64, method="gausslegendre",
                                    return_convergence_delta=True)
    ours = integrated_gradients(bundle, ids[0], NextTokenTarget(TARGET_ID), baseline="token", n_steps=64,
                                method="gausslegendre")
    torch.testing.assert_close(ours.per_dim, expected[0].float(), atol=1e-5, rtol=1e-4)
    assert ours.delta == pytest.approx(float(delta), abs=1e-5)


def test_ig_from_zero_embeddings_matches_captum_on_the_embedding_output(gpt2_bundle):
    captum = pytest.importorskip("captum.attr")
    bundle = gpt2_bundle
    ids = ids_of(bundle)[None]

    def forward(embeds):  # F of the token-embedding output; the model adds positions itself
        logits = bundle.model(inputs_embeds=embeds, use_cache=False).logits[:, -1]
        return logits[:, 5] - logits[:, 9]

    embeds = bundle.adapter.token_embedding(bundle.model)(ids)
    expected = captum.IntegratedGradients(forward).attribute(embeds, baselines=torch.zeros_like(embeds), n_steps=48,
                                                             method="gausslegendre")
    ours = integrated_gradients(bundle, ids[0], ContrastTarget(5, 9), baseline="zero", n_steps=48)
    torch.testing.assert_close(ours.per_dim, expected[0].detach().float(), atol=1e-5, rtol=1e-4)


def test_trapezoid_is_the_exact_rule_and_captums_version_scaled_by_n_minus_1_over_n(gpt2_bundle):
    """Captum's riemann_trapezoid uses cell width 1/n on n points spaced 1/(n-1), so its weights sum to (n-1)/n;
    ours sum to 1 (the real trapezoid rule). The two differ by exactly that factor."""
    captum = pytest.importorskip("captum.attr")
    bundle, n = gpt2_bundle, 16
    ids = ids_of(bundle)[None]

    def forward(input_ids):
        return torch.log_softmax(bundle.model(input_ids=input_ids, use_cache=False).logits[:, -1], -1)[:, TARGET_ID]

    lig = captum.LayerIntegratedGradients(forward, bundle.adapter.token_embedding(bundle.model))
    expected = lig.attribute(ids, baselines=torch.full_like(ids, neutral_token_id(bundle)), n_steps=n,
                             method="riemann_trapezoid")
    ours = integrated_gradients(bundle, ids[0], NextTokenTarget(TARGET_ID), baseline="token", n_steps=n,
                                method="riemann_trapezoid")
    torch.testing.assert_close(ours.per_dim * (n - 1) / n, expected[0].float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", attr_mod.QUADRATURES)
def test_quadrature_weights_sum_to_one_and_integrate_a_cubic(method):
    n = 8
    alphas, weights = quadrature(n, method)
    assert alphas.min() >= 0 and alphas.max() <= 1
    assert weights.sum() == pytest.approx(1.0)
    integral = float((weights * alphas**3).sum())  # exact value 1/4
    tolerance = {"gausslegendre": 1e-12, "riemann_trapezoid": 0.01, "riemann_middle": 0.01}.get(method, 0.15)
    assert integral == pytest.approx(0.25, abs=tolerance)


def test_ig_completeness_improves_with_more_trapezoid_steps(gpt2_bundle):
    deltas = [abs(integrated_gradients(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), n_steps=n,
                                       method="riemann_trapezoid").delta) for n in (2, 8, 64)]
    assert deltas[0] > deltas[1] > deltas[2]


def test_ig_baseline_value_is_the_model_on_the_baseline_tokens_with_positions_kept(tiny_bundle):
    """F(baseline) for the neutral-token baseline equals an ordinary forward on those token ids: the model added
    its own position information, so only token embeddings were replaced (special tokens such as BOS kept)."""
    ids = ids_of(tiny_bundle)
    result = integrated_gradients(tiny_bundle, ids, NextTokenTarget(TARGET_ID), baseline="token", n_steps=4)
    baseline_ids = neutral_ids(tiny_bundle, ids)
    assert result.baseline_value == pytest.approx(log_prob(tiny_bundle, baseline_ids, TARGET_ID), abs=1e-5)
    assert result.target_value == pytest.approx(log_prob(tiny_bundle, ids, TARGET_ID), abs=1e-5)


def test_ig_with_a_baseline_text_uses_its_tokens(gpt2_bundle):
    text = "The capital of Italy is"
    result = integrated_gradients(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID),
                                  baseline=Baseline("text", text=text), n_steps=64)
    assert result.baseline_value == pytest.approx(log_prob(gpt2_bundle, ids_of(gpt2_bundle, text), TARGET_ID),
                                                  abs=1e-5)
    assert result.relative_delta < 0.01
    # the tokens the two texts share get no attribution: x - b is zero there
    same = ids_of(gpt2_bundle) == ids_of(gpt2_bundle, text)
    assert same.any() and torch.all(result.scores[same] == 0)


def test_baseline_text_of_another_length_is_refused(gpt2_bundle):
    with pytest.raises(AttributionSettingsError, match="same number of tokens"):
        integrated_gradients(gpt2_bundle, PROMPT, baseline=Baseline("text", text="Paris"))


# -- the cheaper methods -------------------------------------------------------------------------------------


def test_input_x_gradient_equals_ig_with_one_right_riemann_step_from_zero(tiny_bundle):
    """At every position but the special tokens: IG's baselines keep those at the input (x - b = 0 there), while
    input x gradient has no baseline. GPT-2 and GPT-NeoX prompts have none, so there it is every position."""
    plain = ~special_positions(tiny_bundle, ids_of(tiny_bundle))
    for target in (NextTokenTarget(TARGET_ID), ContrastTarget(5, 9)):
        ixg = input_x_gradient(tiny_bundle, PROMPT, target)
        ig = integrated_gradients(tiny_bundle, PROMPT, target, baseline="zero", n_steps=1, method="riemann_right")
        torch.testing.assert_close(ixg.per_dim[plain], ig.per_dim[plain], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ixg.scores[plain], ig.scores[plain], atol=1e-6, rtol=1e-5)
        assert torch.all(ig.per_dim[~plain] == 0)


def test_occlusion_equals_the_drop_measured_by_separate_forward_passes(tiny_bundle):
    """Every position but the special tokens (Llama's BOS), which are never occluded and score exactly 0."""
    ids = ids_of(tiny_bundle)
    baseline_ids = neutral_ids(tiny_bundle, ids)
    result = occlusion(tiny_bundle, ids, NextTokenTarget(TARGET_ID), baseline="token")
    full = log_prob(tiny_bundle, ids, TARGET_ID)
    for i in range(len(ids)):
        occluded = ids.clone()
        occluded[i] = baseline_ids[i]
        assert result.scores[i].item() == pytest.approx(full - log_prob(tiny_bundle, occluded, TARGET_ID), abs=1e-5)
    assert result.target_value == pytest.approx(full, abs=1e-5)


def test_saliency_is_the_gradient_norm_and_never_negative(gpt2_bundle):
    l2 = saliency(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), aggregation="l2")
    l1 = saliency(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), aggregation="sum")
    assert torch.all(l2.scores >= 0) and torch.all(l1.scores >= l2.scores - 1e-7)  # |v|_1 >= |v|_2
    torch.testing.assert_close(l2.scores, l2.per_dim.norm(dim=-1))
    assert not l2.signed and l2.signed_total is None


def test_sum_aggregation_is_the_signed_sum_and_l2_the_norm(gpt2_bundle):
    signed = input_x_gradient(gpt2_bundle, PROMPT, aggregation="sum")
    norm = input_x_gradient(gpt2_bundle, PROMPT, aggregation="l2")
    torch.testing.assert_close(signed.scores, signed.per_dim.sum(-1))
    torch.testing.assert_close(norm.scores, signed.per_dim.norm(dim=-1))
    assert torch.all(norm.scores >= signed.scores.abs() / math.sqrt(gpt2_bundle.d_model) - 1e-6)


# -- targets -------------------------------------------------------------------------------------------------


def test_default_target_is_the_models_top1_next_token(tiny_bundle):
    ids = ids_of(tiny_bundle)
    with torch.no_grad():
        top = int(tiny_bundle.model(input_ids=ids[None]).logits[0, -1].argmax())
    result = input_x_gradient(tiny_bundle, PROMPT)
    assert result.target_ids == (top,) and "top-1" in result.target_label
    assert result.target_value == pytest.approx(log_prob(tiny_bundle, ids, top), abs=1e-5)


def test_contrast_target_value_is_the_logit_difference(gpt2_bundle):
    ids = ids_of(gpt2_bundle)
    with torch.no_grad():
        logits = gpt2_bundle.model(input_ids=ids[None]).logits[0, -1]
    result = saliency(gpt2_bundle, ids, ContrastTarget(5, 9))
    assert result.target_value == pytest.approx(float(logits[5] - logits[9]), abs=1e-5)
    assert result.target_kind == "contrast" and result.target_ids == (5, 9)


def test_target_text_must_be_one_token(gpt2_bundle):
    assert target_from_text(gpt2_bundle) == NextTokenTarget(None)
    assert isinstance(target_from_text(gpt2_bundle, " capital", " of"), ContrastTarget)
    with pytest.raises(TargetTokenError, match="not one"):
        target_from_text(gpt2_bundle, " capital of France")
    with pytest.raises(AttributionSettingsError, match="token A"):
        target_from_text(gpt2_bundle, "", " of")
    with pytest.raises(AttributionSettingsError, match="same token"):
        saliency(gpt2_bundle, PROMPT, ContrastTarget(5, 5))


# -- bad input and caps --------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -3, limits().max_ig_steps + 1])
def test_ig_steps_out_of_range_raise_a_message_naming_the_cap(gpt2_bundle, steps):
    with pytest.raises(AttributionSettingsError, match="max_ig_steps") as info:
        integrated_gradients(gpt2_bundle, PROMPT, n_steps=steps)
    assert isinstance(info.value, UserInputError)


@pytest.mark.parametrize("method", METHODS)
def test_empty_prompt_raises_prompt_error(gpt2_bundle, method):
    for empty in ("", "   ", []):
        with pytest.raises(PromptError):
            attribute(gpt2_bundle, empty, method=method)


def test_prompt_over_the_token_cap_is_refused_not_cut(gpt2_bundle, monkeypatch):
    long_prompt = "The cat sat on the mat and the dog sat on the rug. " * 12  # > 64 tokens: the tiny n_ctx
    with pytest.raises(PromptError, match="at most 64"):
        input_x_gradient(gpt2_bundle, long_prompt)
    monkeypatch.setattr(baselines_mod, "limits", lambda: Limits(max_prompt_tokens=3))  # where inputs are read
    with pytest.raises(PromptError, match="at most 3"):
        input_x_gradient(gpt2_bundle, ids_of(gpt2_bundle))


def test_unknown_settings_raise_user_errors(gpt2_bundle):
    with pytest.raises(AttributionSettingsError):
        attribute(gpt2_bundle, PROMPT, method="magic")
    with pytest.raises(AttributionSettingsError):
        input_x_gradient(gpt2_bundle, PROMPT, aggregation="max")
    with pytest.raises(AttributionSettingsError):
        integrated_gradients(gpt2_bundle, PROMPT, method="simpson")
    with pytest.raises(AttributionSettingsError, match="2 steps"):
        integrated_gradients(gpt2_bundle, PROMPT, n_steps=1, method="riemann_trapezoid")
    with pytest.raises(AttributionSettingsError):
        Baseline("mask")


# -- batching and the shared model ---------------------------------------------------------------------------


def test_all_steps_run_as_one_batch_within_the_default_memory_budget(gpt2_bundle):
    calls = []
    forwards = []
    handle = gpt2_bundle.model.register_forward_pre_hook(lambda m, args, kwargs: forwards.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        integrated_gradients(gpt2_bundle, PROMPT, n_steps=64, progress=lambda f, msg: calls.append(f))
    finally:
        handle.remove()
    assert forwards == [66]  # 64 path points + the input + the baseline, one forward
    assert calls == [1.0]


def test_chunking_under_a_tiny_memory_budget_gives_the_same_result(gpt2_bundle, monkeypatch):
    big = integrated_gradients(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), n_steps=10)
    monkeypatch.setattr(budget, "limits", lambda: Limits(ig_batch_memory_mb=0))  # one row per forward
    calls = []
    small = integrated_gradients(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), n_steps=10,
                                 progress=lambda f, msg: calls.append(f))
    torch.testing.assert_close(small.per_dim, big.per_dim, atol=1e-6, rtol=1e-5)
    assert len(calls) == 12 and calls == sorted(calls) and calls[-1] == pytest.approx(1.0)


def _saved_widths(fn) -> set[int]:
    """Last dimensions of the tensors autograd saves for the backward pass (outside recomputed blocks) while `fn`
    runs."""
    widths = set()

    def pack(t):
        widths.add(t.shape[-1] if t.dim() else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return widths


@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient"])
def test_a_gradient_pass_too_big_for_the_budget_recomputes_blocks_with_the_same_result(tiny_bundle, method,
                                                                                        monkeypatch):
    def run():
        return attribute(tiny_bundle, PROMPT, NextTokenTarget(TARGET_ID), method=method, n_steps=6)

    n_pos, d_mlp = len(run().tokens), budget.d_mlp(tiny_bundle)
    assert not budget.recompute_blocks(tiny_bundle, n_pos, 1)
    kept, kept_widths = run(), _saved_widths(run)
    monkeypatch.setattr(budget, "limits", lambda: Limits(ig_batch_memory_mb=0))
    assert budget.recompute_blocks(tiny_bundle, n_pos, 1)
    recomputed, recomputed_widths = run(), _saved_widths(run)
    torch.testing.assert_close(recomputed.scores, kept.scores, atol=1e-6, rtol=1e-5)
    assert d_mlp in kept_widths and d_mlp not in recomputed_widths  # no MLP activation is kept for the backward
    blocks = tiny_bundle.adapter.blocks(tiny_bundle.model)
    assert all("forward" not in vars(block) for block in blocks)  # the shared model's blocks are restored


def test_rows_per_chunk_shrinks_with_longer_prompts_and_gradients(gpt2_bundle):
    rows = budget.rows_per_chunk
    assert rows(gpt2_bundle, 8, 1, grad=True) > rows(gpt2_bundle, 64, 1, grad=True) >= 1
    assert rows(gpt2_bundle, 64, 1, grad=False) > rows(gpt2_bundle, 64, 1, grad=True)


@pytest.mark.parametrize("method", METHODS)
def test_attribution_leaves_the_shared_model_untouched(tiny_bundle, method):
    before = {k: v.clone() for k, v in tiny_bundle.model.state_dict().items()}
    hooks_before = hook_count(tiny_bundle.model)  # transformers keeps a few hooks of its own
    attribute(tiny_bundle, PROMPT, method=method, n_steps=4)
    assert hook_count(tiny_bundle.model) == hooks_before
    assert not any(p.requires_grad or p.grad is not None for p in tiny_bundle.model.parameters())
    after = tiny_bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# -- the result ----------------------------------------------------------------------------------------------


def test_to_frame_has_one_row_per_token_in_prompt_order(tiny_bundle):
    result = integrated_gradients(tiny_bundle, PROMPT, n_steps=8)
    frame = result.to_frame()
    assert list(frame["position"]) == list(range(len(result.tokens)))
    assert frame["label"].is_unique
    assert np.allclose(frame["score"], result.scores.numpy())
    assert set(frame.columns) >= {"token", "label", "token_id", "score", "method", "aggregation", "target"}


def test_attribution_checks_its_shapes(gpt2_bundle):
    good = input_x_gradient(gpt2_bundle, PROMPT)
    with pytest.raises(ValueError, match="scores"):
        Attribution(method="saliency", tokens=good.tokens, token_ids=good.token_ids, scores=good.scores[:-1],
                    per_dim=None, aggregation="l2", target_kind="logprob", target_ids=(1,), target_label="",
                    target_value=0.0)


# -- continuation, step by step ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_continuation_step_equals_attribution_of_that_token_on_its_prefix(gpt2_bundle, method):
    ids = ids_of(gpt2_bundle).tolist()
    result = attribute_continuation(gpt2_bundle, PROMPT, method=method, n_tokens=3, baseline="token", n_steps=8)
    out = result.output_ids.tolist()
    assert result.generated and len(out) == 3
    for t in range(3):
        single = attribute(gpt2_bundle, ids + out[:t], NextTokenTarget(out[t]), method=method, baseline="token",
                           n_steps=8)
        n_in = len(ids) + t
        torch.testing.assert_close(result.scores[t, :n_in], single.scores, atol=2e-5, rtol=1e-4)
        assert torch.isnan(result.scores[t, n_in:]).all()  # after the prediction: cannot matter
        assert result.target_values[t].item() == pytest.approx(single.target_value, abs=1e-5)


def test_generated_continuation_is_greedy(gpt2_bundle):
    result = attribute_continuation(gpt2_bundle, PROMPT, method="saliency", n_tokens=4)
    seq = ids_of(gpt2_bundle).tolist()
    for token in result.output_ids.tolist():
        with torch.no_grad():
            assert token == int(gpt2_bundle.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
        seq.append(token)


def test_typed_continuation_is_teacher_forced_and_framed_tidily(gpt2_bundle):
    result = attribute_continuation(gpt2_bundle, PROMPT, method="input_x_gradient", continuation=" Paris.")
    assert not result.generated
    assert "".join(result.output_tokens).replace("␣", " ") == " Paris."
    frame = result.to_frame()
    n, m = result.n_prompt, len(result.output_tokens)
    assert len(frame) == sum(n + t for t in range(m)) and frame["score"].notna().all()


def test_continuation_over_the_cap_is_refused(gpt2_bundle):
    cap = limits().max_generated_tokens
    with pytest.raises(AttributionSettingsError, match="max_generated_tokens"):
        attribute_continuation(gpt2_bundle, PROMPT, n_tokens=cap + 1)
    with pytest.raises(AttributionSettingsError, match="max_generated_tokens"):
        attribute_continuation(gpt2_bundle, PROMPT, n_tokens=0)


# -- deletion curves -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_deletion_curve_starts_at_the_target_probability_and_ends_at_the_all_baseline_input(tiny_bundle, method):
    """The all-baseline input keeps the special tokens (Llama's BOS): they are never deleted."""
    result = attribute(tiny_bundle, PROMPT, NextTokenTarget(TARGET_ID), method=method, baseline="token", n_steps=8)
    curve = deletion_curve(tiny_bundle, result, n_random=4, seed=1)
    ids = ids_of(tiny_bundle)
    n = int((~special_positions(tiny_bundle, ids)).sum())  # the tokens that can be deleted
    assert len(curve.order) == n and curve.values.shape == (n + 1,)
    assert curve.values[0].item() == pytest.approx(math.exp(result.target_value), rel=1e-4)
    expected_end = math.exp(log_prob(tiny_bundle, neutral_ids(tiny_bundle, ids), TARGET_ID))
    assert curve.values[-1].item() == pytest.approx(expected_end, rel=1e-4)
    torch.testing.assert_close(curve.random_values[:, -1], torch.full((4,), curve.values[-1].item()))
    # k = 1 removes the top-ranked token: the same as occluding it
    top = curve.order[0]
    occluded = ids.clone()
    occluded[top] = neutral_token_id(tiny_bundle)
    assert curve.values[1].item() == pytest.approx(math.exp(log_prob(tiny_bundle, occluded, TARGET_ID)), rel=1e-4)
    # AOPC after Samek et al. 2017: the mean over k = 0..n (divided by n + 1; it was over k = 1..n, divided by n)
    assert curve.aopc == pytest.approx(float((curve.values[0] - curve.values).sum()) / (n + 1))


def test_occlusion_order_wins_the_first_deletion_step(gpt2_bundle):
    """Occlusion ranks tokens by their own one-token drop, so its first deletion step falls at least as far as any
    random order's first step."""
    result = occlusion(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID))
    curve = deletion_curve(gpt2_bundle, result, n_random=8)
    assert curve.values[1] <= curve.random_values[:, 1].min() + 1e-7


def test_random_orders_are_seeded(gpt2_bundle):
    result = saliency(gpt2_bundle, PROMPT)
    a, b = deletion_curve(gpt2_bundle, result, seed=3), deletion_curve(gpt2_bundle, result, seed=3)
    torch.testing.assert_close(a.random_values, b.random_values)
    frame = a.to_frame()
    assert set(frame["order"]) == {"attribution order", "random order (mean of 3)"}
    assert len(frame) == 2 * (len(result.tokens) + 1)


def test_contrast_deletion_curve_is_in_logits(gpt2_bundle):
    result = input_x_gradient(gpt2_bundle, PROMPT, ContrastTarget(5, 9))
    curve = deletion_curve(gpt2_bundle, result)
    assert curve.values[0].item() == pytest.approx(result.target_value, abs=1e-5)
    assert curve.metric_label.startswith("logit(")


def test_aopc_is_samek_et_als_mean_over_k_from_0_to_n_on_a_hand_made_curve():
    """Samek et al. 2017, eq. 12: AOPC = 1 / (n + 1) * sum_{k=0..n} (f(x_0) - f(x_k)). Falls 0, 0.4, 0.7, 0.9 over
    k = 0..3: 2.0 / 4 = 0.5 (the mean over k = 1..n alone would be 2.0 / 3)."""
    assert aopc(torch.tensor([1.0, 0.6, 0.3, 0.1])) == pytest.approx(0.5)
    # over random orders: the mean of each curve's AOPC, (0 + 0.5 + 1) / 3 and 0
    assert aopc(torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])) == pytest.approx(0.25)
    assert aopc(torch.tensor([0.7])) == 0.0  # nothing to delete
    assert "Samek et al. 2017" in AOPC_DEFINITION and "k = 0..n" in AOPC_DEFINITION


def test_deletion_verdict_warns_when_the_ranking_is_no_better_than_random(gpt2_bundle):
    curve = deletion_curve(gpt2_bundle, occlusion(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID)))
    verdict = deletion_verdict(curve)
    assert verdict.ok == (curve.aopc > curve.random_aopc)
    assert verdict.figures[0].label.startswith("AOPC, Occlusion")
    assert verdict.figures[0].help == AOPC_DEFINITION  # the metric's tooltip names the definition


# -- special tokens: BOS is an attention sink, never "absent" -------------------------------------------------


@pytest.mark.parametrize("baseline", [Baseline("zero"), Baseline("token"),
                                      Baseline("text", text="The capital of Italy is")])
def test_bos_gets_exactly_zero_from_ig_and_occlusion_on_the_tiny_llama(tiny_bundles, baseline):
    """Every baseline keeps the tokenizer's special tokens as they are: Llama's BOS (an attention sink) took 8-24 %
    of |attribution| from IG and occlusion before; now exactly 0, while the prompt's words are still attributed."""
    bundle = tiny_bundles["llama"]
    ids = ids_of(bundle)
    assert ids[0] == bundle.tokenizer.bos_token_id and special_positions(bundle, ids).tolist() == [True] + [False] * 5
    ig = integrated_gradients(bundle, PROMPT, NextTokenTarget(TARGET_ID), baseline=baseline, n_steps=64)
    occ = occlusion(bundle, PROMPT, NextTokenTarget(TARGET_ID), baseline=baseline)
    assert ig.scores[0].item() == 0.0 and torch.all(ig.per_dim[0] == 0) and occ.scores[0].item() == 0.0
    changed = ids_of(bundle, baseline.text)[1:] != ids[1:] if baseline.kind == "text" else torch.ones(5, dtype=bool)
    assert changed.any()  # the baseline text differs from the prompt at " Italy"; x = b where it has the same token
    assert torch.all(ig.scores[1:][changed] != 0) and torch.all(occ.scores[1:][changed] != 0)
    assert ig.relative_delta < 0.01  # completeness still holds: F(baseline) is the model on BOS + baseline tokens


def test_deletion_curves_never_delete_bos(tiny_bundles):
    bundle = tiny_bundles["llama"]
    for method in METHODS:
        result = attribute(bundle, PROMPT, NextTokenTarget(TARGET_ID), method=method, n_steps=8)
        curve = deletion_curve(bundle, result, n_random=8, seed=2)
        assert 0 not in curve.order and sorted(curve.order) == [1, 2, 3, 4, 5]
        assert curve.order == [p for p in result.order() if p != 0]  # the others in attribution order
        assert tuple(curve.random_values.shape) == (8, 6)  # random orders of the five words only
        bos_kept = math.exp(log_prob(bundle, neutral_ids(bundle, ids_of(bundle)), TARGET_ID))
        torch.testing.assert_close(curve.random_values[:, -1], torch.full((8,), bos_kept), atol=1e-6, rtol=1e-4)
        assert not any(label.startswith("0 ") for label in curve.to_frame()["removed"])  # "0 <s>" never removed


def test_continuation_keeps_bos_in_its_baseline(tiny_bundles):
    bundle = tiny_bundles["llama"]
    for method in ("integrated_gradients", "occlusion"):
        cont = attribute_continuation(bundle, PROMPT, method=method, n_tokens=2, n_steps=8)
        assert torch.all(cont.scores[:, 0] == 0)


# -- settings, defaults and the page's logic ---------------------------------------------------------------


def test_library_defaults_are_the_one_set_of_settings_defaults(gpt2_bundle):
    """The page's widgets start from AttributionSettings(); every library signature takes its defaults from it."""
    assert DEFAULTS == AttributionSettings() and DEFAULTS.baseline == Baseline("token")
    expected = {"aggregation": DEFAULTS.aggregation, "baseline": DEFAULTS.baseline, "n_steps": DEFAULTS.n_steps,
                "method": DEFAULTS.method, "quadrature_method": DEFAULTS.quadrature}
    for fn in (integrated_gradients, saliency, input_x_gradient, occlusion, attribute, attribute_continuation):
        params = inspect.signature(fn).parameters
        for name, value in expected.items():
            if name in params and not (fn in (attribute_continuation, integrated_gradients) and name == "method"):
                assert params[name].default == value, (fn.__name__, name)
    assert inspect.signature(integrated_gradients).parameters["method"].default == DEFAULTS.quadrature
    assert saliency(gpt2_bundle, PROMPT).aggregation == DEFAULTS.aggregation  # was "l2" while the page used "sum"
    assert integrated_gradients(gpt2_bundle, PROMPT, n_steps=4).baseline == DEFAULTS.baseline  # was "zero"


def test_settings_refuse_unknown_names_and_pass_every_setting_to_attribute(gpt2_bundle):
    with pytest.raises(AttributionSettingsError, match="method"):
        AttributionSettings(method="magic")
    settings = AttributionSettings(aggregation="l2", baseline=Baseline("zero"), n_steps=6,
                                   quadrature="riemann_trapezoid")
    result = attribute(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), **settings.as_kwargs())
    direct = integrated_gradients(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), baseline="zero", n_steps=6,
                                  method="riemann_trapezoid", aggregation="l2")
    assert (result.n_steps, result.quadrature, result.aggregation, result.baseline) == (6, "riemann_trapezoid", "l2",
                                                                                         Baseline("zero"))
    torch.testing.assert_close(result.scores, direct.scores)
    assert settings.for_method("saliency") == AttributionSettings("saliency", "l2", Baseline("zero"), 6,
                                                                  "riemann_trapezoid")


def test_comparing_methods_runs_integrated_gradients_with_the_chosen_steps_and_quadrature(gpt2_bundle):
    """Whatever method the settings name, the comparison's IG uses their steps and quadrature (it ran 64
    Gauss-Legendre steps whatever the user chose)."""
    settings = AttributionSettings(method="saliency", n_steps=6, quadrature="riemann_trapezoid")
    report = compare_methods(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), settings)
    assert [a.method for a in report.attributions] == list(METHODS)
    ig = report.attributions[0]
    assert (ig.n_steps, ig.quadrature) == (6, "riemann_trapezoid")
    direct = integrated_gradients(gpt2_bundle, PROMPT, NextTokenTarget(TARGET_ID), n_steps=6,
                                  method="riemann_trapezoid")
    torch.testing.assert_close(ig.scores, direct.scores)
    frame = report.to_frame()
    assert frame["n_steps"].iloc[0] == 6 and frame["quadrature"].iloc[0] == "riemann_trapezoid"
    assert frame["n_steps"].iloc[1:].isna().all()
    torch.testing.assert_close(report.curve("integrated_gradients").values, deletion_curve(gpt2_bundle, direct).values)


def test_comparing_reuses_the_attribution_it_is_given(gpt2_bundle):
    done = saliency(gpt2_bundle, PROMPT)
    report = compare_methods(gpt2_bundle, PROMPT, None, DEFAULTS.for_method("saliency"), methods=("saliency",),
                             reuse=done)
    assert report.attributions == (done,) and report.curve("saliency").method == "saliency"


def test_completeness_verdict_trusts_a_converged_integral_and_warns_on_an_unconverged_one(gpt2_bundle):
    good = completeness_verdict(integrated_gradients(gpt2_bundle, PROMPT, n_steps=64))
    bad = completeness_verdict(integrated_gradients(gpt2_bundle, PROMPT, n_steps=2, method="riemann_trapezoid"))
    assert good.ok and "within" in good.message and len(good.figures) == 5
    assert not bad.ok and "not converged" in bad.message
    other = completeness_verdict(saliency(gpt2_bundle, PROMPT))
    assert other.ok and other.figures == () and "integrated gradients only" in other.message


def test_contrast_suggestion_is_the_models_top_two(gpt2_bundle):
    logits = torch.zeros(gpt2_bundle.d_vocab)
    logits[7], logits[3] = 2.0, 1.0
    expected = tuple(readable_token(t) for t in token_texts(gpt2_bundle, [7, 3]))
    assert contrast_suggestion(gpt2_bundle, logits) == expected


# -- known truths on the shipped model organism --------------------------------------------------------------


def test_shipped_model_france_gets_the_largest_ig_score_for_paris_over_rome_and_its_deletion_beats_random():
    """Why Paris rather than another capital: the contrast logit(Paris) - logit(Rome), from the page's default
    baseline (the neutral <|endoftext|> token at every position). For log p(Paris) alone the last token " is"
    scores highest on the organism (with <|endoftext|> in its place, no capital is predicted at all), and
    from the all-zero embedding, far from any real input, every token gets a similar large score."""
    from tests.shipped import shipped_bundle

    bundle = shipped_bundle()
    result = integrated_gradients(bundle, PROMPT, target_from_text(bundle, " Paris", " Rome"), baseline="token",
                                  n_steps=64)
    assert result.tokens[int(result.scores.argmax())] == "␣France", result.to_frame()[["token", "score"]]
    assert result.relative_delta < 0.05
    curve = deletion_curve(bundle, result, n_random=8, seed=0)
    assert curve.order[0] == result.tokens.index("␣France")
    assert curve.values[1] < curve.random_values[:, 1].mean()  # removing France first hurts Paris most
    assert curve.aopc > curve.random_aopc  # and the whole curve falls faster than random orders


def test_recomputed_blocks_nest_and_always_restore_the_shared_model(tiny_bundle):
    blocks = tiny_bundle.adapter.blocks(tiny_bundle.model)
    with activations.hooks_on(tiny_bundle, recompute=True):
        outer = [vars(block)["forward"] for block in blocks]
        with activations.hooks_on(tiny_bundle, recompute=True):
            assert [vars(block)["forward"] for block in blocks] == outer  # not wrapped twice
        assert [vars(block)["forward"] for block in blocks] == outer  # the inner exit keeps the outer's
    assert all("forward" not in vars(block) for block in blocks)
    with pytest.raises(RuntimeError), activations.hooks_on(tiny_bundle, recompute=True):
        raise RuntimeError("a failing analysis")
    assert all("forward" not in vars(block) for block in blocks)
