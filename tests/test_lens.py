"""Logit lens and direct logit attribution: identities on every tiny family, no forward pass, and known truths
on the shipped model organism."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from interp_core.charts.lens import COMPONENT_PICK, dla_heatmap, lens_heatmap, target_trajectory_chart
from interp_core.charts.overview import lens_last_position_chart, prediction_bar, residual_evolution_chart
from interp_core.components import apply_final_norm, final_norm_form, final_norm_linear, head_outputs, logits_at
from interp_core.lens import (
    component_token_effects,
    component_vectors,
    direct_logit_attribution,
    lens_target,
    logit_lens,
    next_token_predictions,
    residual_evolution,
)
from interp_core.tokens import single_token_id, token_labels
from interp_core.trace import run_trace
from tests.shipped import shipped_bundle

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def traces(tiny_bundles):
    return {family: run_trace(bundle, PROMPT) for family, bundle in tiny_bundles.items()}


@pytest.fixture
def trace(tiny_bundle, traces):
    return traces[tiny_bundle.family]


def model_logits(bundle, trace) -> torch.Tensor:
    """[pos, d_vocab] the model's own output for the trace's tokens, from a separate forward pass."""
    with torch.no_grad():
        return bundle.model(input_ids=trace.token_ids[None], use_cache=False).logits[0]


def test_lens_last_row_equals_the_models_softmax(tiny_bundle, trace):
    lens = logit_lens(tiny_bundle, trace, k=5)
    probs = torch.softmax(model_logits(tiny_bundle, trace), -1)  # [pos, d_vocab] the model's own output
    top = probs.topk(5, -1)
    assert torch.equal(lens.top_ids[-1], top.indices)
    assert torch.allclose(lens.top_probs[-1], top.values, atol=1e-6)
    assert torch.allclose(lens.target_prob[-1], probs[:, lens.target_id], atol=1e-6)
    assert torch.allclose(lens.entropy[-1], -(probs * probs.log()).sum(-1), atol=1e-4)
    assert torch.allclose(lens.kl_to_final[-1], torch.zeros(trace.n_pos), atol=1e-5)
    assert lens.target_id == int(probs[-1].argmax())  # default target: the model's top-1 next token
    assert lens.target_rank[-1, -1].item() == 1


def test_lens_decoded_a_few_positions_at_a_time_equals_all_at_once(tiny_bundle, trace, monkeypatch):
    import interp_core.lens.lens as lens_module  # the module that reads the chunk size

    whole = logit_lens(tiny_bundle, trace, k=3)
    monkeypatch.setattr(lens_module, "LENS_POSITIONS_PER_CHUNK", 5)  # the prompt in chunks of 5 positions
    steps = []
    chunked = logit_lens(tiny_bundle, trace, k=3, progress=lambda done, text: steps.append(done))
    assert torch.equal(chunked.top_ids, whole.top_ids)
    assert torch.equal(chunked.target_rank, whole.target_rank)
    for field in ("top_probs", "entropy", "kl_to_final", "target_prob"):
        assert torch.allclose(getattr(chunked, field), getattr(whole, field), atol=1e-6), field
    assert steps == sorted(steps) and 0 <= steps[0] and steps[-1] == 1.0  # the progress bar only moves forward


def test_lens_recomputes_the_norm_on_each_layer(tiny_bundle, trace):
    """Scaling an early residual by 10 leaves its lens unchanged only if the norm's scale is recomputed there."""
    lens = logit_lens(tiny_bundle, trace)
    scaled = dataclasses.replace(trace, resid=torch.cat([trace.resid[:1] * 10, trace.resid[1:]]))
    lens_scaled = logit_lens(tiny_bundle, scaled, target_id=lens.target_id)
    assert torch.allclose(lens_scaled.top_probs[0], lens.top_probs[0], atol=2e-3)
    assert torch.equal(lens_scaled.top_ids[1:], lens.top_ids[1:])


def test_lens_kl_is_nonnegative_and_ranks_agree_with_top_tokens(tiny_bundle, trace):
    lens = logit_lens(tiny_bundle, trace, k=3)
    assert (lens.kl_to_final >= 0).all()
    is_top = lens.top_ids[..., 0] == lens.target_id
    assert (lens.target_rank[is_top] == 1).all() and (lens.target_rank[~is_top] > 1).all()
    assert (lens.top_probs[..., :-1] >= lens.top_probs[..., 1:]).all()
    frame = lens.to_frame()
    assert len(frame) == (trace.n_layers + 1) * trace.n_pos
    assert frame["top_k"].str.count("·").eq(2).all()


def test_lens_target_probability_matches_a_direct_decode(gpt2_bundle, traces):
    trace = traces["gpt2"]
    target = int(model_logits(gpt2_bundle, trace)[3].argmax())
    lens = logit_lens(gpt2_bundle, trace, target_id=target)
    with torch.no_grad():
        logits = gpt2_bundle.model.lm_head(gpt2_bundle.model.transformer.ln_f(trace.resid[1]))  # [pos, d_vocab]
    probs = torch.softmax(logits, -1)
    assert torch.allclose(lens.target_prob[1], probs[:, target], atol=1e-6)
    rank = int((probs[3] > probs[3, target]).sum()) + 1
    assert lens.target_rank[1, 3].item() == rank


def test_dla_components_plus_bias_sum_to_the_logit(tiny_bundle, trace):
    logits = model_logits(tiny_bundle, trace)
    for pos in (0, trace.n_pos // 2, trace.n_pos - 1):
        for target in (int(logits[pos].argmax()), 7):
            dla = direct_logit_attribution(tiny_bundle, trace, pos, target)
            assert abs(float(dla.values.sum()) - float(logits[pos, target])) < 1e-4
            assert dla.logit == pytest.approx(float(logits[pos, target]), abs=1e-5)
            assert dla.kinds[-1] == "bias" and dla.labels[-1] == "final-norm bias"
            assert dla.kinds.count("head") == trace.n_layers * trace.n_heads
            assert dla.kinds.count("mlp") == trace.n_layers


def test_components_sum_to_the_final_residual(tiny_bundle, trace):
    parts = component_vectors(tiny_bundle, trace, pos=-1)
    assert torch.allclose(parts.vectors.sum(0), trace.resid[-1, -1], atol=1e-5)


def test_frozen_final_norm_reproduces_the_norm_on_the_actual_residual(tiny_bundle, trace):
    x = trace.resid[-1, 2]
    lin = final_norm_linear(tiny_bundle, x)
    assert torch.allclose(lin(x) + lin.bias, apply_final_norm(tiny_bundle, x), atol=1e-5)


def test_one_frozen_norm_and_one_head_output_serve_dla_the_copying_scores_and_the_ov_circuit(tiny_bundle, trace):
    """components.NormForm.linear is the one frozen-norm idiom (it was written three times, issue 17): with the
    actual scale plus the bias it is the norm; on the identity it is the norm's linear part as a matrix. And
    head_outputs of one position's z is that row of the trace's per-head outputs."""
    form, x = final_norm_form(tiny_bundle), trace.resid[-1, 2]
    torch.testing.assert_close(form.linear(x, form.scale(x)) + form.bias, apply_final_norm(tiny_bundle, x),
                               atol=1e-5, rtol=1e-5)
    matrix = form.linear(torch.eye(tiny_bundle.d_model, dtype=torch.float64))  # [d_model, d_model], row vectors
    torch.testing.assert_close((x.double() @ matrix).float(), form.linear(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head_outputs(tiny_bundle, trace.head_z[1, 3], 1), head_outputs(tiny_bundle, trace, 1)[3],
                               atol=1e-6, rtol=1e-5)


def test_lens_target_reads_the_typed_token_and_falls_back_to_the_top1_saying_why(gpt2_bundle, traces):
    trace = traces["gpt2"]
    top1 = int(logits_at(gpt2_bundle, trace, 3).argmax())
    empty = lens_target(gpt2_bundle, trace, 3)
    assert empty.target_id == top1 and empty.problem is None
    assert lens_target(gpt2_bundle, trace, 3, "␣of").target_id == single_token_id(gpt2_bundle, " of")
    two = lens_target(gpt2_bundle, trace, 3, " capital of")
    assert two.target_id == top1 and "not one" in two.problem and empty.default_text in two.problem


def test_what_the_lens_page_shows_besides_charts_comes_from_the_results(gpt2_bundle, traces):
    trace = traces["gpt2"]
    lens = logit_lens(gpt2_bundle, trace)
    frame = lens.to_frame()
    trajectory = lens.trajectory_frame(-1)
    assert list(trajectory["target_prob"]) == list(frame[frame["pos"] == trace.n_pos - 1]["target_prob"])
    dla = direct_logit_attribution(gpt2_bundle, trace, -1, lens.target_id)
    assert dla.components == dla.labels[:-1] and "final-norm bias" not in dla.components
    assert dla.top_component == max(dla.components, key=lambda c: abs(float(dla.values[dla.labels.index(c)])))
    assert f"**{dla.logit:.4f}**" in dla.summary


def test_dla_bias_term_is_the_norm_bias_through_the_unembedding(gpt2_bundle, traces):
    trace = traces["gpt2"]
    dla = direct_logit_attribution(gpt2_bundle, trace, -1, 11)
    bias = gpt2_bundle.model.transformer.ln_f.bias @ gpt2_bundle.model.lm_head.weight[11]
    assert dla.bias_term == pytest.approx(float(bias), abs=1e-6)
    frame = dla.to_frame()
    assert frame["contribution"].abs().is_monotonic_decreasing and list(frame["rank"]) == list(range(1, len(frame) + 1))
    assert frame["contribution"].sum() == pytest.approx(dla.logit, abs=1e-4)


def test_token_effects_agree_with_dla_on_the_target(tiny_bundle, trace):
    target = int(trace.last_logits.argmax())
    dla = direct_logit_attribution(tiny_bundle, trace, -1, target)
    for component in ("L0H1", f"L{trace.n_layers - 1} MLP"):
        effects = component_token_effects(tiny_bundle, trace, -1, component, k=tiny_bundle.d_vocab)
        value = effects.promoted_values[effects.promoted_ids.tolist().index(target)]
        assert value.item() == pytest.approx(dla.values[dla.labels.index(component)].item(), abs=1e-5)
    small = component_token_effects(tiny_bundle, trace, -1, "L0H1", k=4)
    assert (small.promoted_values[:-1] >= small.promoted_values[1:]).all()
    assert (small.suppressed_values[:-1] <= small.suppressed_values[1:]).all()
    assert len(small.to_frame()) == 8
    with pytest.raises(ValueError):
        component_token_effects(tiny_bundle, trace, -1, "L99H0")


def test_residual_evolution_norms_and_cosines(gpt2_bundle, traces):
    trace = traces["gpt2"]
    evo = residual_evolution(trace)
    assert torch.allclose(evo.norms, trace.resid.norm(dim=-1))
    cos = torch.dot(trace.resid[1, 2], trace.resid[2, 2]) / (trace.resid[1, 2].norm() * trace.resid[2, 2].norm())
    assert evo.cosine[1, 2].item() == pytest.approx(cos.item(), abs=1e-5)
    frame = evo.to_frame()
    assert frame[frame.layer == 0]["cosine_to_previous"].isna().all()


def test_next_token_predictions_are_the_models_top_k(gpt2_bundle, traces):
    trace = traces["gpt2"]
    predictions = next_token_predictions(gpt2_bundle, trace, k=10)
    top = torch.softmax(model_logits(gpt2_bundle, trace)[-1], -1).topk(10)
    assert torch.equal(predictions.token_ids, top.indices)
    assert predictions.to_frame()["probability"].is_monotonic_decreasing


def count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls, handle


def test_lens_and_dla_never_run_the_model_forward(tiny_bundle, trace):
    calls, handle = count_forwards(tiny_bundle.model)
    try:
        lens = logit_lens(tiny_bundle, trace)
        direct_logit_attribution(tiny_bundle, trace, -1, lens.target_id)
        component_token_effects(tiny_bundle, trace, -1, "L0 MLP")
        residual_evolution(trace)
        next_token_predictions(tiny_bundle, trace)
    finally:
        handle.remove()
    assert calls == []


def test_lens_reports_progress(gpt2_bundle, traces):
    seen = []
    logit_lens(gpt2_bundle, traces["gpt2"], progress=lambda f, text: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) == traces["gpt2"].n_layers + 2


def test_lens_refuses_a_target_outside_the_vocabulary(gpt2_bundle, traces):
    with pytest.raises(ValueError):
        logit_lens(gpt2_bundle, traces["gpt2"], target_id=gpt2_bundle.d_vocab)
    with pytest.raises(ValueError):
        direct_logit_attribution(gpt2_bundle, traces["gpt2"], traces["gpt2"].n_pos, 0)


def test_lens_and_dla_charts_encode_what_they_claim(gpt2_bundle, traces):
    trace = traces["gpt2"]
    lens = logit_lens(gpt2_bundle, trace)
    spec = lens_heatmap(lens, "kl_to_final", 2, 6).to_dict()
    rect = spec["layer"][0]["encoding"]
    assert rect["x"]["sort"] == token_labels(trace.tokens)[2:6]
    assert rect["y"]["sort"] == list(reversed(lens.layer_labels))  # the model's output on top
    assert rect["color"]["field"] == "kl_to_final"
    assert "top_k" in {t["field"] for t in rect["tooltip"]}
    with pytest.raises(ValueError):
        lens_heatmap(lens, "nope")
    dla = direct_logit_attribution(gpt2_bundle, trace, -1, lens.target_id)
    spec = dla_heatmap(dla).to_dict()
    assert [p["name"] for p in spec["params"]] == [COMPONENT_PICK]
    scale = spec["layer"][0]["encoding"]["color"]["scale"]
    assert scale["domainMid"] == 0 and scale["domain"][0] == -scale["domain"][1]  # diverging, centred on 0
    for chart in (target_trajectory_chart(lens, -1), lens_last_position_chart(lens),
                  residual_evolution_chart(residual_evolution(trace)),
                  prediction_bar(next_token_predictions(gpt2_bundle, trace))):
        chart.to_dict()  # builds a valid spec


# --- known truths on the shipped model organism ----------------------------------------------------------------


def test_shipped_lens_finds_paris_at_the_last_layer_and_its_rank_falls():
    bundle = shipped_bundle()
    trace = run_trace(bundle, "The capital of France is")
    paris = single_token_id(bundle, " Paris")
    lens = logit_lens(bundle, trace, target_id=paris)
    ranks = lens.target_rank[:, -1].tolist()  # [layer + 1] at the last position
    assert lens.top_tokens[-1][-1][0] == "␣Paris"
    assert ranks[-1] == 1
    half = len(ranks) // 2
    early, late = ranks[:half], ranks[half:]
    assert ranks[0] >= 10, ranks  # the embeddings alone do not know the answer
    assert min(early) > 1 and max(late) <= min(early), ranks
    dla = direct_logit_attribution(bundle, trace, -1, paris)
    assert abs(float(dla.values.sum()) - dla.logit) < 1e-4
    assert dla.to_frame()["kind"].iloc[0] == "mlp"  # the fact is written by an MLP (measured: L3 MLP, +6.6 logits)
