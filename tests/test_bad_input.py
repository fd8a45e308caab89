"""Every bad input gets a plain message, and the next good request in the same session still works.

Each case drives the real app under Streamlit's AppTest with the tiny GPT-2 (tests/helpers.py): it sends one bad
input (a prompt, a link parameter, a widget value or an upload), checks the message the page shows (error,
warning or info; weird but valid text must show none), then sends a good input in the SAME AppTest session and
checks that the page draws its chart or table with no exception. Cases are grouped by where the input enters:
the sidebar prompt, the URL, each page's own widgets, the Probing page's upload seam (see test_page_probing.py).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interp_core.patching import PRESET_NAMES
from interp_core.probing import datasets, upload
from interp_core.settings import Limits, limits
from interp_core.streamlit_glue import LOCAL_FOLDER

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
OVERVIEW, ATTENTION, ATTRIBUTION = "app.py", "pages/1_Attention.py", "pages/2_Attribution.py"
PROBING, LENS, CIRCUITS = "pages/3_Probing.py", "pages/4_Logit_Lens.py", "pages/5_Circuits.py"
PATCHING, ABLATION = "pages/6_Patching.py", "pages/7_Ablation.py"
PAGES = (OVERVIEW, ATTENTION, ATTRIBUTION, LENS, CIRCUITS, PATCHING, ABLATION)  # Probing has its own cases below
TIMEOUT = 180  # seconds for one script run (the first one loads the model; busy shared CPU)
GOOD_PROMPT = "The capital of France is"
UPLOAD_KEY = "probe_csv_kept"  # the Probing page's upload seam (session state), see pages/3_Probing.py
OWN_PAIR = len(PRESET_NAMES)  # index of "Your own pair" in the Circuits pair box


@pytest.fixture(autouse=True)
def tiny_default_model(saved_tiny_gpt2, monkeypatch):
    """The tiny GPT-2 folder is the default model; local mode; built-in probing datasets cut to 200 rows."""
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    monkeypatch.delenv("INTERP_ALLOWED_MODELS", raising=False)
    for module in (datasets, upload):  # the probing modules that read the row cap
        monkeypatch.setattr(module, "limits", lambda: Limits(max_probe_rows=200))
    return saved_tiny_gpt2


# --- helpers ---------------------------------------------------------------------------------------------------


def open_app(page: str = OVERVIEW, query: dict[str, str] | None = None, **state) -> AppTest:
    """Run the entrypoint with `query` as the link's parameters and `state` in session state, then `page`."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    return at if page == OVERVIEW else at.switch_page(page).run()


def set_prompt(at: AppTest, text: str) -> AppTest:
    return at.sidebar.text_area(key="prompt").set_value(text).run()


def shown(at: AppTest, kind: str) -> str:
    """Text of every element of `kind` ("error", "warning", "info") on the page, sidebar included, with the
    backslashes that escape Markdown in messages quoting user text removed (the text as the reader sees it)."""
    return re.sub(r"\\(.)", r"\1", " | ".join(str(e.value) for e in getattr(at, kind)))


def charts(at: AppTest) -> list:
    return at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def assert_says(at: AppTest, kind: str, *words: str) -> None:
    """No traceback, and a `kind` message containing every one of `words` (case-insensitive)."""
    assert_no_exception(at)
    text = shown(at, kind)
    assert text, f"no {kind} shown; errors: {shown(at, 'error')}; warnings: {shown(at, 'warning')}"
    for word in words:
        assert word.lower() in text.lower(), (word, text)


def assert_works(at: AppTest, min_charts: int = 1) -> None:
    """The page ran to its charts: no exception, no error, at least `min_charts` charts."""
    assert_no_exception(at)
    assert not at.error, shown(at, "error")
    assert len(charts(at)) >= min_charts, f"{len(charts(at))} charts"


# --- the sidebar prompt, on every page -------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("prompt", ["", "   \n\t  "], ids=["empty", "whitespace"])
def test_empty_prompt_is_refused_on_every_page_and_a_good_one_then_runs(page, prompt):
    at = open_app(page)
    set_prompt(at, prompt)
    assert_says(at, "error", "empty")
    assert not charts(at)
    set_prompt(at, GOOD_PROMPT)
    assert_works(at)


@pytest.mark.parametrize("page", PAGES)
def test_prompt_over_the_cap_is_cut_with_a_warning_naming_the_cap(page):
    at = open_app(page)
    set_prompt(at, "The cat sat on the mat. " * 80)  # ~480 tokens: over the tiny model's context and the cap
    assert_says(at, "warning", "only the first", "max_prompt_tokens")
    assert_works(at)  # the kept tokens are analysed
    set_prompt(at, GOOD_PROMPT)
    assert_works(at)
    assert "only the first" not in shown(at, "warning")


STRANGE_PROMPTS = {
    "control_characters": "bell\x07 nul\x00 escape\x1b[31m red\x1b[0m",
    "zero_width": "The\u200b capital\u200d of\u2060 France\ufeff is",
    "only_zero_width": "\u200b\u200b\u200b",
    "right_to_left": "\u202eThe capital \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 is",
    "emoji": "The capital 👩‍👩‍👧‍👦 of 🇫🇷 is 🎉",
    "combining_marks": "Ze\u0301\u0301\u0301\u0301 cafe\u0301 Z\u0336a\u0337l\u0338g\u0335o",
    "single_token": "The",
    "single_character": "x",
    "only_special_tokens": "<|endoftext|>",
    "special_tokens_repeated": "<|endoftext|><|endoftext|><|endoftext|>",
}


@pytest.mark.parametrize("page", (OVERVIEW, ATTENTION, LENS))
@pytest.mark.parametrize("prompt", list(STRANGE_PROMPTS.values()), ids=list(STRANGE_PROMPTS))
def test_strange_but_valid_text_is_analysed_without_an_error(page, prompt):
    at = open_app(page)
    set_prompt(at, prompt)
    assert_works(at)  # it is text: tokens, charts, no error
    set_prompt(at, GOOD_PROMPT)
    assert_works(at)


@pytest.mark.parametrize("prompt", [STRANGE_PROMPTS[k] for k in ("single_token", "only_special_tokens", "emoji")],
                         ids=["single_token", "only_special_tokens", "emoji"])
@pytest.mark.parametrize("page", (ATTRIBUTION, CIRCUITS))
def test_one_token_and_special_token_prompts_run_the_model_pages(page, prompt):
    at = open_app(page)
    set_prompt(at, prompt)
    assert_works(at)
    set_prompt(at, GOOD_PROMPT)
    assert_works(at)


# --- the URL ---------------------------------------------------------------------------------------------------

BAD_LINKS = [
    (ATTENTION, {"layer": "seven"}, "layer=seven"),
    (ATTENTION, {"layer": "99"}, "layer=99"),
    (ATTENTION, {"layer": "-1"}, "layer=-1"),
    (ATTENTION, {"layer": "1.5"}, "layer=1.5"),
    (ATTENTION, {"head": "4"}, "head=4"),
    (ATTENTION, {"head": "-3"}, "head=-3"),
    (ATTENTION, {"head": "1e9"}, "head=1e9"),
    (OVERVIEW, {"overview_layer": "12"}, "overview_layer=12"),
    (LENS, {"pos": "999"}, "pos=999"),
    (LENS, {"pos": "last"}, "pos=last"),
    (ATTRIBUTION, {"steps": "0"}, "steps=0"),
    (ATTRIBUTION, {"steps": "1000000"}, "steps=1000000"),
    (ATTRIBUTION, {"steps": "many"}, "steps=many"),
    (ATTRIBUTION, {"method": "telepathy"}, "method=telepathy"),
    (PATCHING, {"pair": "99"}, "pair=99"),
    (ABLATION, {"pair": "-1"}, "pair=-1"),
    (CIRCUITS, {"rep_length": "100000"}, "rep_length=100000"),
    (CIRCUITS, {"rep_seed": "-5"}, "rep_seed=-5"),
    (CIRCUITS, {"tab": "secrets"}, "tab=secrets"),
    (PROBING, {"probe_data": "secrets"}, "probe_data"),
    (PROBING, {"probe_layer": "-2"}, "probe_layer=-2"),
]


def link_id(page: str, query: dict[str, str]) -> str:
    return f"{Path(page).stem}?" + "&".join(f"{k}={v}" for k, v in query.items())


@pytest.mark.parametrize(("page", "query", "says"), BAD_LINKS, ids=[link_id(p, q) for p, q, _ in BAD_LINKS])
def test_bad_link_parameter_warns_naming_it_and_the_page_still_works(page, query, says):
    at = open_app(page, query)
    assert_says(at, "warning", says)
    assert_works(at)  # the default was used instead
    set_prompt(at, "When Mary and John went to the store")
    assert_works(at)


def test_unknown_parameters_and_a_page_name_in_the_link_are_ignored():
    at = open_app(ATTENTION, {"page": "NoSuchPage", "zzz": "<b>1</b>", "layer": "1"})
    assert_works(at)
    assert not at.warning, shown(at, "warning")
    assert at.selectbox(key="layer").value == 1


@pytest.mark.parametrize(("model", "says"), [
    ("/no/such/folder", "There is no folder"),
    ("no-such-org-xyz/no-such-model-xyz", "no-such-org-xyz/no-such-model-xyz"),
    ("docs/../tests", "no config.json"),  # a relative path with "..", resolved from the working directory
])
def test_model_in_the_link_that_does_not_exist_shows_an_error_then_the_default_works(model, says, saved_tiny_gpt2,
                                                                                     monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # relative paths resolve from the repo root
    at = open_app(ATTENTION, {"model": model})
    assert_says(at, "error", says)
    assert not charts(at)
    at.sidebar.selectbox(key="model_choice").set_value(str(saved_tiny_gpt2)).run()
    assert_works(at)


def test_hosted_mode_refuses_a_model_outside_the_allow_list_from_the_link(monkeypatch):
    monkeypatch.setenv("INTERP_HOSTED", "1")
    monkeypatch.setenv("INTERP_ALLOWED_MODELS", "")
    at = open_app(OVERVIEW, {"model": "/etc"})  # the link is read once, on the session's first run
    assert_says(at, "warning", "model=/etc", "offers only")
    assert LOCAL_FOLDER not in at.sidebar.selectbox(key="model_choice").options
    assert not [box for box in at.sidebar.text_input if box.key == "model_path"]  # no free path or hub id box
    assert_works(at)


# --- Attribution: target token and steps -----------------------------------------------------------------------


def attribution(**state) -> AppTest:
    return open_app(ATTRIBUTION, attr_deletion=False, **state)


@pytest.mark.parametrize(("token", "says"), [
    (" capital of", "2 tokens"),
    ("Parisian capital city", "tokens"),
    ("<|endoftext|> The", "tokens"),
])
def test_target_token_of_several_tokens_is_refused_then_one_token_works(token, says):
    at = attribution(attr_target_mode="token", attr_token_a=token)
    assert_says(at, "error", says, "not one")
    assert not charts(at)
    at.text_input(key="attr_token_a").set_value(" capital").run()
    assert_works(at)


def test_empty_target_token_asks_for_one_then_one_token_works():
    at = attribution(attr_target_mode="token")
    assert_says(at, "info", "Type the target token")
    assert not charts(at)
    at.text_input(key="attr_token_a").set_value(" capital").run()
    assert_works(at)


def test_contrast_with_an_empty_second_token_asks_for_it():
    at = attribution(attr_target_mode="contrast", attr_token_a=" capital")
    assert_says(at, "info", "token B")
    at.text_input(key="attr_token_b").set_value(" is").run()
    assert_works(at)


@pytest.mark.parametrize("steps", [0, -4, 1_000_000, limits().max_ig_steps + 1])
def test_integrated_gradients_steps_outside_the_cap_are_refused_naming_it(steps):
    at = attribution()
    at.number_input(key="attr_steps").set_value(steps).run()
    assert_says(at, "error", "max_ig_steps")
    assert not charts(at)
    at.number_input(key="attr_steps").set_value(8).run()
    assert_works(at)


@pytest.mark.parametrize("n_tokens", [0, 1_000])
def test_generated_tokens_outside_the_cap_are_refused_naming_it(n_tokens):
    at = attribution(attr_mode="continuation", attr_method="saliency")
    at.number_input(key="attr_n_tokens").set_value(n_tokens).run()
    assert_says(at, "error", "max_generated_tokens")
    at.number_input(key="attr_n_tokens").set_value(2).run()
    assert_works(at)


def test_baseline_text_of_another_length_is_refused():
    at = attribution(attr_baseline="text", attr_baseline_text="A much longer baseline text than the prompt is")
    assert_says(at, "error", "tokens")
    at.text_input(key="attr_baseline_text").set_value("").run()
    at.selectbox(key="attr_baseline").set_value("zero").run()
    assert_works(at)


# --- Logit lens: target token ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [" capital of France", "\u200b\u200b<|endoftext|>x"])
def test_lens_target_of_several_tokens_is_refused_and_the_top_1_is_shown(token):
    at = open_app(LENS, lens_target=token)
    assert_says(at, "error", "not one", "top-1")
    assert_works_despite_error(at)
    at.text_input(key="lens_target").set_value(" capital").run()
    assert_works(at)


def assert_works_despite_error(at: AppTest) -> None:
    assert_no_exception(at)
    assert charts(at)


# --- Circuits: the user's own clean / corrupted pair -----------------------------------------------------------


def use_own_pair(at: AppTest, clean: str, corrupt: str, answer: str, foil: str) -> AppTest:
    at.selectbox(key="pair").set_value(OWN_PAIR).run()
    for key, value in (("pair_clean", clean), ("pair_corrupt", corrupt), ("pair_answer", answer),
                       ("pair_foil", foil)):
        at.text_input(key=key).set_value(value)
    return next(b for b in at.button if b.label == "Use this pair").click().run()


GOOD_PAIR = ("The capital of France is", "The capital of Italy is", " Paris", " Rome")
BAD_PAIRS = {
    "different_lengths": (("The capital of France is", "The capital of the Republic of Italy is", " Paris",
                           " Rome"), "same number of tokens"),
    "empty_clean": (("", "The capital of Italy is", " Paris", " Rome"), "empty"),
    "whitespace_corrupt": (("The capital of France is", "  \t ", " Paris", " Rome"), "empty"),
    "answer_several_tokens": (("The capital of France is", "The capital of Italy is", " Paris is", " Rome"),
                              "not one"),
    "empty_foil": (("The capital of France is", "The capital of Italy is", " Paris", ""), "empty"),
    "answer_equals_foil": (("The capital of France is", "The capital of Italy is", " Paris", " Paris"),
                           "same token"),
    "over_the_cap": (("The cat sat. " * 100, "The dog sat. " * 100, " Paris", " Rome"), "max_prompt_tokens"),
}


@pytest.mark.parametrize("name", list(BAD_PAIRS))
def test_bad_patching_pair_is_refused_then_a_good_pair_runs(name):
    pair, says = BAD_PAIRS[name]
    at = open_app(PATCHING)
    use_own_pair(at, *pair)
    assert_says(at, "error", says)
    assert not charts(at)  # the patching page draws nothing for a bad pair
    use_own_pair(at, *GOOD_PAIR)
    assert_works(at)


# --- Probing: uploads ------------------------------------------------------------------------------------------


# Accuracy and confusion (was 3 with selectivity): a `text,label` upload names no word types, so the Probing page
# runs no control task for it (issue 17: a control per text, which the folds group by, sat at chance by construction).
SENTENCE_UPLOAD_CHARTS = 2


def good_csv(n: int = 40) -> bytes:
    rng = random.Random(0)
    lines = ["text,label"]
    for i in range(n):
        plural = i % 2 == 0
        noun = rng.choice(["dog", "cat", "bird"]) + ("s" if plural else "")
        lines.append(f"The {noun} ran {i}.,{'plural' if plural else 'singular'}")
    return ("\n".join(lines) + "\n").encode()


BAD_UPLOADS = {
    "empty": (b"", "empty"),
    "blank_lines": (b"\n\n  \n", "empty"),
    "binary": (bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0xFF, 0xFE]) * 50, "UTF-8"),
    "nul_bytes_in_text": (b"text,label\nA\x00cat.,x\n", "NUL"),
    "huge": (b"text,label\n" + b"A cat sat on a mat.,x\n" * 600_000, "max_upload_bytes"),
    "utf16": ("text,label\nA cat.,x\nThe dogs.,y\n".encode("utf-16"), "UTF-8"),
    "latin1": ("text,label\nLe café est ouvert.,x\nÇa va.,y\n".encode("latin-1"), "UTF-8"),
    "header_only": (b"text,label\n", "no rows"),
    "missing_label_column": (b"text,tag\nA cat.,x\nThe dogs.,y\n", "'text' and 'label'"),
    "missing_text_column": (b"sentence,label\nA cat.,x\n", "'text' and 'label'"),
    "short_rows": (b"text,label\nA cat.\nThe dogs.,y\n", "fewer cells"),
    "empty_label": (b"text,label\nA cat.,\nThe dogs.,y\n", "empty label"),
    "one_class": (b"text,label\n" + b"".join(f"Cat {i}.,same\n".encode() for i in range(20)), "two classes"),
    "too_many_rows": (b"text,label\n" + b"".join(f"Cat {i}.,{i % 2}\n".encode() for i in range(201)),
                      "max_probe_rows"),
    "bad_token_index": (b"text,token_index,label\nA cat.,-1,x\nThe dogs.,one,y\n", "token_index"),
    "class_in_too_few_sentences": (b"text,label\n" + b"".join(
        f"Cat {i}.,{'x' if i < 18 else 'y'}\n".encode() for i in range(20)), "different sentences"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_upload_is_refused_then_a_good_upload_is_probed(name):
    data, says = BAD_UPLOADS[name]
    at = open_app(PROBING, probe_data="upload", **{UPLOAD_KEY: {"name": f"{name}.csv", "data": data}})
    assert_says(at, "error", says)
    assert not charts(at)
    at.session_state[UPLOAD_KEY] = {"name": "good.csv", "data": good_csv()}
    at.run()
    assert_works(at, min_charts=SENTENCE_UPLOAD_CHARTS)


def test_labels_that_are_numbers_in_some_rows_and_text_in_others_are_used_as_text():
    rows = ["text,label"] + [f"The cat ran {i}.,{'1' if i % 2 else 'noun'}" for i in range(30)]
    at = open_app(PROBING, probe_data="upload", **{UPLOAD_KEY: {"name": "mixed.csv",
                                                                "data": ("\n".join(rows) + "\n").encode()}})
    assert_says(at, "info", "look like numbers", "as text")
    assert_works(at, min_charts=SENTENCE_UPLOAD_CHARTS)
    at.session_state[UPLOAD_KEY] = {"name": "good.csv", "data": good_csv()}
    at.run()
    assert_works(at, min_charts=SENTENCE_UPLOAD_CHARTS)
