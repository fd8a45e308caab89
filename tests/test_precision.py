"""Precision: models load in float32, bfloat16 or float16, and every analysis page's numbers in bfloat16 stay
within a stated tolerance of float32, on the shipped organism and on a tiny random Llama (loaded from a saved
folder, so both go through load_model).

Tolerances were measured on this repository's models and inputs (the measured worst case is written beside each
one in the tests' docstrings) and set at about twice it, so a precision regression fails while kernel differences
between CPUs do not. `abs` is max |bfloat16 - float32| over the numbers, `rel` that divided by max |float32|.
The steps the analyses compute in float32 (softmax statistics, the lens' norms and unembedding, attribution paths
and sums, probe features, logit differences) are also checked exactly where bfloat16 would round them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import save_tiny_model
from shipped import shipped_bundle
from streamlit.testing.v1 import AppTest

from interp_core import attribution as attr
from interp_core import circuits, discovery, patching, probing
from interp_core.attention import attention_pattern, head_summaries
from interp_core.attribution.targets import _target_values
from interp_core.caches import cached_trace
from interp_core.components import final_norm_form
from interp_core.errors import ModelLoadError
from interp_core.features import sae as saes
from interp_core.features.metrics import measure
from interp_core.lens import direct_logit_attribution, logit_lens, next_token_predictions, residual_evolution
from interp_core.loading import load_model
from interp_core.organism import train_sae
from interp_core.settings import SHIPPED_MODEL
from interp_core.trace import layer_pattern, run_trace

APP = Path(__file__).resolve().parent.parent / "app.py"
PROMPT = "When Mary and John went to the store, John gave a drink to"
MODELS = ("organism", "llama")


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def pairs_of_models(llama_folder):
    """{name: (float32 bundle, bfloat16 bundle)}; the organism's float32 one is the shared shipped bundle."""
    return {"organism": (shipped_bundle(), load_model(SHIPPED_MODEL, "bfloat16")),
            "llama": (load_model(str(llama_folder), "float32"), load_model(str(llama_folder), "bfloat16"))}


@pytest.fixture(params=MODELS)
def pair(request, pairs_of_models):
    """(model name, float32 bundle, bfloat16 bundle), once per model."""
    return (request.param, *pairs_of_models[request.param])


def both(pair, fn):
    """fn(bundle, trace of PROMPT) on the float32 and the bfloat16 model."""
    _, full, half = pair
    return fn(full, run_trace(full, PROMPT)), fn(half, run_trace(half, PROMPT))


def assert_close(name: str, full, half, abs_tol: float | None = None, rel_tol: float | None = None) -> None:
    """max |half - full| <= abs_tol, or <= rel_tol * max |full| (NaNs must match)."""
    full, half = torch.as_tensor(full).double(), torch.as_tensor(half).double()
    assert full.shape == half.shape, name
    assert torch.equal(full.isnan(), half.isnan()), name
    diff = float((full - half).nan_to_num().abs().max()) if full.numel() else 0.0
    limit = abs_tol if abs_tol is not None else rel_tol * float(full.nan_to_num().abs().max())
    print(f"{name}: abs {diff:.2e} rel {diff / max(float(full.nan_to_num().abs().max()), 1e-30):.2e}")
    assert diff <= limit, f"{name}: bfloat16 is {diff:.3g} from float32, over the tolerance {limit:.3g}"


# --- loading ------------------------------------------------------------------------------------------------------


def test_each_precision_loads_as_a_model_of_its_own(llama_folder):
    """load_model(ref, dtype): the weights in that dtype, a fingerprint (so every cache key) of its own; float32 is
    the default on a CPU and keeps the files' fingerprint; an unknown precision is refused in words."""
    full, half = load_model(str(llama_folder)), load_model(str(llama_folder), torch.bfloat16)
    fp16 = load_model(str(llama_folder), "float16")
    assert (full.dtype, half.dtype, fp16.dtype) == (torch.float32, torch.bfloat16, torch.float16)
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert len({full.fingerprint, half.fingerprint, fp16.fingerprint}) == 3
    assert half.fingerprint.startswith(full.fingerprint) and half.fingerprint.endswith("bfloat16")
    assert cached_trace(full, PROMPT) is not cached_trace(half, PROMPT)
    assert torch.isfinite(run_trace(fp16, PROMPT).last_logits).all()
    with pytest.raises(ModelLoadError, match="float32, bfloat16, float16"):
        load_model(str(llama_folder), "float64")


# --- what bfloat16 would round, computed in float32 ----------------------------------------------------------------


def test_sensitive_steps_are_float32_in_a_bfloat16_model(pairs_of_models):
    """On the bfloat16 organism: attention rows sum to 1 within 1e-6 (rounded to bfloat16 they drift by ~4e-3);
    the lens' logits equal float64 arithmetic on the same bfloat16 weights within 1e-4 (a bfloat16 matmul output
    is 0.06 off at a logit of 10); attribution's log-probability target equals float32 log-softmax of the model's
    logits within 1e-6; the patching metric equals the float64 logit difference within 1e-5."""
    half = pairs_of_models["organism"][1]
    trace = run_trace(half, PROMPT)
    rows = layer_pattern(half, trace, 1).sum(-1)
    assert rows.dtype == torch.float32 and float((rows - 1).abs().max()) < 1e-6
    form, weight = final_norm_form(half), half.adapter.unembed_weight(half.model).double()
    expected = form(trace.resid[:, -1].double()) @ weight.T
    lens = logit_lens(half, trace, k=1)
    assert torch.allclose(lens.target_prob[:, -1].double(),
                          expected.softmax(-1)[:, lens.target_id], atol=1e-4)
    logits = trace.last_logits.to(torch.bfloat16)  # what the model's forward pass returns
    top, zero = torch.tensor([[int(logits.argmax())]]), torch.zeros(1, 1, dtype=torch.long)
    target = _target_values(logits[None, None], zero, top, top, "logprob")
    assert abs(float(target) - float(torch.log_softmax(logits.double(), -1).max())) < 1e-6
    assert attr.integrated_gradients(half, trace, n_steps=4).per_dim.dtype == torch.float32
    task = patching.preset_task(half, "IOI: subject swapped")
    final = run_trace(half, task.clean_prompt).resid[-1, -1]
    m = float(form(final.double()) @ (weight[task.answer_id] - weight[task.foil_id]))
    assert abs(float(patching.logit_diff(half, final, task.answer_id, task.foil_id)) - m) < 1e-5


# --- every page's numbers ------------------------------------------------------------------------------------------

OVERVIEW = {"organism": (4e-4, 6e-3, 6e-3), "llama": (3e-4, 6e-3, 5e-3)}


def test_overview(pair):
    """Tolerances (measured organism, llama -> allowed): top-10 next-token probabilities abs 1.7e-4, 1.3e-4 -> 4e-4,
    3e-4; residual norms rel 3.0e-3, 2.6e-3 -> 6e-3; the cosine between layers abs 2.7e-3, 2.1e-3 -> 6e-3, 5e-3.
    The top-1 token is the same."""
    probs, norms, cosine = OVERVIEW[pair[0]]

    def numbers(bundle, trace):
        top = next_token_predictions(bundle, trace, 10)
        evolution = residual_evolution(trace)
        return top.token_ids, top.probs, evolution.norms, evolution.cosine

    (ids, p, n, c), (ids_h, p_h, n_h, c_h) = both(pair, numbers)
    assert int(ids[0]) == int(ids_h[0])
    assert_close("probabilities", p, p_h, abs_tol=probs)
    assert_close("norms", n, n_h, rel_tol=norms)
    assert_close("cosine", c, c_h, abs_tol=cosine)


ATTENTION = {"organism": (3.5e-2, 6e-3), "llama": (4e-3, 1e-3)}


def test_attention(pair):
    """Tolerances (measured organism, llama -> allowed): every head's pattern abs 1.7e-2, 1.8e-3 -> 3.5e-2, 4e-3;
    the head score card (entropy in nats, previous-token, first-token and self scores) abs 2.8e-3, 3.9e-4 -> 6e-3,
    1e-3."""
    pattern_tol, score_tol = ATTENTION[pair[0]]
    names = ("entropy", "prev_token", "first_token", "self_score")

    def numbers(bundle, trace):
        summary = head_summaries(bundle, trace)
        patterns = torch.stack([attention_pattern(bundle, trace, layer, head).weights
                                for layer in range(trace.n_layers) for head in range(trace.n_heads)])
        return patterns, [getattr(summary, name) for name in names]

    (patterns, scores), (patterns_h, scores_h) = both(pair, numbers)
    assert_close("patterns", patterns, patterns_h, abs_tol=pattern_tol)
    for name, full, half in zip(names, scores, scores_h, strict=True):
        assert_close(name, full, half, abs_tol=score_tol)


ATTRIBUTION = {"organism": (6e-2, 1.5e-1, 5e-2, 4e-2), "llama": (1e-2, 2.5e-2, 8e-2, 8e-2)}


def test_attribution(pair):
    """Why the float32 model's top-1 token rather than its second (a logit contrast: a top-1 log-probability near
    0 is saturated and its gradient tiny), integrated gradients with 64 Gauss-Legendre steps from the neutral token
    (float32's completeness residual: 5e-7, 1e-7). Tolerances (measured organism, llama -> allowed): IG's per-token
    scores rel 2.9e-2, 4.9e-3 -> 6e-2, 1e-2; its relative completeness residual in bfloat16 6.7e-2, 1.0e-2 ->
    1.5e-1, 2.5e-2 (the gradients of a bfloat16 forward pass are not those of its rounded values: 128 steps give
    1.4e-2, 256 give 2.1e-2, where float32 weights rounded to bfloat16 give 2e-6); input x gradient rel 2.2e-2,
    3.6e-2 -> 5e-2, 8e-2; occlusion rel 1.7e-2, 4.1e-2 -> 4e-2, 8e-2."""
    ig_tol, delta_tol, ixg_tol, occ_tol = ATTRIBUTION[pair[0]]
    first, second = run_trace(pair[1], PROMPT).last_logits.topk(2).indices.tolist()
    target = attr.ContrastTarget(first, second)

    def numbers(bundle, trace):
        ig = attr.integrated_gradients(bundle, trace, target, baseline="token", n_steps=64)
        return (ig.scores, ig.relative_delta, attr.input_x_gradient(bundle, trace, target).scores,
                attr.occlusion(bundle, trace, target, baseline="token").scores)

    (ig, delta, ixg, occ), (ig_h, delta_h, ixg_h, occ_h) = both(pair, numbers)
    print(f"completeness: float32 {delta:.2e}, bfloat16 {delta_h:.2e}")
    assert_close("integrated gradients", ig, ig_h, rel_tol=ig_tol)
    assert delta_h <= delta_tol, f"completeness residual {delta_h:.3g} in bfloat16 (float32: {delta:.3g})"
    assert_close("input x gradient", ixg, ixg_h, rel_tol=ixg_tol)
    assert_close("occlusion", occ, occ_h, rel_tol=occ_tol)


LENS = {"organism": (2.5e-2, 1e-1, 5e-2, 2e-3), "llama": (2e-4, 2e-3, 1e-3, 8e-3)}


def test_logit_lens(pair):
    """The logit lens of every layer and position, and direct logit attribution at the last position, for the
    float32 model's top-1 token. Tolerances (measured organism, llama -> allowed): the target's probability abs
    1.0e-2, 9.4e-5 -> 2.5e-2, 2e-4; KL(final || layer) abs (nats) 4.8e-2, 8.6e-4 -> 1e-1, 2e-3; entropy abs (nats)
    2.5e-2, 4.0e-4 -> 5e-2, 1e-3; each component's direct logit attribution rel 8.7e-4, 3.9e-3 -> 2e-3, 8e-3."""
    prob_tol, kl_tol, entropy_tol, dla_tol = LENS[pair[0]]

    def numbers(bundle, trace):
        target = int(torch.as_tensor(run_trace(pair[1], PROMPT).last_logits).argmax())  # float32's top-1 for both
        lens = logit_lens(bundle, trace, target)
        return lens, direct_logit_attribution(bundle, trace, pos=-1, target_id=target).values

    (lens, dla), (lens_h, dla_h) = both(pair, numbers)
    assert_close("target probability", lens.target_prob, lens_h.target_prob, abs_tol=prob_tol)
    assert_close("KL to the output", lens.kl_to_final, lens_h.kl_to_final, abs_tol=kl_tol)
    assert_close("entropy", lens.entropy, lens_h.entropy, abs_tol=entropy_tol)
    assert_close("direct logit attribution", dla, dla_h, rel_tol=dla_tol)


def test_probing(pairs_of_models):
    """On the organism (the built-in grammar data are its own), every fourth subject-number sentence (375).
    Tolerances (measured -> allowed): the residual-stream features rel 1.7e-2 -> 4e-2; the probes' balanced
    accuracy per layer abs 3.6e-3 -> 2e-2 (one test sentence changing side moves a layer's mean by about 3e-3)."""
    full, half = pairs_of_models["organism"]
    data = probing.builtin_dataset("number")
    data = replace(data, examples=data.examples[::4])
    features = [probing.extract_features(bundle, data, "last") for bundle in (full, half)]
    assert features[1].resid.dtype == features[0].resid.dtype == "float32"
    assert_close("probe features", features[0].resid, features[1].resid, rel_tol=4e-2)
    reports = [probing.run_probes(f, data) for f in features]
    assert_close("probe accuracy", torch.tensor(reports[0].task_mean), torch.tensor(reports[1].task_mean),
                 abs_tol=2e-2)


CIRCUITS = {"organism": (1.6e-2, 4e-3, 1.6e-3), "llama": (2.5e-3, 5e-4, 2.5e-3)}


def test_circuits_and_ablation_of_heads(pair):
    """On repeated random tokens (length 20, seed 0). Tolerances (measured organism, llama -> allowed): every head
    detector's score abs 7.8e-3, 1.1e-3 -> 1.6e-2, 2.5e-3; the second copy's loss with and without the last layer's
    head 0 abs (nats) 1.9e-3, 2.1e-4 -> 4e-3, 5e-4; Olsson's OV copying score abs 7.7e-4, 1.1e-3 -> 1.6e-3,
    2.5e-3."""
    score_tol, loss_tol, ov_tol = CIRCUITS[pair[0]]

    def numbers(bundle, trace):
        run = circuits.run_repeated(bundle, 20, 0)
        ablated = circuits.run_repeated(bundle, 20, 0, ablate=((bundle.n_layers - 1, 0),))
        return (run.scores.scores, torch.tensor([run.copy_loss(2), ablated.copy_loss(2)]),
                circuits.ov_copying_scores(bundle))

    (scores, losses, ov), (scores_h, losses_h, ov_h) = both(pair, numbers)
    assert_close("detector scores", scores, scores_h, abs_tol=score_tol)
    assert_close("copy losses", losses, losses_h, abs_tol=loss_tol)
    assert_close("OV copying", ov, ov_h, abs_tol=ov_tol)


PATCHING = {"organism": (2e-1, 2.5e-2, 5e-4), "llama": (3e-2, 1.1e-1, 1.2e-2)}


def test_patching(pair):
    """The IOI preset on the organism, the induction preset on the tiny Llama. Tolerances (measured organism,
    llama -> allowed): the clean and corrupted logit differences abs 9.2e-2, 1.2e-2 -> 2e-1, 3e-2; exact and
    attribution patching of the residual stream and of the heads, and the clean metric with head L0H0 zero-ablated,
    all normalised, abs 1.2e-2, 5.4e-2 -> 2.5e-2, 1.1e-1 (the tiny Llama's clean-corrupted gap is 0.2 logits, so
    its normalised values magnify every error fivefold); the exact-attribution correlation abs 1.2e-4, 5.7e-3 ->
    5e-4, 1.2e-2."""
    metric_tol, value_tol, r_tol = PATCHING[pair[0]]

    def numbers(bundle, trace):
        task = (patching.preset_task(bundle, "IOI: subject swapped") if pair[0] == "organism"
                else patching.repeated_task(bundle))
        report = patching.patching_report(bundle, task)
        ablated = patching.ablate_on_task(bundle, task, ((0, 0),), "zero")
        return report, ablated.normalised_after

    (report, after), (report_h, after_h) = both(pair, numbers)
    assert_close("logit differences", [report.clean_metric, report.corrupt_metric],
                 [report_h.clean_metric, report_h.corrupt_metric], abs_tol=metric_tol)
    for section, section_h in zip(report.sections, report_h.sections, strict=True):
        assert_close(f"exact, {section.title}", section.exact.values, section_h.exact.values, abs_tol=value_tol)
        assert_close(f"attribution, {section.title}", section.estimate.values, section_h.estimate.values,
                     abs_tol=value_tol)
        assert_close(f"r, {section.title}", section.correlation, section_h.correlation, abs_tol=r_tol)
    assert_close("ablated, normalised", after, after_h, abs_tol=value_tol)


DISCOVERY = {"organism": (1e-2, 4e-3, 3e-2), "llama": (7e-2, 6e-2, 6e-3)}


def test_circuit_discovery(pair):
    """EAP-IG (5 steps) on 8 pairs of the task (IOI on the organism, induction on the tiny Llama). Tolerances
    (measured organism, llama -> allowed): the edge scores rel 4.9e-3, 3.5e-2 -> 1e-2, 7e-2; the faithfulness of
    the top 40 edges on those pairs abs 1.9e-3, 2.6e-2 -> 4e-3, 6e-2; the prompt's information-flow shares abs
    1.5e-2, 2.8e-3 -> 3e-2, 6e-3."""
    score_tol, faith_tol, share_tol = DISCOVERY[pair[0]]

    def numbers(bundle, trace):
        graph = discovery.build_graph(bundle)
        data = (discovery.task_pairs(bundle, "ioi", 8, "scoring") if pair[0] == "organism"
                else discovery.induction_pairs(bundle, 8))
        scores = discovery.edge_scores(bundle, graph, data, method="eap_ig", steps=5)
        faith = discovery.faithfulness(bundle, graph, data, discovery.top_edges(scores, 40))
        return scores.scores, faith, discovery.contributions(bundle, trace).attention

    (scores, faith, shares), (scores_h, faith_h, shares_h) = both(pair, numbers)
    assert_close("EAP-IG scores", scores, scores_h, rel_tol=score_tol)
    assert math.isfinite(faith_h)
    assert_close("faithfulness", faith, faith_h, abs_tol=faith_tol)
    assert_close("routes' shares", shares, shares_h, abs_tol=share_tol)


# --- the app -------------------------------------------------------------------------------------------------------


def test_the_sidebar_and_the_link_choose_the_precision(llama_folder, monkeypatch):
    """?dtype=bfloat16 loads the model in bfloat16 (the sidebar's Precision box and facts say so, the URL keeps it);
    a bad value warns, naming it, and the default float32 is used."""
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(llama_folder))
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    for value, expected in (("bfloat16", "bfloat16"), ("float8", "float32")):
        at = AppTest.from_file(str(APP), default_timeout=180)
        at.query_params["dtype"] = value
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert at.sidebar.selectbox(key="dtype").value == expected
        assert any(expected in str(m.value) for m in at.sidebar.markdown)
        assert at.query_params["dtype"] in (expected, [expected])
        warnings = " ".join(str(w.value) for w in at.warning)
        assert ("dtype=float8" in warnings) == (value == "float8"), warnings


def test_features(pairs_of_models):
    """The shipped SAE on 8,192 held-out organism tokens. Tolerances (measured -> allowed): explained variance abs
    6.2e-5 -> 5e-4; loss recovered abs 2.5e-5 -> 2e-4; every latent's firing frequency abs 2e-3 -> 5e-3 (a token
    at the k-th place's edge changes which latent it counts for)."""
    full, half = pairs_of_models["organism"]
    batches = train_sae.held_out_batches(full, tokens=8192)
    measured = [measure(bundle, saes.load(bundle, train_sae.SAE_DIR), batches) for bundle in (full, half)]
    assert measured[1].l0 == measured[0].l0 == 12
    assert_close("explained variance", measured[0].explained_variance, measured[1].explained_variance, abs_tol=5e-4)
    assert_close("loss recovered", measured[0].loss_recovered, measured[1].loss_recovered, abs_tol=2e-4)
    assert_close("frequency", measured[0].frequency, measured[1].frequency, abs_tol=5e-3)
