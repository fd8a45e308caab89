"""Text is text: prompts that look like HTML, Markdown, LaTeX or Streamlit's own `:red[...]` syntax are shown
literally. Every HTML-building helper escapes token text; the pages never hand token text to a Markdown renderer
unescaped; links quoted in warnings cannot break out of their code span."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interp_core.charts.tokens import coloured_tokens_html, markdown_escape
from interp_core.streamlit_glue import link_value

INJECTIONS = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "**bold**", "$x$", ":red[x]"]
ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TIMEOUT = 180


def test_coloured_tokens_escape_token_text_in_text_tooltips_and_legend():
    out = coloured_tokens_html(INJECTIONS, [0.1, -0.2, 0.3, float("nan"), 1.0], diverging=True,
                               legend="<img src=x onerror=alert(1)> legend")
    assert "&lt;img" in out and "&lt;script&gt;" in out
    assert "<img" not in out and "<script" not in out
    assert 'title="1 &lt;script&gt;alert(1)&lt;/script&gt;: -0.200"' in out  # tooltip escaped as an attribute
    for plain in ("**bold**", "$x$", ":red[x]"):  # st.html does no Markdown: these stay as they are
        assert f">{plain}</span>" in out


def test_a_token_cannot_close_the_tooltip_attribute():
    out = coloured_tokens_html(['" onmouseover="alert(1)', "'x'"], [0.5, 0.5], diverging=False)
    assert 'onmouseover="alert' not in out
    assert "&quot; onmouseover=&quot;alert(1)" in out


@pytest.mark.parametrize("text", INJECTIONS)
def test_markdown_escape_leaves_no_markdown_or_directive_syntax(text):
    escaped = markdown_escape(text)
    for ch in "*$[]<>:`":
        assert ch not in escaped.replace("\\" + ch, "")  # every special character is backslash-escaped


def test_link_values_cannot_leave_their_code_span_and_are_shortened():
    assert "`" not in link_value("1` **bold** `")
    assert len(link_value("x" * 5000)) == 80


@pytest.fixture
def tiny_app(saved_tiny_gpt2, monkeypatch):
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    monkeypatch.delenv("INTERP_HOSTED", raising=False)


def rendered(at: AppTest) -> tuple[str, str, str]:
    """(HTML bodies, Markdown-rendered texts, chart specs) of the page as it was drawn."""
    bodies = " ".join(h.proto.body for h in at.get("html"))
    markdown = " ".join(str(e.value) for kind in ("markdown", "caption", "error", "warning", "info", "title")
                        for e in getattr(at, kind))
    specs = " ".join(c.proto.spec for c in at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart"))
    return bodies, markdown, specs


@pytest.mark.parametrize("page", ["app.py", "pages/1_Attention.py", "pages/2_Attribution.py"])
def test_injection_prompt_is_shown_literally_on_the_pages_that_draw_token_html(tiny_app, page):
    prompt = " ".join(INJECTIONS)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["prompt"] = prompt
    if page != "app.py":
        at.session_state["attr_deletion"] = False
    at.run()
    if page != "app.py":
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    bodies, markdown, specs = rendered(at)
    assert bodies, "the page drew no token HTML"
    assert "&lt;img" in bodies or "&lt;" in bodies  # the tokenizer may split '<img' but '<' is escaped
    assert "<img" not in bodies and "<script" not in bodies
    for text in ("<img", "<script", "**bold**", ":red[x]", "$x$"):
        assert text not in markdown  # token text never reaches a Markdown renderer unescaped
    assert specs  # charts carry the tokens as data (Vega draws text, and its tooltips escape)


def test_markdown_escape_escapes_what_would_render():
    out = markdown_escape("**b** :red[x] $x$ <img src=x> `code` a_b")
    for raw in ("**b**", "[x]", "$x$", "`code`", "a_b"):
        assert raw not in out
    assert "\\<img src=x\\>" in out  # Markdown shows an escaped < as text
    assert markdown_escape("no-such-org/model.v2") == "no-such-org/model.v2"  # plain ids stay readable
    for line_start in ("- a list", "1. a list", "# a heading"):
        assert markdown_escape(line_start) != line_start  # block markers at the start of a line are escaped


def test_a_model_reference_from_the_link_is_quoted_as_text_in_the_error(tiny_app):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["model"] = "/no/**bold**/:red[x]/<img src=x onerror=alert(1)>"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    message = " ".join(str(e.value) for e in at.error)
    assert "There is no folder" in message
    for raw in ("**bold**", ":red[x]"):
        assert raw not in message
    assert "\\<img" in message
