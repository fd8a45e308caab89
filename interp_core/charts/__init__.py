"""Pure chart builders: functions of analysis results returning `alt.Chart` (or HTML strings for token text).

No Streamlit here. Token strings are data: charts put them in fields, HTML builders escape them.
"""

from __future__ import annotations

from collections.abc import Mapping


def selected_point(event: Mapping | None, param: str) -> dict | None:
    """The first point picked in a chart selection event, e.g. {"layer": 1, "head": 2}, or None.

    `event` is what `st.altair_chart(..., on_select="rerun")` returns (or stores under its key):
    {"selection": {param: [ {field: value, ...}, ... ]}}; an empty selection is {} or [].
    """
    if not event:
        return None
    selection = (event.get("selection") or {}).get(param)
    if isinstance(selection, list | tuple) and selection and isinstance(selection[0], Mapping):
        return dict(selection[0])
    return None


def natural_size(chart):
    """`chart` with autosize "pad": its width and height are those of the data area, axes and legends are added
    around it. (Streamlit defaults to "fit", which squeezes axes, labels and legend INTO the given size, so a small
    heatmap with long token labels collapses.)"""
    import altair as alt

    return chart.properties(autosize=alt.AutoSizeParams(type="pad", contains="padding"))


def token_axis(step: float | None = None, **options):
    """An axis for token labels that shows EVERY label (Vega hides "overlapping" ones by default, which drops
    every other token even when they fit), unless the labels are packed closer than 11 pixels (`step`), where
    showing all of them would print them on top of each other."""
    import altair as alt

    return alt.Axis(labelOverlap=step is not None and step < 11, **options)
