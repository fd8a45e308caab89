"""Logit lens page: what the residual stream would predict if the model stopped after each layer, a target
token's probability and rank through the layers, and which components write its logit (direct logit attribution).

Everything comes from the sidebar's cached trace; this page never runs the model forward.
"""

import streamlit as st

from interp_core.charts import selected_point
from interp_core.charts.lens import (
    COMPONENT_PICK,
    dla_heatmap,
    lens_heatmap,
    target_trajectory_chart,
    token_effects_chart,
)
from interp_core.charts.overview import residual_evolution_chart
from interp_core.charts.tokens import markdown_escape
from interp_core.components import logits_at
from interp_core.errors import TargetTokenError
from interp_core.lens import (
    LENS_METRICS,
    component_token_effects,
    direct_logit_attribution,
    logit_lens,
    residual_evolution,
)
from interp_core.streamlit_glue import (
    cached_result,
    download_buttons,
    draw_chart,
    page_header,
    persistent_int,
    sidebar,
    sync_query,
)
from interp_core.tokens import readable_token, single_token_id, token_labels, token_texts

WINDOW = 16  # positions in the lens heatmap at once (each cell holds a token); longer prompts get a slider
EFFECT_TOKENS = 10  # tokens listed as promoted / suppressed by a clicked component

st.set_page_config(page_title="Logit lens · Interpretability workbench", layout="wide")
page_header("Logit lens", "The model's running guess. The residual stream after each layer is decoded through "
            "the model's own final norm (its statistics recomputed on that layer's vector) and unembedding, as if "
            "the model stopped there; the top row is the model's real output.")
sel = sidebar()
bundle, trace = sel.bundle, sel.trace
n_pos = trace.n_pos
labels = token_labels(trace.tokens)


@cached_result()
def cached_lens(_bundle, _trace, ref: str, prompt: str, target_id: int):
    """Logit lens of the cached trace for (ref, prompt, target); a progress bar shows on a cache miss."""
    bar = st.progress(0.0, text="Decoding the residual stream")
    result = logit_lens(_bundle, _trace, target_id, progress=lambda f, text: bar.progress(f, text=text))
    bar.empty()
    return result


@cached_result()
def cached_dla(_bundle, _trace, ref: str, prompt: str, pos: int, target_id: int):
    """Direct logit attribution of the cached trace for (ref, prompt, pos, target)."""
    return direct_logit_attribution(_bundle, _trace, pos, target_id)


@cached_result()
def cached_effects(_bundle, _trace, ref: str, prompt: str, pos: int, component: str):
    """Tokens a component promotes and suppresses at pos, for (ref, prompt)."""
    return component_token_effects(_bundle, _trace, pos, component, k=EFFECT_TOKENS)


@cached_result()
def cached_evolution(_trace, ref: str, prompt: str):
    return residual_evolution(_trace)


def open_clicked_component() -> None:
    """DLA click (runs before the script): show the clicked component in the component box."""
    picked = selected_point(st.session_state.get("dla_grid"), COMPONENT_PICK)
    if picked:
        st.session_state["lens_component"] = str(picked["component"])


# --- position, target and colour -------------------------------------------------------------------------------
persistent_int("pos", n_pos - 1, 0, n_pos - 1)
col_pos, col_target, col_metric = st.columns([2, 2, 2])
pos = col_pos.selectbox("Position (the lens predicts the token after it)", list(range(n_pos)), key="pos",
                        format_func=labels.__getitem__)
sync_query(pos=pos)
default_id = int(logits_at(bundle, trace, pos).argmax())
default_text = readable_token(token_texts(bundle, [default_id])[0])
typed = col_target.text_input("Target token", key="lens_target", placeholder=f"{default_text} (the model's top-1)",
                              help="One token, with its leading space (type a space or ␣), e.g. ' Paris'. "
                                   "Empty: the model's own top-1 prediction at this position.")
target_id = default_id
if typed:
    try:
        target_id = single_token_id(bundle, typed.replace("␣", " ").replace("↵", "\n").replace("⇥", "\t"))
    except TargetTokenError as exc:
        st.error(markdown_escape(f"{exc} Showing the model's top-1 token {default_text} instead."))
metric = col_metric.selectbox("Colour the cells by", list(LENS_METRICS), key="lens_metric",
                              format_func=lambda name: LENS_METRICS[name][0])
lens = cached_lens(bundle, trace, sel.ref, sel.prompt, target_id)

# --- the lens heatmap ------------------------------------------------------------------------------------------
start, stop = 0, n_pos
if n_pos > WINDOW:
    stored = st.session_state.get("lens_window")
    if not stored or stored[1] > n_pos - 1 or stored[0] > stored[1]:
        st.session_state["lens_window"] = (max(0, n_pos - WINDOW), n_pos - 1)
    first, last = st.slider(f"Positions shown (the prompt has {n_pos} tokens)", 0, n_pos - 1, key="lens_window",
                            help="Each cell holds a token, so about 16 positions fit the page.")
    start, stop = first, last + 1
draw_chart(lens_heatmap, lens, metric, start, stop)
st.caption("Hover a cell for its top 5 tokens. KL(final || layer) is 0 on the top row by definition; a row whose "
           "KL is already small says the model had settled on its answer by that layer.")
download_buttons(lens.to_frame(), "logit_lens")

# --- target tracking -------------------------------------------------------------------------------------------
st.subheader("The target token through the layers")
draw_chart(target_trajectory_chart, lens, pos)
trajectory = lens.to_frame()
trajectory = trajectory[trajectory["pos"] == pos][["layer", "layer_label", "pos", "pos_label", "target",
                                                   "target_prob", "target_rank", "top1", "top1_prob"]]
download_buttons(trajectory, "target_trajectory")

# --- direct logit attribution ----------------------------------------------------------------------------------
st.subheader("Direct logit attribution")
dla = cached_dla(bundle, trace, sel.ref, sel.prompt, pos, target_id)
total = float(dla.values.sum())
st.markdown(
    f"How much each component's output writes towards the logit of the target at position {pos}: its output "
    f"through the final norm (scale {dla.scale:.3f}, taken from the actual final residual) times the unembedding "
    f"direction. Components plus the bias term sum to **{total:.4f}**; the model's logit is "
    f"**{dla.logit:.4f}**.")
frame = dla.to_frame()
choices = [label for label, kind in zip(dla.labels, dla.kinds, strict=True) if kind != "bias"]
if st.session_state.get("lens_component") not in choices:  # first visit, or another model: the top component
    st.session_state["lens_component"] = str(frame[frame["kind"] != "bias"]["component"].iloc[0])
chart_col, table_col = st.columns([3, 2])
with chart_col:
    draw_chart(dla_heatmap, dla, selected=st.session_state["lens_component"],
               on_select=open_clicked_component, selection_mode=COMPONENT_PICK, key="dla_grid")
with table_col:
    st.dataframe(frame[["rank", "component", "contribution"]], hide_index=True, height=320,
                 column_config={"contribution": st.column_config.NumberColumn(format="%+.4f")})
    download_buttons(frame, "direct_logit_attribution")

# --- what one component promotes and suppresses ----------------------------------------------------------------
component = st.selectbox("Component (or click a cell above)", choices, key="lens_component")
effects = cached_effects(bundle, trace, sel.ref, sel.prompt, pos, component)
draw_chart(token_effects_chart, effects)
st.caption("Direct effect of this component's output at this position on every token's logit (through the same "
           "frozen final norm), largest raises and largest drops.")
download_buttons(effects.to_frame(), f"token_effects_{component.replace(' ', '_')}")

# --- residual stream -------------------------------------------------------------------------------------------
with st.expander("Residual stream norms and how much each block turns it"):
    evolution = cached_evolution(trace, sel.ref, sel.prompt)
    draw_chart(residual_evolution_chart, evolution, start, stop)
    download_buttons(evolution.to_frame(), "residual_evolution")
