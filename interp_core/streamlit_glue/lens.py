"""The Logit lens page's choice of lens: the logit lens, or a tuned lens (the shipped organism's, one loaded from a
tuned-lens folder's files, or one trained here on text), kept per model in this session only (nothing is written
on the server), with the held-out text its KL chart is measured on."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from interp_core.charts.tokens import markdown_escape
from interp_core.errors import UserInputError
from interp_core.lens import tuned
from interp_core.lens.lens import LensResult, logit_lens, resid_labels
from interp_core.loading import ModelBundle
from interp_core.settings import SHIPPED_MODEL, limits
from interp_core.streamlit_glue.models import Selection, cached_result
from interp_core.streamlit_glue.state import kept
from interp_core.streamlit_glue.widgets import kept_upload, progress_bar

LENSES = {"logit": "Logit lens", "tuned": "Tuned lens"}
SEQ_LEN, BATCH = 64, 4  # training rows: small batches keep a step of a 50k-vocabulary model near a second


@dataclass(frozen=True, eq=False)
class LensChoice:
    """The lens the page decodes with (None: the logit lens), what to call it, and held-out text to measure on."""

    lens: tuned.TunedLens | None
    name: str  # "Logit lens" or "Tuned lens"
    available: tuned.TunedLens | None  # the model's tuned lens, chosen or not (the KL chart compares both)
    held_out: list | None  # [batch, pos] token ids, or None when there is no text to measure on
    shipped: bool = False  # the chosen lens is the shipped organism's (a re-check can load it again)


@cached_result(spinner="Loading the shipped tuned lens...")
def _shipped(_bundle: ModelBundle, ref: str) -> tuned.TunedLens | None:
    from interp_core.organism.tuned_lens import LENS_DIR

    return tuned.load(_bundle, LENS_DIR) if (LENS_DIR / "config.json").is_file() else None


@cached_result(spinner="Drawing held-out organism text...")
def _organism_held_out(_bundle: ModelBundle, ref: str) -> list:
    from interp_core.organism.tuned_lens import held_out_batches

    return held_out_batches(_bundle, tokens=8_000)


def lens_choice(bundle: ModelBundle) -> LensChoice:
    """The lens radio (`?lens=`) and, in an expander, where the tuned lens comes from; falls back to the logit
    lens, with a note, when the model has no tuned lens yet."""
    kept("lens_kind", lambda: "logit", link="lens", options=list(LENSES))
    kind = st.radio("Decode with", list(LENSES), key="lens_kind", horizontal=True, format_func=LENSES.get,
                    help="The tuned lens translates each layer's residual stream with an affine map trained to "
                         "match the model's output (Belrose et al. 2023) before decoding it.")
    store = f"tuned_lens::{bundle.ref}"
    shipped = _shipped(bundle, bundle.ref) if bundle.ref == SHIPPED_MODEL else None
    current = st.session_state[store][0].origin if store in st.session_state else (
        "the shipped lens" if shipped else "none for this model yet")
    with st.expander("Tuned lens: " + markdown_escape(current)):
        _load_widgets(bundle, store)
        _train_widgets(bundle, store)
    lens, held_out = st.session_state.get(store, (shipped, None))
    if bundle.ref == SHIPPED_MODEL and held_out is None:
        held_out = _organism_held_out(bundle, bundle.ref)
    if kind == "tuned" and lens is None:
        st.info("This model has no tuned lens yet: load one or train one in the box above. Showing the logit lens.")
    chosen = lens if kind == "tuned" else None
    return LensChoice(chosen, LENSES["logit" if chosen is None else "tuned"], lens, held_out,
                      shipped=chosen is not None and chosen is shipped)


def _load_widgets(bundle: ModelBundle, store: str) -> None:
    st.file_uploader("Load a lens: its config.json with params.pt (the tuned-lens library) or lens.safetensors "
                     "(saved here)", type=["json", "pt", "safetensors"], accept_multiple_files=True,
                     key="lens_files", on_change=_load_files, args=(bundle, store))
    if st.session_state.get("lens_problem"):
        st.error(markdown_escape(st.session_state["lens_problem"]))


def _load_files(bundle: ModelBundle, store: str) -> None:
    """The uploader's files as this model's tuned lens (runs when they change), or the problem with them."""
    files, st.session_state["lens_problem"] = st.session_state.get("lens_files") or [], None
    if not files:
        return
    try:
        if sum(file.size for file in files) > limits().max_upload_bytes:
            raise tuned.LensFileError(f"The lens files are over the {limits().max_upload_bytes:,}-byte cap.")
        with tempfile.TemporaryDirectory() as folder:
            for file in files:
                (Path(folder) / Path(file.name).name).write_bytes(file.getvalue())
            lens = tuned.load(bundle, folder)
        origin = "loaded from " + ", ".join(file.name for file in files)
        st.session_state[store] = (tuned.TunedLens(lens.weight, lens.bias, origin), None)
    except UserInputError as exc:
        st.session_state["lens_problem"] = str(exc)


def _train_widgets(bundle: ModelBundle, store: str) -> None:
    cap = limits()
    rows = "rows of the organism's own training text, 128 tokens each" if bundle.ref == SHIPPED_MODEL else (
        f"rows of {SEQ_LEN} tokens")
    steps = st.number_input("Training steps", 10, cap.max_lens_steps, min(300, cap.max_lens_steps), step=10,
                            key="lens_steps", help=f"Each step reads {BATCH} {rows}.")
    text = None
    if bundle.ref != SHIPPED_MODEL:
        upload = kept_upload("Text to train on (a .txt file; the last tenth is held out)", key="lens_text",
                             types=["txt"])
        text = upload["data"].decode("utf-8", errors="replace") if upload else None
    if not st.button("Train a tuned lens", key="lens_train", disabled=bundle.ref != SHIPPED_MODEL and not text):
        return
    if text is None:  # the organism: its own training rows
        from interp_core.organism.tuned_lens import TRAIN_SEED, organism_batches

        batches = organism_batches(bundle.tokenizer, 40 * SEQ_LEN * BATCH, TRAIN_SEED, BATCH)
    else:
        batches = tuned.text_batches(bundle, text[:cap.max_upload_bytes], SEQ_LEN, BATCH)[:cap.max_lens_batches]
    cut = max(1, len(batches) // 10) if len(batches) > 1 else 0
    try:
        training = tuned.train(bundle, batches[:len(batches) - cut], int(steps),
                               progress=progress_bar("Training the tuned lens"))
    except ValueError as exc:
        st.error(f"{exc}: the text gives {len(batches)} batches of {BATCH} x {SEQ_LEN} tokens.")
        return
    lens = training.lens
    origin = f"trained here ({int(steps)} steps, {training.tokens:,} tokens, {training.seconds:.0f} s)"
    st.session_state[store] = (tuned.TunedLens(lens.weight, lens.bias, origin), batches[len(batches) - cut:] or None)
    st.rerun()  # the box's title and the charts show the new lens


@cached_result()
def _decoded(_bundle: ModelBundle, _trace, _tuned, ref: str, prompt: str, target_id: int, lens_digest: str):
    return logit_lens(_bundle, _trace, target_id, progress=progress_bar("Decoding the residual stream"),
                      tuned=_tuned)


def decoded(sel: Selection, lens: tuned.TunedLens | None, target_id: int) -> LensResult:
    """The logit lens (lens None) or tuned lens of the sidebar's trace; a progress bar shows on a cache miss."""
    return _decoded(sel.bundle, sel.trace, lens, sel.ref, sel.prompt, target_id, lens.digest if lens else "")


@cached_result(spinner="Measuring both lenses on held-out text...")
def _held_out(_bundle: ModelBundle, _lens: tuned.TunedLens, _batches: list, ref: str, lens_digest: str):
    return tuned.layer_divergence(_bundle, _batches, _lens, "held-out text", resid_labels(_bundle.n_layers))


def divergence_frame(sel: Selection, choice: LensChoice, target_id: int) -> pd.DataFrame | None:
    """Both lenses' KL to the model's output and top-1 agreement per row, on the prompt and on held-out text
    (Divergence.to_frame rows); None when the model has no tuned lens."""
    lens = choice.available
    if lens is None:
        return None
    found = [tuned.Divergence.of_prompt(decoded(sel, None, target_id), decoded(sel, lens, target_id))]
    if choice.held_out:
        found.append(_held_out(sel.bundle, lens, choice.held_out, sel.ref, lens.digest))
    return pd.concat([d.to_frame() for d in found], ignore_index=True)
