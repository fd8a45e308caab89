"""Prompt tokens as coloured text (like CircuitsVis' colored_tokens), built as one escaped HTML string.

    >>> html = coloured_tokens_html(["The", "␣cat"], [0.2, 0.8], diverging=False)
    >>> st.html(html)          # in a page; st.html does no Markdown processing, so "$x$" or ":red[x]" stay text

Every token string is passed through html.escape before it goes into the markup (text and tooltip), so a
prompt such as `<img src=x onerror=alert(1)>` shows as text.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence

import torch

POSITIVE_RGB = (33, 102, 172)  # blue: attention weight, or a positive signed score
NEGATIVE_RGB = (178, 24, 43)  # red: a negative signed score


def _as_floats(weights) -> list[float]:
    if torch.is_tensor(weights):
        return [float(w) for w in weights.detach().flatten().tolist()]
    return [float(w) if w is not None else math.nan for w in weights]


def _background(weight: float, vmax: float, diverging: bool) -> tuple[str, bool]:
    """CSS background colour for `weight`, and whether the text on it should be white."""
    if math.isnan(weight):
        return "transparent", False
    alpha = min(abs(weight) / vmax, 1.0) if vmax > 0 else 0.0
    r, g, b = NEGATIVE_RGB if (diverging and weight < 0) else POSITIVE_RGB
    return f"rgba({r}, {g}, {b}, {alpha:.3f})", alpha > 0.55


def coloured_tokens_html(
    tokens: Sequence[str],
    weights,
    diverging: bool,
    *,
    vmax: float | None = None,
    fmt: str = ".3f",
    legend: str | None = None,
) -> str:
    """HTML of the tokens, each shaded by its weight. Returns a self-contained <div> (inline styles only).

    tokens:    [pos] readable token strings (shown as they are: ␣ for a space, ↵ for a newline, which also
               breaks the line after it).
    weights:   [pos] floats (list or tensor); NaN or None = not applicable (e.g. masked by causality), shown
               greyed out with no colour.
    diverging: False: shade from white (0) to blue (vmax), for non-negative values such as attention weights.
               True: blue for positive, red for negative, white at 0, scaled by the largest |weight|.
    vmax:      the weight shown at full colour (default: the largest |weight|).
    legend:    optional caption shown under the tokens (escaped too).
    Hovering a token shows "index token: weight".
    """
    values = _as_floats(weights)
    if len(values) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} weights")
    finite = [abs(v) for v in values if not math.isnan(v)]
    top = vmax if vmax is not None else (max(finite) if finite else 0.0)
    spans = []
    for i, (token, weight) in enumerate(zip(tokens, values, strict=True)):
        background, white = _background(weight, top, diverging)
        shown = "n/a" if math.isnan(weight) else format(weight, fmt)
        style = (
            f"background:{background};color:{'#ffffff' if white else '#1f2430'};"
            "padding:1px 3px;margin:1px;border-radius:3px;border:1px solid #d9dde5;display:inline-block;"
            "white-space:pre;"
        )
        if math.isnan(weight):
            style += "opacity:0.45;border-style:dashed;"
        title = html.escape(f"{i} {token}: {shown}", quote=True)
        spans.append(f'<span title="{title}" style="{style}">{html.escape(token)}</span>')
        if "↵" in token:
            spans.append("<br/>")
    caption = ""
    if legend:
        caption = f'<div style="color:#5b6170;font-size:0.8em;margin-top:6px;">{html.escape(legend)}</div>'
    body = "".join(spans)
    return (
        '<div style="font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:0.95em;line-height:2.1;">'
        f"{body}{caption}</div>"
    )


_INLINE_ACTIVE = re.compile(r"([\\`*_{}\[\]()<>$~|:&])")  # emphasis, code, links, HTML, LaTeX, :color[...]
_LINE_START_ACTIVE = re.compile(r"(^|\n)(\s*\d*)([#+\-=.!)])")  # headings, lists ("- ", "1. ", "2) "), rules


def markdown_escape(text: str) -> str:
    """`text` with what a Markdown renderer (st.error, st.caption, ...) would act on backslash-escaped - inline
    markup, HTML, LaTeX, Streamlit's `:color[...]` directives, and block markers at the start of a line - so
    token text, prompts and link values show as typed; plain ids such as "org/model-v2.1" stay unescaped."""
    text = _INLINE_ACTIVE.sub(r"\\\1", text)
    return _LINE_START_ACTIVE.sub(r"\1\2\\\3", text)
