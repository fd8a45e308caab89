"""The Attribution page under Streamlit's AppTest: every method and target mode renders, a continuation gives a
heatmap, the faithfulness panel shows completeness and deletion curves, and bad input shows a plain message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from interp_core.attribution import (
    AOPC_DEFINITION,
    DEFAULTS,
    METHODS,
    AttributionSettings,
    attribute,
    compare_methods,
)
from interp_core.loading import load_model
from interp_core.settings import limits
from interp_core.streamlit_glue import link_value
from interp_core.tokens import readable_token, token_texts
from interp_core.trace import run_trace

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGE = "pages/2_Attribution.py"
TIMEOUT = 120  # seconds for one script run (the first one loads the model)
PROMPT = "The capital of France is"


@pytest.fixture(autouse=True)
def tiny_default_model(saved_tiny_gpt2, monkeypatch):
    """The tiny GPT-2 folder is the default model; hosted mode off."""
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    return saved_tiny_gpt2


def open_page(query: dict[str, str] | None = None, **state) -> AppTest:
    """The Attribution page (opened through the app, as a user would), with widget values preset by key."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    at.run()
    for key, value in state.items():
        at.session_state[key] = value
    return at.switch_page(PAGE).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at: AppTest) -> list:
    return list(at.get("arrow_vega_lite_chart")) + list(at.get("vega_lite_chart"))


def html_bodies(at: AppTest) -> str:
    return "\n".join(h.proto.body for h in at.get("html"))


def metric(at: AppTest, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def test_default_view_shows_coloured_prompt_chart_table_completeness_and_deletion_curve():
    at = open_page()
    assert_clean(at)
    assert at.selectbox(key="attr_method").value == "integrated_gradients"
    table = at.dataframe[0].value
    assert list(table["token"]) == ["The", "␣capital", "␣of", "␣France", "␣is"]
    assert "␣France" in html_bodies(at)  # the coloured-token text
    assert len(charts(at)) == 2  # the bar chart and the deletion curves
    assert float(metric(at, "relative residual").rstrip(" %")) < 1.0  # 64 Gauss-Legendre steps: completeness holds
    assert not at.warning
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("Download CSV") == 2  # the table and the deletion curves


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target_mode", ["top1", "token", "contrast"])
def test_every_method_and_target_mode_renders(method, target_mode):
    at = open_page(attr_method=method, attr_target_mode=target_mode, attr_token_a=" capital", attr_token_b=" of",
                   attr_steps=8)
    assert_clean(at)
    frame = at.dataframe[0].value
    assert len(frame) == 5 and set(frame["method"]) == {method}
    expected = {"top1": "(top-1)", "token": "log p(␣capital)", "contrast": "logit(␣capital) − logit(␣of)"}
    assert expected[target_mode] in frame["target"].iloc[0]
    assert len(charts(at)) == 2
    has_completeness = any(m.label.startswith("relative residual") for m in at.metric)
    assert has_completeness == (method == "integrated_gradients")
    assert at.radio(key="attr_aggregation").disabled == (method == "occlusion")


def test_l2_aggregation_gives_unsigned_scores():
    at = open_page(attr_method="input_x_gradient", attr_aggregation="l2")
    assert_clean(at)
    assert (at.dataframe[0].value["score"] >= 0).all()
    assert "darker blue" in html_bodies(at)


@pytest.mark.parametrize("method", METHODS)
def test_continuation_mode_shows_an_output_by_input_heatmap(method):
    at = open_page(attr_mode="continuation", attr_method=method, attr_n_tokens=3, attr_steps=8)
    assert_clean(at)
    frame = at.dataframe[0].value
    assert sorted(set(frame["step"])) == [0, 1, 2]
    assert len(frame) == 5 + 6 + 7  # each step sees the prompt and the continuation so far
    assert len(charts(at)) == 1


def test_typed_continuation_is_attributed_as_typed():
    at = open_page(attr_mode="continuation", attr_method="saliency", attr_continuation=" capital of")
    assert_clean(at)
    assert list(dict.fromkeys(at.dataframe[0].value["output"])) == ["␣capital", "␣of"]


def test_compare_all_methods_lists_each_methods_aopc():
    at = open_page(attr_compare=True, attr_steps=8)
    assert_clean(at)
    table = at.dataframe[-1].value
    assert len(table) == len(METHODS) and {"aopc", "random_aopc", "aopc_minus_random"} <= set(table.columns)


def test_compare_runs_integrated_gradients_with_the_chosen_steps_and_quadrature_whatever_the_method(saved_tiny_gpt2):
    """The comparison ran IG with 64 Gauss-Legendre steps unless IG was the page's method; now the steps and
    quadrature widgets show whenever the comparison is on, and its IG row says what it ran with."""
    at = open_page(attr_method="saliency", attr_compare=True, attr_steps=6, attr_quadrature="riemann_trapezoid")
    assert_clean(at)
    assert at.number_input(key="attr_steps").value == 6  # shown although the method is saliency
    table = at.dataframe[-1].value
    ig = table[table["method_name"] == "Integrated gradients"].iloc[0]
    assert (ig["n_steps"], ig["quadrature"]) == (6, "riemann_trapezoid")
    bundle = load_model(str(saved_tiny_gpt2))
    expected = compare_methods(bundle, PROMPT, None, AttributionSettings("saliency", n_steps=6,
                                                                         quadrature="riemann_trapezoid"))
    assert list(table["aopc"]) == pytest.approx(list(expected.to_frame()["aopc"]), abs=1e-6)


def test_page_defaults_are_the_librarys(saved_tiny_gpt2):
    """One source: the widgets start from AttributionSettings(), and the default view is exactly what the library
    computes with its own defaults (the page used the neutral-token baseline, integrated_gradients the zero one)."""
    at = open_page()
    assert_clean(at)
    assert at.selectbox(key="attr_method").value == DEFAULTS.method
    assert at.radio(key="attr_aggregation").value == DEFAULTS.aggregation
    assert at.selectbox(key="attr_baseline").value == DEFAULTS.baseline.kind
    assert at.number_input(key="attr_steps").value == DEFAULTS.n_steps
    assert at.radio(key="attr_quadrature").value == DEFAULTS.quadrature
    library = attribute(load_model(str(saved_tiny_gpt2)), PROMPT)
    torch.testing.assert_close(torch.tensor(list(at.dataframe[0].value["score"])), library.scores)


def test_aopc_tooltip_names_its_published_definition():
    at = open_page()
    assert_clean(at)
    aopc = next(m for m in at.metric if m.label.startswith("AOPC, Integrated"))
    assert aopc.proto.help == AOPC_DEFINITION
    assert "Samek et al. 2017" in aopc.proto.help and "k = 0..n" in aopc.proto.help


def test_unconverged_integral_shows_a_completeness_warning():
    at = open_page(attr_steps=2, attr_quadrature="riemann_trapezoid")
    assert_clean(at)
    assert any("completeness residual" in w.value for w in at.warning)


# -- bad input: a message, not a crash ----------------------------------------------------------------------


def assert_message(at: AppTest, *words: str) -> None:
    assert not at.exception, [e.message for e in at.exception]
    text = " | ".join(e.value for e in at.error).replace("\\", "")  # as rendered: Markdown escapes removed
    assert at.error, "expected an error message"
    for word in words:
        assert word in text, text


def test_target_text_of_several_tokens_shows_a_message():
    assert_message(open_page(attr_target_mode="token", attr_token_a=" capital of France"), "not one")


def test_contrast_of_a_token_with_itself_shows_a_message():
    assert_message(open_page(attr_target_mode="contrast", attr_token_a=" of", attr_token_b=" of"), "same token")


def test_switching_to_the_contrast_suggests_the_models_top_two_and_keeps_a_typed_token(saved_tiny_gpt2):
    bundle = load_model(str(saved_tiny_gpt2))
    first, second = token_texts(bundle, run_trace(bundle, PROMPT).last_logits.topk(2).indices.tolist())
    at = open_page(attr_steps=8)
    at.radio(key="attr_target_mode").set_value("contrast").run()
    assert_clean(at)
    a, b = readable_token(first), readable_token(second)
    assert (at.text_input(key="attr_token_a").value, at.text_input(key="attr_token_b").value) == (a, b)
    assert f"logit({a}) − logit({b})" in at.dataframe[0].value["target"].iloc[0]

    at.text_input(key="attr_token_a").set_value(" of")
    at.text_input(key="attr_token_b").set_value("").run()
    at.radio(key="attr_target_mode").set_value("top1").run()
    at.radio(key="attr_target_mode").set_value("contrast").run()
    assert at.text_input(key="attr_token_a").value == " of" and at.text_input(key="attr_token_b").value == ""
    assert any("token B" in i.value for i in at.info)  # what the user typed is kept; B is asked for


def test_missing_target_token_asks_for_it():
    at = open_page(attr_target_mode="token", attr_token_a="")
    assert not at.exception and not at.error and at.info


def test_empty_prompt_shows_a_message():
    at = open_page()
    at.sidebar.text_area(key="prompt").set_value("   ").run()
    assert_message(at, "empty")


@pytest.mark.parametrize("steps", [0, limits().max_ig_steps + 1])
def test_steps_out_of_range_show_a_message_naming_the_cap(steps):
    assert_message(open_page(attr_steps=steps), "max_ig_steps", str(limits().max_ig_steps))


@pytest.mark.parametrize("n_tokens", [0, limits().max_generated_tokens + 1])
def test_continuation_length_out_of_range_shows_a_message(n_tokens):
    assert_message(open_page(attr_mode="continuation", attr_n_tokens=n_tokens), "max_generated_tokens")


def test_baseline_text_of_another_length_shows_a_message():
    assert_message(open_page(attr_baseline="text", attr_baseline_text="Paris"), "same number of tokens")


def test_bad_method_in_the_link_warns_and_falls_back():
    at = open_page(query={"method": "magic", "steps": "99999"})
    assert not at.exception and not at.error
    warnings = " ".join(w.value for w in at.warning)
    assert "method=magic" in warnings and "steps=99999" in warnings
    assert at.selectbox(key="attr_method").value == "integrated_gradients"


def test_link_warnings_quote_the_links_values_with_the_glues_link_value():
    """A backtick would close the warning's code span and a long value would flood it: both as link_value quotes."""
    method, steps = "ma`gic **x**" + "y" * 100, "9`9"
    at = open_page(query={"method": method, "steps": steps})
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning]
    assert any(f"`method={link_value(method)}`" in w for w in warnings), warnings
    assert any(f"`steps={link_value(steps)}`" in w for w in warnings), warnings
    assert not any(method in w or steps in w for w in warnings)


def test_method_and_steps_are_restored_from_the_link():
    at = open_page(query={"method": "integrated_gradients", "steps": "12"})
    assert_clean(at)
    assert at.number_input(key="attr_steps").value == 12
    assert at.query_params["steps"] == ["12"] or at.query_params["steps"] == "12"


@pytest.mark.parametrize("prompt", ["<img src=x onerror=alert(1)>", ":red[x] **b** $x$"])
def test_token_text_is_shown_as_text(prompt):
    at = open_page()
    at.sidebar.text_area(key="prompt").set_value(prompt).run()
    assert_clean(at)
    bodies = html_bodies(at)
    assert "<img" not in bodies  # escaped in every HTML block
    if prompt.startswith("<img"):
        assert "&lt;</span>" in bodies  # the "<" token is shown, as text
    for element in list(at.markdown) + list(at.caption):  # nothing Markdown-rendered quotes token text
        assert "<img" not in element.value and ":red[" not in element.value and "**b**" not in element.value
    assert "".join(at.dataframe[0].value["token"]).replace("␣", " ") == prompt


def test_token_text_in_an_error_message_is_escaped():
    at = open_page(attr_target_mode="token", attr_token_a=" **b** :red[x]")
    assert_message(at, "tokens")
    assert "**b**" not in at.error[0].value and ":red[" not in at.error[0].value
    assert r"\*\*b\*\*" in at.error[0].value
