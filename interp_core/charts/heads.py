"""The clickable layer x head grid that both head views draw (the Attention page's head summaries, the Circuits
page's detectors): one cell per head, coloured and labelled by one score, the chosen head outlined."""

from __future__ import annotations

import altair as alt
import pandas as pd

HEAD_CELL = 44  # pixels per layer x head cell (sizes are alt.Step: a fixed width in pixels gets shrunk by the
# Streamlit 1.67 frontend for charts on discrete axes, measured in Chromium)


def clickable_head_grid(frame: pd.DataFrame, field: str, legend: str, scale: alt.Scale, tooltip: list,
                        white_text_when: str, pick: str, title: alt.TitleParams) -> alt.LayerChart:
    """Cells of `frame` (columns layer, head, `field` and a bool `selected`) coloured by `field` on `scale`
    (legend title `legend`) and labelled with its value, in white where the Vega expression `white_text_when`
    holds (the dark end of the scale). Clicking a cell selects it through the point selection named `pick`
    (fields layer, head); the selected head is outlined."""
    selection = alt.selection_point(name=pick, fields=["layer", "head"], on="click", clear=False)
    base = alt.Chart(frame).encode(
        x=alt.X("head:O", title="head", axis=alt.Axis(orient="top", labelAngle=0)),
        y=alt.Y("layer:O", title="layer"),
    )
    rects = base.mark_rect(cursor="pointer").encode(
        color=alt.Color(f"{field}:Q", title=legend, scale=scale),
        stroke=alt.condition("datum.selected", alt.value("#e4572e"), alt.value("#ffffff")),
        strokeWidth=alt.condition("datum.selected", alt.value(3), alt.value(0.5)),
        tooltip=tooltip,
    ).add_params(selection)
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text(f"{field}:Q", format=".2f"),
        color=alt.condition(white_text_when, alt.value("#ffffff"), alt.value("#1f2430")),
    )
    return (rects + text).properties(width=alt.Step(HEAD_CELL), height=alt.Step(HEAD_CELL), title=title)
