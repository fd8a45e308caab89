"""Findings in the app: the charts a page drew in this run (draw_chart records them), the sidebar's "Add to
findings" box every page ends with, the session's list of findings (never written on the server: it leaves the
session only as a download), and reopening a finding's view."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from functools import partial

import streamlit as st

from interp_core.caches import cached_trace
from interp_core.charts import inline_datasets
from interp_core.charts.tokens import markdown_escape
from interp_core.errors import UserInputError
from interp_core.findings.kinds import KINDS, Numbers, weights_digest
from interp_core.findings.recheck import recheck
from interp_core.findings.record import MAX_TEXT, Finding, FindingChart, FindingsImportError, loads, new_id
from interp_core.findings.report import page_label, pinned_text
from interp_core.loading import ModelBundle
from interp_core.settings import limits
from interp_core.streamlit_glue.models import LOCAL_FOLDER, Selection, cached_bundle, model_options
from interp_core.streamlit_glue.state import drawn_charts
from interp_core.streamlit_glue.widgets import progress_bar

FINDINGS = "findings"  # session key of the list of Finding
# Session keys that survive reopening a finding: the findings, their checks, uploads and trained lenses.
ACTIONS = {"reopen": "Reopen the view", "up": "↑ Up", "down": "↓ Down", "delete": "Delete"}
_SURVIVE = (FINDINGS, "findings_checks", "_findings_imported")


def findings() -> list[Finding]:
    return st.session_state.setdefault(FINDINGS, [])


def findings_box(sel: Selection, kind: str, inputs: dict, numbers: Numbers, checkable: str = "") -> None:
    """The sidebar's "Add to findings" box: a title, a note, which of this run's charts to keep, and the button
    that pins this view (its URL query, model, prompt, `inputs` and `numbers` of KINDS[kind]) to the findings.
    `checkable`: why a re-check cannot recompute it ("" when it can)."""
    drawn = drawn_charts()
    with st.sidebar.expander("Add to findings", icon=":material/push_pin:"):
        st.text_input("Title", key="finding_title", placeholder=default_title(kind, sel.prompt))
        st.text_area("Note (Markdown)", key="finding_note", height=90)
        for i, (chart_title, _) in enumerate(drawn):
            st.checkbox(markdown_escape(chart_title), value=i == 0, key=f"finding_chart_{i}")
        st.caption(f"Keeps {len(numbers)} numbers: " + markdown_escape(", ".join(numbers)))
        st.button("Add to findings", key="finding_add", type="primary", on_click=_add,
                  args=(sel, kind, inputs, numbers, checkable, drawn))


def default_title(kind: str, prompt: str) -> str:
    short = prompt if len(prompt) <= 50 else prompt[:49] + "…"
    return f"{KINDS[kind].label}: {short}"


def _add(sel, kind, inputs, numbers, checkable, drawn) -> None:
    """The Add button's callback (before the rerun): pin what the page showed, with the ticked charts."""
    state = st.session_state
    if len(findings()) >= limits().max_findings:
        st.toast(f"The findings hold {limits().max_findings} already (the limit max_findings): export and delete "
                 "some first.", icon="⚠️")
        return
    view = {**st.query_params.to_dict(), "prompt": sel.prompt}
    charts = tuple(FindingChart(chart_title, inline_datasets(spec)) for i, (chart_title, spec) in enumerate(drawn)
                   if state.get(f"finding_chart_{i}"))
    title = state.get("finding_title", "").strip() or default_title(kind, sel.prompt)
    findings().append(Finding(
        id=new_id(), kind=kind, page=KINDS[kind].page, title=title[:MAX_TEXT["title"]],
        note=state.get("finding_note", "")[:MAX_TEXT["note"]], model=sel.ref, weights=weights_digest(sel.bundle),
        prompt=sel.prompt, view=view, inputs=inputs, numbers=numbers, charts=charts, checkable=checkable))
    state["finding_title"], state["finding_note"] = "", ""
    st.toast(f"Added to the findings ({len(findings())}): open the Findings page to write them up.",
             icon=":material/push_pin:")


def import_findings(data: bytes) -> str | None:
    """Add the findings of an exported JSON file (once per file: a rerun does not add them again); the problem
    with the file as a sentence, or None. A bad file adds nothing, and nothing already in the list is lost."""
    digest = hashlib.sha256(data).hexdigest()
    if st.session_state.get("_findings_imported") == digest:
        return None
    caps = limits()
    try:
        found = loads(data, caps.max_findings, caps.max_findings_import_bytes)
    except FindingsImportError as exc:
        return str(exc)
    known = {finding.id for finding in findings()}
    new = [finding for finding in found if finding.id not in known]
    if len(findings()) + len(new) > caps.max_findings:
        return (f"Importing {len(new)} findings would make {len(findings()) + len(new)}; the limit max_findings is "
                f"{caps.max_findings}. Delete some first.")
    findings().extend(new)
    st.session_state["_findings_imported"] = digest
    return None


def reopen(finding: Finding) -> None:
    """Open the finding's page on its view: every kept widget value and the model choice are forgotten first, so
    the view's URL query seeds them as a shared link would."""
    for key in list(st.session_state):
        if key not in _SURVIVE and not key.endswith("_kept") and not key.startswith("tuned_lens::"):
            del st.session_state[key]
    st.switch_page(finding.page, query_params=finding.view)


def base_url() -> str:
    """The app's address in the user's browser without the page's path (reopen links in exports start with it)."""
    from urllib.parse import urlparse

    url = urlparse(st.context.url or "http://localhost:8501")
    path = url.path.rstrip("/")
    path = path[: -len("/Findings")] if path.endswith("/Findings") else path
    return f"{url.scheme}://{url.netloc}{path}"


def finding_card(finding: Finding, index: int, check) -> str | None:
    """One finding, drawn in a bordered box: title, where it came from, prompt, note, numbers (with their re-check
    when there is one), charts, and its buttons; returns the action clicked ("reopen", "up", "down", "delete",
    "save") or None."""
    with st.container(border=True):
        st.subheader(f"{index + 1}. " + markdown_escape(finding.title))
        st.caption(markdown_escape(f"{page_label(finding)} · {finding.model} · {pinned_text(finding)}"))
        st.text(f"Prompt: {finding.prompt}")
        if finding.note:
            (st.text if "<" in finding.note else st.markdown)(finding.note)  # HTML in a note is shown as text
        _numbers(finding, check)
        for chart in finding.charts:
            if not chart.spec.get("title"):  # a chart with a title of its own shows it
                st.caption(markdown_escape(chart.title))
            st.vega_lite_chart(chart.spec, width="content")
        with st.expander("Edit the title and note"):
            st.text_input("Title", value=finding.title, key=f"edit_title_{finding.id}")
            st.text_area("Note (Markdown)", value=finding.note, key=f"edit_note_{finding.id}")
            saved = st.button("Save", key=f"save_{finding.id}")
        row = st.container(horizontal=True)
        clicked = [action for action, label in ACTIONS.items() if row.button(label, key=f"{action}_{finding.id}")]
    return "save" if saved else (clicked[0] if clicked else None)


def _numbers(finding: Finding, check) -> None:
    if check is None:
        st.dataframe([{"number": name, "value": value} for name, value in finding.numbers.items()], hide_index=True)
        return
    if check.reason:
        st.info(markdown_escape(f"Not checkable: {check.reason}"))
    st.dataframe(check.to_frame(), hide_index=True,
                 column_config={"stored": st.column_config.NumberColumn(format="%.6g"),
                                "recomputed": st.column_config.NumberColumn(format="%.6g")})


def apply_action(action: str, index: int) -> None:
    """Do what a finding's button asked (finding_card's return value) to the finding at `index`."""
    items = findings()
    finding = items[index]
    if action == "reopen":
        reopen(finding)
    elif action == "delete":
        del items[index]
    elif action in ("up", "down"):
        other = index - 1 if action == "up" else index + 1
        if 0 <= other < len(items):
            items[index], items[other] = items[other], items[index]
    elif action == "save":
        title = st.session_state.get(f"edit_title_{finding.id}", finding.title).strip() or finding.title
        items[index] = replace(finding, title=title[:MAX_TEXT["title"]],
                               note=st.session_state.get(f"edit_note_{finding.id}", finding.note)[:MAX_TEXT["note"]])


def recheck_all() -> None:
    """Recompute every finding on the models this app can load (a progress bar), keeping each Recheck by id."""
    items, progress = findings(), progress_bar("Re-checking the findings...")
    checks = {}
    for i, finding in enumerate(items):
        progress(i / len(items), f"Re-checking {i + 1} of {len(items)}: {finding.title[:60]}")
        checks[finding.id] = recheck(finding, partial(_load_for_check, dtype=finding.view.get("dtype")), cached_trace)
    progress(1.0, "done")
    st.session_state["findings_checks"] = checks


def _load_for_check(ref: str, dtype: str | None = None) -> ModelBundle:
    """The finding's model in the precision its view was in (`?dtype=`; none: the default)."""
    options = model_options()
    if ref not in options and LOCAL_FOLDER not in options:
        raise UserInputError(f"this deployment offers only {', '.join(options)}")
    return cached_bundle(ref, dtype)
