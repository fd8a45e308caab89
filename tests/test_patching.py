"""Activation patching, attribution patching, the presets and ablation on a task (interp_core.patching)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import hook_count, make_tiny_model, make_tiny_tokenizer
from shipped import shipped_bundle

from interp_core import activations, budget
from interp_core.errors import TargetTokenError
from interp_core.loading import bundle_from_model
from interp_core.patching import (
    OWN_PAIR,
    PRESET_NAMES,
    PRESETS,
    REPEATED_PRESET,
    PatchingInputError,
    PatchingReport,
    PatchingSection,
    ablate_on_task,
    activation_patching,
    attribution_patching,
    choose_task,
    patch,  # the module whose limits, final norm and records the tests reach into
    patch_sites,
    patching_correlation,
    patching_report,
    preset_task,
    task_from_prompts,
)
from interp_core.settings import Limits

IOI = "IOI: subject swapped"


@pytest.fixture(params=PRESET_NAMES)
def preset(request):
    return request.param


def test_patching_the_final_residual_restores_exactly_one_at_the_last_position_and_zero_elsewhere(
    tiny_bundle, preset
):
    """The final row (input of the final norm) only reaches the metric at the last position: patching it there
    makes the corrupted run's last residual bit-equal to the clean one, and anywhere else changes nothing."""
    task = preset_task(tiny_bundle, preset)
    result = activation_patching(tiny_bundle, task, "resid")
    last_row = result.values[tiny_bundle.n_layers]  # [pos]
    assert last_row[-1].item() == 1.0
    assert (last_row[:-1] == 0.0).all()


def test_patching_nothing_gives_zero(tiny_bundle):
    task = preset_task(tiny_bundle, IOI)
    assert patch_sites(tiny_bundle, task, [None, None]).tolist() == [0.0, 0.0]


def test_patching_a_position_where_the_prompts_agree_before_any_mixing_changes_nothing(tiny_bundle):
    """At layer 0 (the embeddings) the clean and corrupted activations are equal wherever the tokens are."""
    task = preset_task(tiny_bundle, IOI)
    same = (task.clean_ids == task.corrupt_ids).nonzero().flatten().tolist()
    values = patch_sites(tiny_bundle, task, [("resid", 0, pos) for pos in same])
    assert torch.allclose(values, torch.zeros_like(values), atol=1e-4)


def test_batched_head_patching_equals_patching_one_head_at_a_time(tiny_bundle):
    """Each batch row is an independent run: the batched sweep must match single-row forwards done by hand."""
    bundle = tiny_bundle
    task = preset_task(bundle, IOI)
    result = activation_patching(bundle, task, "head")
    clean = patch._record(bundle, task.clean_ids, task.clean_prompt)
    d = bundle.d_head
    for layer, head in [(0, 0), (0, 3), (1, 2)]:
        clean_z = clean.z[layer][None, :, head * d:(head + 1) * d]  # [batch=1, pos, d_head]
        with torch.no_grad():
            logits = activations.run(bundle, task.corrupt_ids[None], edits={
                f"blocks.{layer}.attn.hook_z[{head}]": activations.replace(clean_z)}).logits[0, -1]
        m = float(logits[task.answer_id] - logits[task.foil_id])
        expected = (m - result.corrupt_metric) / (result.clean_metric - result.corrupt_metric)
        assert result.values[layer, head].item() == pytest.approx(expected, abs=1e-4)


def _linear_tail_bundle(family: str):
    """A tiny model whose metric is affine in the last layer's head outputs and in the final residual.

    The metric's final norm is made the identity (`patching.patch.apply_final_norm`, patched by the caller) and the
    last MLP writes zeros (a permanent hook on this private copy).
    Then m = (W_U[answer] - W_U[foil]) . r_L[last] + const, and r_L = r_{L-1} + sum_h z_h W_O[h] + b_O
    (+ the MLP's 0), so m is affine in z of every last-layer head (all positions at once) and in r_L at every
    position. The first-order estimate of an affine function is exact, so attribution patching must equal
    exact patching on those sites; earlier sites still pass through attention and MLPs and may differ."""
    tokenizer = make_tiny_tokenizer(add_bos=family == "llama")
    model = make_tiny_model(family, vocab_size=len(tokenizer), seed=1)
    bundle = bundle_from_model(model, tokenizer, f"tiny-linear-tail-{family}")
    last = bundle.adapter.blocks(model)[-1]
    bundle.adapter.mlp(last).register_forward_hook(lambda m, args, out: torch.zeros_like(out))
    return bundle


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_attribution_patching_equals_exact_patching_where_the_model_is_linear_in_the_site(family, monkeypatch):
    monkeypatch.setattr(patch, "apply_final_norm", lambda bundle, x: x)
    bundle = _linear_tail_bundle(family)
    task = preset_task(bundle, IOI)
    exact_heads = activation_patching(bundle, task, "head")
    exact_resid = activation_patching(bundle, task, "resid")
    approx = attribution_patching(bundle, task)
    last = bundle.n_layers - 1
    assert torch.allclose(approx["head"].values[last], exact_heads.values[last], atol=1e-4), (
        approx["head"].values[last], exact_heads.values[last])
    assert torch.allclose(approx["resid"].values[-1], exact_resid.values[-1], atol=1e-4)
    assert exact_heads.values[last].abs().max() > 1e-3  # the check is not 0 == 0


def test_attribution_patching_is_normalised_like_exact_patching(tiny_bundle):
    task = preset_task(tiny_bundle, IOI)
    exact = activation_patching(tiny_bundle, task, "resid")
    approx = attribution_patching(tiny_bundle, task)["resid"]
    assert approx.clean_metric == pytest.approx(exact.clean_metric, abs=1e-5)
    assert approx.corrupt_metric == pytest.approx(exact.corrupt_metric, abs=1e-5)
    assert approx.values.shape == exact.values.shape == (tiny_bundle.n_layers + 1, task.n_pos)
    assert patching_correlation(exact, exact) == pytest.approx(1.0)


def test_patching_leaves_no_hooks_and_no_gradients_on_the_model(tiny_bundle):
    before = hook_count(tiny_bundle.model)
    task = preset_task(tiny_bundle, REPEATED_PRESET)
    activation_patching(tiny_bundle, task, "head")
    attribution_patching(tiny_bundle, task)
    assert hook_count(tiny_bundle.model) == before
    assert not any(p.requires_grad or p.grad is not None for p in tiny_bundle.model.parameters())


def test_prompts_of_different_token_counts_are_refused_with_both_counts(gpt2_bundle):
    with pytest.raises(PatchingInputError, match=r"clean prompt is \d+ tokens and the corrupted prompt is \d+"):
        task_from_prompts(gpt2_bundle, "The capital of France is", "The capital of the big country is",
                          " Paris", " Rome")


def test_answer_and_foil_must_be_single_different_tokens(gpt2_bundle):
    with pytest.raises(TargetTokenError):
        task_from_prompts(gpt2_bundle, "The cat sat", "The dog sat", " on the mat", " Rome")
    with pytest.raises(PatchingInputError, match="same token"):
        task_from_prompts(gpt2_bundle, "The cat sat", "The dog sat", " Paris", " Paris")


def test_identical_prompts_have_nothing_to_restore(gpt2_bundle):
    task = task_from_prompts(gpt2_bundle, "The cat sat", "The cat sat", " on", " the")
    with pytest.raises(PatchingInputError, match="nothing to restore"):
        activation_patching(gpt2_bundle, task, "head")


def test_more_sites_than_the_cap_are_refused_with_the_caps_name(gpt2_bundle, monkeypatch):
    monkeypatch.setattr(patch, "limits", lambda: Limits(max_patch_sites=7))
    task = preset_task(gpt2_bundle, "Capital: France -> Italy")
    with pytest.raises(PatchingInputError, match="max_patch_sites = 7"):
        activation_patching(gpt2_bundle, task, "head")  # 2 layers x 4 heads = 8 sites


def test_text_presets_change_few_positions_and_have_matching_lengths(tiny_bundle):
    for name, preset in PRESETS.items():
        task = preset_task(tiny_bundle, name)
        assert task.clean_prompt == preset.clean and task.description
        assert 1 <= int((task.clean_ids != task.corrupt_ids).sum()) <= 2, name


def test_the_repeated_preset_scrambles_only_the_first_copy_and_its_foil_is_induction_in_the_scramble(gpt2_bundle):
    task = preset_task(gpt2_bundle, REPEATED_PRESET)
    clean, corrupt = task.clean_ids.tolist(), task.corrupt_ids.tolist()
    n, cut = 8, 5
    assert len(clean) == len(corrupt) == 1 + n + cut
    assert clean[1 + n:] == corrupt[1 + n:] == clean[1:1 + cut]  # the unfinished second copy is shared
    assert sorted(clean[1:1 + n]) == sorted(corrupt[1:1 + n]) and clean[1:1 + n] != corrupt[1:1 + n]
    assert task.answer_id == clean[1 + cut]
    query = clean[-1]
    assert task.foil_id == corrupt[corrupt.index(query, 1) + 1] != task.answer_id


def test_ablation_on_a_task_reports_the_metric_on_the_patching_scale(gpt2_bundle):
    task = preset_task(gpt2_bundle, IOI)
    result = ablate_on_task(gpt2_bundle, task, [(1, 0), (1, 1)], "mean")
    frame = result.to_frame()
    assert list(frame["normalised"].round(6))[0] == 1.0 and list(frame["normalised"])[-1] == 0.0
    assert frame["normalised"].iloc[1] == pytest.approx(result.normalised_after)
    assert len(result.ablation.to_frame()) == 5


def test_the_patching_report_is_exact_and_attribution_patching_of_both_kinds_with_one_progress_bar(tiny_bundle):
    task = preset_task(tiny_bundle, IOI)
    steps = []
    report = patching_report(tiny_bundle, task, progress=lambda done, text: steps.append(done))
    approx = attribution_patching(tiny_bundle, task)
    assert [section.kind for section in report.sections] == ["resid", "head"]
    for section in report.sections:
        exact = activation_patching(tiny_bundle, task, section.kind)
        assert torch.equal(section.exact.values, exact.values)
        torch.testing.assert_close(section.estimate.values, approx[section.kind].values)
        assert section.correlation == pytest.approx(patching_correlation(exact, approx[section.kind]))
        assert len(section.to_frame()) == 2 * exact.values.numel()
        assert f"r = {section.correlation:.3f}" in section.caption
    assert steps == sorted(steps) and steps[-1] == pytest.approx(1.0)  # across both kinds, never backwards
    assert [m.value for m in report.metrics] == [f"{exact.clean_metric:+.3f}", f"{exact.corrupt_metric:+.3f}"]
    assert (report.warning is None) == (not exact.weak_contrast)  # random tiny models tell IOI apart weakly


def test_a_weak_contrast_is_reported_with_the_gap(tiny_bundle):
    task = preset_task(tiny_bundle, IOI)
    weak = [dataclasses.replace(activation_patching(tiny_bundle, task, kind), clean_metric=1.0, corrupt_metric=0.8)
            for kind in ("resid", "head")]
    report = PatchingReport(sections=tuple(PatchingSection(result, result, 1.0) for result in weak))
    assert "only 0.200 apart" in report.warning


def test_the_pair_choice_keeps_a_bad_pairs_problem_and_tasks_compare_by_value(gpt2_bundle):
    bad = choose_task(gpt2_bundle, OWN_PAIR, ("The capital of France is", "The capital of the big country is",
                                             " Paris", " Rome"))
    assert bad.task is None and isinstance(bad.problem, PatchingInputError)
    assert "same number of tokens" in str(bad.problem)
    good = choose_task(gpt2_bundle, IOI)
    assert good.problem is None and good.task == preset_task(gpt2_bundle, IOI)  # the page's cache key, by value
    assert hash(good.task) == hash(preset_task(gpt2_bundle, IOI))
    assert good.task != preset_task(gpt2_bundle, "Capital: France -> Italy")
    assert good.task != dataclasses.replace(good.task, foil_id=good.task.answer_id + 1)


# -- known truths on the shipped model organism -----------------------------------------------------------


def test_shipped_ioi_patching_finds_heads_that_restore_most_of_the_logit_difference():
    bundle = shipped_bundle()
    task = preset_task(bundle, IOI)
    heads = activation_patching(bundle, task, "head")
    assert heads.clean_metric > 0 > heads.corrupt_metric  # the model gets both prompts right
    best = torch.topk(heads.values.flatten(), 3).values
    assert float(best[0]) >= 0.3 and float(best.sum()) >= 0.6, heads.values


def test_shipped_attribution_patching_tracks_exact_patching_on_heads():
    bundle = shipped_bundle()
    task = preset_task(bundle, IOI)
    exact = activation_patching(bundle, task, "head")
    approx = attribution_patching(bundle, task)["head"]
    assert patching_correlation(exact, approx) >= 0.8


def test_patching_charts_show_every_site_on_a_scale_centred_on_zero(gpt2_bundle):
    from interp_core.charts.circuits import head_patching_heatmap, patching_scatter, resid_patching_heatmap, shared_vmax

    task = preset_task(gpt2_bundle, IOI)
    resid = activation_patching(gpt2_bundle, task, "resid")
    approx = attribution_patching(gpt2_bundle, task)
    vmax = shared_vmax(resid, approx["resid"])
    assert vmax >= 1.0
    spec = resid_patching_heatmap(resid, vmax).to_dict()
    assert len(next(iter(spec["datasets"].values()))) == (gpt2_bundle.n_layers + 1) * task.n_pos
    scale = spec["encoding"]["color"]["scale"]
    assert scale["domainMid"] == 0 and scale["domain"] == [-vmax, vmax]
    heads = activation_patching(gpt2_bundle, task, "head")
    assert len(next(iter(head_patching_heatmap(heads).to_dict()["datasets"].values()))) == 8
    scatter = patching_scatter(heads, approx["head"], patching_correlation(heads, approx["head"])).to_dict()
    assert "Pearson r" in json.dumps(scatter["title"])


def test_attribution_patching_with_recomputed_blocks_gives_the_same_estimates(tiny_bundle, monkeypatch):
    task = preset_task(tiny_bundle, IOI)
    kept = attribution_patching(tiny_bundle, task)
    monkeypatch.setattr(budget, "limits", lambda: Limits(ig_batch_memory_mb=0))
    assert budget.recompute_blocks(tiny_bundle, task.n_pos, 1)
    recomputed = attribution_patching(tiny_bundle, task)
    for kind in ("head", "resid"):
        torch.testing.assert_close(recomputed[kind].values, kept[kind].values, atol=1e-6, rtol=1e-5)
    assert all("forward" not in vars(block) for block in tiny_bundle.adapter.blocks(tiny_bundle.model))


def test_attribution_patching_gives_the_same_estimates_with_the_clean_run_cached_in_its_batch_or_alone(
        tiny_bundle, monkeypatch):
    """Text prompts take the clean activations from the cached trace; token ids run the clean prompt as a first
    row of the gradient pass, or, when two rows would need recomputed blocks, in a no-grad pass of its own that
    keeps only each site's product with the gradient. Every way the estimates agree."""
    task = preset_task(tiny_bundle, IOI)
    assert task.clean_prompt is not None
    ids_only = dataclasses.replace(task, clean_prompt=None, corrupt_prompt=None)
    from_trace = attribution_patching(tiny_bundle, task)
    from_batch = attribution_patching(tiny_bundle, ids_only)
    monkeypatch.setattr(budget, "limits", lambda: Limits(ig_batch_memory_mb=0))
    assert budget.recompute_blocks(tiny_bundle, 2 * task.n_pos, 1)
    from_own_pass = attribution_patching(tiny_bundle, ids_only)
    for other in (from_batch, from_own_pass):
        for kind in ("head", "resid"):
            torch.testing.assert_close(other[kind].values, from_trace[kind].values, atol=1e-5, rtol=1e-4)
            assert other[kind].clean_metric == pytest.approx(from_trace[kind].clean_metric, abs=1e-5)
            assert other[kind].corrupt_metric == pytest.approx(from_trace[kind].corrupt_metric, abs=1e-5)
