"""Ablation page: switch chosen heads off (zero or mean ablation of their z) and see what breaks: the copy loss on
repeated random tokens, and the logit difference and top predictions on a clean / corrupted prompt pair.
Thin: widgets -> cached calls into interp_core.circuits and interp_core.patching -> draw.
"""

from __future__ import annotations

import streamlit as st

from interp_core import circuits, patching
from interp_core import streamlit_glue as glue
from interp_core.charts import circuits as charts
from interp_core.circuits import views
from interp_core.findings.kinds import ablation_numbers
from interp_core.streamlit_glue import circuits as shared

st.set_page_config(page_title="Ablation · Interpretability workbench", layout="wide")
glue.page_header("Ablation", "What breaks without some heads. **Zero ablation** sets the heads' outputs to zero, "
                 "**mean ablation** to their mean over other inputs (a gentler switch-off: zero is far from anything "
                 "the model has seen). The heads start as the two strongest induction heads on the Circuits page.")
sel = glue.sidebar()
bundle = sel.bundle
cached_ablation = glue.cached_result(spinner="Ablating...")(patching.ablate_on_task)

with st.expander("Repeated random tokens", expanded=False):
    run = shared.repeated_tokens(bundle)
heads = views.head_choices(bundle)
top_induction = [circuits.head_label(*h) for h in run.scores.top_heads("induction", 2)]
if not set(glue.kept("circuits_ablate", lambda: top_induction, link="ablate")) <= set(heads):  # another model's heads
    st.session_state["circuits_ablate"] = top_induction
glue.kept("circuits_mode", lambda: next(iter(circuits.ABLATIONS)), link="ablation", options=list(circuits.ABLATIONS))
chosen = tuple(heads[label] for label in st.multiselect("Heads to ablate", list(heads), key="circuits_ablate"))
mode = st.radio("Ablation", list(circuits.ABLATIONS), horizontal=True, key="circuits_mode",
                format_func=circuits.ABLATIONS.get)
if not chosen:
    st.info("Pick one or more heads to ablate.")
    st.stop()

st.subheader("On the repeated random tokens")
ablated = shared.ablated_run(bundle, run, chosen, mode)
glue.metrics_row(views.ablation_metrics(run, ablated))
shared.copy_loss(run, ablated, "ablation_copy_loss")

st.subheader("On a clean and a corrupted prompt")
choice = shared.prompt_pair(bundle)
if choice.problem is not None:
    glue.show_user_error(choice.problem)
result = cached_ablation(bundle, choice.task, chosen, mode)
glue.draw_chart(charts.ablation_bars, result)  # in a column, its bars ran under the table
glue.download_buttons(result.to_frame(), "ablation_metric")
st.write("**Next-token prediction on the clean prompt, before and after the ablation**")
st.dataframe(result.ablation.to_frame(), hide_index=True)
glue.download_buttons(result.ablation.to_frame(), "ablation_top_tokens")
glue.findings_box(sel, "ablation", {"rep_length": run.sequences.length, "rep_seed": run.sequences.seed,
                                    "heads": [list(h) for h in chosen], "mode": mode, **shared.pair_inputs()},
                  ablation_numbers(run, ablated, result))
