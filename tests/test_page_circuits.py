"""The circuit pages (Circuits, Patching, Ablation) under Streamlit's AppTest with a tiny GPT-2: detectors, every
preset, a user pair, the mismatched-length message, links with a head or an old `?tab=`, and token text kept out
of Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interp_core.circuits import DEFAULT_LENGTH, max_repeat_length, run_repeated
from interp_core.loading import load_model
from interp_core.patching import PRESET_NAMES

ROOT = Path(__file__).resolve().parent.parent
APP, PAGE = str(ROOT / "app.py"), "pages/5_Circuits.py"
PATCHING, ABLATION = "pages/6_Patching.py", "pages/7_Ablation.py"
TIMEOUT = 120  # seconds for one script run (the first one loads the model)
OWN_PAIR = len(PRESET_NAMES)  # index of "Your own pair" in the pair box


@pytest.fixture(autouse=True)
def tiny_default_model(saved_tiny_gpt2, monkeypatch):
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    monkeypatch.delenv("INTERP_HOSTED", raising=False)


def open_page(query: dict[str, str] | None = None, page: str = PAGE) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    for name, value in (query or {}).items():
        at.query_params[name] = value
    return at.switch_page(page).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")]


def chart_titles(at: AppTest) -> str:
    return json.dumps([spec.get("title") for spec in charts(at)])


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def pair_box(at: AppTest):
    return at.selectbox(key="pair")


def use_own_pair(at: AppTest, clean: str, corrupt: str, answer: str, foil: str) -> AppTest:
    pair_box(at).set_value(OWN_PAIR).run()
    for key, value in (("pair_clean", clean), ("pair_corrupt", corrupt), ("pair_answer", answer),
                       ("pair_foil", foil)):
        at.text_input(key=key).set_value(value)
    return next(b for b in at.button if b.label == "Use this pair").click().run()


def test_each_page_draws_its_own_charts_and_only_those():
    at = open_page()
    assert_clean(at)
    titles = chart_titles(at)
    for expected in ("induction score of every head", "Loss on each token of the repeated sequences"):
        assert expected in titles, expected
    assert "Exact activation patching" not in titles
    assert "nats" in metric(at, "Loss, second copy")

    at.switch_page(PATCHING).run()
    assert_clean(at)
    titles = chart_titles(at)
    for expected in ("Exact activation patching", "Attribution patching", "Estimate vs exact"):
        assert expected in titles, expected
    assert "induction score of every head" not in titles
    clean, corrupt = metric(at, "Logit difference, clean prompt"), metric(at, "Logit difference, corrupted prompt")
    assert float(clean) != float(corrupt)

    at.switch_page(ABLATION).run()
    assert_clean(at)
    assert "Loss, second copy, ablated" in [m.label for m in at.metric]
    assert "Exact activation patching" not in chart_titles(at)
    assert "normalised logit difference" in json.dumps(charts(at))  # the pair's ablation bars


@pytest.mark.parametrize(("tab", "label"), [("ablation", "Loss, second copy, ablated"),
                                            ("patching", "Logit difference, clean prompt")])
def test_a_link_from_before_the_split_opens_the_page_its_tab_named(tab, label):
    at = open_page({"tab": tab, "rep_seed": "3"})
    assert_clean(at)
    assert label in [m.label for m in at.metric]
    assert "induction score of every head" not in chart_titles(at)
    assert "tab" not in at.query_params and at.query_params["rep_seed"] == "3"  # the link's other values stay


@pytest.mark.parametrize("index", range(len(PRESET_NAMES)))
def test_every_preset_runs_and_lists_its_tokens(index):
    at = open_page(page=PATCHING)
    pair_box(at).set_value(index).run()
    assert_clean(at)
    pair_table = at.dataframe[0].value  # the clean/corrupted token table
    assert {"clean", "corrupted", "differs"} <= set(pair_table.columns)
    assert pair_table["differs"].any()
    assert "Exact activation patching" in chart_titles(at)


def test_a_user_pair_of_equal_length_is_patched():
    at = open_page(page=PATCHING)
    at = use_own_pair(at, "The capital of Italy is", "The capital of France is", " Rome", " Paris")
    assert_clean(at)
    pair_table = at.dataframe[0].value
    assert "␣Italy" in list(pair_table["clean"]) and "␣France" in list(pair_table["corrupted"])
    assert "Exact activation patching" in chart_titles(at)


def test_a_user_pair_of_different_lengths_gets_a_plain_message_and_no_heatmaps():
    at = open_page(page=PATCHING)
    at = use_own_pair(at, "The capital of France is", "The capital of the big country is", " Paris", " Rome")
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "same number of tokens" in message and "tokens and the corrupted prompt is" in message
    assert "Exact activation patching" not in chart_titles(at)
    at.switch_page(ABLATION).run()  # the same pair is refused there, after the repeated tokens' results
    assert "same number of tokens" in " ".join(e.value for e in at.error)
    assert "Loss on each token of the repeated sequences" in chart_titles(at)
    at.switch_page(PAGE).run()
    assert "induction score of every head" in chart_titles(at)  # the detectors still work


def test_a_head_in_the_link_opens_that_heads_pattern_and_a_bad_one_warns():
    at = open_page({"layer": "1", "head": "2"})
    assert_clean(at)
    assert "Attention of L1H2 on the repeated random tokens" in chart_titles(at)
    at = open_page({"layer": "7", "head": "2"})
    assert not at.exception
    assert any("layer=7" in w.value for w in at.warning)


def test_a_fresh_session_shows_the_detectors_top_head_and_a_chosen_one_stays(saved_tiny_gpt2):
    bundle = load_model(str(saved_tiny_gpt2))
    run = run_repeated(bundle, length=min(DEFAULT_LENGTH, max_repeat_length(bundle)), seed=0)
    layer, head = run.scores.top_heads("induction", k=1)[0]
    at = open_page()
    assert_clean(at)
    assert (at.selectbox(key="layer").value, at.selectbox(key="head").value) == (layer, head)
    assert f"Attention of L{layer}H{head} on the repeated random tokens" in chart_titles(at)
    other = (layer + 1) % bundle.n_layers
    at.selectbox(key="layer").set_value(other).run()
    at.radio(key="circuits_detector").set_value("previous").run()
    assert at.selectbox(key="layer").value == other  # the user's choice is kept when the detector changes


def test_token_text_from_a_user_pair_never_reaches_markdown():
    hostile = "<img src=x onerror=alert(1)> :red[x] **b** $x$"
    at = open_page(page=PATCHING)
    at = use_own_pair(at, hostile + " Mary", hostile + " John", " Mary", " John")
    assert not at.exception
    markdown = " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.error])
    assert "onerror" not in markdown and ":red[" not in markdown
    at = use_own_pair(at, "The cat sat", "The dog sat", hostile, " John")  # the answer is quoted in the error
    assert not at.exception and at.error
    shown = " ".join(str(e.value) for e in at.error)
    assert ":red[" not in shown and "\\:red\\[x\\]" in shown


def test_the_detector_caption_gives_transformer_lens_scale_and_mean_ablation_says_it_leaves_out_position_0():
    """Issue 17: the detector scores are means over the qualifying query rows, TransformerLens' over all rows; and
    mean ablation leaves position 0 (the attention sink) out of each head's mean. The page says both."""
    at = open_page()
    assert_clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "TransformerLens' head_detector" in captions and "query rows" in captions and "x these" in captions
    at.switch_page(ABLATION).run()
    mean_option = next(option for option in at.radio(key="circuits_mode").options if option.startswith("mean"))
    assert "position 0" in mean_option and "left out" in mean_option
