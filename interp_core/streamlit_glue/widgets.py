"""Drawing helpers every page uses: charts, headers, user errors, progress bars, pickers, metrics and downloads."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict

import pandas as pd
import streamlit as st

from interp_core.charts import chart_spec
from interp_core.charts.tokens import markdown_escape
from interp_core.errors import UserInputError
from interp_core.figures import Metric
from interp_core.loading import ModelBundle
from interp_core.streamlit_glue.state import kept, persistent_int, record_chart, sync_query


def draw_chart(build: Callable, result, *args, on_select="ignore", selection_mode=None, key: str | None = None,
               **kwargs):
    """Draw build(result, *args, **kwargs) (an Altair chart builder) at its natural width, from a spec built once
    per result (charts.chart_spec); `on_select`, `selection_mode` and `key` as for st.altair_chart, whose return
    value it gives. The chart is recorded for the page's "Add to findings" box."""
    spec = chart_spec(build, result, *args, **kwargs)
    record_chart(spec, build.__name__)  # a finding may keep it
    return st.vega_lite_chart(spec=spec, width="content", on_select=on_select, selection_mode=selection_mode, key=key)


def page_header(title: str, what_it_shows: str) -> None:
    """Page title plus one short paragraph saying what the page shows and how to read it."""
    st.title(title)
    st.markdown(what_it_shows)


def show_user_error(exc: UserInputError) -> None:
    """Show a user-facing problem as a plain message (no traceback, Markdown escaped: it may quote a prompt, a
    token or a link's value) and stop the page."""
    st.error(markdown_escape(str(exc)))
    st.stop()


@contextmanager
def user_errors() -> Iterator[None]:
    """Inside the block a UserInputError (bad input the user can fix) is shown as its plain message and stops the
    page (show_user_error); anything else is a bug and surfaces."""
    try:
        yield
    except UserInputError as exc:
        show_user_error(exc)


def progress_bar(text: str) -> Callable[[float, str], None]:
    """A progress bar for a long analysis: returns the `progress(fraction, message)` callback interp_core's
    analyses take; the bar goes away when the fraction reaches 1."""
    bar = st.progress(0.0, text=text)

    def progress(done: float, message: str) -> None:
        if done >= 1.0:
            bar.empty()  # finished: the result replaces the bar
        else:
            bar.progress(max(float(done), 0.0), text=message)

    return progress


def window_slider(key: str, n_pos: int, size: int, label: str = "Positions shown") -> tuple[int, int]:
    """The window [start, stop) of positions a long prompt's chart shows: all of them up to `size`, else a range
    slider (kept across reruns and in the URL; reset to the last `size` positions when it no longer fits the
    prompt)."""
    if n_pos <= size:
        return 0, n_pos
    last = (n_pos - size, n_pos - 1)

    def fit(window):
        first, final = (int(x) for x in window) if len(window) == 2 else last
        return (first, final) if 0 <= first <= final <= n_pos - 1 else last

    kept(key, lambda: last, fit=fit, link=key)
    first, last = st.slider(f"{label} (the prompt has {n_pos} tokens)", 0, n_pos - 1, key=key,
                            help=f"Positions inside this range are drawn. Keep it to about {size} for readable "
                                 "labels.")
    return first, last + 1


def layer_head_picker(
    bundle: ModelBundle, *, with_head: bool = True, default_layer: int = 0, default_head: int = 0
) -> tuple[int, int | None]:
    """Layer (and head) selectboxes in the main area, restored from `?layer=`/`?head=` and kept across
    pages; returns (layer, head) with head None when `with_head` is False. Writes them back to the URL."""
    persistent_int("layer", default_layer, 0, bundle.n_layers - 1)
    cols = st.columns(2 if with_head else 1)
    layer = cols[0].selectbox("Layer", list(range(bundle.n_layers)), key="layer")
    head = None
    if with_head:
        persistent_int("head", default_head, 0, bundle.n_heads - 1)
        head = cols[1].selectbox("Head", list(range(bundle.n_heads)), key="head")
    sync_query(layer=layer, head=head)
    return layer, head


def metrics_row(metrics: Sequence[Metric]) -> None:
    """Headline numbers (interp_core.figures.Metric) side by side, one column each."""
    for column, metric in zip(st.columns(len(metrics)), metrics, strict=True):
        column.metric(**asdict(metric))


def download_buttons(frame: pd.DataFrame, name: str) -> None:
    """CSV and JSON download buttons, side by side, for a tidy DataFrame; `name` is the file name without
    extension. Clicking one does not rerun the page. The files are written when clicked, not on every rerun (a
    warm page switch spent a tenth of its time formatting CSV and JSON nobody downloaded)."""
    row = st.container(horizontal=True)
    row.download_button("Download CSV", lambda: frame.to_csv(index=False).encode("utf-8"),
                        file_name=f"{name}.csv", mime="text/csv", key=f"download_csv_{name}", on_click="ignore")
    row.download_button("Download JSON", lambda: frame.to_json(orient="records", indent=1).encode("utf-8"),
                        file_name=f"{name}.json", mime="application/json", key=f"download_json_{name}",
                        on_click="ignore")


def kept_upload(label: str, key: str, types: Sequence[str]) -> dict | None:
    """A file uploader whose file survives page switches (st.file_uploader forgets it): the last upload's
    {"name": str, "data": bytes} is kept in session state under f"{key}_kept" and returned, None before one.
    The file's name is shown as text under the uploader (a name is data, never Markdown)."""
    store = f"{key}_kept"

    def remember() -> None:
        file = st.session_state.get(key)
        st.session_state[store] = {"name": file.name, "data": file.getvalue()} if file is not None else None

    st.file_uploader(label, type=list(types), key=key, on_change=remember)
    upload = st.session_state.get(store)
    if upload is not None:
        st.caption("Using the uploaded file:")
        st.text(upload["name"])
    return upload


def plain_text(text: str, tag: str = "p") -> None:
    """Show text that may hold token strings or a user's labels: escaped HTML, never Markdown."""
    st.html(f"<{tag} style='margin:0.2em 0'>{html.escape(text)}</{tag}>")
