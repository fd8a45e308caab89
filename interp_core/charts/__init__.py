"""Pure chart builders: functions of analysis results returning `alt.Chart` (or HTML strings for token text).

No Streamlit here. Token strings are data: charts put them in fields, HTML builders escape them.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Mapping
from weakref import WeakKeyDictionary

_specs: WeakKeyDictionary = WeakKeyDictionary()  # result -> {(builder, arguments): Vega-Lite spec}
_specs_lock = threading.Lock()


def chart_spec(build: Callable, result, *args, **kwargs) -> dict:
    """The Vega-Lite spec of build(result, *args, **kwargs), built once per result and arguments (while the result
    lives), in the form Streamlit sends to the browser: every dataset as Arrow IPC bytes (arrow_datasets), and
    not validated against the Vega-Lite schema (the tests validate every builder's charts). Validating and
    converting the same chart again on every rerun of a page was most of a warm page switch. Serialised with
    Altair's "none" theme, as st.altair_chart does, so it looks the same."""
    import altair as alt

    key = (build.__module__, build.__qualname__, args, tuple(sorted(kwargs.items())))
    try:
        hash(key), hash(result)
        weakref.ref(result)
    except TypeError:  # an unhashable argument or result (a DataFrame), or one that takes no weak reference: build
        key = None  # every time
    with _specs_lock:
        known = _specs.get(result, {}) if key is not None else {}
        if key in known:
            return known[key]
        with alt.theme.enable("none"):  # a global setting: under the lock
            spec = arrow_datasets(build(result, *args, **kwargs).to_dict(validate=False))
        if key is not None:
            _specs.setdefault(result, {})[key] = spec
    return spec


def arrow_datasets(spec: dict) -> dict:
    """`spec` with each of its top-level datasets (lists of JSON records) as Arrow IPC stream bytes, which
    st.vega_lite_chart passes through as they are (a list of records it turns into a DataFrame and then Arrow on
    every call). A dataset Arrow cannot type (mixed kinds in one field) stays records."""
    import pyarrow as pa

    converted = {}
    for name, rows in spec.get("datasets", {}).items():
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            converted[name] = rows
            continue
        sink = pa.BufferOutputStream()
        with pa.RecordBatchStreamWriter(sink, table.schema) as writer:
            writer.write_table(table)
        converted[name] = sink.getvalue().to_pybytes()
    return {**spec, "datasets": converted} if converted else spec


def inline_datasets(spec: dict) -> dict:
    """`spec` with each of its top-level datasets as a list of JSON records: the inverse of arrow_datasets, for
    specs that leave the app (findings, reports). Values become plain JSON (numpy and Arrow scalars unwrapped,
    NaN and infinities None, dates ISO strings)."""
    import pyarrow as pa

    if "datasets" not in spec:
        return spec
    inlined = {}
    for name, rows in spec["datasets"].items():
        if isinstance(rows, bytes | bytearray | memoryview):
            rows = pa.ipc.open_stream(rows).read_all().to_pylist()
        inlined[name] = _jsonable(rows)
    return {**spec, "datasets": inlined}


def _jsonable(value):
    """`value` as plain JSON values (raises TypeError for what has no JSON form)."""
    import datetime as dt

    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str | int):  # subclasses (numpy's str_, an IntEnum) as the plain type
        return str(value) if isinstance(value, str) else int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if hasattr(value, "as_py"):  # a pyarrow scalar
        return _jsonable(value.as_py())
    if hasattr(value, "item"):  # a numpy scalar
        return _jsonable(value.item())
    raise TypeError(f"{type(value).__name__} has no JSON form")


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
