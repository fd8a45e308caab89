"""The Features page's choices: the sparse autoencoder (the shipped organism's, one loaded from SAELens files or a
local folder, or one trained here), kept per model in this session only, and the corpus its feature cards read
(the organism's generator, or an uploaded text file within the caps)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from interp_core.charts.features import quality_chart
from interp_core.charts.tokens import coloured_tokens_html, markdown_escape
from interp_core.errors import UserInputError
from interp_core.features import card as cards
from interp_core.features import sae as saes
from interp_core.features.quality import quality_frame, quality_metrics
from interp_core.features.steering import Steering
from interp_core.features.train import TrainSettings, check_limits, train
from interp_core.features.truth import PRECISE, KnownTruth
from interp_core.figures import Metric
from interp_core.lens.tuned import text_batches
from interp_core.loading import ModelBundle
from interp_core.settings import SHIPPED_MODEL, SHIPPED_MODEL_DIR, is_hosted, limits
from interp_core.streamlit_glue.models import cached_result
from interp_core.streamlit_glue.widgets import download_buttons, draw_chart, kept_upload, metrics_row, progress_bar

SHIPPED_SAES = SHIPPED_MODEL_DIR / "saes"
TRAIN_ROWS, TRAIN_SEQ = 32, 128  # one training batch of the page's own trainer


@dataclass(frozen=True, eq=False)
class SaeChoice:
    sae: saes.SAE
    origin: str  # where it came from, for the page's captions
    shipped: bool  # the shipped organism SAE (a finding on it can be re-checked)
    folder: Path | None = None  # the shipped SAE's folder (its card.json holds its quality)


def shipped_folders() -> list[Path]:
    """The shipped organism's SAE folders (one per activation it reads)."""
    return sorted(p.parent for p in SHIPPED_SAES.glob(f"*/{saes.CFG_FILE}")) if SHIPPED_SAES.is_dir() else []


@cached_result(spinner="Loading the shipped SAE...")
def _shipped(_bundle: ModelBundle, ref: str, folder: str) -> saes.SAE:
    return saes.load(_bundle, folder)


def sae_choice(bundle: ModelBundle) -> SaeChoice | None:
    """The SAE box (load, or train) in an expander titled by the current SAE; None when the model has none yet."""
    store = f"sae::{bundle.ref}"
    shipped = shipped_folders() if bundle.ref == SHIPPED_MODEL else []
    if store not in st.session_state and shipped:
        st.session_state[store] = SaeChoice(_shipped(bundle, bundle.ref, str(shipped[0])),
                                            f"the shipped SAE ({shipped[0].name})", True, shipped[0])
    current = st.session_state.get(store)
    with st.expander("Sparse autoencoder: " + markdown_escape(current.origin if current else "none for this model yet"),
                     expanded=current is None):
        _load_widgets(bundle, store)
        _train_widgets(bundle, store)
    return st.session_state.get(store)


def _load_widgets(bundle: ModelBundle, store: str) -> None:
    st.file_uploader(f"Load an SAE in SAELens' format: its {saes.CFG_FILE} and {saes.WEIGHTS_FILE}",
                     type=["json", "safetensors"], accept_multiple_files=True, key="sae_files",
                     on_change=_load_files, args=(bundle, store))
    if not is_hosted():
        st.text_input("... or the path of a folder on this machine", key="sae_folder", on_change=_load_folder,
                      args=(bundle, store), placeholder="/path/to/sae (cfg.json, sae_weights.safetensors)")
    if st.session_state.get("sae_problem"):
        st.error(markdown_escape(st.session_state["sae_problem"]))


def _keep(store: str, load, origin: str) -> None:
    """Store `load()` as this model's SAE, or the problem with it."""
    st.session_state["sae_problem"] = None
    try:
        st.session_state[store] = SaeChoice(load(), origin, False)
    except UserInputError as exc:
        st.session_state["sae_problem"] = str(exc)


def _load_files(bundle: ModelBundle, store: str) -> None:
    files = st.session_state.get("sae_files") or []
    if not files:
        return

    def load() -> saes.SAE:
        if sum(file.size for file in files) > limits().max_upload_bytes:
            raise saes.SAEFileError(f"The SAE files are over the {limits().max_upload_bytes:,}-byte cap.")
        with tempfile.TemporaryDirectory() as folder:
            for file in files:
                (Path(folder) / Path(file.name).name).write_bytes(file.getvalue())
            return saes.load(bundle, folder)

    _keep(store, load, "loaded from " + ", ".join(file.name for file in files))


def _load_folder(bundle: ModelBundle, store: str) -> None:
    folder = (st.session_state.get("sae_folder") or "").strip()
    if folder:
        _keep(store, lambda: saes.load(bundle, Path(folder).expanduser()), f"loaded from {folder}")


def _train_widgets(bundle: ModelBundle, store: str) -> None:
    """Train an SAE here: on the organism's generator for the organism, on an uploaded text file otherwise."""
    cap = limits()
    st.markdown("**Or train one here** (TopK with the auxiliary loss for dead latents; Gao et al. 2024)")
    c_hook, c_size, c_k, c_tokens = st.columns([3, 2, 1, 2])
    hook = c_hook.text_input("Activation", f"blocks.{bundle.n_layers // 2}.hook_resid_pre", key="sae_train_hook")
    d_sae = c_size.number_input("Latents", 64, cap.max_sae_latents, min(1024, cap.max_sae_latents), step=64,
                                key="sae_train_latents")
    k = c_k.number_input("k", 1, 256, 12, key="sae_train_k")
    tokens = c_tokens.number_input("Tokens", 65_536, cap.max_sae_train_tokens, min(500_000, cap.max_sae_train_tokens),
                                   step=65_536, key="sae_train_tokens")
    text = None
    if bundle.ref != SHIPPED_MODEL:
        upload = kept_upload("Text to train on (a .txt file)", key="sae_text", types=["txt"])
        text = upload["data"].decode("utf-8", errors="replace") if upload else None
    if not st.button("Train an SAE", key="sae_train", disabled=bundle.ref != SHIPPED_MODEL and not text):
        return
    try:
        settings = TrainSettings(hook.strip(), d_sae=int(d_sae), k=int(k), tokens=int(tokens))
        check_limits(settings, cap)
        saes.activation_width(bundle, settings.hook_name)  # a plain message for a name the model lacks
        training = train(bundle, _training_batches(bundle, text, settings.tokens), settings,
                         progress=progress_bar("Training the SAE"))
    except UserInputError as exc:
        st.error(markdown_escape(str(exc)))
        return
    origin = (f"trained here ({settings.hook_name}, {settings.d_sae} latents, k {settings.k}, {training.tokens:,} "
              f"tokens, {training.seconds:.0f} s)")
    st.session_state[store] = SaeChoice(training.sae, origin, False)
    st.rerun()  # the box's title and the page show the new SAE


def _training_batches(bundle: ModelBundle, text: str | None, tokens: int):
    """Token batches for training: the organism's generator (seeded like the shipped SAE's text, other draws), or
    the uploaded text (cut at the upload cap) cycled until `tokens`."""
    if text is None:
        from interp_core.organism.token_labels import APP_TRAINING_SEED, labelled_rows

        rows = labelled_rows(bundle.tokenizer, tokens // TRAIN_SEQ + TRAIN_ROWS, seed=APP_TRAINING_SEED).ids
        return list(rows.split(TRAIN_ROWS))
    batches = text_batches(bundle, text[:limits().max_upload_bytes], TRAIN_SEQ, TRAIN_ROWS)
    if not batches:
        raise UserInputError(f"The text gives fewer than {TRAIN_ROWS * TRAIN_SEQ:,} tokens; give more text.")
    return [batches[i % len(batches)] for i in range(max(1, tokens // (TRAIN_ROWS * TRAIN_SEQ)) + 1)]


def corpus_rows(bundle: ModelBundle) -> tuple[torch.Tensor, str] | None:
    """The token rows [row, pos] feature cards read and what they are: the organism's generator, or an uploaded
    text file (needed for any other model; None until there is one)."""
    if bundle.ref == SHIPPED_MODEL:
        rows = _organism_rows(bundle, bundle.ref)
        return rows, f"the organism's generator ({rows.numel():,} tokens)"
    upload = kept_upload("Text for the feature cards (a .txt file)", key="feature_text", types=["txt"])
    if upload is None:
        return None
    rows = _text_rows(bundle, bundle.ref, upload["data"])
    if len(rows) == 0:
        raise UserInputError("The text file gives less than one row of 64 tokens; upload more text.")
    return rows, f"{upload['name']} ({rows.numel():,} tokens)"


@cached_result(spinner="Drawing organism text...")
def _organism_rows(_bundle: ModelBundle, ref: str) -> torch.Tensor:
    from interp_core.organism.token_labels import card_rows

    return card_rows(_bundle.tokenizer).ids


@cached_result(spinner="Tokenising the text...")
def _text_rows(_bundle: ModelBundle, ref: str, data: bytes) -> torch.Tensor:
    text = data[:limits().max_upload_bytes].decode("utf-8", errors="replace")
    batches = text_batches(_bundle, text, 64, 1)[:limits().max_feature_corpus_tokens // 64]
    return torch.cat(batches) if batches else torch.zeros(0, 64, dtype=torch.long)


def card_metrics(card: cards.FeatureCard, corpus: str) -> tuple[Metric, ...]:
    return (Metric("Fires on", f"{card.density:.3%}", help=f"Share of the tokens of {corpus} where it is active"),
            Metric("Largest activation", f"{card.max_activation:.3f}"),
            Metric("Top promoted token", card.promoted[0][0] if card.promoted else "-",
                   help="The token whose logit its decoder direction raises most"))


def contexts(card: cards.FeatureCard) -> None:
    """The top contexts, then (in an expander) a few from each activation interval, each coloured by the latent."""
    vmax = max(card.max_activation, 1e-9)
    for label, found in card.bins:
        if label != "top":
            continue
        st.markdown(f"**Where it fires most** (top {len(found)} of the corpus)")
        st.html("".join(coloured_tokens_html(c.tokens, c.values, diverging=False, vmax=vmax) for c in found[:10]))
    with st.expander("Contexts from each activation interval"):
        for (label, found), (low, high, share) in zip(card.bins, card.bin_bounds, strict=True):
            if label == "top" or not found:
                continue
            st.markdown(f"**{low:.3f} to {high:.3f}** ({share:.3%} of tokens)")
            st.html("".join(coloured_tokens_html(c.tokens, c.values, diverging=False, vmax=vmax) for c in found))


def steering_view(steering: Steering) -> None:
    """The two greedy continuations side by side."""
    left, right = st.columns(2)
    for column, label, tokens in ((left, "unsteered", steering.unsteered_continuation),
                                  (right, "steered", steering.steered_continuation)):
        also = " (also at each new token)" if label == "steered" and steering.steer_generated else ""
        column.caption(f"Greedy continuation, {label}{also}")
        column.code("".join(tokens).replace("␣", " ").replace("↵", "\n"), language=None, wrap_lines=True)


def truth_table(truth: KnownTruth) -> None:
    frame = truth.to_frame()
    share = {"min_value": 0, "max_value": 1, "format": "%.3f", "width": "small"}
    shown = ["label", "latent", "precision", "recall", "precise_latent", "precise_threshold", "precise_precision",
             "precise_recall"]  # the descriptions go in the label's tooltip; every column is in the download
    st.dataframe(frame.replace({"precise_latent": {-1: None}}), hide_index=True, column_order=shown, column_config={
        "label": st.column_config.TextColumn(help="; ".join(f"{m.label}: {m.description}" for m in truth.matches)),
        "latent": st.column_config.NumberColumn("best-F1 latent", width="small"),
        "precision": st.column_config.ProgressColumn(**share), "recall": st.column_config.ProgressColumn(**share),
        "precise_latent": st.column_config.NumberColumn(
            "precise latent", width="small", help=f"The most recalling latent at precision >= {PRECISE}"),
        "precise_threshold": st.column_config.NumberColumn(
            "from", format="%.3g", width="small", help="Counted where it fires at or above this activation"),
        "precise_precision": st.column_config.ProgressColumn("its precision", **share),
        "precise_recall": st.column_config.ProgressColumn("its recall", **share)})
    st.caption(f"On the {truth.n_tokens:,} organism tokens the cards read (held out from the shipped SAE's "
               f"training). {truth.n_met} of {len(frame)} labels have a latent with precision >= {PRECISE} and "
               "recall >= 0.5. Precision: of the tokens where the latent fires, the share with the label; recall: "
               "of the labelled tokens, the share where it fires. The precise match may count a latent only at "
               "its stronger activations (a threshold, as a dashboard's top quantiles are read). Where the best-F1 "
               "latent is less precise it "
               "tracks a wider concept (every name, every plural noun, every token of a random sequence) or the "
               "label splits over several latents. Type a latent above to see its card.")
    download_buttons(frame, "known_truth")


def quality_panel(choice: SaeChoice) -> None:
    """The shipped SAE's card (explained variance, loss recovered, L0, dead latents, and a sweep over k)."""
    path = choice.folder / "card.json" if choice.folder else None
    if path is None or not path.is_file():
        return
    about = json.loads(path.read_text(encoding="utf-8"))
    with st.expander("How well this SAE reconstructs the model"):
        metrics_row(quality_metrics(about))
        sweep = quality_frame(about)
        if sweep is not None:
            draw_chart(quality_chart, sweep)
            download_buttons(sweep, "sae_quality_by_k")
