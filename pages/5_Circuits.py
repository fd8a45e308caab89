"""Circuits page: find heads with detectors, then test what they do by activation patching, attribution
patching and ablation. Thin: widgets -> one cached call into interp_core.circuits / interp_core.patching per
section -> a chart builder -> draw; the numbers and sentences around the charts come from interp_core too.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interp_core import circuits, patching
from interp_core import streamlit_glue as glue
from interp_core.charts import circuits as charts
from interp_core.charts import selected_point
from interp_core.circuits import views
from interp_core.settings import limits

PAIR_DEFAULTS = {f"pair_{field}": getattr(patching.PRESETS["IOI: subject swapped"], field)  # the user's pair
                 for field in ("clean", "corrupt", "answer", "foil")}  # starts as IOI: the form shows the shape
TABS = {"detectors": "Head detectors", "patching": "Activation patching", "ablation": "Ablation"}
HEATMAPS = {"resid": charts.resid_patching_heatmap, "head": charts.head_patching_heatmap}

st.set_page_config(page_title="Circuits · Interpretability workbench", layout="wide")
glue.page_header("Circuits", "Find heads by what they attend to (**detectors** on random tokens repeated twice), "
                 "then test what they do: **activation patching** copies one activation from a clean prompt into a "
                 "corrupted one and measures how much of the right answer comes back (1 = all of it, 0 = none); "
                 "**attribution patching** estimates the same from one backward pass; **ablation** switches heads "
                 "off.")
sel = glue.sidebar()
bundle = sel.bundle
for key, value in PAIR_DEFAULTS.items():
    glue.kept(key, lambda value=value: value)
cached_repeated = glue.cached_result(spinner="Running the repeated random tokens...")(circuits.run_repeated)
cached_ablation = glue.cached_result(spinner="Ablating...")(patching.ablate_on_task)


@glue.cached_result()
def cached_prompt_scores(_bundle, _trace, ref: str, prompt: str):
    return circuits.prompt_head_scores(_bundle, _trace)


@glue.cached_result()
def cached_report(bundle, task):
    """Exact and attribution patching of every site of `task`; a progress bar shows on a cache miss."""
    return patching.patching_report(bundle, task, progress=glue.progress_bar("Patching the residual stream..."))


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


def copy_loss(intact, ablated, name: str) -> None:
    """The per-token loss of an intact and an ablated run, and its download."""
    glue.draw_chart(charts.copy_loss_chart, intact, ablated)
    glue.download_buttons(pd.concat([intact.loss_frame(), ablated.loss_frame()]), name)


glue.kept("circuits_tab", lambda: TABS[glue.query_choice("tab", list(TABS), "detectors")])  # a link may say which
# Only the open tab runs and draws (on_change="rerun"): drawing all three every run made a page switch slow.
detect_tab, patch_tab, ablate_tab = st.tabs(list(TABS.values()), key="circuits_tab", on_change="rerun")
glue.sync_query(tab=next(slug for slug, label in TABS.items() if label == st.session_state["circuits_tab"]))
longest = circuits.max_repeat_length(bundle)  # shared by the tabs: the repeated random tokens and the pair
length = int(glue.persistent_int("rep_length", min(circuits.DEFAULT_LENGTH, longest), 2, longest))
seed = int(glue.persistent_int("rep_seed", 0, 0, 1_000_000))
pair = glue.persistent_int("pair", 0, 0, len(patching.PAIR_CHOICES) - 1)
glue.sync_query(rep_length=length, rep_seed=seed, pair=pair)
run = cached_repeated(bundle, length, seed)


def current_task() -> patching.TaskChoice:
    """The picked prompt pair as a task, or the problem that stops it."""
    own = [st.session_state[key] for key in PAIR_DEFAULTS]
    return patching.choose_task(bundle, patching.PAIR_CHOICES[st.session_state["pair"]], own)


def detectors_tab() -> None:
    left, middle, right = st.columns([1, 1, 2])
    left.number_input("Tokens per copy", 2, longest, key="rep_length", help=f"Each random sequence is BOS + A + A; "
                      f"at most {longest} tokens per copy (max_prompt_tokens = {limits().max_prompt_tokens}).")
    middle.number_input("Seed", 0, 1_000_000, key="rep_seed", help="The same seed and length give the same tokens.")
    glue.kept("circuits_detector", lambda: next(iter(circuits.DETECTORS)))
    detector = right.radio("Detector", list(circuits.DETECTORS), horizontal=True, key="circuits_detector")
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
    ablated = cached_repeated(bundle, length, seed, ablate=((layer, head),))
    copy_loss(run, ablated, f"copy_loss_{circuits.head_label(layer, head)}")
    st.caption(views.ablated_loss_note(ablated))
    st.subheader("The same detectors on your prompt")
    prompt_scores = cached_prompt_scores(bundle, sel.trace, sel.ref, sel.prompt)
    if prompt_scores.note(detector):
        st.info(prompt_scores.note(detector))
    head_grid(prompt_scores, detector, "circuits_prompt_grid")
    glue.download_buttons(prompt_scores.to_frame(), "head_detector_scores_prompt")


def patching_tab() -> None:
    st.selectbox("Clean and corrupted prompts", list(range(len(patching.PAIR_CHOICES))), key="pair",
                 format_func=patching.PAIR_CHOICES.__getitem__)
    if patching.PAIR_CHOICES[st.session_state["pair"]] == patching.OWN_PAIR:
        with st.form("own_pair"):
            c1, c2 = st.columns(2)
            c1.text_input("Clean prompt", key="pair_clean")
            c2.text_input("Corrupted prompt (same number of tokens)", key="pair_corrupt")
            c1.text_input("Answer token (what the clean prompt should predict)", key="pair_answer")
            c2.text_input("Foil token (what the corrupted prompt pushes towards)", key="pair_foil")
            st.form_submit_button("Use this pair")
        st.caption("Answer and foil must each be one token; most words need their leading space, like ' Paris'.")
    choice = current_task()
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


def ablation_tab() -> None:
    heads = views.head_choices(bundle)
    top_induction = [circuits.head_label(*h) for h in run.scores.top_heads("induction", 2)]
    if not set(glue.kept("circuits_ablate", lambda: top_induction)) <= set(heads):  # another model's heads
        st.session_state["circuits_ablate"] = top_induction
    glue.kept("circuits_mode", lambda: next(iter(circuits.ABLATIONS)))
    chosen = tuple(heads[label] for label in st.multiselect("Heads to ablate", list(heads), key="circuits_ablate"))
    mode = st.radio("Ablation", list(circuits.ABLATIONS), horizontal=True, key="circuits_mode",
                    format_func=circuits.ABLATIONS.get)
    if not chosen:
        return st.info("Pick one or more heads to ablate.")
    st.subheader("On the repeated random tokens")
    ablated = cached_repeated(bundle, length, seed, ablate=chosen, mode=mode)
    glue.metrics_row(views.ablation_metrics(run, ablated))
    copy_loss(run, ablated, "ablation_copy_loss")
    st.subheader("On the patching prompts")
    choice = current_task()
    if choice.task is None:
        return st.info("Fix the prompt pair on the Activation patching tab to see the metric here.")
    result = cached_ablation(bundle, choice.task, chosen, mode)
    glue.draw_chart(charts.ablation_bars, result)  # in a column, its bars ran under the table
    glue.download_buttons(result.to_frame(), "ablation_metric")
    st.write("**Next-token prediction on the clean prompt, before and after the ablation**")
    st.dataframe(result.ablation.to_frame(), hide_index=True)
    glue.download_buttons(result.ablation.to_frame(), "ablation_top_tokens")


for tab, draw in ((detect_tab, detectors_tab), (patch_tab, patching_tab), (ablate_tab, ablation_tab)):
    if tab.open:
        with tab:
            draw()
