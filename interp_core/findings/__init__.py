"""Findings: what a user pins on a page (record), how each page's numbers are recomputed (kinds), re-checking them
(recheck), and the exports (report): a self-contained HTML report, Markdown with PNG charts, versioned JSON.

    >>> text = dumps(findings); again = loads(text, max_findings=100, max_bytes=10_000_000)
    >>> checked = recheck(again[0], load_model=..., trace_of=...)
    >>> html = html_report(again, "http://localhost:8501")
"""

from interp_core.findings.recheck import Recheck, recheck
from interp_core.findings.record import Finding, FindingChart, FindingsImportError, dumps, loads
from interp_core.findings.report import html_report, markdown_zip

__all__ = ["Finding", "FindingChart", "FindingsImportError", "Recheck", "dumps", "html_report", "loads",
           "markdown_zip", "recheck"]
