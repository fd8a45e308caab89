"""The shared sidebar every page starts with: page links, the model picker and its precision, the prompt with its
examples, the model's facts, and the cached trace of the prompt (bad input stops the page with a plain message)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from interp_core.caches import cached_trace
from interp_core.errors import UserInputError
from interp_core.examples import EXAMPLES, corpus_loss, example_prompts, familiarity
from interp_core.loading import DTYPES, ModelBundle, default_dtype, dtype_name
from interp_core.settings import SHIPPED_MODEL, limits
from interp_core.streamlit_glue.models import (
    LOCAL_FOLDER,
    Selection,
    cached_bundle,
    cached_result,
    default_model_ref,
    model_options,
)
from interp_core.streamlit_glue.state import kept, link_value, start_run, sync_query
from interp_core.streamlit_glue.widgets import show_user_error
from interp_core.trace import Trace

APP_ROOT = Path(__file__).resolve().parents[2]  # folder of app.py and pages/
DEFAULT_PROMPT = "The capital of France is"
MAX_PROMPT_IN_URL = 1_000  # characters; longer prompts are not mirrored so links stay shareable

# Session-state keys of the shared sidebar widgets (also the query-parameter names, except the path box).
_CHOICE, _PATH, _PROMPT, _EXAMPLE, _DTYPE = "model_choice", "model_path", "prompt", "example_prompt", "dtype"
DTYPE_HELP = ("The precision the weights are loaded in. float32 is exact and the default on a CPU; bfloat16 and "
              "float16 halve the memory (the default on a GPU for a checkpoint stored in half precision). "
              "Softmax statistics, the lens' norms, attribution sums and probe features are computed in float32 "
              "either way; the model's own forward pass runs in the chosen precision.")


def page_files() -> list[tuple[str, str]]:
    """(path relative to app.py, label) of every page: the Overview, then pages/N_Name.py in the order of N.

    Streamlit's own page list is hidden (`client.showSidebarNavigation = false`) because it would call the
    entry page "app"; the sidebar draws these links instead, so a new file in pages/ shows up by itself.
    """
    found = [("app.py", "Overview")]
    for path in sorted((APP_ROOT / "pages").glob("*.py"), key=lambda p: int(p.stem.split("_")[0])):
        label = re.sub(r"^\d+_", "", path.stem).replace("_", " ").capitalize()  # "4_Logit_Lens" -> "Logit lens"
        found.append((f"pages/{path.name}", label))
    return found


def _navigation() -> None:
    for path, label in page_files():
        st.sidebar.page_link(path, label=label)
    st.sidebar.divider()


def _label(option: str) -> str:
    """Picker text: the shipped model marked as such, folders by their name (the full path is in the URL)."""
    label = f"{SHIPPED_MODEL} (shipped)" if option == SHIPPED_MODEL else option
    if os.sep in option and Path(option).expanduser().is_dir():
        label = f"{Path(option).name} (folder)"
    return f"{label}, default" if option == default_model_ref() and option != SHIPPED_MODEL else label


def _seed_model_state(options: Sequence[str]) -> None:
    """First run of a session: take the model from `?model=` when it is allowed, else the default."""
    raw = str(st.query_params.get("model", "")).strip()
    choice, path = options[0], ""
    if raw in options and raw != LOCAL_FOLDER:
        choice = raw
    elif raw and LOCAL_FOLDER in options:
        choice, path = LOCAL_FOLDER, raw
    elif raw:
        st.warning(
            f"Ignored `model={link_value(raw)}` from the link: this deployment offers only "
            f"{', '.join(options)}."
        )
    st.session_state[_CHOICE] = choice
    st.session_state[_PATH] = path


def _pick_model() -> str | None:
    """Draw the model picker; returns the chosen reference, or None while the folder box is empty."""
    options = model_options()
    if _CHOICE not in st.session_state or st.session_state[_CHOICE] not in options:
        _seed_model_state(options)
    st.session_state[_CHOICE] = st.session_state[_CHOICE]  # keep the value when another page runs
    st.session_state[_PATH] = st.session_state.get(_PATH, "")
    choice = st.sidebar.selectbox("Model", options, key=_CHOICE, format_func=_label)
    if choice != LOCAL_FOLDER:
        return choice
    path = st.sidebar.text_input(
        "Folder path (or a Hugging Face model id)",
        key=_PATH,
        placeholder="/path/to/model  or  EleutherAI/pythia-70m",
        help="A folder holding config.json, *.safetensors and a tokenizer.",
    ).strip()
    return path or None


def _pick_dtype(ref: str | None) -> str:
    """Draw the precision choice (`?dtype=`, seeded by the default for this machine and the first model)."""
    kept(_DTYPE, lambda: default_dtype(ref or ""), link="dtype", options=tuple(DTYPES))
    return st.sidebar.selectbox("Precision", tuple(DTYPES), key=_DTYPE, help=DTYPE_HELP)


def _pick_prompt(examples: dict[str, str]) -> str:
    kept(_PROMPT, lambda: str(st.query_params.get("prompt", DEFAULT_PROMPT)))

    def use_example() -> None:  # runs before the script: the prompt box shows the example
        st.session_state[_PROMPT] = examples[st.session_state[_EXAMPLE]]
        st.session_state[_EXAMPLE] = None

    st.sidebar.selectbox("Example prompts", list(examples), index=None, key=_EXAMPLE, on_change=use_example,
                         placeholder="Pick an example...",
                         help="A capital, an indirect object (IOI), subject-verb agreement, and a random sequence "
                              "repeated twice (induction): behaviours the shipped model was trained to have.")
    return st.sidebar.text_area(
        "Prompt", key=_PROMPT, height=100, help="Press Ctrl+Enter (or click outside the box) to run it."
    )


@cached_result()
def _reference_loss(_bundle: ModelBundle, ref: str) -> float:
    return corpus_loss(_bundle)


@cached_result()
def _familiarity(_bundle: ModelBundle, _trace: Trace, ref: str, prompt: str):
    """examples.familiarity, once per prompt (it tokenises every word and unembeds every position)."""
    return familiarity(_bundle, _trace, prompt, _reference_loss(_bundle, ref))


@cached_result()
def _parameter_count(_bundle: ModelBundle, ref: str) -> int:
    return sum(p.numel() for p in _bundle.model.parameters())


def _notice_if_unfamiliar(sel: Selection) -> None:
    """On the shipped organism, say so when the prompt lies outside what it knows."""
    if sel.ref != SHIPPED_MODEL:
        return
    found = _familiarity(sel.bundle, sel.trace, sel.ref, sel.prompt)
    if found.unfamiliar:
        st.info(f"{found.message} The shipped model knows only its own small world: pick one of the example "
                "prompts in the sidebar, or a general model such as gpt2.", icon="🧭")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def _show_facts(bundle: ModelBundle) -> None:
    n_params = _parameter_count(bundle, bundle.ref)
    st.sidebar.markdown(
        f"**{bundle.family}** · {bundle.n_layers} layers · {bundle.n_heads} heads  \n"
        f"d_model {bundle.d_model} · context {bundle.n_ctx} tokens  \n"
        f"{_count(n_params)} parameters · {dtype_name(bundle.dtype)}"
        + _placement(bundle)
    )


def _placement(bundle: ModelBundle) -> str:
    """Where the blocks live when accelerate spread the model (INTERP_MAX_MEMORY), e.g. "  \nblocks on cpu 3,
    disk 9"; empty for a model loaded whole."""
    device_map = getattr(bundle.model, "hf_device_map", None)
    if not device_map:
        return ""
    counts: dict[str, int] = {}
    for device in device_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return "  \nspread over " + ", ".join(f"{device} ({n} parts)" for device, n in counts.items())


def sidebar() -> Selection:
    """Draw the shared sidebar (model picker, prompt, model facts) and return the loaded selection.

    Bad input (empty prompt, unknown model, folder without weights, unsupported architecture) shows the
    plain message with st.error and stops the page; an over-long prompt is truncated with a warning.
    """
    start_run()
    _navigation()
    st.sidebar.header("Model and prompt")
    ref = _pick_model()
    dtype = _pick_dtype(ref)
    bundle = None
    if ref is not None:
        try:
            bundle = cached_bundle(ref, dtype)
        except UserInputError as exc:  # the message may quote the model reference from the link: keep it text
            show_user_error(exc)
    prompt = _pick_prompt(example_prompts(bundle) if bundle is not None else EXAMPLES)
    sync_query(model=ref or None, prompt=prompt if len(prompt) <= MAX_PROMPT_IN_URL else None)
    if ref is None:
        st.info(
            "Type the path of a local model folder (config.json, *.safetensors and tokenizer files) "
            "or a Hugging Face model id in the sidebar."
        )
        st.stop()
    _show_facts(bundle)
    try:
        trace = cached_trace(bundle, prompt)
    except UserInputError as exc:
        show_user_error(exc)
    if trace.truncated:
        st.warning(
            f"The prompt is {trace.n_prompt_tokens} tokens long; only the first {len(trace.tokens)} "
            f"tokens were kept (the limit max_prompt_tokens is {limits().max_prompt_tokens}; this model's context "
            f"is {bundle.n_ctx} tokens)."
        )
    selection = Selection(ref=ref, prompt=prompt, bundle=bundle, trace=trace)
    _notice_if_unfamiliar(selection)
    return selection
