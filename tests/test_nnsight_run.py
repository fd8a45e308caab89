"""The activation API on nnsight (interp_core.nnsight_run) against ours (interp_core.activations), on the shipped
organism and a tiny Llama: the same records, edits and gradients within 1e-5."""

from __future__ import annotations

import pytest
import torch
from helpers import save_tiny_model
from shipped import shipped_bundle

from interp_core import activations, nnsight_run
from interp_core.loading import load_model

TOL = 1e-5


@pytest.fixture(scope="module", params=["organism", "llama"])
def bundle(request, tmp_path_factory):
    if request.param == "organism":
        return shipped_bundle()
    return load_model(str(save_tiny_model("llama", tmp_path_factory.mktemp("tiny_llama"))))


def _names(bundle) -> list[str]:
    last = bundle.n_layers - 1
    return ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.0.attn.hook_v",
            "blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_in", "blocks.0.mlp.hook_post",
            "blocks.0.hook_mlp_out", f"blocks.{last}.hook_resid_post", "ln_final.hook_normalized"]


def _ids(bundle) -> torch.Tensor:
    return torch.randint(3, bundle.d_vocab, (2, 12), generator=torch.Generator().manual_seed(0))


def close(name, a, b) -> None:
    assert a.shape == b.shape, name
    assert float((a.double() - b.double()).abs().max()) <= TOL, name


def test_records_equal_ours(bundle):
    ids, names = _ids(bundle), _names(bundle)
    ours = activations.run(bundle, ids, record=names, logits_to_keep=0)
    theirs = nnsight_run.run(bundle, ids, record=names, logits_to_keep=0)
    close("logits", ours.logits, theirs.logits)
    for name in names:
        close(name, ours.acts[name], theirs.acts[name])


def test_edits_patch_and_steer_as_ours(bundle):
    ids = _ids(bundle)
    clean = activations.run(bundle, ids, record=["blocks.0.hook_resid_post"]).acts["blocks.0.hook_resid_post"]
    edits = {"blocks.1.hook_resid_pre": activations.replace(clean.flip(0)[:, 4], pos=4),  # patch the other row in
             "blocks.0.attn.hook_z[1]": activations.zero(),  # ablate one head
             "blocks.0.hook_mlp_out": activations.add(torch.ones(bundle.d_model), pos=2)}  # steer
    ours = activations.run(bundle, ids, edits=edits, record=["ln_final.hook_normalized"])
    theirs = nnsight_run.run(bundle, ids, edits=edits, record=["ln_final.hook_normalized"])
    close("logits", ours.logits, theirs.logits)
    close("final", ours.acts["ln_final.hook_normalized"], theirs.acts["ln_final.hook_normalized"])
    assert float((ours.logits - activations.run(bundle, ids).logits).abs().max()) > 1e-3  # the edits did work


def test_gradients_equal_ours(bundle):
    ids = _ids(bundle)
    names = ["hook_embed", "blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"]

    def metric(logits, acts):
        return logits[:, -1].log_softmax(-1)[:, 7].sum()

    ours = activations.run(bundle, ids, grad=names, metric=metric)
    theirs = nnsight_run.run(bundle, ids, grad=names, metric=metric)
    close("metric", ours.metric, theirs.metric)
    for name in names:
        close(name, ours.grads[name], theirs.grads[name])
        assert float(ours.grads[name].abs().max()) > 0, name


def test_hook_pattern_is_recorded_as_ours_and_an_edit_of_it_is_refused_in_words(bundle):
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(bundle.n_layers)]
    ours = activations.run(bundle, _ids(bundle), record=names)
    theirs = nnsight_run.run(bundle, _ids(bundle), record=names)
    for name in names:
        close(name, ours.acts[name], theirs.acts[name])
    with pytest.raises(ValueError, match="hook_pattern can be recorded, not edited"):
        nnsight_run.run(bundle, _ids(bundle), edits={names[0]: activations.zero(pos=1)})


def test_the_benchmarks_nnsight_anchors_give_our_trace_and_residual_patching():
    """Workload 13's anchors (bench/nnsight_bench.py: nnsight used as its tutorials do) measure the same work as
    ours: the organism's trace activations and the IOI residual-stream patching sweep agree within 1e-5."""
    from bench.nnsight_bench import nnsight_resid_sweep, nnsight_trace
    from bench.patching_bench import ioi_task
    from interp_core.patching import activation_patching
    from interp_core.trace import trace_names

    organism = shipped_bundle()
    ids = _ids(organism)[:1]
    ours, theirs = activations.run(organism, ids, record=trace_names(organism.n_layers)), nnsight_trace(organism, ids)
    for name, act in ours.acts.items():
        close(name, act, theirs[name])
    close("logits", ours.logits, theirs["logits"][:, -1:])
    task = ioi_task(organism)
    close("resid sweep", activation_patching(organism, task, "resid").values, nnsight_resid_sweep(organism, task))
