"""Circuits page: find heads with detectors, then test what they do by activation patching, attribution
patching and ablation.

Thin: widgets -> one cached call into interp_core.circuits / interp_core.patching -> a chart builder -> draw.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interp_core.charts import selected_point
from interp_core.charts.circuits import (
    HEAD_PICK,
    ablation_bars,
    copy_loss_chart,
    detector_grid,
    head_patching_heatmap,
    patching_scatter,
    repeated_pattern_heatmap,
    resid_patching_heatmap,
    shared_vmax,
)
from interp_core.charts.tokens import markdown_escape
from interp_core.circuits import (
    ABLATIONS,
    DEFAULT_LENGTH,
    DETECTORS,
    head_label,
    max_repeat_length,
    prompt_head_scores,
    run_repeated,
)
from interp_core.errors import UserInputError
from interp_core.patching import (
    PRESET_NAMES,
    PRESETS,
    ablate_on_task,
    activation_patching,
    attribution_patching,
    patching_correlation,
    preset_task,
    task_from_prompts,
)
from interp_core.settings import limits
from interp_core.streamlit_glue import (
    cached_result,
    download_buttons,
    draw_chart,
    layer_head_picker,
    page_header,
    persistent_int,
    query_choice,
    sidebar,
    sync_query,
)

OWN_PAIR = "Your own pair"
PAIR_CHOICES = (*PRESET_NAMES, OWN_PAIR)
PAIR_DEFAULTS = {  # the user's pair starts as the IOI preset so the form shows the expected shape
    "pair_clean": PRESETS["IOI: subject swapped"].clean,
    "pair_corrupt": PRESETS["IOI: subject swapped"].corrupt,
    "pair_answer": PRESETS["IOI: subject swapped"].answer,
    "pair_foil": PRESETS["IOI: subject swapped"].foil,
}

st.set_page_config(page_title="Circuits · Interpretability workbench", layout="wide")
page_header("Circuits", "Find heads by what they attend to (**detectors** on random tokens repeated twice), then "
            "test what they do: **activation patching** copies one activation from a clean prompt into a "
            "corrupted one and measures how much of the right answer comes back (1 = all of it, 0 = none); "
            "**attribution patching** estimates the same from one backward pass; **ablation** switches heads off.")
sel = sidebar()
bundle = sel.bundle

for key in ("circuits_detector", "circuits_mode", "circuits_ablate", *PAIR_DEFAULTS):  # keep across pages
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]
for key, value in PAIR_DEFAULTS.items():
    st.session_state.setdefault(key, value)


# -- cached calls (keyed on the model reference; the bundle itself is not hashed) ----------------------------


@cached_result(spinner="Running the repeated random tokens...")
def cached_repeated(_bundle, ref: str, length: int, seed: int, ablate: tuple = (), mode: str = "zero"):
    return run_repeated(_bundle, length=length, seed=seed, ablate=ablate, mode=mode)


@cached_result()
def cached_prompt_scores(_bundle, _trace, ref: str, prompt: str):
    return prompt_head_scores(_bundle, _trace)


@cached_result()
def cached_exact(_bundle, _task, ref: str, task_key: tuple, kind: str):
    """Exact patching of every `kind` site; a progress bar shows while the batches run (cache miss only)."""
    bar = st.progress(0.0, text="Patching the residual stream..." if kind == "resid" else "Patching the heads...")
    result = activation_patching(_bundle, _task, kind,
                                 progress=lambda f, text: bar.progress(min(max(float(f), 0.0), 1.0), text=text))
    bar.empty()
    return result


@cached_result(spinner="Attribution patching...")
def cached_attribution(_bundle, _task, ref: str, task_key: tuple):
    return attribution_patching(_bundle, _task)


@cached_result(spinner="Ablating...")
def cached_ablation(_bundle, _task, ref: str, task_key: tuple, heads: tuple, mode: str):
    return ablate_on_task(_bundle, _task, list(heads), mode)


def show_problem(exc: UserInputError) -> None:
    """The message of a user-facing error, with Markdown syntax escaped: it may quote the user's token text."""
    st.error(markdown_escape(str(exc)))


def open_clicked_head() -> None:
    """Grid click (runs before the script): show the clicked head in the layer and head boxes."""
    for key in ("circuits_grid", "circuits_prompt_grid"):
        picked = selected_point(st.session_state.get(key), HEAD_PICK)
        if picked and (picked["layer"], picked["head"]) != st.session_state.get(f"{key}_seen"):
            st.session_state[f"{key}_seen"] = (picked["layer"], picked["head"])
            st.session_state["layer"] = int(picked["layer"])
            st.session_state["head"] = int(picked["head"])


TABS = {"detectors": "Head detectors", "patching": "Activation patching", "ablation": "Ablation"}
if "circuits_tab" not in st.session_state:  # a new session: a shared link may say which tab
    st.session_state["circuits_tab"] = TABS[query_choice("tab", list(TABS), "detectors")]
st.session_state["circuits_tab"] = st.session_state["circuits_tab"]  # keep across pages
# Only the open tab runs and draws (on_change="rerun"): drawing all three every run made a page switch slow.
detect_tab, patch_tab, ablate_tab = st.tabs(list(TABS.values()), key="circuits_tab", on_change="rerun")
sync_query(tab=next(slug for slug, label in TABS.items() if label == st.session_state["circuits_tab"]))

# -- shared by the tabs: the repeated random tokens and the prompt pair (cheap, cached) --------------------------
longest = max_repeat_length(bundle)
length = int(persistent_int("rep_length", min(DEFAULT_LENGTH, longest), 2, longest))
seed = int(persistent_int("rep_seed", 0, 0, 1_000_000))
sync_query(rep_length=length, rep_seed=seed, pair=persistent_int("pair", 0, 0, len(PAIR_CHOICES) - 1))
run = cached_repeated(bundle, sel.ref, length, seed)


def current_task():
    """(task, cache key, problem) of the chosen prompt pair; task is None and problem says why when it is bad."""
    name = PAIR_CHOICES[st.session_state["pair"]]
    try:
        if name == OWN_PAIR:
            values = tuple(st.session_state[k] for k in PAIR_DEFAULTS)
            return task_from_prompts(bundle, *values), (OWN_PAIR, *values), None
        return preset_task(bundle, name), (name,), None
    except UserInputError as exc:
        return None, None, exc


# -- head detectors ----------------------------------------------------------------------------------------------
def detectors_tab() -> None:
    left, middle, right = st.columns([1, 1, 2])
    left.number_input("Tokens per copy", 2, longest, key="rep_length",
                      help=f"Each random sequence is BOS + A + A; at most {longest} tokens per copy "
                           f"(max_prompt_tokens = {limits().max_prompt_tokens}).")
    middle.number_input("Seed", 0, 1_000_000, key="rep_seed",
                        help="Which random tokens: the same seed and length give the same sequences.")
    detector = right.radio("Detector", list(DETECTORS), horizontal=True, key="circuits_detector")
    st.caption(f"Measured on {run.scores.source}. " + DETECTORS[detector].capitalize() + ".")

    grid_col, info_col = st.columns([1, 1])
    selected = (st.session_state.get("layer"), st.session_state.get("head"))
    with grid_col:
        draw_chart(detector_grid, run.scores, detector, selected=selected,
                   on_select=open_clicked_head, selection_mode=HEAD_PICK, key="circuits_grid")
    with info_col:
        a, b = st.columns(2)
        a.metric("Loss, first copy", f"{run.copy_loss(1):.2f} nats")
        b.metric("Loss, second copy", f"{run.copy_loss(2):.2f} nats",
                 delta=f"{run.copy_loss(2) - run.copy_loss(1):+.2f}", delta_color="inverse")
        st.caption("Random tokens cannot be predicted the first time; an induction head lets the model copy the "
                   "second time, so the second copy's loss falls far below the first. Induction needs a "
                   "previous-token head in an earlier layer, so layer 0 cannot hold an induction head.")
    with st.expander("Scores of every head (table)"):
        st.dataframe(run.scores.wide_frame(), hide_index=True)
    download_buttons(run.scores.to_frame(), "head_detector_scores")

    st.subheader("One head")
    top = (run.scores.top_heads(detector, k=1) or [(0, 0)])[0]  # a fresh session starts at the detector's best
    layer, head = layer_head_picker(bundle, default_layer=top[0], default_head=top[1])
    draw_chart(repeated_pattern_heatmap, run, layer, head)
    ablated = cached_repeated(bundle, sel.ref, length, seed, ((layer, head),), "zero")
    draw_chart(copy_loss_chart, run, ablated)
    st.caption(f"Solid: the intact model. Dashed: {head_label(layer, head)} zero-ablated. If the dashed second "
               "copy rises, this head helps copying.")
    download_buttons(pd.concat([run.loss_frame(), ablated.loss_frame()]), f"copy_loss_{head_label(layer, head)}")

    st.subheader("The same detectors on your prompt")
    prompt_scores = cached_prompt_scores(bundle, sel.trace, sel.ref, sel.prompt)
    if sel.trace.n_pos < 2:
        st.info("Detectors need at least two tokens: type a longer prompt in the sidebar.")
    elif detector in ("induction", "duplicate") and prompt_scores.score(detector).isnan().all():
        st.info("No token occurs twice in your prompt, so the induction and duplicate-token scores are undefined "
                "there (grey). Repeat a phrase to measure them.")
    draw_chart(detector_grid, prompt_scores, detector, selected=selected,
               on_select=open_clicked_head, selection_mode=HEAD_PICK, key="circuits_prompt_grid")
    download_buttons(prompt_scores.to_frame(), "head_detector_scores_prompt")


# -- activation patching -------------------------------------------------------------------------------------------
def pair_form() -> None:
    """The pair picker, and for "Your own pair" the form for its prompts and tokens."""
    st.selectbox("Clean and corrupted prompts", list(range(len(PAIR_CHOICES))), key="pair",
                 format_func=PAIR_CHOICES.__getitem__)
    if PAIR_CHOICES[st.session_state["pair"]] == OWN_PAIR:
        with st.form("own_pair"):
            c1, c2 = st.columns(2)
            c1.text_input("Clean prompt", key="pair_clean")
            c2.text_input("Corrupted prompt (same number of tokens)", key="pair_corrupt")
            c1.text_input("Answer token (what the clean prompt should predict)", key="pair_answer")
            c2.text_input("Foil token (what the corrupted prompt pushes towards)", key="pair_foil")
            st.form_submit_button("Use this pair")
        st.caption("Answer and foil must each be one token; most words need their leading space, like ' Paris'.")


def patching_tab() -> None:
    pair_form()
    task, task_key, problem = current_task()
    if problem is not None:
        show_problem(problem)
        return
    if task.description:
        st.caption(task.description)
    pair_frame = task.to_frame()
    st.dataframe(pair_frame, hide_index=True, height=min(400, 38 + 35 * len(pair_frame)))
    st.dataframe(pd.DataFrame({"answer": [task.answer], "foil": [task.foil]}), hide_index=True)
    try:
        exact = {kind: cached_exact(bundle, task, sel.ref, task_key, kind) for kind in ("resid", "head")}
        approx = cached_attribution(bundle, task, sel.ref, task_key)
    except UserInputError as exc:
        show_problem(exc)
        return
    a, b = st.columns(2)
    a.metric("Logit difference, clean prompt", f"{exact['head'].clean_metric:+.3f}")
    b.metric("Logit difference, corrupted prompt", f"{exact['head'].corrupt_metric:+.3f}")
    if exact["head"].weak_contrast:
        gap = abs(exact["head"].clean_metric - exact["head"].corrupt_metric)
        st.warning(f"The clean and corrupted logit differences are only {gap:.3f} apart. The normalised values "
                   "divide by that gap, so they are large and noisy: pick prompts (or an answer and a foil) the "
                   "model tells apart more clearly.")
    st.caption("Logit difference = logit(answer) - logit(foil) at the last position. Heatmaps show "
               "(patched - corrupted) / (clean - corrupted): blue 1 = that one activation brings the clean "
               "answer back, white 0 = no effect, red = pushes the wrong way.")
    for kind, chart in (("resid", resid_patching_heatmap), ("head", head_patching_heatmap)):
        patching_section(kind, exact[kind], approx[kind], chart)


def patching_section(kind: str, exact, estimate, chart) -> None:
    """Exact and attribution patching of one kind of site, their scatter and the downloads."""
    vmax = shared_vmax(exact, estimate)
    r = patching_correlation(exact, estimate)
    st.subheader("Residual stream (layer x position)" if kind == "resid" else "Heads (layer x head)")
    # one under the other: side by side, columns clip a heatmap and its legend (12 heads, or many positions)
    draw_chart(chart, exact, vmax)
    draw_chart(chart, estimate, vmax)
    draw_chart(patching_scatter, exact, estimate, r)
    st.caption(f"Exact patching ran {exact.values.numel()} patched forward passes in batches; attribution "
               f"patching needed one backward pass. Correlation between them: r = {r:.3f}.")
    download_buttons(pd.concat([exact.to_frame(), estimate.to_frame()]), f"patching_{kind}")


# -- ablation ----------------------------------------------------------------------------------------------------
def ablation_tab() -> None:
    all_heads = [(layer, head) for layer in range(bundle.n_layers) for head in range(bundle.n_heads)]
    labels = [head_label(*h) for h in all_heads]
    if "circuits_ablate" not in st.session_state or not set(st.session_state["circuits_ablate"]) <= set(labels):
        st.session_state["circuits_ablate"] = [head_label(*h) for h in run.scores.top_heads("induction", k=2)]
    chosen = st.multiselect("Heads to ablate", labels, key="circuits_ablate")
    mode = st.radio("Ablation", list(ABLATIONS), horizontal=True, key="circuits_mode",
                    format_func={"zero": "zero (the head writes nothing)",
                                 "mean": "mean (the head writes its average output)"}.get)
    heads = tuple(all_heads[labels.index(label)] for label in chosen)
    if not heads:
        st.info("Pick one or more heads to ablate.")
        return
    st.subheader("On the repeated random tokens")
    ablated_run = cached_repeated(bundle, sel.ref, length, seed, heads, mode)
    a, b = st.columns(2)
    a.metric("Loss, second copy, intact", f"{run.copy_loss(2):.2f} nats")
    b.metric("Loss, second copy, ablated", f"{ablated_run.copy_loss(2):.2f} nats",
             delta=f"x{ablated_run.copy_loss(2) / max(run.copy_loss(2), 1e-9):.1f}", delta_color="off")
    draw_chart(copy_loss_chart, run, ablated_run)
    download_buttons(pd.concat([run.loss_frame(), ablated_run.loss_frame()]), "ablation_copy_loss")
    st.subheader("On the patching prompts")
    task, task_key, problem = current_task()
    if task is None:
        st.info("Fix the prompt pair on the Activation patching tab to see the metric here.")
        return
    result = cached_ablation(bundle, task, sel.ref, task_key, heads, mode)
    draw_chart(ablation_bars, result)  # in a column, its bars ran under the table
    download_buttons(result.to_frame(), "ablation_metric")
    st.write("**Next-token prediction on the clean prompt, before and after the ablation**")
    st.dataframe(result.ablation.to_frame(), hide_index=True)
    download_buttons(result.ablation.to_frame(), "ablation_top_tokens")


for tab, draw in ((detect_tab, detectors_tab), (patch_tab, patching_tab), (ablate_tab, ablation_tab)):
    if tab.open:
        with tab:
            draw()
