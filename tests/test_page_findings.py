"""Findings under AppTest on the shipped organism: a finding added on every page, the Findings page's re-check of
each one (every number reproduced within 1e-6), export to JSON and import again, reopening a view exactly, editing
and reordering, and bad imports that get a clear message and lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interp_core.findings import dumps, loads
from interp_core.findings.kinds import KINDS
from interp_core.streamlit_glue.sidebar import page_files
from tests.shipped import shipped_bundle

ROOT = Path(__file__).resolve().parent.parent
APP, FINDINGS_PAGE = str(ROOT / "app.py"), "pages/9_Findings.py"
STATE = {"disc_pairs": 8, "attr_deletion": True}  # small discovery task; the deletion curve gives AOPC numbers


@pytest.fixture(scope="module")
def session():
    """One AppTest session that added a finding on every page (each page's first chart ticked)."""
    shipped_bundle()  # skips while the organism is not trained
    at = AppTest.from_file(APP, default_timeout=600)
    for key, value in STATE.items():
        at.session_state[key] = value
    at.run()
    for page in [kind.page for kind in KINDS.values()]:
        at = at.switch_page(page).run() if page != "app.py" else at
        assert not at.exception, (page, [e.message for e in at.exception])
        at.text_input(key="finding_title").set_value(f"Seen on {page} <script>alert(1)</script>")
        at.button(key="finding_add").click().run()
        assert not at.exception, (page, [e.message for e in at.exception])
    return at


def findings_of(at: AppTest) -> list:
    return list(at.session_state["findings"])


def test_every_page_has_the_box_and_adds_a_finding_with_its_view_numbers_and_chart(session, monkeypatch):
    monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    found = findings_of(session)
    assert [f.kind for f in found] == list(KINDS)
    pages = {path for path, _ in page_files()} - {FINDINGS_PAGE}
    assert {f.page for f in found} == pages  # every page but the Findings page itself
    for finding in found:
        assert finding.numbers and finding.charts, finding.kind
        assert finding.view["prompt"] == finding.prompt and finding.view["model"] == finding.model
        assert finding.charts[0].spec["datasets"] and all(
            isinstance(rows, list) for rows in finding.charts[0].spec["datasets"].values())  # data inline
    attribution = next(f for f in found if f.kind == "attribution")
    assert {"completeness residual", "deletion AOPC"} <= set(attribution.numbers)
    assert found[0].title.startswith("Seen on app.py <script>")  # a title is data, kept as typed


def test_recheck_reproduces_every_number_of_every_page(session):
    at = session.switch_page(FINDINGS_PAGE).run()
    assert not at.exception, [e.message for e in at.exception]
    at.button(key="findings_recheck").click().run()
    checks = at.session_state["findings_checks"]
    for finding in findings_of(at):
        check = checks[finding.id]
        assert check.status == "reproduced", (finding.kind, check.reason, check.to_frame().to_dict("records"))
        assert {c.name for c in check.numbers} == set(finding.numbers)
    assert any(f"{len(checks)} reproduced" in c.value for c in at.caption)


def test_json_export_imports_again_and_rechecks_after_the_list_was_emptied(session):
    exported = dumps(findings_of(session)).encode()
    assert len(loads(exported, 100, 10**8)) == len(KINDS)
    at = session.switch_page(FINDINGS_PAGE).run()
    at.session_state["findings"] = []
    at.session_state["findings_checks"] = {}
    at.session_state["findings_upload_kept"] = {"name": "findings.json", "data": exported}
    at.run()
    assert [f.id for f in findings_of(at)] == [f.id for f in loads(exported, 100, 10**8)]
    at.button(key="findings_recheck").click().run()
    assert all(c.status == "reproduced" for c in at.session_state["findings_checks"].values())
    at.run()  # the same upload again adds nothing twice
    assert len(findings_of(at)) == len(KINDS)


@pytest.mark.parametrize("data, words", [
    (b"<html>not json</html>", "not valid JSON"),
    (json.dumps({"schema": "interp-workbench-findings", "version": 99, "findings": []}).encode(), "newer"),
    (json.dumps({"schema": "something-else", "version": 1, "findings": []}).encode(), "schema"),
])
def test_a_bad_import_says_what_is_wrong_and_loses_nothing(session, data, words):
    at = session.switch_page(FINDINGS_PAGE).run()
    before = [f.id for f in findings_of(at)]
    at.session_state["findings_upload_kept"] = {"name": "bad.json", "data": data}
    at.run()
    assert not at.exception
    assert any(words in e.value and "Nothing was imported" in e.value for e in at.error), [e.value for e in at.error]
    assert [f.id for f in findings_of(at)] == before


def test_edit_reorder_and_delete(session):
    at = session.switch_page(FINDINGS_PAGE).run()
    at.session_state["findings_upload_kept"] = None
    first, second = findings_of(at)[:2]
    at.text_input(key=f"edit_title_{first.id}").set_value("Capitals: France")
    at.button(key=f"save_{first.id}").click().run()
    assert findings_of(at)[0].title == "Capitals: France"
    at.button(key=f"down_{first.id}").click().run()
    assert [f.id for f in findings_of(at)[:2]] == [second.id, first.id]
    n = len(findings_of(at))
    at.button(key=f"delete_{first.id}").click().run()
    assert len(findings_of(at)) == n - 1 and first.id not in {f.id for f in findings_of(at)}


def test_reopen_restores_the_view_exactly(session):
    at = session.switch_page(FINDINGS_PAGE).run()
    at.session_state["findings_upload_kept"] = None
    probing = next(f for f in findings_of(at) if f.kind == "probing")
    at.button(key=f"reopen_{probing.id}").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert {k: at.query_params[k] for k in probing.view} == probing.view
