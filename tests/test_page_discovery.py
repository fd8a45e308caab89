"""The Circuit discovery page under AppTest on the shipped organism: the faithfulness curve and the circuit graph
for each scorer, ACDC's own circuit, a bad link value, and a model whose tokenizer cannot build the task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interp_core.charts.discovery import NODE_PICK
from tests.helpers import chart_titles
from tests.shipped import shipped_bundle

ROOT = Path(__file__).resolve().parent.parent
APP, PAGE = str(ROOT / "app.py"), "pages/8_Circuit_Discovery.py"


def open_page(query: dict[str, str] | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    for key, value in {"disc_pairs": 8, **state}.items():
        at.session_state[key] = value
    at.run()
    for name, value in (query or {}).items():
        at.query_params[name] = value
    return at.switch_page(PAGE).run()


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_the_page_draws_the_curve_and_the_circuit_and_overlays_another_scorer(monkeypatch):
    monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    shipped_bundle()  # skips while the organism is not trained
    at = open_page()
    assert not at.exception and not at.error, [e.message for e in at.exception]
    shown = chart_titles(at)
    assert any("Faithfulness of the top-n circuit" in t for t in shown)
    assert any(t.startswith("Circuit: ") for t in shown)
    assert any(t.startswith("Information-flow routes into the last token") for t in shown)
    assert 0.5 <= float(metric(at, "Faithfulness (held-out pairs)")) <= 1.1  # the organism's IOI is a circuit
    at.multiselect(key="disc_compare").set_value(["eap"]).run()
    assert not at.exception
    curve = next(json.loads(c.proto.spec) for c in at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart"))
    assert "EAP" in json.dumps(curve) and at.query_params["method"] == "eap_ig"


def test_acdc_shows_the_circuit_it_kept(monkeypatch):
    monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    shipped_bundle()
    at = open_page({"method": "acdc"})
    assert not at.exception
    assert any("ACDC tried" in c.value for c in at.caption)
    assert int(metric(at, "Edges in the circuit").split(" of ")[0]) < 479


def test_a_bad_link_value_warns_and_the_default_runs(monkeypatch):
    monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    shipped_bundle()
    at = open_page({"task": "secrets"})
    assert not at.exception
    assert any("task=secrets" in w.value for w in at.warning)
    assert any(t.startswith("Circuit: ") for t in chart_titles(at))


def test_a_task_the_tokenizer_cannot_build_gets_a_plain_message_and_induction_runs(saved_tiny_gpt2, monkeypatch):
    """The tiny test tokenizer splits most names and capitals into pieces; its random tokens repeat fine."""
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    at = open_page({"task": "capitals"})
    assert not at.exception and not chart_titles(at)
    assert not at.error
    assert "pairs keep the clean and corrupted prompts the same number of tokens" in " ".join(i.value for i in at.info)
    at = open_page({"task": "induction"})
    assert not at.exception and not at.error
    assert any(t.startswith("Circuit: ") for t in chart_titles(at))


def test_uploaded_pairs_are_scored_and_a_bad_file_gets_its_rows_named(monkeypatch):
    """AppTest cannot drive st.file_uploader: the upload goes in through glue.kept_upload's store."""
    monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    shipped_bundle()
    good = "When Mary and John went to the store, John gave a drink to"
    bad = "When Mary and John went to the store, Mary gave a drink to"
    rows = [f'"{good}","{bad}", Mary, John'] * 4
    data = ("clean,corrupted,answer,foil\n" + "\n".join(rows) + "\n").encode()
    at = open_page({"task": "upload"}, disc_csv_kept={"name": "pairs.csv", "data": data})
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(t.startswith("Circuit: ") for t in chart_titles(at))
    broken = data + b'"One two three","One two", Mary, John\n'
    at = open_page({"task": "upload"}, disc_csv_kept={"name": "pairs.csv", "data": broken})
    assert not at.exception and not chart_titles(at)
    assert "line 6" in " ".join(e.value for e in at.error)


@pytest.mark.parametrize("picked", [{"node": "a2.h3", "kind": "head", "layer": 2, "head": 3},
                                    {"node": "m2", "kind": "mlp", "layer": 2, "head": -1}])
def test_clicking_a_node_of_the_graph_shows_its_direct_effect_on_the_task(monkeypatch, picked):
    monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    shipped_bundle()
    at = open_page(disc_graph={"selection": {NODE_PICK: [picked]}})
    assert not at.exception, [e.message for e in at.exception]
    labels = [m.label for m in at.metric]
    assert labels[-3:] == ["Direct effect, clean", "Direct effect, corrupted", "Share of the clean - corrupted gap"]
    share = float(metric(at, "Share of the clean - corrupted gap").rstrip("%"))
    assert (share > 20) == (picked["node"] == "m2")  # measured: m2 carries 56% of IOI's gap directly, a2.h3 18%
    links = [p.proto.label for p in at.get("page_link")]
    assert ("Open a2.h3's attention pattern" in links) == (picked["kind"] == "head")
