"""The Attribution page's settings panel: method, per-token score, baseline and (for integrated gradients) steps
and quadrature, kept across page switches (a shared link may say which method and steps) and returned as the
AttributionSettings every attribution on the page runs with."""

from __future__ import annotations

import html

import streamlit as st

from interp_core import attribution as attr
from interp_core.loading import ModelBundle
from interp_core.settings import limits
from interp_core.streamlit_glue.state import kept

OFFERED_QUADRATURES = ["gausslegendre", "riemann_trapezoid"]
DEFAULTS = {"attr_aggregation": attr.DEFAULTS.aggregation, "attr_baseline": attr.DEFAULTS.baseline.kind,
            "attr_baseline_text": attr.DEFAULTS.baseline.text, "attr_quadrature": attr.DEFAULTS.quadrature}
OPTIONS = {"attr_aggregation": attr.AGGREGATIONS, "attr_baseline": attr.BASELINE_KINDS,
           "attr_quadrature": OFFERED_QUADRATURES}


def attribution_settings(bundle: ModelBundle, columns, with_steps: bool) -> attr.AttributionSettings:
    """The method, per-token score and baseline widgets in three `columns`, and a row of steps and quadrature
    under them when integrated gradients is chosen or `with_steps` (the comparison runs it too)."""
    state, max_steps = st.session_state, limits().max_ig_steps
    kept("attr_method", lambda: attr.DEFAULTS.method, link="method", options=attr.METHODS)
    kept("attr_steps", lambda: attr.DEFAULTS.n_steps, link="steps", options=range(1, max_steps + 1))
    for key, default in DEFAULTS.items():  # in the URL under their own names
        kept(key, lambda default=default: default, link=key, options=OPTIONS.get(key))
    c_method, c_agg, c_base = columns
    method = c_method.selectbox("Method", list(attr.METHODS), key="attr_method", format_func=attr.METHOD_NAMES.get)
    aggregation = c_agg.radio("Per-token score", list(attr.AGGREGATION_NAMES), key="attr_aggregation",
                              format_func=attr.AGGREGATION_NAMES.get, disabled=method == "occlusion",
                              help="Each method gives one value per embedding dimension; a token's score adds them "
                                   "up with their signs (sum) or takes their length (L2, never negative). Saliency "
                                   "is unsigned either way (sum = L1 norm). Occlusion gives one number per token "
                                   "already.")
    kind = c_base.selectbox("Baseline (what 'absent' means)", list(attr.BASELINE_NAMES), key="attr_baseline",
                            format_func=attr.BASELINE_NAMES.get, help="Integrated gradients starts from it, "
                            "occlusion and the deletion curves replace tokens by it. Special tokens (BOS, ...) stay "
                            "as they are.")
    if kind == "text":
        c_base.text_input("Baseline text (as many tokens as the prompt)", key="attr_baseline_text",
                          placeholder="The capital of Spain is")
    elif kind == "token":
        c_base.html(f"<small style='color:#5b6170'>{html.escape(attr.neutral_token_note(bundle))}</small>")
    if method == "integrated_gradients" or with_steps:
        c_steps, c_quad, _ = st.columns([1, 1, 2])
        c_steps.number_input(f"Integration steps (1 to {max_steps})", step=1, key="attr_steps",
                             help="More steps: smaller completeness residual, longer run. All go through the model "
                                  "in batches.")
        c_quad.radio("Quadrature", OFFERED_QUADRATURES, key="attr_quadrature",
                     format_func=attr.QUADRATURE_NAMES.get, horizontal=True)
    baseline = attr.Baseline(kind, text=state["attr_baseline_text"] if kind == "text" else "")
    settings = attr.AttributionSettings(method, aggregation, baseline, int(state["attr_steps"]),
                                        state["attr_quadrature"])
    return settings
