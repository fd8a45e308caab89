"""Streamlit glue: the one package that imports Streamlit (cached loader, shared sidebar, query-param helpers).

Pages import it as `from interp_core import streamlit_glue as glue`; its modules are by topic: `state` (the URL
and kept widget values), `widgets` (charts, errors, progress, pickers, downloads), `models` (the shared model
and result caches, hosted mode's secrets), `sidebar` (the shared sidebar and page links),
`findings` (the "Add to findings" box every page ends with, and the Findings page's parts).

Every page starts with

    sel = sidebar()            # model picker + prompt + model facts; stops the page on bad input
    layer = query_int("layer", 0, 0, sel.bundle.n_layers - 1)
    ...
    sync_query(layer=layer)    # the current view goes back into the URL
    ...
    findings_box(sel, "attention", inputs, numbers)   # last: pins this view, its charts and numbers

Widget values survive page switches with the "seed once, re-assign every run" trick from
`/work/shared/notes/streamlit.md`; query parameters seed them when a session opens from a shared link and
are rewritten on every run because Streamlit drops them on a page switch.

Environment variables:
- `INTERP_DEFAULT_MODEL`: reference (shipped name, hub id or folder) selected when nothing else says which;
  defaults to the shipped organism.
- `INTERP_HOSTED=1`: hosted mode (see `interp_core.settings.is_hosted`): stricter limits, no folder box,
  and the picker offers only the shipped model plus the comma-separated ids in `INTERP_ALLOWED_MODELS`.
Both hosted-mode keys may also come from Streamlit secrets (`.streamlit/secrets.toml`, or the secrets box of
Streamlit Community Cloud); a variable already in the environment wins (see `apply_secrets`).
"""

from interp_core.streamlit_glue.findings import findings_box
from interp_core.streamlit_glue.models import (
    LOCAL_FOLDER,
    Selection,
    cached_bundle,
    cached_pattern,
    cached_result,
    model_options,
)
from interp_core.streamlit_glue.sidebar import sidebar
from interp_core.streamlit_glue.state import (
    changed,
    kept,
    link_value,
    persistent_int,
    query_choice,
    query_int,
    sync_query,
)
from interp_core.streamlit_glue.widgets import (
    download_buttons,
    draw_chart,
    kept_upload,
    layer_head_picker,
    metrics_row,
    page_header,
    plain_text,
    progress_bar,
    show_user_error,
    user_errors,
    window_slider,
)

__all__ = [
    "LOCAL_FOLDER", "Selection", "cached_bundle", "cached_pattern", "cached_result", "changed",
    "download_buttons", "draw_chart", "findings_box", "kept", "kept_upload", "layer_head_picker", "link_value",
    "metrics_row", "model_options", "page_header", "plain_text", "persistent_int", "progress_bar", "query_choice",
    "query_int", "show_user_error", "sidebar", "sync_query", "user_errors", "window_slider",
]
