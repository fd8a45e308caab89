"""The Probing page under AppTest with a tiny GPT-2: built-in datasets, uploaded good and bad CSVs, the layer link.

AppTest cannot drive st.file_uploader, so uploads go in through the page's own seam: the uploader's callback
stores the file's bytes in session state under UPLOAD_KEY (so they survive a page switch), and these tests
put bytes there directly. The CSV parsing itself is tested in test_probing.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interp_core.probing import NO_CONTROL_WITHOUT_WORD_TYPES, datasets, upload
from interp_core.settings import Limits

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGE = "pages/3_Probing.py"  # relative to app.py, as st.switch_page wants it
TIMEOUT = 180  # seconds for one script run: loads the model, extracts features, trains the probes
UPLOAD_KEY = "probe_csv_kept"


@pytest.fixture(autouse=True)
def tiny_default_model(saved_tiny_gpt2, monkeypatch):
    """The tiny GPT-2 as the default model, and built-in datasets cut to 400 rows (the page's code path for a
    lower max_probe_rows) so that every run stays quick on a shared CPU."""
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    for module in (datasets, upload):  # the probing modules that read the row cap
        monkeypatch.setattr(module, "limits", lambda: Limits(max_probe_rows=400))
    return saved_tiny_gpt2


def open_page(query: dict[str, str] | None = None, upload: bytes | None = None, dataset: str | None = None,
              name: str = "mine.csv") -> AppTest:
    """Run the entrypoint once (the sidebar's page links need it), then the Probing page."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    if dataset is not None:
        at.session_state["probe_data"] = dataset
    if upload is not None:
        at.session_state["probe_data"] = "upload"
        at.session_state[UPLOAD_KEY] = {"name": name, "data": upload}
    return at.switch_page(PAGE).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def charts(at: AppTest) -> list:
    return [e for e in at.main if type(e).__name__ in ("ArrowVegaLiteChart", "VegaLiteChart")] or \
        at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")


def sentence_csv(n: int = 60, seed: int = 0, word_type: bool = False) -> bytes:
    """Sentence-level CSV whose label is readable from the text (plural subjects end the first word in 's'); with
    `word_type`, a word_type column naming the subject noun."""
    rng = random.Random(seed)
    lines = ["text,label,word_type" if word_type else "text,label"]
    for i in range(n):
        plural = i % 2 == 0
        noun = rng.choice(["dog", "cat", "bird", "fox"]) + ("s" if plural else "")
        lines.append(f"The {noun} saw {rng.choice(['a man', 'the park', 'two cats'])} {i}.,"
                     f"{'plural' if plural else 'singular'}" + (f",{noun}" if word_type else ""))
    return ("\n".join(lines) + "\n").encode("utf-8")


def layer_table(at: AppTest):
    return [d.value for d in at.main.dataframe if "task_mean" in d.value.columns][0]


def test_builtin_dataset_draws_accuracy_selectivity_and_confusion_charts():
    at = open_page()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert len(charts(at)) == 3  # accuracy by layer, selectivity, confusion matrix
    layer_tables = [d.value for d in at.main.dataframe if "task_mean" in d.value.columns]
    assert len(layer_tables) == 1
    assert list(layer_tables[0]["layer"]) == [0, 1, 2]  # tiny GPT-2: 2 blocks -> 3 residual layers
    assert ((layer_tables[0]["task_mean"] >= 0) & (layer_tables[0]["task_mean"] <= 1)).all()
    assert at.query_params["probe_layer"] in (["0"], ["1"], ["2"], "0", "1", "2")


def test_word_level_builtin_reads_the_labelled_word():
    at = open_page(dataset="pos")
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    token_box = [s for s in at.selectbox if s.label.startswith("Read the residual stream")][0]
    assert token_box.value == "labelled" and token_box.options == ["labelled word (its last sub-token)"]
    assert len(charts(at)) == 3


def test_good_uploaded_csv_is_probed_without_a_control_task_when_it_names_no_word_types():
    at = open_page(upload=sentence_csv())
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    # Accuracy and confusion only (was 3 with selectivity): a `text,label` file names no word types, and its
    # texts are what the folds group by, so a control task per text sat at chance by construction (issue 17).
    assert len(charts(at)) == 2
    assert NO_CONTROL_WITHOUT_WORD_TYPES in [i.value for i in at.info]
    assert not {"control_mean", "selectivity"} & set(layer_table(at).columns)
    assert "Selectivity there" not in [m.label for m in at.metric]
    assert any(t.value == "mine.csv" for t in at.text)
    assert any("word_type" in m.value for m in at.markdown)  # the upload help documents the column


def test_uploaded_word_types_give_the_control_task_and_the_selectivity_chart():
    at = open_page(upload=sentence_csv(word_type=True))
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert len(charts(at)) == 3  # accuracy, selectivity, confusion
    assert {"control_mean", "selectivity"} <= set(layer_table(at).columns)
    assert NO_CONTROL_WITHOUT_WORD_TYPES not in [i.value for i in at.info]


def test_good_token_level_csv_is_probed():
    rows = ["text,token_index,label"]
    for i in range(30):
        rows += [f"The cat sat {i}.,0,first", f"The cat sat {i}.,1,second"]
    at = open_page(upload=("\n".join(rows) + "\n").encode())
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert len(charts(at)) == 3


@pytest.mark.parametrize(("data", "says"), [
    (b"sentence,tag\nA cat.,x\n", "'text' and 'label'"),
    ("text,label\nA cat.,x\n".encode("utf-16"), "UTF-8"),
    (b"text,label\n" + b"A cat.,x\n" * 12, "two classes"),
    (b"text,label\n" + b"".join(f"A cat {i}.,{'x' if i < 10 else 'y'}\n".encode() for i in range(12)),
     "at least 5 different sentences"),
])
def test_bad_uploaded_csv_shows_a_plain_error_and_no_charts(data, says):
    at = open_page(upload=data)
    assert_clean(at)
    assert at.error and says in at.error[0].value
    assert not charts(at)


def test_token_index_out_of_range_for_this_model_is_a_plain_error():
    rows = ["text,token_index,label"] + [f"Cat {i}.,{40 + i % 2},{'a' if i % 2 else 'b'}" for i in range(20)]
    at = open_page(upload=("\n".join(rows) + "\n").encode())
    assert_clean(at)
    assert at.error and "out of range" in at.error[0].value
    assert not charts(at)


def test_markdown_in_uploaded_labels_and_names_stays_text():
    hostile = ["<img src=x onerror=alert(1)>", ":red[x] **b** $x$"]
    lines = ["text,label,extra"] + [f"Cat number {i}.,{hostile[i % 2]},1" for i in range(20)]
    at = open_page(upload=("\n".join(lines) + "\n").encode(), name="**bold**.csv")
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    shown = " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info])
    for text in hostile:
        assert text not in shown  # labels appear only in tables and charts (data), never as Markdown
    assert any(t.value == "**bold**.csv" for t in at.text)
    assert "“extra”" in " ".join(str(e.value) for e in at.info)  # the ignored-column note quotes the name


def test_out_of_range_layer_in_the_link_warns_and_falls_back():
    at = open_page(query={"probe_layer": "99"})
    assert_clean(at)
    assert any("probe_layer=99" in w.value for w in at.warning)
    layer_box = [s for s in at.selectbox if s.label == "Layer"][0]
    assert 0 <= layer_box.value <= 2


def test_every_table_and_chart_has_a_download_and_the_probe_weights_are_offered():
    at = open_page()
    assert_clean(at)
    labels = [str(b.proto.label) for b in at.get("download_button")]
    assert labels.count("Download CSV") >= 5  # layer table, selectivity, confusion, weights, examples
    assert "Download weights (.npz)" in labels


def test_mlp_probe_and_settings_survive_a_page_switch():
    at = open_page()
    at.checkbox(key="probe_mlp").check().run()
    assert_clean(at)
    assert "mlp_mean" in layer_table(at).columns
    at.switch_page("app.py").run()
    at.switch_page(PAGE).run()
    assert_clean(at)
    assert at.checkbox(key="probe_mlp").value is True


def test_dataset_restores_from_the_link_and_a_bad_one_warns():
    at = open_page(query={"probe_data": "tense"})
    assert_clean(at)
    assert at.selectbox(key="probe_data").value == "tense"
    at = open_page(query={"probe_data": "nonsense"})
    assert any("probe_data" in w.value for w in at.warning)
    assert at.selectbox(key="probe_data").value == "number"
