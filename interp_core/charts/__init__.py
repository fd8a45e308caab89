"""Pure chart builders: functions of analysis results returning `alt.Chart` (or HTML strings for token text).

No Streamlit here. Token strings are data: charts put them in fields, HTML builders escape them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from weakref import WeakKeyDictionary

_specs: WeakKeyDictionary = WeakKeyDictionary()  # result -> {(builder, arguments): Vega-Lite spec}
_specs_lock = threading.Lock()


def chart_spec(build: Callable, result, *args, **kwargs) -> dict:
    """The Vega-Lite spec of build(result, *args, **kwargs), built once per result and arguments (while the result
    lives) and not validated against the Vega-Lite schema: the tests validate every builder's charts, and
    validating the same chart again on every rerun of a page was about a quarter of a warm page switch.
    Serialised with Altair's "none" theme, as st.altair_chart does, so it looks the same."""
    import altair as alt

    key = (build.__module__, build.__qualname__, args, tuple(sorted(kwargs.items())))
    try:
        hash(key)
        weakref.ref(result)
    except TypeError:  # an unhashable argument, or a result that takes no weak reference: build every time
        key = None
    with _specs_lock:
        known = _specs.get(result, {}) if key is not None else {}
        if key in known:
            return known[key]
        with alt.theme.enable("none"):  # a global setting: under the lock
            spec = build(result, *args, **kwargs).to_dict(validate=False)
        if key is not None:
            _specs.setdefault(result, {})[key] = spec
    return spec


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
