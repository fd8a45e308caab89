"""Exports of findings: one self-contained HTML report (Vega, Vega-Lite and vega-embed inlined once, every chart
interactive, nothing loaded from a network) and a zip of Markdown with PNG charts. Both link each finding back to
its view in the app.

    >>> Path("findings.html").write_text(html_report(findings, "http://localhost:8501"))
    >>> Path("findings.zip").write_bytes(markdown_zip(findings, "http://localhost:8501"))

Everything a finding holds is user text: HTML gets it escaped, Markdown backslash-escaped or fenced.
"""

from __future__ import annotations

import functools
import html
import io
import itertools
import json
import re
import zipfile
from datetime import UTC, datetime
from pathlib import PurePosixPath
from urllib.parse import urlencode

import altair as alt

from interp_core.charts import inline_datasets
from interp_core.charts.tokens import markdown_escape
from interp_core.findings.kinds import KINDS
from interp_core.findings.record import Finding

VL_VERSION = "_".join(alt.SCHEMA_VERSION.split(".")[:2])  # "v6_4": vl-convert's name of altair's Vega-Lite
PNG_SCALE = 2  # pixels per chart pixel: sharp on high-density screens and in print


def page_url_path(page: str) -> str:
    """Streamlit's URL path of a page file: "app.py" -> "", "pages/2_Attribution.py" -> "Attribution"."""
    if page == "app.py":
        return ""
    return re.sub(r"^\d+_", "", PurePosixPath(page).stem)


def reopen_link(finding: Finding, base_url: str) -> str:
    """The app URL that opens the finding's page on its view (model and prompt included)."""
    return f"{base_url.rstrip('/')}/{page_url_path(finding.page)}?{urlencode(finding.view)}"


def page_label(finding: Finding) -> str:
    """The page's name as the app's sidebar shows it ("Attribution", "Logit lens", ...)."""
    if finding.kind in KINDS:
        return KINDS[finding.kind].label
    return page_url_path(finding.page).replace("_", " ") or "Overview"


def pinned_text(finding: Finding) -> str:
    """When the finding was pinned, "2026-01-31 14:05 UTC" (as stored when that is not an ISO time)."""
    try:
        return f"{datetime.fromisoformat(finding.created):%Y-%m-%d %H:%M %Z}".strip()
    except ValueError:
        return finding.created


def number_text(value: float) -> str:
    """A number with up to 6 significant digits (the stored value keeps all of them)."""
    return f"{value:.6g}"


# --- HTML ---------------------------------------------------------------------------------------------------------
# The report's only allowed sources are itself: inline scripts (Vega compiles expressions with Function) and
# styles, and images it draws (chart exports as data: and blob: URLs). Fetches, fonts and remote images are refused.
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data: blob:")
CSS = """
body { margin: 0; color: #1f2430; background: #fff; line-height: 1.5;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 920px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.9em; margin: 0 0 4px; }
h2 { font-size: 1.4em; margin: 0 0 8px; overflow-wrap: anywhere; }
h3 { font-size: 1em; margin: 16px 0 4px; }
a { color: #2b4c9b; }
.meta { color: #5b6170; font-size: 0.92em; }
nav { margin: 20px 0 8px; } nav h2 { font-size: 1.1em; } nav ol { margin: 0; padding-left: 1.6em; }
section.finding { border-top: 1px solid #d9dde5; margin-top: 36px; padding-top: 20px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0 0 8px; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; overflow-wrap: anywhere; }
pre.prompt { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; padding: 8px 10px; background: #f5f6f8;
  border: 1px solid #e3e6ec; border-radius: 4px; font: 0.9em/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas,
  monospace; }
.note { overflow-wrap: anywhere; margin: 14px 0; }
table.numbers { border-collapse: collapse; margin: 14px 0; font-size: 0.93em; }
table.numbers th, table.numbers td { border: 1px solid #d9dde5; padding: 3px 10px; text-align: left; }
table.numbers th { background: #f5f6f8; font-weight: 600; }
table.numbers td.value { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 18px 0; } figcaption { font-weight: 600; margin-bottom: 6px; }
.chart { overflow-x: auto; }
@media print { nav, a.reopen { display: none; } section.finding { break-inside: avoid-page; } }
"""
# Draws every chart from its JSON block; a chart that fails says so in its place and the others still draw.
CHART_SCRIPT = """
const options = {renderer: "svg", actions: {export: true, source: false, compiled: false, editor: false}};
for (const div of document.querySelectorAll("div.chart")) {
  const fail = (what, error) => { div.textContent = `This chart could not be ${what}: ${error.message}`; };
  let spec;
  try { spec = JSON.parse(document.getElementById(div.dataset.spec).textContent); }
  catch (error) { fail("read", error); continue; }
  vegaEmbed(div, spec, options).catch(error => fail("drawn", error));
}
"""


@functools.cache
def vega_bundle() -> str:
    """vega-embed, Vega-Lite and Vega as one classic script that sets window.vegaEmbed (~0.9 MB; ~2.5 s once)."""
    import vl_convert as vlc

    return vlc.javascript_bundle(vl_version=VL_VERSION).replace("</script", "<\\/script")


def script_json(value) -> str:
    """`value` as JSON text safe inside a <script> element: <, > and & as \\u escapes, so no string in it can
    close the element or open a comment."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def html_report(findings: list[Finding], base_url: str, title: str = "Findings") -> str:
    """One HTML document holding every finding (title, page, model, prompt, reopen link, note, numbers, charts)
    with a table of contents; it loads nothing from any network (its Content-Security-Policy forbids it)."""
    e = html.escape
    counter = itertools.count(1)  # charts are numbered through the report: spec-1, spec-2, ...
    sections = "\n".join(_html_finding(f, i, base_url, counter) for i, f in enumerate(findings, start=1))
    contents = "".join(f'<li><a href="#finding-{i}">{e(f.title)}</a></li>' for i, f in enumerate(findings, start=1))
    exported = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header><h1>{e(title)}</h1><p class="meta">Exported {exported} · {len(findings)} finding{"s" * (len(findings) != 1)}
from the interpretability workbench.</p></header>
<nav><h2>Contents</h2><ol>{contents}</ol></nav>
{sections}
</main>
<script>{vega_bundle()}</script>
<script>{CHART_SCRIPT}</script>
</body>
</html>
"""


def note_html(note: str) -> str:
    """A note's Markdown as HTML (CommonMark, markdown-it-py): any HTML in it shows as text, and links other than
    http(s), mailto and relative ones (javascript:, data:, ...) are left as text, as markdown-it validates them."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).render(note)


def _html_finding(finding: Finding, index: int, base_url: str, counter) -> str:
    e = html.escape
    link = e(reopen_link(finding, base_url), quote=True)
    note = f'<div class="note">{note_html(finding.note)}</div>' if finding.note else ""
    return f"""<section class="finding" id="finding-{index}">
<h2>{index}. {e(finding.title)}</h2>
<dl class="meta"><dt>Page</dt><dd>{e(page_label(finding))}</dd><dt>Model</dt><dd>{e(finding.model)}</dd>
<dt>Pinned</dt><dd>{e(pinned_text(finding))}</dd></dl>
<p><a class="reopen" href="{link}">Reopen this view in the app</a></p>
<h3>Prompt</h3><pre class="prompt">{e(finding.prompt)}</pre>
{note}{_html_numbers(finding.numbers)}{"".join(_html_chart(chart, next(counter)) for chart in finding.charts)}
</section>"""


def _html_numbers(numbers: dict[str, float]) -> str:
    if not numbers:
        return ""
    rows = "".join(f'<tr><td>{html.escape(name)}</td><td class="value" title="{value!r}">{number_text(value)}</td>'
                   "</tr>" for name, value in numbers.items())
    return f'<table class="numbers"><thead><tr><th>Number</th><th>Value</th></tr></thead><tbody>{rows}</tbody></table>'


def _html_chart(chart, n: int) -> str:
    return (f'<figure><figcaption>{html.escape(chart.title)}</figcaption><div class="chart" data-spec="spec-{n}">'
            f'</div><script type="application/json" id="spec-{n}">{script_json(inline_datasets(chart.spec))}</script>'
            "</figure>")


# --- Markdown -----------------------------------------------------------------------------------------------------
def markdown_zip(findings: list[Finding], base_url: str) -> bytes:
    """A zip of report.md (every finding as Markdown) and charts/finding-N-chart-M.png (each chart rendered at
    PNG_SCALE, with no browser and no network)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        parts = [f"# Findings\n\nExported {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from the interpretability "
                 f"workbench: {len(findings)} finding{'s' * (len(findings) != 1)}.\n"]
        for i, finding in enumerate(findings, start=1):
            parts.append(_markdown_finding(finding, i, base_url))
            for j, chart in enumerate(finding.charts, start=1):
                parts.append(_markdown_chart(archive, chart, f"charts/finding-{i}-chart-{j}.png"))
        archive.writestr("report.md", "\n".join(parts))
    return buffer.getvalue()


def _one_line(text: str) -> str:
    return markdown_escape(" ".join(text.split()))


def _markdown_finding(finding: Finding, index: int, base_url: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", finding.prompt)), default=0)
    fence = "`" * max(3, longest + 1)
    link = reopen_link(finding, base_url).replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")
    note = finding.note.replace("<", "&lt;")  # Markdown, but any HTML in it shows as text
    rows = "".join(f"| {_one_line(name)} | {number_text(value)} |\n" for name, value in finding.numbers.items())
    numbers = f"| Number | Value |\n| --- | ---: |\n{rows}" if rows else ""
    return (f"## {index}. {_one_line(finding.title)}\n\n"
            f"- Page: {markdown_escape(page_label(finding))}\n- Model: {_one_line(finding.model)}\n"
            f"- Pinned: {markdown_escape(pinned_text(finding))}\n- [Reopen this view in the app](<{link}>)\n\n"
            f"Prompt:\n\n{fence}text\n{finding.prompt}\n{fence}\n\n" + (f"{note}\n\n" if note else "") + numbers)


def _markdown_chart(archive: zipfile.ZipFile, chart, path: str) -> str:
    import vl_convert as vlc

    try:  # allowed_base_urls=[]: the renderer fetches nothing, even for a spec that names a URL
        png = vlc.vegalite_to_png(inline_datasets(chart.spec), vl_version=VL_VERSION, scale=PNG_SCALE,
                                  allowed_base_urls=[])
    except ValueError as exc:
        return f"\n*{_one_line(chart.title)}: this chart could not be drawn ({_one_line(str(exc)[:200])}).*\n"
    archive.writestr(path, png)
    return f"\n![{_one_line(chart.title)}]({path})\n"
