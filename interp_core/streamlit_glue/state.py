"""The URL and session state: query parameters of a shared link (read with a warning on a bad value, written
back on every run), the one idiom for keeping a widget's value across reruns and page switches, and the charts
drawn in this run (which a finding may keep)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import streamlit as st


def link_value(raw: object, limit: int = 80) -> str:
    """A value from the URL made safe to quote inside a Markdown code span: backticks (which would end the
    span and let the rest render as Markdown) become quotes, and a long value is cut with an ellipsis."""
    text = str(raw).replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    """Integer query parameter `name` in [lo, hi]; a missing one gives `default` silently, a malformed or
    out-of-range one gives `default` and a short warning naming the parameter."""
    raw = st.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        st.warning(
            f"Ignored `{name}={link_value(raw)}` from the link: expected a whole number from {lo} to {hi}. "
            f"Showing {name} {default}."
        )
        return default
    return value


def query_choice(name: str, options: Sequence[str], default: str) -> str:
    """Text query parameter `name` when it is one of `options`; a missing one gives `default` silently, any
    other value gives `default` and a short warning naming the parameter."""
    raw = st.query_params.get(name)
    if raw is None or raw in options:
        return default if raw is None else raw
    st.warning(f"Ignored `{name}={link_value(raw)}` from the link: expected one of {', '.join(options)}. "
               f"Showing {default}.")
    return default


def sync_query(**values: object) -> None:
    """Write the current view (model, prompt, layer, head, ...) into the URL; None removes a parameter."""
    current = st.query_params.to_dict()
    for name, value in values.items():
        if value is None:
            if name in current:
                del st.query_params[name]
        elif current.get(name) != str(value):
            st.query_params[name] = str(value)


def kept(key: str, seed: Callable[[], object], fit: Callable[[object], object] | None = None, *,
         link: str | None = None, options: Sequence | None = None) -> object:
    """The one idiom for a widget's value across reruns and page switches: seeded once per session by `seed()`
    (a default). The value also lives under a key of its own, which Streamlit never drops (it drops a widget's
    state when a page that does not draw the widget runs), and the widget's key is set from it on every run; `fit`
    (if given) brings a kept value back into range first (the model may have changed). Draw the widget with the
    same `key` and no default of its own.

    With `link` (a query-parameter name) the value is part of the view's URL: a shared link's value seeds it
    (read as the type of the seed's value; a bad one, or one not among `options`, warns and gives the seed), and
    the current value is written back on every run, so a link or a finding reopens exactly this view."""
    store = f"_kept_{key}"
    if key in st.session_state:
        st.session_state[store] = st.session_state[key]  # the widget's latest value
    elif store not in st.session_state:
        st.session_state[store] = seed() if link is None else from_link(link, seed(), options)
    if fit is not None:
        st.session_state[store] = fit(st.session_state[store])
    st.session_state[key] = st.session_state[store]
    if link is not None:
        sync_query(**{link: as_link(st.session_state[key])})
    return st.session_state[key]


def as_link(value: object) -> str:
    """A widget's value as a query-parameter value: booleans as true / false, lists as JSON, the rest as str."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    return str(value)


def from_link(name: str, default: object, options: Sequence | None = None) -> object:
    """Query parameter `name` read back as the type of `default` (the inverse of as_link); a missing one gives
    `default` silently, a malformed one (or one not among `options`) gives it with a warning naming it."""
    raw = st.query_params.get(name)
    if raw is None:
        return default
    try:
        value = _parse(str(raw), default)
    except (ValueError, TypeError):
        value = None
    if value is None or (options is not None and value not in options):
        expected = (f"a whole number from {options.start} to {options.stop - 1}" if isinstance(options, range) else
                    f"one of {', '.join(map(str, options))}" if options is not None else f"a {type(default).__name__}")
        st.warning(f"Ignored `{name}={link_value(raw)}` from the link: expected {expected}. Showing "
                   f"{link_value(as_link(default))}.")
        return default
    return value


def _parse(raw: str, default: object) -> object:
    if isinstance(default, bool):
        return {"true": True, "false": False}.get(raw.strip().lower())
    if isinstance(default, int | float):
        return type(default)(raw.strip())
    if isinstance(default, list | tuple):
        value = json.loads(raw)
        return type(default)(value) if isinstance(value, list) else None
    return raw


def persistent_int(key: str, default: int, lo: int, hi: int) -> int:
    """`kept` for an integer widget: seeded from the query parameter of the same name (a bad one warns), kept
    within [lo, hi]."""
    return kept(key, lambda: query_int(key, default, lo, hi), fit=lambda value: min(max(int(value), lo), hi))


def changed(key: str, value: object) -> bool:
    """Whether `value` differs from the one this call saw last under `key` in this session (False the first
    time): a view can then reset what only made sense for the old value, such as a position in another prompt."""
    store = f"_seen_{key}"
    previous = st.session_state.get(store, value)
    st.session_state[store] = value
    return previous != value


_DRAWN = "_charts_drawn"  # session key of this run's [(title, spec)]


def start_run() -> None:
    """A page run begins (the sidebar calls this): no chart drawn yet."""
    st.session_state[_DRAWN] = []


def record_chart(spec: dict, builder_name: str) -> None:
    """Remember a chart the page drew in this run, titled by its spec's title or else by its builder's name."""
    title = spec.get("title", "")
    title = title.get("text", "") if isinstance(title, dict) else title
    title = " ".join(title) if isinstance(title, list) else str(title)
    st.session_state.setdefault(_DRAWN, []).append((title or builder_name.replace("_", " "), spec))


def drawn_charts() -> list[tuple[str, dict]]:
    """(title, Vega-Lite spec) of every chart drawn so far in this run, in order."""
    return st.session_state.get(_DRAWN, [])
