"""Interpretability workbench: the Overview page (entry point of `streamlit run app.py`).

A dashboard over the sidebar's cached trace: the model's next-token prediction, then four panels (mean attention
of a layer, hidden-state evolution, the logit lens at the last position, token importance), each linking to its
full page. Only the token-importance panel runs the model again (one forward and backward for the gradient).
"""

import streamlit as st

from interp_core.attention import default_window
from interp_core.attribution import input_x_gradient
from interp_core.charts.attention import attention_heatmap
from interp_core.charts.overview import (
    lens_last_position_chart,
    prediction_bar,
    residual_evolution_chart,
    token_importance_chart,
)
from interp_core.charts.tokens import coloured_tokens_html
from interp_core.findings.kinds import overview_numbers
from interp_core.lens import logit_lens, next_token_predictions, residual_evolution
from interp_core.streamlit_glue import (
    cached_pattern,
    cached_result,
    download_buttons,
    draw_chart,
    findings_box,
    page_header,
    persistent_int,
    progress_bar,
    sidebar,
    sync_query,
)

TOP_K = 10  # predictions listed
WINDOW = 20  # positions in the small heatmaps (the last ones; the full pages show more): they fit a 1,280-px window

st.set_page_config(page_title="Overview · Interpretability workbench", layout="wide")
page_header("Interpretability workbench", "Look inside a small transformer language model. Pick a model "
            "and type a prompt in the sidebar; every page analyses that same prompt. This page shows what "
            "the model predicts next and a first look at each analysis.")
sel = sidebar()
bundle, trace = sel.bundle, sel.trace


@cached_result()
def cached_predictions(_bundle, _trace, ref: str, prompt: str):
    return next_token_predictions(_bundle, _trace, TOP_K)


@cached_result()
def cached_lens(_bundle, _trace, ref: str, prompt: str):
    """Logit lens for the model's top-1 token; a progress bar shows on a cache miss."""
    return logit_lens(_bundle, _trace, progress=progress_bar("Decoding the residual stream"))


@cached_result()
def cached_evolution(_trace, ref: str, prompt: str):
    return residual_evolution(_trace)


@cached_result(spinner="Computing input × gradient...")
def cached_importance(_bundle, _trace, ref: str, prompt: str):
    """Input x gradient for the model's top-1 next token (one forward and backward, under the bundle's lock)."""
    return input_x_gradient(_bundle, _trace)


# --- the prediction --------------------------------------------------------------------------------------------
st.subheader(f"Top {TOP_K} next-token predictions")
st.caption(f"Prompt as the model sees it ({trace.n_pos} tokens):")
st.html(coloured_tokens_html(trace.tokens, [0.0] * trace.n_pos, diverging=False))
predictions = cached_predictions(bundle, trace, sel.ref, sel.prompt)
table = predictions.to_frame()
table_col, bar_col = st.columns([3, 2])
with table_col:
    st.dataframe(table, hide_index=True, column_config={
        "probability": st.column_config.ProgressColumn("probability", format="%.3f", min_value=0.0, max_value=1.0),
        "logit": st.column_config.NumberColumn("logit", format="%.2f"),
    })
    download_buttons(table, "next_token_predictions")
with bar_col:
    draw_chart(prediction_bar, predictions)

# --- four panels -----------------------------------------------------------------------------------------------
top_left, top_right = st.columns(2, border=True)
with top_left:
    st.subheader("Attention")
    # Its own key (mirrored as ?overview_layer=) so that a link's ?layer=&head= stay for the Attention page;
    # it starts at the layer chosen there, and a change here carries over to it.
    persistent_int("overview_layer", min(int(st.session_state.get("layer", 0)), bundle.n_layers - 1),
                   0, bundle.n_layers - 1)
    layer = st.selectbox("Layer (mean of its heads)", list(range(bundle.n_layers)), key="overview_layer",
                         on_change=lambda: st.session_state.update(layer=st.session_state["overview_layer"]))
    sync_query(overview_layer=layer)
    pattern = cached_pattern(sel, layer, None)
    start, stop = default_window(trace.n_pos, WINDOW)
    draw_chart(attention_heatmap, pattern, start, stop, max_side=260, legend_below=True)
    download_buttons(pattern.to_frame(), f"mean_attention_L{layer}")
    st.page_link("pages/1_Attention.py", label="Every head, its scores and the token view", icon="➡️")
with top_right:
    st.subheader("Hidden-state evolution")
    evolution = cached_evolution(trace, sel.ref, sel.prompt)
    draw_chart(residual_evolution_chart, evolution, *default_window(trace.n_pos, WINDOW))
    download_buttons(evolution.to_frame(), "residual_evolution")
    st.page_link("pages/4_Logit_Lens.py", label="What each layer predicts: the logit lens", icon="➡️")

bottom_left, bottom_right = st.columns(2, border=True)
with bottom_left:
    st.subheader("Logit lens, last position")
    lens = cached_lens(bundle, trace, sel.ref, sel.prompt)
    draw_chart(lens_last_position_chart, lens)
    last = lens.to_frame()
    download_buttons(last[last["pos"] == trace.n_pos - 1], "logit_lens_last_position")
    st.page_link("pages/4_Logit_Lens.py", label="Every position, target tracking and logit attribution",
                 icon="➡️")
with bottom_right:
    st.subheader("Token importance")
    importance = cached_importance(bundle, trace, sel.ref, sel.prompt)
    draw_chart(token_importance_chart, importance, *default_window(trace.n_pos, WINDOW))
    st.caption("Input × gradient of the top-1 token's log-probability, summed over the embedding: blue tokens "
               "raise it, red lower it. A quick first-order view; the Attribution page has integrated gradients "
               "and checks of how far to trust each method.")
    download_buttons(importance.to_frame(), "token_importance")
    st.page_link("pages/2_Attribution.py", label="Integrated gradients and other attributions", icon="➡️")
findings_box(sel, "overview", {}, overview_numbers(predictions))
