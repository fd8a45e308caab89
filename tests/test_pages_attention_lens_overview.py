"""The Attention, Logit Lens and Overview pages under Streamlit's AppTest: they render for awkward prompts,
their widgets change the charts, layer / head / position round-trip through the URL, and after the one traced
forward pass no page runs the model again for the same model and prompt."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import save_tiny_model
from streamlit.testing.v1 import AppTest

from interp_core.adapters import ADAPTERS

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
ATTENTION, LENS = "pages/1_Attention.py", "pages/4_Logit_Lens.py"
TIMEOUT = 120  # seconds for one script run (the first one loads the model)

PROMPTS = {
    "one_token": "a",
    "short": "Hi",
    "long": " ".join(["The cat sat on the mat and the dog sat on the rug."] * 6),  # past the 40-token window
    "unicode_emoji": "Grüße aus Köln 👋🏽 naïve café — 東京 ✨",
    "newlines": "line one\nline two\n\tindented line",
    "markup": "<img src=x onerror=alert(1)> :red[x] **b** $x$",
}


@pytest.fixture(autouse=True)
def tiny_default_model(saved_tiny_gpt2, monkeypatch):
    """The tiny GPT-2 folder is the default model; hosted mode off."""
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    return saved_tiny_gpt2


def open_page(page: str | None = None, **query: str) -> AppTest:
    """Open the app with `query` as the URL's parameters, then switch to `page`. (AppTest can only start at the
    entrypoint; the Overview leaves ?layer=, ?head= and ?pos= alone, so they reach the page as from a link.)"""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for name, value in query.items():
        at.query_params[name] = value
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def chart_specs(at: AppTest) -> list[dict]:
    """The Vega-Lite spec of every chart on the page (dataset names in them change with the data)."""
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def chart_titles(at: AppTest) -> list[str]:
    titles = []
    for spec in chart_specs(at):
        title = spec.get("title", "")
        titles.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return titles


@contextmanager
def model_forwards():
    """Collects one entry per forward pass of a whole causal LM (any loaded model), True when under grad."""
    calls: list[bool] = []

    def hook(module, args, output):
        if type(module).__name__ in ADAPTERS:
            calls.append(torch.is_grad_enabled())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("prompt", list(PROMPTS), ids=list(PROMPTS))
def test_pages_render_for_awkward_prompts(prompt):
    at = open_page(prompt=PROMPTS[prompt])
    assert_clean(at)
    assert len(at.get("vega_lite_chart")) == 5  # prediction bar + four panels
    for page in (ATTENTION, LENS):
        at.switch_page(page).run()
        assert_clean(at)
        assert at.get("vega_lite_chart"), page
    if prompt == "markup":  # token text reaches the page only as chart data or escaped HTML
        at.switch_page(ATTENTION).run()
        html = " ".join(h.value for h in at.html)
        assert "<img" not in html and "&lt;" in html  # the tiny tokenizer splits "<" from "img"
        assert all("<img" not in m.value and ":red[x]" not in m.value for m in at.markdown)


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    """A Llama-style model folder (BOS token, RMSNorm, grouped-query attention)."""
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny_llama"))


def test_pages_render_for_a_llama_style_model(tiny_llama_dir):
    at = open_page(model=str(tiny_llama_dir), prompt="The capital of France is")
    assert_clean(at)
    for page in (ATTENTION, LENS):
        at.switch_page(page).run()
        assert_clean(at)
    assert "llama" in " ".join(m.value for m in at.sidebar.markdown)
    assert at.selectbox(key="pos").options[0] == "0 <s>"  # the BOS token is position 0


def test_long_prompt_offers_a_window_of_positions():
    at = open_page(ATTENTION, prompt=PROMPTS["long"])
    assert_clean(at)
    window = at.slider(key="attn_window")
    first, last = window.value
    assert last - first + 1 == 40 and last == len(at.selectbox(key="attn_query").options) - 1
    before = chart_specs(at)[0]
    window.set_value((0, 9)).run()
    assert_clean(at)
    assert "positions 0-9" in chart_titles(at)[0] and chart_specs(at)[0] != before
    assert at.query_params["attn_window"] == "[0, 9]"  # in the URL: a link or a finding reopens this window


def test_layer_head_and_mean_change_the_attention_chart():
    at = open_page(ATTENTION)
    assert_clean(at)
    assert chart_titles(at)[0] == "Attention pattern L0H0"
    seen = [chart_specs(at)[0]]
    at.selectbox(key="layer").set_value(1).run()
    assert chart_titles(at)[0] == "Attention pattern L1H0"
    seen.append(chart_specs(at)[0])
    at.selectbox(key="head").set_value(3).run()
    assert chart_titles(at)[0] == "Attention pattern L1H3"
    seen.append(chart_specs(at)[0])
    at.checkbox(key="attn_mean").check().run()
    assert chart_titles(at)[0] == "Attention pattern L1 mean of heads"
    seen.append(chart_specs(at)[0])
    assert_clean(at)
    assert all(a != b for i, a in enumerate(seen) for b in seen[i + 1:])


def test_token_view_follows_the_chosen_query_token():
    at = open_page(ATTENTION)
    before = at.html[0].value
    at.selectbox(key="attn_query").set_value(1).run()
    assert_clean(at)
    assert at.html[0].value != before and at.html[0].value.count("n/a") == len(PROMPT_TOKENS_DEFAULT) - 2


PROMPT_TOKENS_DEFAULT = ["The", "␣capital", "␣of", "␣France", "␣is"]  # the default prompt's tokens


def test_attention_layer_and_head_round_trip_through_the_url():
    at = open_page(ATTENTION, layer="1", head="2")
    assert_clean(at)
    assert at.selectbox(key="layer").value == 1 and at.selectbox(key="head").value == 2
    assert chart_titles(at)[0] == "Attention pattern L1H2"
    at.selectbox(key="head").set_value(3).run()
    assert (at.query_params["layer"], at.query_params["head"]) == ("1", "3")


def test_out_of_range_layer_in_a_link_warns_and_falls_back():
    at = open_page(ATTENTION, layer="99")
    assert not at.exception
    assert any("layer=99" in w.value for w in at.warning)
    assert at.selectbox(key="layer").value == 0


def test_lens_position_round_trips_and_changes_the_charts():
    at = open_page(LENS, pos="2")
    assert_clean(at)
    assert at.selectbox(key="pos").value == 2
    before = chart_specs(at)
    at.selectbox(key="pos").set_value(4).run()
    assert_clean(at)
    assert at.query_params["pos"] == "4"
    after = chart_specs(at)
    assert after[1] != before[1] and after[2] != before[2]  # trajectory and DLA follow the position
    at.selectbox(key="lens_metric").set_value("entropy").run()
    assert chart_specs(at)[0] != after[0]


def test_lens_target_box_and_component_box_drive_the_charts():
    at = open_page(LENS)
    before = chart_specs(at)
    at.text_input(key="lens_target").set_value("␣of").run()
    assert_clean(at)
    assert chart_specs(at)[1] != before[1]
    at.text_input(key="lens_target").set_value(" capital of").run()  # two tokens: a plain message, not a crash
    assert not at.exception
    assert any("not one" in e.value for e in at.error)
    component = at.selectbox(key="lens_component")
    other = next(option for option in component.options if option != component.value)
    effects_before = chart_specs(at)[3]
    component.set_value(other).run()
    assert chart_specs(at)[3] != effects_before


def test_overview_shows_predictions_and_four_linked_panels():
    at = open_page()
    assert_clean(at)
    table = at.main.dataframe[0].value
    assert list(table["rank"]) == list(range(1, 11)) and table["probability"].is_monotonic_decreasing
    titles = chart_titles(at)
    assert titles[0] == "Next-token prediction" and titles[1].startswith("Attention pattern L0 mean of heads")
    importance = [spec for spec, t in zip(chart_specs(at), titles, strict=True) if t.startswith("Token importance")]
    assert len(importance) == 1 and importance[0]["title"]["subtitle"][0].startswith("for log p(")  # the target
    links = {link.proto.page for link in at.main.get("page_link")}  # url names of the linked pages
    assert links == {"Attention", "Logit_Lens", "Attribution"}


def test_overview_layer_changes_its_panel_and_carries_to_the_attention_page():
    at = open_page()
    before = chart_specs(at)[1]
    at.selectbox(key="overview_layer").set_value(1).run()
    assert_clean(at)
    assert chart_specs(at)[1] != before and at.query_params["overview_layer"] == "1"
    at.switch_page(ATTENTION).run()
    assert at.selectbox(key="layer").value == 1


def test_pages_never_run_a_second_forward_pass_for_the_same_prompt():
    prompt = "Forward counting: the pages share one trace."
    with model_forwards() as calls:
        at = open_page(prompt=prompt)
        assert_clean(at)
        traced = [grad for grad in calls if not grad]
        assert len(traced) == 1  # the sidebar's trace; the gradient for token importance is the only other run
        n_overview = len(calls)
        at.selectbox(key="overview_layer").set_value(1).run()
        at.switch_page(ATTENTION).run()
        at.selectbox(key="head").set_value(2).run()
        at.checkbox(key="attn_mean").check().run()
        at.radio(key="attn_grid_metric").set_value("entropy").run()
        at.selectbox(key="attn_query").set_value(2).run()
        assert_clean(at)
        at.switch_page(LENS).run()
        at.selectbox(key="pos").set_value(3).run()
        at.selectbox(key="lens_metric").set_value("kl_to_final").run()
        at.text_input(key="lens_target").set_value("␣the").run()
        assert_clean(at)
        at.switch_page("app.py").run()
        assert_clean(at)
        assert len(calls) == n_overview


def test_a_chosen_lens_position_survives_other_pages_and_a_new_prompt_starts_at_its_last_position():
    at = open_page(LENS)
    at.selectbox(key="pos").set_value(1).run()
    at.switch_page("pages/2_Attribution.py").run()
    at.switch_page(LENS).run()
    assert_clean(at)
    assert at.selectbox(key="pos").value == 1  # kept while the prompt is the same
    at.switch_page("app.py").run()
    at.sidebar.text_area(key="prompt").set_value("When Mary and John went to the store, John gave a drink to").run()
    at.switch_page(LENS).run()
    assert_clean(at)
    assert at.selectbox(key="pos").value == len(at.selectbox(key="pos").options) - 1
