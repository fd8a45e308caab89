"""Circuits page: find heads by what they attend to. Head detectors on random tokens repeated twice (and on the
sidebar's prompt), one head's pattern, and the copy loss with that head switched off. The Patching and Ablation
pages test what the heads found here do. Thin: widgets -> one cached call into interp_core.circuits -> draw.
"""

from __future__ import annotations

import streamlit as st

from interp_core import circuits
from interp_core import streamlit_glue as glue
from interp_core.charts import circuits as charts
from interp_core.charts import selected_point
from interp_core.circuits import views
from interp_core.findings.kinds import circuits_numbers
from interp_core.streamlit_glue import circuits as shared

MOVED_TABS = {"patching": "pages/6_Patching.py", "ablation": "pages/7_Ablation.py"}  # links from before the split

st.set_page_config(page_title="Circuits · Interpretability workbench", layout="wide")
if (tab := glue.query_choice("tab", ["detectors", *MOVED_TABS], "detectors")) in MOVED_TABS:  # an old link's tab
    st.switch_page(MOVED_TABS[tab], query_params={k: v for k, v in st.query_params.items() if k != "tab"})
glue.page_header("Circuits", "Find heads by what they attend to: **detectors** score every head on random tokens "
                 "repeated twice, where induction, previous-token and duplicate-token heads show plainly, and on "
                 "your prompt. Then test what a head does: the **Patching** page copies activations from a clean "
                 "prompt into a corrupted one, the **Ablation** page switches heads off.")
sel = glue.sidebar()
bundle = sel.bundle
glue.sync_query(tab=None)


@glue.cached_result()
def cached_prompt_scores(_bundle, _trace, ref: str, prompt: str):
    return circuits.prompt_head_scores(_bundle, _trace)


def open_clicked_head() -> None:
    """Grid click (runs before the script): show the clicked head in the layer and head boxes."""
    for key in ("circuits_grid", "circuits_prompt_grid"):
        picked = selected_point(st.session_state.get(key), charts.HEAD_PICK)
        if picked and (picked["layer"], picked["head"]) != st.session_state.get(f"{key}_seen"):
            st.session_state[f"{key}_seen"] = (picked["layer"], picked["head"])
            st.session_state["layer"], st.session_state["head"] = int(picked["layer"]), int(picked["head"])


def head_grid(scores, detector: str, key: str) -> None:
    """A clickable detector grid, the chosen head outlined."""
    selected = (st.session_state.get("layer"), st.session_state.get("head"))
    glue.draw_chart(charts.detector_grid, scores, detector, selected=selected, on_select=open_clicked_head,
                    selection_mode=charts.HEAD_PICK, key=key)


inputs, choice = st.columns([1, 1])
with inputs:
    run = shared.repeated_tokens(bundle)
glue.kept("circuits_detector", lambda: next(iter(circuits.DETECTORS)), link="detector",
          options=list(circuits.DETECTORS))
detector = choice.radio("Detector", list(circuits.DETECTORS), horizontal=True, key="circuits_detector")
st.caption(run.scores.caption(detector))
grid_col, info_col = st.columns([1, 1])
with grid_col:
    head_grid(run.scores, detector, "circuits_grid")
with info_col:
    glue.metrics_row(views.loss_metrics(run))
    st.caption(views.COPY_LOSS_NOTE)
with st.expander("Scores of every head (table)"):
    st.dataframe(run.scores.wide_frame(), hide_index=True)
glue.download_buttons(run.scores.to_frame(), "head_detector_scores")

st.subheader("One head")
top = (run.scores.top_heads(detector, k=1) or [(0, 0)])[0]  # a fresh session starts at the detector's best
layer, head = glue.layer_head_picker(bundle, default_layer=top[0], default_head=top[1])
glue.draw_chart(charts.repeated_pattern_heatmap, run, layer, head)
ablated = shared.ablated_run(bundle, run, ((layer, head),))
shared.copy_loss(run, ablated, f"copy_loss_{circuits.head_label(layer, head)}")
st.caption(views.ablated_loss_note(ablated))

st.subheader("The same detectors on your prompt")
prompt_scores = cached_prompt_scores(bundle, sel.trace, sel.ref, sel.prompt)
if prompt_scores.note(detector):
    st.info(prompt_scores.note(detector))
head_grid(prompt_scores, detector, "circuits_prompt_grid")
glue.download_buttons(prompt_scores.to_frame(), "head_detector_scores_prompt")
st.page_link("pages/6_Patching.py", label="What do these heads do? Activation and attribution patching", icon="➡️")
st.page_link("pages/7_Ablation.py", label="Switch heads off: ablation", icon="➡️")
glue.findings_box(sel, "circuits", {"rep_length": run.sequences.length, "rep_seed": run.sequences.seed,
                                    "detector": detector, "layer": layer, "head": head},
                  circuits_numbers(run, ablated, detector, layer, head))
