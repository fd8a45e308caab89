"""Several devices (issue 22, part 2): a model spread by accelerate's device_map="auto" over the CPU and disk
offload (its later blocks' weights read from disk at each pass) gives every analysis the same numbers as the model
loaded whole, within 1e-5. On a CUDA machine the same code path spreads blocks over GPUs (`make bench
DEVICE=cuda`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import save_tiny_model
from streamlit.testing.v1 import AppTest

from interp_core import attribution as attr
from interp_core import circuits, discovery, patching
from interp_core.adapters.base import stored
from interp_core.lens import direct_logit_attribution, logit_lens
from interp_core.loading import load_model
from interp_core.settings import max_memory
from interp_core.trace import layer_pattern, run_trace

PROMPT = "When Mary and John went to the store, John gave a drink to"
TOL = 1e-5
APP = Path(__file__).resolve().parent.parent / "app.py"


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def pair(request, tmp_path_factory):
    """(the model loaded whole, the same model over the CPU and disk), for a tiny Llama and a tiny GPT-2."""
    folder = save_tiny_model(request.param, tmp_path_factory.mktemp(f"tiny_{request.param}"))
    whole = load_model(str(folder))
    size = sum(p.numel() * p.element_size() for p in whole.model.parameters())
    split = load_model(str(folder), max_memory={"cpu": int(0.9 * size)})  # the last blocks do not fit
    return whole, split


def close(name, a, b) -> None:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, name
    assert float((a - b).abs().max()) <= TOL * max(1.0, float(a.abs().max())), name


def test_the_model_is_really_split_and_its_weights_are_read_from_the_offload(pair):
    whole, split = pair
    placed = set(split.model.hf_device_map.values())
    assert placed == {"cpu", "disk"}, split.model.hf_device_map
    last = split.adapter.attn_out_proj(split.adapter.blocks(split.model)[-1])
    assert last.weight.device.type == "meta"  # offloaded between passes
    assert torch.equal(stored(last, "weight"), whole.adapter.attn_out_proj(whole.adapter.blocks(whole.model)[-1])
                       .weight)
    assert split.device == torch.device("cpu") and split.fingerprint == whole.fingerprint


def test_trace_patterns_lens_and_direct_logit_attribution_match(pair):
    whole, split = pair
    a, b = run_trace(whole, PROMPT), run_trace(split, PROMPT)
    close("resid", a.resid, b.resid)
    close("logits", a.last_logits, b.last_logits)
    for layer in range(a.n_layers):
        close(f"pattern {layer}", layer_pattern(whole, a, layer), layer_pattern(split, b, layer))
    close("lens", logit_lens(whole, a).kl_to_final, logit_lens(split, b).kl_to_final)
    top = int(a.last_logits.argmax())
    close("dla", direct_logit_attribution(whole, a, pos=-1, target_id=top).values,
          direct_logit_attribution(split, b, pos=-1, target_id=top).values)


def test_gradients_patching_circuits_and_discovery_match(pair):
    whole, split = pair
    a, b = run_trace(whole, PROMPT), run_trace(split, PROMPT)
    close("integrated gradients", attr.integrated_gradients(whole, a, n_steps=8).scores,
          attr.integrated_gradients(split, b, n_steps=8).scores)
    reports = [patching.patching_report(bundle, patching.repeated_task(bundle)) for bundle in pair]
    for x, y in zip(reports[0].sections, reports[1].sections, strict=True):
        close(f"exact {x.title}", x.exact.values, y.exact.values)
        close(f"attribution {x.title}", x.estimate.values, y.estimate.values)
    runs = [circuits.run_repeated(bundle, 12, 0) for bundle in pair]
    close("detectors", runs[0].scores.scores, runs[1].scores.scores)
    close("OV copying", circuits.ov_copying_scores(whole), circuits.ov_copying_scores(split))
    graphs = [discovery.build_graph(bundle) for bundle in pair]
    data = [discovery.induction_pairs(bundle, 4) for bundle in pair]
    scores = [discovery.edge_scores(bundle, g, d, method="eap") for bundle, g, d in zip(pair, graphs, data,
                                                                                        strict=True)]
    close("EAP", scores[0].scores, scores[1].scores)
    close("routes", discovery.contributions(whole, a).attention, discovery.contributions(split, b).attention)


def test_the_memory_caps_come_from_the_environment_and_a_bad_entry_is_named(monkeypatch):
    monkeypatch.delenv("INTERP_MAX_MEMORY", raising=False)
    assert max_memory() is None
    monkeypatch.setenv("INTERP_MAX_MEMORY", "0=20GiB, 1=20GiB,cpu=60000")
    assert max_memory() == {0: "20GiB", 1: "20GiB", "cpu": 60000}
    monkeypatch.setenv("INTERP_MAX_MEMORY", "gpu0=20GiB")
    with pytest.raises(ValueError, match="'gpu0=20GiB'"):
        max_memory()


def test_the_app_loads_a_model_spread_over_the_cpu_and_disk(tmp_path, monkeypatch):
    """INTERP_MAX_MEMORY spreads the sidebar's model; its facts say where, and the Overview page draws."""
    folder = save_tiny_model("llama", tmp_path / "spread")
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(folder))
    monkeypatch.setenv("INTERP_MAX_MEMORY", "cpu=150000")
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    facts = " ".join(str(m.value) for m in at.sidebar.markdown)
    assert "spread over cpu" in facts and "disk" in facts, facts
