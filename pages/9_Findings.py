"""Findings page: what the user pinned on the other pages, in order, to edit, reorder, delete and reopen; exported
as a self-contained HTML report, Markdown with PNG charts, or JSON that this page imports again and re-checks.

Findings live in this session only (nothing is written on the server); they leave it only as a download.
"""

import streamlit as st

from interp_core import streamlit_glue as glue
from interp_core.charts.tokens import markdown_escape
from interp_core.findings import html_report, markdown_zip
from interp_core.findings.record import dumps
from interp_core.settings import limits
from interp_core.streamlit_glue import findings as shared

st.set_page_config(page_title="Findings · Interpretability workbench", layout="wide")
glue.page_header("Findings", "What you pinned with **Add to findings** (in the sidebar of every page): each finding "
                 "keeps its page's view, model, prompt, key numbers and the charts you ticked. Write them up here, "
                 "export a report that opens anywhere without a network, and re-check an imported report's numbers "
                 "on the models at hand.")
glue.sidebar()
items, caps = shared.findings(), limits()

import_col, export_col = st.columns([2, 3])
with import_col:
    upload = glue.kept_upload(f"Import findings (a JSON file exported here, at most "
                              f"{caps.max_findings_import_bytes / 1e6:.0f} MB and {caps.max_findings} findings)",
                              key="findings_upload", types=["json"])
    if upload is not None and (problem := shared.import_findings(upload["data"])):
        st.error(markdown_escape(problem) + " Nothing was imported; the findings below are as they were.")
with export_col:
    st.markdown(f"**{len(items)} finding{'s' if len(items) != 1 else ''}** (at most {caps.max_findings} here)")
    row = st.container(horizontal=True)
    base = shared.base_url()
    row.download_button("HTML report", lambda: html_report(items, base).encode("utf-8"), file_name="findings.html",
                        mime="text/html", key="export_html", on_click="ignore", disabled=not items,
                        help="One file: every chart interactive, Vega inlined, opens with no network.")
    row.download_button("Markdown + PNG (zip)", lambda: markdown_zip(items, base), file_name="findings.zip",
                        mime="application/zip", key="export_markdown", on_click="ignore", disabled=not items)
    row.download_button("JSON (re-importable)", lambda: dumps(items).encode("utf-8"), file_name="findings.json",
                        mime="application/json", key="export_json", on_click="ignore", disabled=not items,
                        help="The versioned schema of docs/findings-schema.md; import it here to re-check it.")
    if row.button("Re-check every number", key="findings_recheck", disabled=not items,
                  help="Recompute each finding on its model and mark every number reproduced (within 1e-6), "
                       "changed, or not checkable (model missing, other weights, an upload)."):
        shared.recheck_all()

if not items:
    st.info("No findings yet. Open any page, look at something, and press **Add to findings** in its sidebar.")
    st.stop()
checks = st.session_state.get("findings_checks", {})
if checks:
    counts = [sum(c.status == s for c in checks.values()) for s in ("reproduced", "changed", "not checkable")]
    st.caption("Re-checked: {} reproduced, {} changed, {} not checkable.".format(*counts))
for index, finding in enumerate(list(items)):
    if action := shared.finding_card(finding, index, checks.get(finding.id)):
        shared.apply_action(action, index)
        st.rerun()
