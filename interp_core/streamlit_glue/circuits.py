"""Widgets the circuit pages share (Circuits, Patching, Ablation): the repeated random tokens, the clean and
corrupted prompt pair, and the per-token loss of an intact and an ablated run. Their values are kept across
the pages and mirrored in the URL (`?rep_length=&rep_seed=&pair=`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interp_core import circuits, patching
from interp_core.charts import circuits as charts
from interp_core.circuits import RepeatedRun
from interp_core.loading import ModelBundle
from interp_core.settings import limits
from interp_core.streamlit_glue.models import cached_result
from interp_core.streamlit_glue.state import kept, persistent_int, sync_query
from interp_core.streamlit_glue.widgets import download_buttons, draw_chart

PAIR_KEYS = {f"pair_{field}": getattr(patching.PRESETS["IOI: subject swapped"], field)  # the user's own pair
             for field in ("clean", "corrupt", "answer", "foil")}  # starts as IOI: the form shows the shape
cached_repeated = cached_result(spinner="Running the repeated random tokens...")(circuits.run_repeated)


def repeated_tokens(bundle: ModelBundle) -> RepeatedRun:
    """The boxes that choose the repeated random tokens BOS + A + A (length and seed, kept and mirrored in the
    URL) and the intact model's run on them."""
    longest = circuits.max_repeat_length(bundle)
    length = persistent_int("rep_length", min(circuits.DEFAULT_LENGTH, longest), 2, longest)
    seed = persistent_int("rep_seed", 0, 0, 1_000_000)
    sync_query(rep_length=length, rep_seed=seed)
    left, right = st.columns(2)
    left.number_input("Tokens per copy", 2, longest, key="rep_length", help=f"Each random sequence is BOS + A + A; "
                      f"at most {longest} tokens per copy (max_prompt_tokens = {limits().max_prompt_tokens}).")
    right.number_input("Seed", 0, 1_000_000, key="rep_seed", help="The same seed and length give the same tokens.")
    return cached_repeated(bundle, length, seed)


def ablated_run(bundle: ModelBundle, intact: RepeatedRun, heads: tuple[circuits.Head, ...],
                mode: str = "zero") -> RepeatedRun:
    """The run on the same tokens as `intact` with `heads` zero- or mean-ablated."""
    tokens = intact.sequences
    return cached_repeated(bundle, tokens.length, tokens.seed, ablate=heads, mode=mode)


def copy_loss(intact: RepeatedRun, ablated: RepeatedRun, name: str) -> None:
    """The per-token loss of an intact and an ablated run, and its download."""
    draw_chart(charts.copy_loss_chart, intact, ablated)
    download_buttons(pd.concat([intact.loss_frame(), ablated.loss_frame()]), name)


def prompt_pair(bundle: ModelBundle) -> patching.TaskChoice:
    """The clean / corrupted pair box (a preset, or the user's own pair in a form) and the task it gives, or the
    problem that stops it (prompts of different lengths, an answer of two tokens, ...)."""
    pair = persistent_int("pair", 0, 0, len(patching.PAIR_CHOICES) - 1)
    sync_query(pair=pair)
    own_pair = patching.PAIR_CHOICES[pair] == patching.OWN_PAIR
    for key, value in PAIR_KEYS.items():  # in the URL while the user's own pair is chosen
        kept(key, lambda value=value: value, link=key)
        if not own_pair:
            sync_query(**{key: None})
    st.selectbox("Clean and corrupted prompts", list(range(len(patching.PAIR_CHOICES))), key="pair",
                 format_func=patching.PAIR_CHOICES.__getitem__)
    if patching.PAIR_CHOICES[st.session_state["pair"]] == patching.OWN_PAIR:
        with st.form("own_pair"):
            left, right = st.columns(2)
            left.text_input("Clean prompt", key="pair_clean")
            right.text_input("Corrupted prompt (same number of tokens)", key="pair_corrupt")
            left.text_input("Answer token (what the clean prompt should predict)", key="pair_answer")
            right.text_input("Foil token (what the corrupted prompt pushes towards)", key="pair_foil")
            st.form_submit_button("Use this pair")
        st.caption("Answer and foil must each be one token; most words need their leading space, like ' Paris'.")
    return patching.choose_task(bundle, **pair_inputs())


def pair_inputs() -> dict:
    """The chosen pair as patching.choose_task's arguments (JSON values: a finding keeps them)."""
    return {"name": patching.PAIR_CHOICES[st.session_state["pair"]],
            "own": [st.session_state[key] for key in PAIR_KEYS]}
