"""Attention page: where each head looks, every head's score card, and the prompt coloured by attention.

Everything comes from the sidebar's cached trace; this page never runs the model.
"""

import streamlit as st

from interp_core.attention import HEAD_METRICS, head_summaries
from interp_core.charts import selected_point
from interp_core.charts.attention import HEAD_PICK, attention_heatmap, head_grid
from interp_core.charts.tokens import coloured_tokens_html
from interp_core.findings.kinds import attention_numbers
from interp_core.streamlit_glue import (
    cached_pattern,
    cached_result,
    download_buttons,
    draw_chart,
    findings_box,
    kept,
    layer_head_picker,
    page_header,
    sidebar,
    window_slider,
)
from interp_core.tokens import token_labels

WINDOW = 40  # positions in the heatmap at once; longer prompts get a range slider

st.set_page_config(page_title="Attention · Interpretability workbench", layout="wide")
page_header("Attention", "Where each attention head looks: for one layer and head, how much each token "
            "(row, the query) attends to each earlier token (column, the key). Each row sums to 1; a token "
            "cannot look at later tokens, so the upper triangle is blank.")
sel = sidebar()
trace = sel.trace
n_pos = trace.n_pos
labels = token_labels(trace.tokens)


@cached_result()
def cached_head_summaries(_bundle, _trace, ref: str, prompt: str):
    """Head scores of the trace for (ref, prompt); each layer's pattern from the trace, no forward pass."""
    return head_summaries(_bundle, _trace)


def open_clicked_head() -> None:
    """Grid click (runs before the script): show the clicked head in the layer and head boxes."""
    picked = selected_point(st.session_state.get("head_grid"), HEAD_PICK)
    if picked:
        st.session_state["layer"] = int(picked["layer"])
        st.session_state["head"] = int(picked["head"])
        st.session_state["attn_mean"] = False


def keep_index(key: str, default: int) -> None:
    """Keep a position selectbox (`?attn_query=`, `?attn_key=`), reset when it no longer fits the prompt."""
    kept(key, lambda: default, fit=lambda value: value if 0 <= int(value) < n_pos else default, link=key)


# --- one head (or the layer's mean) ----------------------------------------------------------------------------
layer, head = layer_head_picker(sel.bundle)
kept("attn_mean", lambda: False, link="attn_mean")
mean = st.checkbox("Mean of all heads in this layer", key="attn_mean")
pattern = cached_pattern(sel, layer, None if mean else head)

start, stop = window_slider("attn_window", n_pos, WINDOW)
draw_chart(attention_heatmap, pattern, start, stop)
download_buttons(pattern.to_frame(), f"attention_pattern_L{layer}_{'mean' if mean else f'H{head}'}")

# --- token view ------------------------------------------------------------------------------------------------
st.subheader("Token view")
st.caption(f"The prompt shaded by {pattern.title}'s attention. Darker blue = more attention; dashed tokens are "
           "masked (a token only sees itself and earlier tokens). Hover a token for its weight.")
keep_index("attn_query", n_pos - 1)
keep_index("attn_key", 0)
left, right = st.columns(2)
with left:
    query = st.selectbox("Attention FROM this token (query)", list(range(n_pos)), key="attn_query",
                         format_func=labels.__getitem__)
    st.html(coloured_tokens_html(trace.tokens, pattern.attention_from(query), diverging=False,
                                 legend=f"weights of row {labels[query]}: they sum to 1"))
with right:
    key_pos = st.selectbox("Attention TO this token (key)", list(range(n_pos)), key="attn_key",
                           format_func=labels.__getitem__)
    st.html(coloured_tokens_html(trace.tokens, pattern.attention_to(key_pos), diverging=False, vmax=1.0,
                                 legend=f"how much each later token attends to {labels[key_pos]} (0 to 1)"))

# --- all heads at a glance -------------------------------------------------------------------------------------
st.subheader("All heads at a glance")
summary = cached_head_summaries(sel.bundle, trace, sel.ref, sel.prompt)
if n_pos < 2:
    st.info("Head scores need at least two tokens: type a longer prompt.")
kept("attn_grid_metric", lambda: next(iter(HEAD_METRICS)), link="attn_grid_metric", options=list(HEAD_METRICS))
metric = st.radio("Colour the grid by", list(HEAD_METRICS), horizontal=True, key="attn_grid_metric",
                  format_func=lambda name: HEAD_METRICS[name][0])
draw_chart(head_grid, summary, metric, selected=None if mean else (layer, head),
           on_select=open_clicked_head, selection_mode=HEAD_PICK, key="head_grid")
st.caption("Scores average over query positions 1 onwards (position 0 can only attend to itself). "
           "Previous-token: attention to the token just before; first-token: attention to position 0, often "
           "a resting place (attention sink); self: attention to the token itself.")
download_buttons(summary.to_frame(), "head_summary")
findings_box(sel, "attention", {"layer": layer, "head": head, "mean": mean},
             attention_numbers(summary, layer, None if mean else head))
