"""The correctness half of the benchmarks (bench/, issues 9 and 18) as ordinary tests on tiny models: batched exact
patching equals a plain torch hook loop that patches one site per forward pass, the benchmark's Captum anchor agrees
with our integrated gradients and TransformerLens' edge attribution patching with our EAP (these two with the bench
requirements only), and the runner's timing and report helpers do what the report says they do."""

from __future__ import annotations

import pytest
import torch

from bench.common import Row, Timing, time_many
from bench.report import render, results_table
from interp_core.attribution import NextTokenTarget, integrated_gradients
from interp_core.budget import rows_per_chunk
from interp_core.discovery import PairData
from interp_core.patching import PatchingTask, activation_patching, preset_task

IOI = "IOI: subject swapped"


# -- exact patching vs one site per forward ------------------------------------------------------------------


def _capture(bundle, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Inputs of every block and of the final norm ([pos, d_model] each, n_layers + 1 of them) and of every
    attention output projection ([pos, head * d_head]), from one plain forward pass."""
    adapter, blocks = bundle.adapter, bundle.adapter.blocks(bundle.model)
    resid, z, handles = [], [], []
    for block in blocks:
        handles.append(block.register_forward_pre_hook(lambda m, args: resid.append(args[0][0].clone())))
        handles.append(adapter.attn_out_proj(block).register_forward_pre_hook(
            lambda m, args: z.append(args[0][0].clone())))
    handles.append(adapter.final_norm(bundle.model).register_forward_pre_hook(
        lambda m, args: resid.append(args[0][0].clone())))
    try:
        with torch.no_grad():
            bundle.model(input_ids=ids[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return resid, z


def _one_site(bundle, ids: torch.Tensor, module: torch.nn.Module, replace) -> float:
    """The corrupted forward with `replace(first positional input)` applied at `module`; logits, not our metric."""
    def hook(m, args):
        return (replace(args[0].clone()), *args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            return bundle.model(input_ids=ids[None], use_cache=False).logits[0, -1]
    finally:
        handle.remove()


def _hook_loop(bundle, task, kind: str) -> torch.Tensor:
    """Reference: the normalised logit difference with each site patched in its own forward pass."""
    adapter, blocks = bundle.adapter, bundle.adapter.blocks(bundle.model)
    clean_resid, clean_z = _capture(bundle, task.clean_ids)

    def metric(logits):
        return float(logits[task.answer_id] - logits[task.foil_id])

    with torch.no_grad():
        m_clean = metric(bundle.model(input_ids=task.clean_ids[None], use_cache=False).logits[0, -1])
        m_corrupt = metric(bundle.model(input_ids=task.corrupt_ids[None], use_cache=False).logits[0, -1])
    d = bundle.d_head
    values = []
    if kind == "head":
        for layer, block in enumerate(blocks):
            for head in range(bundle.n_heads):
                def put(z, layer=layer, head=head):  # z [batch=1, pos, head * d_head]
                    z[0, :, head * d:(head + 1) * d] = clean_z[layer][:, head * d:(head + 1) * d]
                    return z
                values.append(metric(_one_site(bundle, task.corrupt_ids, adapter.attn_out_proj(block), put)))
        shape = (bundle.n_layers, bundle.n_heads)
    else:
        modules = list(blocks) + [adapter.final_norm(bundle.model)]  # resid[l] is the input of modules[l]
        for layer, module in enumerate(modules):
            for pos in range(task.n_pos):
                def put(x, layer=layer, pos=pos):  # x [batch=1, pos, d_model]
                    x[0, pos] = clean_resid[layer][pos]
                    return x
                values.append(metric(_one_site(bundle, task.corrupt_ids, module, put)))
        shape = (bundle.n_layers + 1, task.n_pos)
    return ((torch.tensor(values, dtype=torch.float64) - m_corrupt) / (m_clean - m_corrupt)).float().reshape(shape)


@pytest.mark.parametrize("kind", ["head", "resid"])
def test_batched_exact_patching_equals_a_hook_loop_patching_one_site_per_forward(tiny_bundle, kind):
    task = preset_task(tiny_bundle, IOI)
    ours = activation_patching(tiny_bundle, task, kind).values
    reference = _hook_loop(tiny_bundle, task, kind)
    assert ours.shape == reference.shape
    assert reference.abs().max() > 0.05  # some site matters, so equality is not trivially 0 == 0
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


# -- the benchmark's Captum anchor ---------------------------------------------------------------------------


def test_the_benchmarks_captum_anchor_gives_our_integrated_gradients_within_1e_4_relative(gpt2_bundle):
    pytest.importorskip("captum.attr")
    from bench.ig_bench import captum_ig

    bundle = gpt2_bundle
    ids = torch.tensor(bundle.tokenizer("The capital of France is Paris and the capital of Italy is")["input_ids"])
    target = 7
    ours = integrated_gradients(bundle, ids, NextTokenTarget(target), baseline="token", n_steps=16)
    batch = 5  # not a divisor of the 16 steps: Captum's last chunk is shorter
    theirs, delta = captum_ig(bundle, ids, target, 16, batch)
    assert float((ours.per_dim - theirs).norm() / theirs.norm()) < 1e-4
    assert ours.delta == pytest.approx(delta, abs=1e-5)
    assert rows_per_chunk(bundle, len(ids), keep=1, grad=True) >= 1


def _random_pairs(bundle, n_pairs: int, n_pos: int) -> PairData:
    generator = torch.Generator().manual_seed(0)
    tasks = []
    for i in range(n_pairs):
        clean = torch.randint(3, bundle.d_vocab, (n_pos,), generator=generator)
        corrupt = clean.clone()
        corrupt[2] = (clean[2] + 1) % bundle.d_vocab
        tokens = [str(t) for t in clean.tolist()]
        tasks.append(PatchingTask(f"pair {i}", clean, corrupt, int(clean[2]), int(corrupt[2]), tokens, tokens, "a",
                                  "b"))
    return PairData.from_tasks("random pairs", tasks)


@pytest.mark.parametrize("model", ["organism", "tiny gpt2"])
def test_our_eap_equals_transformer_lens_edge_attribution_patching(model, saved_tiny_gpt2):
    """Issue 18's target: our EAP edge scores are TransformerLens 4.3's `attribution_patch(granularity="edge")`
    summed over positions (clean and corrupted swapped: its convention is denoising), within 1e-4 relative; and
    the benchmark's EAP-IG written from its pieces gives our EAP-IG."""
    pytest.importorskip("transformer_lens")
    from bench.common import boot_tl
    from bench.discovery_bench import tl_eap, tl_eap_ig, tl_scores_as_ours
    from interp_core.discovery import build_graph, edge_scores, ioi_pairs
    from interp_core.loading import load_model
    from interp_core.settings import SHIPPED_MODEL_DIR

    folder = SHIPPED_MODEL_DIR if model == "organism" else saved_tiny_gpt2
    bundle, bridge = load_model(str(folder)), boot_tl(folder, "cpu")
    data = ioi_pairs(bundle, n=4) if model == "organism" else _random_pairs(bundle, 3, 9)
    graph = build_graph(bundle)
    for method, theirs in (("eap", tl_eap(bridge, data)), ("eap_ig", tl_eap_ig(bridge, data, 3))):
        ours = edge_scores(bundle, graph, data, method=method, steps=3).scores
        expected = tl_scores_as_ours(graph, theirs)
        assert float((ours - expected).abs().max() / expected.abs().max()) < 1e-4, method
        assert float(expected.abs().max()) > 1e-3  # the pairs differ: the scores are not all 0


# -- the runner's helpers ------------------------------------------------------------------------------------


def test_timing_reports_median_min_and_max_of_its_samples():
    t = Timing((3.0, 1.0, 2.0, 10.0))
    assert (t.median, t.min, t.max) == (2.5, 1.0, 10.0)
    assert "n=4" in t.fmt()


def test_time_many_interleaves_the_functions_and_rotates_who_goes_first(monkeypatch):
    monkeypatch.setattr("bench.common.gc.collect", lambda: 0)  # a full collection per call is slow on a busy CPU
    calls: list[str] = []
    timings = time_many([lambda: calls.append("a"), lambda: calls.append("b"), lambda: calls.append("c")],
                        repeats=3, warmup=1)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [len(t.samples) for t in timings] == [3, 3, 3]


def test_report_gives_the_ratio_of_medians_and_explains_every_missed_target():
    from bench.common import QUICK

    fast = Row("1. Trace", "64 tokens", "m", Timing((1.0, 2.0, 3.0)), "TL", Timing((4.0, 4.0, 4.0)),
               target="<= 1.0x", met=True)
    slow = Row("2. Integrated gradients", "64 tokens", "m", Timing((2.0,)), "Captum", Timing((1.0,)),
               target="<= 1.0x", met=False, profile="aten::mm 80%")
    assert fast.ratio == 0.5 and slow.ratio == 2.0
    assert "0.50x" in results_table([fast, slow])
    text = render(QUICK, {"CPU": "x"}, [fast, slow], ["a note"], 60.0, "python bench/run.py --quick")
    assert "1 of 2 rows with a target met it" in text
    assert "### Missed: 2. Integrated gradients" in text and "aten::mm 80%" in text
    assert "**MISSED**" in text and "- a note" in text
