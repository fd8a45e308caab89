"""The Logit lens page's tuned lens under AppTest: the shipped organism's lens decodes the heatmap when chosen (and
from `?lens=tuned`), the chart of both lenses' distance from the output covers the prompt and held-out text, a lens
trained on the page replaces it, and a model without a lens says so and falls back to the logit lens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interp_core.organism.tuned_lens import LENS_DIR

ROOT = Path(__file__).resolve().parent.parent
APP, LENS = str(ROOT / "app.py"), "pages/4_Logit_Lens.py"
TIMEOUT = 180


def open_lens(monkeypatch, model: str | None = None, **query: str) -> AppTest:
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    if model:
        monkeypatch.setenv("INTERP_DEFAULT_MODEL", model)
    else:
        monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for name, value in query.items():
        at.query_params[name] = value
    at.run()
    at.switch_page(LENS).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def divergence_chart(at: AppTest) -> dict | None:
    """The spec of the chart of both lenses' distance from the model's output, if the page drew it."""
    for spec in specs(at):
        titles = [str(part.get("title", "")) for part in spec.get("hconcat", [])]
        if "distance from the model's output" in titles:
            return spec
    return None


@pytest.mark.skipif(not (LENS_DIR / "config.json").is_file(), reason="the shipped tuned lens is not trained")
def test_the_shipped_tuned_lens_decodes_the_heatmap_and_both_lenses_are_compared(monkeypatch):
    at = open_lens(monkeypatch)
    heatmap = specs(at)[0]
    assert divergence_chart(at) is not None
    assert any("this prompt and of held-out text" in c.value for c in at.caption)
    at.radio(key="lens_kind").set_value("tuned").run()
    assert not at.exception and not at.error
    assert at.query_params["lens"] == "tuned"
    assert specs(at)[0] != heatmap  # the heatmap is the tuned lens' now
    assert any(c.value.startswith("Tuned lens.") for c in at.caption)
    linked = open_lens(monkeypatch, lens="tuned")
    assert linked.radio(key="lens_kind").value == "tuned" and specs(linked)[0] == specs(at)[0]


def test_a_lens_trained_on_the_page_replaces_the_shipped_one(monkeypatch):
    at = open_lens(monkeypatch)
    at.number_input(key="lens_steps").set_value(10).run()
    at.button(key="lens_train").click().run()
    assert not at.exception and not at.error
    assert any("trained here" in e.label and "10 steps" in e.label for e in at.expander)
    at.radio(key="lens_kind").set_value("tuned").run()
    assert divergence_chart(at) is not None


def test_a_model_without_a_tuned_lens_says_so_and_shows_the_logit_lens(monkeypatch, saved_tiny_gpt2):
    at = open_lens(monkeypatch, str(saved_tiny_gpt2), lens="tuned")
    assert any("no tuned lens yet" in i.value for i in at.info)
    assert any(c.value.startswith("Logit lens.") for c in at.caption)
    assert divergence_chart(at) is None
    assert at.button(key="lens_train").disabled  # it needs text to train on first
