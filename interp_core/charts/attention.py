"""Attention charts: one pattern as a query x key heatmap, and every head's score on a layer x head grid.

    >>> st.altair_chart(attention_heatmap(attention_pattern(trace, 1, 3)))
    >>> event = st.altair_chart(head_grid(head_summaries(bundle, trace), "prev_token"), on_select="rerun",
    ...                         key="head_grid")      # selected_point(event, HEAD_PICK) -> {"layer": .., "head": ..}
"""

from __future__ import annotations

import altair as alt

from interp_core.attention import HEAD_METRICS, AttentionPattern, HeadSummary
from interp_core.charts import natural_size, token_axis
from interp_core.charts.heads import clickable_head_grid
from interp_core.tokens import token_labels

HEAD_PICK = "head_pick"  # name of the point selection on the head grid (fields: layer, head)
MAX_CELL, MIN_CELL = 36, 12  # pixels per heatmap cell: big enough to hover, small enough for ~40 tokens
MAX_SIDE = 720  # pixels; the heatmap side never grows beyond this (longer prompts are shown in windows)


_BELOW = alt.Legend(orient="bottom", direction="horizontal")


def _cell_size(n: int, max_side: int = MAX_SIDE) -> int:
    return int(max(MIN_CELL, min(MAX_CELL, max_side // max(n, 1))))


def attention_heatmap(
    pattern: AttentionPattern,
    start: int = 0,
    stop: int | None = None,
    *,
    max_side: int = MAX_SIDE,
    title: str | None = None,
    legend_below: bool = False,
) -> alt.Chart:
    """Heatmap of `pattern` on positions [start, stop): queries down, keys across, in prompt order.

    Colour: attention weight from 0 (white) to the largest weight shown (dark blue). The masked upper triangle
    (key after query) has no cells and stays blank. Tooltip: query, key, weight. `legend_below` puts the colour
    legend under the cells (for a narrow column: the chart is then only the labels and the cells wide).
    """
    frame = pattern.to_frame(start, stop)
    stop = pattern.n_pos if stop is None else stop
    order = token_labels(pattern.tokens)[start:stop]
    cell = _cell_size(len(order), max_side)
    window = "" if (start, stop) == (0, pattern.n_pos) else f", positions {start}-{stop - 1}"
    return natural_size(
        alt.Chart(frame, title=title or f"Attention pattern {pattern.title}{window}")
        .mark_rect()
        .encode(
            x=alt.X("key_label:N", sort=order, title="key (attended-to token)",
                    axis=token_axis(labelAngle=-60, labelLimit=120, orient="top")),
            y=alt.Y("query_label:N", sort=order, title="query (attending token)", axis=token_axis(labelLimit=120)),
            color=alt.Color("weight:Q", title="weight", scale=alt.Scale(scheme="blues", domainMin=0),
                            legend=_BELOW if legend_below else alt.Undefined),
            tooltip=[
                alt.Tooltip("query_label:N", title="query"),
                alt.Tooltip("key_label:N", title="key"),
                alt.Tooltip("weight:Q", title="weight", format=".3f"),
            ],
        )
        .properties(width=cell * len(order), height=cell * len(order))
    )


def head_grid(summary: HeadSummary, metric: str, selected: tuple[int, int] | None = None) -> alt.Chart:
    """Layer x head grid coloured by `metric` (a HEAD_METRICS key), with every score in the tooltip.

    Clicking a cell selects it through the point selection `HEAD_PICK` (fields layer, head). `selected`
    (layer, head) is outlined.
    """
    if metric not in HEAD_METRICS:
        raise ValueError(f"Unknown head metric {metric!r}; known: {', '.join(HEAD_METRICS)}")
    frame = summary.to_frame()
    frame["selected"] = [(row.layer, row.head) == selected for row in frame.itertuples()]
    title, meaning = HEAD_METRICS[metric]
    scale = (alt.Scale(scheme="purples", domainMin=0) if metric == "entropy"
             else alt.Scale(scheme="blues", domain=[0, 1]))
    top = 1.0 if metric != "entropy" else float(frame[metric].max(skipna=True) or 0.0)
    flip = 0.6 * top if top == top else 0.0  # white text on the darker 40 % of the scale (NaN-safe)
    tooltip = [alt.Tooltip("head_label:N", title="head")] + [
        alt.Tooltip(f"{name}:Q", title=HEAD_METRICS[name][0], format=".3f") for name in HEAD_METRICS]
    return natural_size(clickable_head_grid(
        frame, metric, title, scale, tooltip, f"datum.{metric} > {flip}", HEAD_PICK,
        alt.TitleParams(f"{title} of every head", subtitle=[f"{meaning}; click a cell to open that head"])))

