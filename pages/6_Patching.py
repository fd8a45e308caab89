"""Patching page: activation patching (exact) and attribution patching (its one-backward-pass estimate) of a clean
and a corrupted prompt, at every residual-stream site and every head. Thin: the pair -> one cached call into
interp_core.patching -> heatmaps, the scatter of estimate against exact, and the sentences that read them.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interp_core import patching
from interp_core import streamlit_glue as glue
from interp_core.charts import circuits as charts
from interp_core.findings.kinds import patching_numbers
from interp_core.streamlit_glue import circuits as shared

HEATMAPS = {"resid": charts.resid_patching_heatmap, "head": charts.head_patching_heatmap}

st.set_page_config(page_title="Patching · Interpretability workbench", layout="wide")
glue.page_header("Patching", "Which activations carry the answer. **Activation patching** copies one activation "
                 "from a clean prompt into a corrupted one and measures how much of the right answer comes back "
                 "(1 = all of it, 0 = none); **attribution patching** estimates the same for every site from one "
                 "backward pass. Where the two disagree, trust the exact one.")
sel = glue.sidebar()
bundle = sel.bundle


@glue.cached_result()
def cached_report(bundle, task):
    """Exact and attribution patching of every site of `task`; a progress bar shows on a cache miss."""
    return patching.patching_report(bundle, task, progress=glue.progress_bar("Patching the residual stream..."))


choice = shared.prompt_pair(bundle)
if choice.problem is not None:
    glue.show_user_error(choice.problem)
if choice.task.description:
    st.caption(choice.task.description)
st.dataframe(choice.task.to_frame(), hide_index=True, height=min(400, 38 + 35 * choice.task.n_pos))
st.dataframe(pd.DataFrame({"answer": [choice.task.answer], "foil": [choice.task.foil]}), hide_index=True)
with glue.user_errors():
    report = cached_report(bundle, choice.task)
glue.metrics_row(report.metrics)
if report.warning:
    st.warning(report.warning)
st.caption(patching.READING)
for section in report.sections:  # one under the other: side by side, columns clip a heatmap and its legend
    st.subheader(section.title)
    vmax = charts.shared_vmax(section.exact, section.estimate)
    glue.draw_chart(HEATMAPS[section.kind], section.exact, vmax)
    glue.draw_chart(HEATMAPS[section.kind], section.estimate, vmax)
    glue.draw_chart(charts.patching_scatter, section.exact, section.estimate, section.correlation)
    st.caption(section.caption)
    glue.download_buttons(section.to_frame(), f"patching_{section.kind}")
st.page_link("pages/7_Ablation.py", label="Switch the heads found here off: ablation", icon="➡️")
glue.findings_box(sel, "patching", shared.pair_inputs(), patching_numbers(report))
