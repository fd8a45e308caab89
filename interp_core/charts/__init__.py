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
