"""Streamlit glue: the one module that imports Streamlit (cached loader, shared sidebar, query-param helpers).

Every page starts with

    sel = sidebar()            # model picker + prompt + model facts; stops the page on bad input
    layer = query_int("layer", 0, 0, sel.bundle.n_layers - 1)
    ...
    sync_query(layer=layer)    # the current view goes back into the URL

Widget values survive page switches with the "seed once, re-assign every run" trick from
`/work/shared/notes/streamlit.md`; query parameters seed them when a session opens from a shared link and
are rewritten on every run because Streamlit drops them on a page switch.

Environment variables:
- `INTERP_DEFAULT_MODEL`: reference (shipped name, hub id or folder) selected when nothing else says which;
  defaults to the shipped organism.
- `INTERP_HOSTED=1`: hosted mode (see `interp_core.settings.is_hosted`): stricter limits, no folder box,
  and the picker offers only the shipped model plus the comma-separated ids in `INTERP_ALLOWED_MODELS`.
Both hosted-mode keys may also come from Streamlit secrets (`.streamlit/secrets.toml`, or the secrets box of
Streamlit Community Cloud); a variable already in the environment wins (see `apply_secrets`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from interp_core.attention import AttentionPattern, attention_pattern
from interp_core.caches import cached_trace, forget_fingerprint, memoize
from interp_core.charts import chart_spec
from interp_core.charts.tokens import markdown_escape
from interp_core.errors import UserInputError
from interp_core.examples import EXAMPLES, corpus_loss, example_prompts, familiarity
from interp_core.figures import Metric
from interp_core.loading import ModelBundle, load_model, weights_fingerprint
from interp_core.settings import HUB_MODELS, SHIPPED_MODEL, is_hosted, limits
from interp_core.trace import Trace

APP_ROOT = Path(__file__).resolve().parent.parent  # folder of app.py and pages/
DEFAULT_PROMPT = "The capital of France is"
LOCAL_FOLDER = "Local folder..."  # picker entry that reveals the free-text box
MAX_PROMPT_IN_URL = 1_000  # characters; longer prompts are not mirrored so links stay shareable

SECRET_KEYS = ("INTERP_HOSTED", "INTERP_ALLOWED_MODELS")  # read from st.secrets when not in the environment

# Session-state keys of the shared sidebar widgets (also the query-parameter names, except the path box).
_CHOICE, _PATH, _PROMPT, _EXAMPLE = "model_choice", "model_path", "prompt", "example_prompt"


@dataclass(frozen=True)
class Selection:
    """What the sidebar resolved to: model reference, prompt, the loaded model and its forward pass."""

    ref: str  # the reference handed to load_model: shipped name, hub id or folder path
    prompt: str  # exactly as typed (the trace may hold a truncated version)
    bundle: ModelBundle
    trace: Trace


def apply_secrets() -> None:
    """Copy INTERP_HOSTED and INTERP_ALLOWED_MODELS from Streamlit secrets into the environment, where
    `interp_core.settings` reads them, unless the environment already sets them. A TOML list of model ids is
    joined with commas; `INTERP_HOSTED = true` counts like "1". Without a secrets file nothing changes."""
    if not st.secrets.load_if_toml_exists():  # False for a missing or unreadable secrets file, never raises
        return
    for key in SECRET_KEYS:
        if key in os.environ or key not in st.secrets:
            continue
        value = st.secrets[key]
        os.environ[key] = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


apply_secrets()  # before `limits()` is read below (the model cache's size)


def default_model_ref() -> str:
    """The reference selected by default: `INTERP_DEFAULT_MODEL` when set, else the shipped organism."""
    return os.environ.get("INTERP_DEFAULT_MODEL", "").strip() or SHIPPED_MODEL


def model_options() -> list[str]:
    """Picker entries in order: default model, hub models (hosted: the allow-list), then the folder entry."""
    if is_hosted():
        extra = [m.strip() for m in os.environ.get("INTERP_ALLOWED_MODELS", "").split(",") if m.strip()]
        candidates = [default_model_ref(), SHIPPED_MODEL, *extra]
    else:
        candidates = [default_model_ref(), SHIPPED_MODEL, *HUB_MODELS, LOCAL_FOLDER]
    return list(dict.fromkeys(candidates))  # drop duplicates, keep order


@st.cache_resource(max_entries=limits().max_models_loaded, show_spinner="Loading the model...")
def _loaded_bundle(ref: str, files: str) -> ModelBundle:
    return load_model(ref)


_CURRENT: dict[str, tuple[str, str]] = {}  # ref -> (files key of its cached bundle, that bundle's fingerprint)


def cached_bundle(ref: str) -> ModelBundle:
    """The loaded model for `ref`, shared read-only by every session (failures are not cached).

    Keyed on (ref, weights_fingerprint(ref)), a few stat calls per page run: a folder retrained in place (new
    sizes or modification times of its weight, config or tokenizer files) is loaded again, and the old model
    and every trace and result of its weights are dropped from the caches. A hub model downloaded by its first
    load had no files to fingerprint before it; it stays under that first key while its files are unchanged.
    """
    files = weights_fingerprint(ref)
    current = _CURRENT.get(ref)
    if current is not None and current[0] == "" and current[1] == files:
        files = ""  # loaded (downloaded) before its files could be fingerprinted: the very same files
    bundle = _loaded_bundle(ref, files)
    _CURRENT[ref] = (files, bundle.fingerprint)
    if current is not None and current[0] != files:  # replaced in place: the old entries can never be hit again
        _loaded_bundle.clear(ref, current[0])
        forget_fingerprint(current[1])
    return bundle


def cached_result(spinner: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator for a page's analysis: its results go to the byte-bounded result cache shared by every session
    (interp_core.caches.memoize; cap limits().result_cache_bytes, least recently used evicted), in place of
    st.cache_data and its entry counts.

        @cached_result(spinner="Computing input × gradient...")
        def cached_importance(_bundle, _trace, ref: str, prompt: str):
            return input_x_gradient(_bundle, _trace)

    The key is the function (file, name, code) and its arguments as st.cache_data would hash them - arguments
    whose name starts with "_" are not hashed - plus the weights' fingerprint of every ModelBundle argument and
    of every "_" argument that came out of the caches (the sidebar's trace, an earlier cached result), so a
    folder retrained in place never gets the old weights' results. `spinner` shows on a miss only (a
    progress bar drawn inside the function shows on a miss only too). The result is shared: never mutate it.
    """
    return memoize(around_miss=(lambda: st.spinner(spinner)) if spinner else None)


def cached_pattern(sel: Selection, layer: int, head: int | None) -> AttentionPattern:
    """attention.attention_pattern of the sidebar's trace (head None: the layer's mean), once per prompt, layer
    and head: a rerun would otherwise recompute the layer's pattern and redraw its chart from a new object."""
    return _pattern(sel.bundle, sel.trace, sel.ref, sel.prompt, layer, head)


@cached_result()
def _pattern(_bundle: ModelBundle, _trace: Trace, ref: str, prompt: str, layer: int, head: int | None):
    return attention_pattern(_bundle, _trace, layer, head)


def draw_chart(build: Callable, result, *args, on_select="ignore", selection_mode=None, key: str | None = None,
               **kwargs):
    """Draw build(result, *args, **kwargs) (an Altair chart builder) at its natural width, from a spec built once
    per result (charts.chart_spec); `on_select`, `selection_mode` and `key` as for st.altair_chart, whose return
    value it gives."""
    return st.vega_lite_chart(spec=chart_spec(build, result, *args, **kwargs), width="content", on_select=on_select,
                              selection_mode=selection_mode, key=key)


def page_files() -> list[tuple[str, str]]:
    """(path relative to app.py, label) of every page: the Overview, then pages/N_Name.py in file order.

    Streamlit's own page list is hidden (`client.showSidebarNavigation = false`) because it would call the
    entry page "app"; the sidebar draws these links instead, so a new file in pages/ shows up by itself.
    """
    found = [("app.py", "Overview")]
    for path in sorted((APP_ROOT / "pages").glob("*.py")):
        label = re.sub(r"^\d+_", "", path.stem).replace("_", " ").capitalize()  # "4_Logit_Lens" -> "Logit lens"
        found.append((f"pages/{path.name}", label))
    return found


def _navigation() -> None:
    for path, label in page_files():
        st.sidebar.page_link(path, label=label)
    st.sidebar.divider()


def show_user_error(exc: UserInputError) -> None:
    """Show a user-facing problem as a plain message (no traceback, Markdown escaped: it may quote a prompt, a
    token or a link's value) and stop the page."""
    st.error(markdown_escape(str(exc)))
    st.stop()


def page_header(title: str, what_it_shows: str) -> None:
    """Page title plus one short paragraph saying what the page shows and how to read it."""
    st.title(title)
    st.markdown(what_it_shows)


def link_value(raw: object, limit: int = 80) -> str:
    """A value from the URL made safe to quote inside a Markdown code span: backticks (which would end the
    span and let the rest render as Markdown) become quotes, and a long value is cut with an ellipsis."""
    text = str(raw).replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    """Integer query parameter `name` in [lo, hi]; a missing one gives `default` silently, a malformed or
    out-of-range one gives `default` and a short warning naming the parameter."""
    raw = st.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        st.warning(
            f"Ignored `{name}={link_value(raw)}` from the link: expected a whole number from {lo} to {hi}. "
            f"Showing {name} {default}."
        )
        return default
    return value


def query_choice(name: str, options: Sequence[str], default: str) -> str:
    """Text query parameter `name` when it is one of `options`; a missing one gives `default` silently, any
    other value gives `default` and a short warning naming the parameter."""
    raw = st.query_params.get(name)
    if raw is None or raw in options:
        return default if raw is None else raw
    st.warning(f"Ignored `{name}={link_value(raw)}` from the link: expected one of {', '.join(options)}. "
               f"Showing {default}.")
    return default


def sync_query(**values: object) -> None:
    """Write the current view (model, prompt, layer, head, ...) into the URL; None removes a parameter."""
    current = st.query_params.to_dict()
    for name, value in values.items():
        if value is None:
            if name in current:
                del st.query_params[name]
        elif current.get(name) != str(value):
            st.query_params[name] = str(value)


def kept(key: str, seed: Callable[[], object]) -> object:
    """The one idiom for a widget's value across reruns and page switches: seeded once per session by `seed()`
    (typically a query parameter of a shared link, or a default). The value also lives under a key of its own,
    which Streamlit never drops (it drops a widget's state when a page that does not draw the widget runs), and
    the widget's key is set from it on every run. Draw the widget with the same `key` and no default of its own."""
    store = f"_kept_{key}"
    if key in st.session_state:
        st.session_state[store] = st.session_state[key]  # the widget's latest value
    elif store not in st.session_state:
        st.session_state[store] = seed()
    st.session_state[key] = st.session_state[store]
    return st.session_state[key]


def progress_bar(text: str) -> Callable[[float, str], None]:
    """A progress bar for a long analysis: returns the `progress(fraction, message)` callback interp_core's
    analyses take; the bar goes away when the fraction reaches 1."""
    bar = st.progress(0.0, text=text)

    def progress(done: float, message: str) -> None:
        if done >= 1.0:
            bar.empty()  # finished: the result replaces the bar
        else:
            bar.progress(max(float(done), 0.0), text=message)

    return progress


@contextmanager
def user_errors() -> Iterator[None]:
    """Inside the block a UserInputError (bad input the user can fix) is shown as its plain message and stops the
    page (show_user_error); anything else is a bug and surfaces."""
    try:
        yield
    except UserInputError as exc:
        show_user_error(exc)


def window_slider(key: str, n_pos: int, size: int, label: str = "Positions shown") -> tuple[int, int]:
    """The window [start, stop) of positions a long prompt's chart shows: all of them up to `size`, else a range
    slider (kept across reruns; reset to the last `size` positions when it no longer fits the prompt)."""
    if n_pos <= size:
        return 0, n_pos
    stored = st.session_state.get(key)
    if not stored or stored[1] > n_pos - 1 or stored[0] > stored[1]:
        st.session_state[key] = (n_pos - size, n_pos - 1)
    first, last = st.slider(f"{label} (the prompt has {n_pos} tokens)", 0, n_pos - 1, key=key,
                            help=f"Positions inside this range are drawn. Keep it to about {size} for readable "
                                 "labels.")
    return first, last + 1


def persistent_int(key: str, default: int, lo: int, hi: int) -> int:
    """Session value for an integer widget with key `key`: seeded once from the query parameter of the same
    name, clamped to [lo, hi] (the model may have changed), and re-assigned so it survives page switches."""
    if key not in st.session_state:
        st.session_state[key] = query_int(key, default, lo, hi)
    st.session_state[key] = min(max(int(st.session_state[key]), lo), hi)
    return st.session_state[key]


def layer_head_picker(
    bundle: ModelBundle, *, with_head: bool = True, default_layer: int = 0, default_head: int = 0
) -> tuple[int, int | None]:
    """Layer (and head) selectboxes in the main area, restored from `?layer=`/`?head=` and kept across
    pages; returns (layer, head) with head None when `with_head` is False. Writes them back to the URL."""
    persistent_int("layer", default_layer, 0, bundle.n_layers - 1)
    cols = st.columns(2 if with_head else 1)
    layer = cols[0].selectbox("Layer", list(range(bundle.n_layers)), key="layer")
    head = None
    if with_head:
        persistent_int("head", default_head, 0, bundle.n_heads - 1)
        head = cols[1].selectbox("Head", list(range(bundle.n_heads)), key="head")
    sync_query(layer=layer, head=head)
    return layer, head


def metrics_row(metrics: Sequence[Metric]) -> None:
    """Headline numbers (interp_core.figures.Metric) side by side, one column each."""
    for column, metric in zip(st.columns(len(metrics)), metrics, strict=True):
        column.metric(**asdict(metric))


def download_buttons(frame: pd.DataFrame, name: str) -> None:
    """CSV and JSON download buttons, side by side, for a tidy DataFrame; `name` is the file name without
    extension. Clicking one does not rerun the page. The files are written when clicked, not on every rerun (a
    warm page switch spent a tenth of its time formatting CSV and JSON nobody downloaded)."""
    row = st.container(horizontal=True)
    row.download_button("Download CSV", lambda: frame.to_csv(index=False).encode("utf-8"),
                        file_name=f"{name}.csv", mime="text/csv", key=f"download_csv_{name}", on_click="ignore")
    row.download_button("Download JSON", lambda: frame.to_json(orient="records", indent=1).encode("utf-8"),
                        file_name=f"{name}.json", mime="application/json", key=f"download_json_{name}",
                        on_click="ignore")


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


def _pick_prompt(examples: dict[str, str]) -> str:
    if _PROMPT not in st.session_state:
        st.session_state[_PROMPT] = str(st.query_params.get("prompt", DEFAULT_PROMPT))
    st.session_state[_PROMPT] = st.session_state[_PROMPT]  # keep the value when another page runs

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
        f"{_count(n_params)} parameters"
    )


def sidebar() -> Selection:
    """Draw the shared sidebar (model picker, prompt, model facts) and return the loaded selection.

    Bad input (empty prompt, unknown model, folder without weights, unsupported architecture) shows the
    plain message with st.error and stops the page; an over-long prompt is truncated with a warning.
    """
    _navigation()
    st.sidebar.header("Model and prompt")
    ref = _pick_model()
    bundle = None
    if ref is not None:
        try:
            bundle = cached_bundle(ref)
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
