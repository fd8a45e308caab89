"""The app shell under Streamlit's AppTest: every page opens, the sidebar keeps its state across pages and
restores it from query parameters, and bad input shows a plain message instead of a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import save_tiny_model
from streamlit.testing.v1 import AppTest

from interp_core.streamlit_glue import LOCAL_FOLDER

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))
TIMEOUT = 300  # seconds for one script run; the Probing page trains probes on its first run (slow on 2 busy cores)


@pytest.fixture(autouse=True)
def tiny_default_model(saved_tiny_gpt2, monkeypatch):
    """Make the tiny GPT-2 folder the default model and keep hosted mode off for every test here."""
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    return saved_tiny_gpt2


@pytest.fixture(scope="module")
def tiny_neox_dir(tmp_path_factory):
    """A second model folder (another family) to tell "restored from the link" apart from "the default"."""
    return save_tiny_model("gpt_neox", tmp_path_factory.mktemp("tiny_neox"))


def open_app(query: dict[str, str] | None = None, page: str | None = None) -> AppTest:
    """Run app.py (the entrypoint) once with `query` as the URL's parameters, then switch to `page` if given."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    at.run()
    return at.switch_page(page).run() if page else at


def prompt_box(at: AppTest):
    return at.sidebar.text_area(key="prompt")


def messages(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def test_overview_shows_the_models_top_10_next_tokens():
    at = open_app()
    assert_clean(at)
    assert not at.error
    table = at.main.dataframe[0].value
    assert list(table["rank"]) == list(range(1, 11))
    assert table["probability"].is_monotonic_decreasing
    assert 0 < table["probability"].sum() <= 1.0 + 1e-6


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_without_an_exception(page):
    at = open_app(page=page)
    assert_clean(at)
    assert not at.error, messages(at.error)
    assert prompt_box(at).value == "The capital of France is"


def test_prompt_survives_a_page_switch():
    typed = "When Mary and John went to the store"
    at = open_app()
    prompt_box(at).set_value(typed).run()
    assert_clean(at)
    at.switch_page("pages/1_Attention.py").run()
    assert_clean(at)
    assert prompt_box(at).value == "When Mary and John went to the store"
    at.switch_page("app.py").run()
    assert prompt_box(at).value == "When Mary and John went to the store"
    assert at.query_params["prompt"] in (typed, [typed])  # mirrored into the URL


def test_model_prompt_and_layer_restore_from_query_params(tiny_neox_dir):
    query = {"model": str(tiny_neox_dir), "prompt": "The cat sat on the mat", "layer": "1", "head": "3"}
    at = open_app(query, page="pages/1_Attention.py")
    assert_clean(at)
    assert not at.error and not at.warning, messages(at.error) + messages(at.warning)
    assert at.sidebar.selectbox(key="model_choice").value == LOCAL_FOLDER
    assert at.sidebar.text_input(key="model_path").value == str(tiny_neox_dir)
    assert prompt_box(at).value == "The cat sat on the mat"
    assert at.selectbox(key="layer").value == 1
    assert at.selectbox(key="head").value == 3
    assert "gpt_neox" in messages(at.sidebar.markdown)


def test_the_default_model_is_restored_by_its_reference(tiny_default_model):
    at = open_app({"model": str(tiny_default_model), "prompt": "Hello"})
    assert_clean(at)
    assert at.sidebar.selectbox(key="model_choice").value == str(tiny_default_model)
    assert prompt_box(at).value == "Hello"


@pytest.mark.parametrize("raw", ["seven", "99", "-1"])
def test_bad_layer_in_the_link_falls_back_with_a_warning(raw):
    at = open_app({"layer": raw}, page="pages/1_Attention.py")
    assert_clean(at)
    assert at.selectbox(key="layer").value == 0
    assert "layer" in messages(at.warning)


@pytest.mark.parametrize("prompt", ["", "   \n\t "])
def test_empty_prompt_shows_an_error_not_a_traceback(prompt):
    at = open_app()
    prompt_box(at).set_value(prompt).run()
    assert_clean(at)
    assert "empty" in messages(at.error).lower()


def test_over_long_prompt_is_truncated_with_a_warning():
    at = open_app()
    prompt_box(at).set_value("The cat sat on the mat. " * 60).run()
    assert_clean(at)
    assert not at.error
    assert "only the first" in messages(at.warning)
    assert len(at.main.dataframe[0].value) == 10  # the prediction still runs on the kept tokens


def choose_other_model(at: AppTest, ref: str) -> AppTest:
    at.sidebar.selectbox(key="model_choice").set_value(LOCAL_FOLDER).run()
    at.sidebar.text_input(key="model_path").set_value(ref).run()
    return at


def test_unknown_hub_id_shows_an_error():
    at = choose_other_model(open_app(), "no-such-org-xyz/no-such-model-xyz")
    assert_clean(at)
    assert "no-such-org-xyz/no-such-model-xyz" in messages(at.error)


def test_folder_without_weights_shows_an_error(tmp_path, saved_tiny_gpt2):
    shutil.copy(Path(saved_tiny_gpt2) / "config.json", tmp_path / "config.json")
    at = choose_other_model(open_app(), str(tmp_path))
    assert_clean(at)
    assert "no weights" in messages(at.error)


def test_unsupported_architecture_shows_an_error(tmp_path, saved_tiny_gpt2):
    for item in Path(saved_tiny_gpt2).iterdir():
        shutil.copy(item, tmp_path / item.name)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertForMaskedLM"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    at = choose_other_model(open_app(), str(tmp_path))
    assert_clean(at)
    assert "not supported" in messages(at.error)


def test_hosted_mode_offers_no_folder_box(monkeypatch):
    monkeypatch.setenv("INTERP_HOSTED", "1")
    monkeypatch.setenv("INTERP_ALLOWED_MODELS", "gpt2, distilgpt2")
    at = open_app()
    assert_clean(at)
    options = at.sidebar.selectbox(key="model_choice").options
    assert LOCAL_FOLDER not in options
    assert "gpt2" in options and "distilgpt2" in options
    assert not [box for box in at.sidebar.text_input if box.key == "model_path"]  # no folder box
