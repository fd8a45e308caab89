"""Logit lens page: what the residual stream would predict if the model stopped after each layer, a target
token's probability and rank through the layers, and which components write its logit (direct logit attribution).

Everything comes from the sidebar's cached trace; this page never runs the model forward.
"""

import streamlit as st

from interp_core import lens
from interp_core import streamlit_glue as glue
from interp_core.charts import lens as charts
from interp_core.charts import selected_point
from interp_core.charts.overview import residual_evolution_chart
from interp_core.charts.tokens import markdown_escape
from interp_core.findings.kinds import lens_numbers
from interp_core.streamlit_glue import lens as shared
from interp_core.tokens import token_labels

WINDOW = 16  # positions in the lens heatmap at once (each cell holds a token); longer prompts get a slider
EFFECT_TOKENS = 10  # tokens listed as promoted / suppressed by a clicked component

st.set_page_config(page_title="Logit lens · Interpretability workbench", layout="wide")
glue.page_header("Logit lens", "The model's running guess. The residual stream after each layer is decoded through "
                 "the model's own final norm (its statistics recomputed on that layer's vector) and unembedding, as "
                 "if the model stopped there (the tuned lens first translates it with a map trained for that "
                 "layer); the top row is the model's real output.")
sel = glue.sidebar()
bundle, trace = sel.bundle, sel.trace
n_pos = trace.n_pos


@glue.cached_result()
def cached_dla(_bundle, _trace, ref: str, prompt: str, pos: int, target_id: int):
    return lens.direct_logit_attribution(_bundle, _trace, pos, target_id)


@glue.cached_result()
def cached_effects(_bundle, _trace, ref: str, prompt: str, pos: int, component: str):
    return lens.component_token_effects(_bundle, _trace, pos, component, k=EFFECT_TOKENS)


@glue.cached_result()
def cached_evolution(_trace, ref: str, prompt: str):
    return lens.residual_evolution(_trace)


def open_clicked_component() -> None:
    """DLA click (runs before the script): show the clicked component in the component box."""
    picked = selected_point(st.session_state.get("dla_grid"), charts.COMPONENT_PICK)
    if picked:
        st.session_state["lens_component"] = str(picked["component"])


# --- lens, position, target and colour --------------------------------------------------------------------------
choice = shared.lens_choice(bundle)
if glue.changed("lens_prompt", sel.prompt):  # a position of the old prompt means nothing in the new one
    st.session_state["pos"] = n_pos - 1
glue.persistent_int("pos", n_pos - 1, 0, n_pos - 1)
col_pos, col_target, col_metric = st.columns([2, 2, 2])
pos = col_pos.selectbox("Position (the lens predicts the token after it)", list(range(n_pos)), key="pos",
                        format_func=token_labels(trace.tokens).__getitem__)
glue.sync_query(pos=pos)
target = lens.lens_target(bundle, trace, pos, glue.kept("lens_target", lambda: "", link="target"))
col_target.text_input("Target token", key="lens_target", placeholder=f"{target.default_text} (the model's top-1)",
                      help="One token, with its leading space (type a space or ␣), e.g. ' Paris'. "
                           "Empty: the model's own top-1 prediction at this position.")
if target.problem:
    st.error(markdown_escape(target.problem))
glue.kept("lens_metric", lambda: next(iter(lens.LENS_METRICS)), link="metric", options=list(lens.LENS_METRICS))
metric = col_metric.selectbox("Colour the cells by", list(lens.LENS_METRICS), key="lens_metric",
                              format_func=lambda name: lens.LENS_METRICS[name][0])
decoded = shared.decoded(sel, choice.lens, target.target_id)

# --- the lens heatmap ------------------------------------------------------------------------------------------
start, stop = glue.window_slider("lens_window", n_pos, WINDOW)
glue.draw_chart(charts.lens_heatmap, decoded, metric, start, stop)
st.caption(f"{choice.name}. Hover a cell for its top 5 tokens. KL(final || layer) is 0 on the top row by "
           "definition; a row whose KL is already small says the model had settled on its answer by that layer.")
glue.download_buttons(decoded.to_frame(), "logit_lens")

# --- target tracking -------------------------------------------------------------------------------------------
st.subheader("The target token through the layers")
glue.draw_chart(charts.target_trajectory_chart, decoded, pos)
glue.download_buttons(decoded.trajectory_frame(pos), "target_trajectory")

# --- both lenses against the model's output -----------------------------------------------------------------------
divergence = shared.divergence_frame(sel, choice, target.target_id)
if divergence is not None:
    st.subheader("How far each lens is from the model's output")
    glue.draw_chart(charts.lens_divergence_chart, divergence, decoded.layer_labels)
    st.caption("Means over the positions of this prompt" + (" and of held-out text" if choice.held_out else "") +
               ". The top row is left out: both lenses are the model's output there (KL 0, agreement 100%).")
    glue.download_buttons(divergence, "lens_divergence")

# --- direct logit attribution ----------------------------------------------------------------------------------
st.subheader("Direct logit attribution")
dla = cached_dla(bundle, trace, sel.ref, sel.prompt, pos, target.target_id)
st.markdown(dla.summary)
glue.kept("lens_component", lambda: dla.top_component, link="component",  # first visit, another model: the top one
          fit=lambda name: name if name in dla.components else dla.top_component)
glue.draw_chart(charts.dla_heatmap, dla, selected=st.session_state["lens_component"],  # full width: 15 columns
                on_select=open_clicked_component, selection_mode=charts.COMPONENT_PICK, key="dla_grid")  # (GPT-2)
with st.expander("Every component, ranked"):
    frame = dla.to_frame()
    st.dataframe(frame[["rank", "component", "contribution"]], hide_index=True, height=320,
                 column_config={"contribution": st.column_config.NumberColumn(format="%+.4f")})
    glue.download_buttons(frame, "direct_logit_attribution")

# --- what one component promotes and suppresses ----------------------------------------------------------------
component = st.selectbox("Component (or click a cell above)", dla.components, key="lens_component")
effects = cached_effects(bundle, trace, sel.ref, sel.prompt, pos, component)
glue.draw_chart(charts.token_effects_chart, effects)
st.caption("Direct effect of this component's output at this position on every token's logit (through the same "
           "frozen final norm), largest raises and largest drops.")
glue.download_buttons(effects.to_frame(), f"token_effects_{component.replace(' ', '_')}")

# --- residual stream -------------------------------------------------------------------------------------------
with st.expander("Residual stream norms and how much each block turns it"):
    evolution = cached_evolution(trace, sel.ref, sel.prompt)
    glue.draw_chart(residual_evolution_chart, evolution, start, stop)
    glue.download_buttons(evolution.to_frame(), "residual_evolution")
glue.findings_box(sel, "logit_lens", {"pos": pos, "target_id": target.target_id, "lens": "tuned" if choice.lens else
                                      "logit"}, lens_numbers(decoded, pos),
                  checkable="" if choice.lens is None or choice.shipped else "its tuned lens was made in the session")
