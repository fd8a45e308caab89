"""Workload 11: exporting findings (issue 19): the HTML report, the Markdown zip with PNG charts and the JSON, for 1,
10 and 50 findings of three real charts each (an attention heatmap, the logit lens heatmap and the next-token bar
of one prompt, data inline). Targets: the HTML of 10 findings <= 5 MB, and time linear in the number of findings
(50 findings within 1.5x of five times 10's). There is no anchor: no other tool exports such a report."""

from __future__ import annotations

import time

from bench.common import Models, Row, Timing
from interp_core.attention import attention_pattern
from interp_core.caches import cached_trace
from interp_core.charts import chart_spec, inline_datasets
from interp_core.charts.attention import attention_heatmap
from interp_core.charts.lens import lens_heatmap
from interp_core.charts.overview import prediction_bar
from interp_core.findings import Finding, FindingChart, dumps, html_report, markdown_zip
from interp_core.findings.kinds import overview_numbers, weights_digest
from interp_core.findings.report import vega_bundle
from interp_core.lens import logit_lens, next_token_predictions

WORKLOAD = "11. Findings export"
PROMPT = "When Mary and John went to the store, John gave a drink to"
COUNTS = (1, 10, 50)
BASE = "http://localhost:8501"


def _findings(bundle, n: int) -> list[Finding]:
    trace = cached_trace(bundle, PROMPT)
    predictions = next_token_predictions(bundle, trace, 10)
    charts = (FindingChart("attention", inline_datasets(chart_spec(attention_heatmap, attention_pattern(
                  bundle, trace, 0, 0), 0, trace.n_pos))),
              FindingChart("logit lens", inline_datasets(chart_spec(lens_heatmap, logit_lens(bundle, trace),
                                                                    "top1_prob", 0, trace.n_pos))),
              FindingChart("predictions", inline_datasets(chart_spec(prediction_bar, predictions))))
    return [Finding(id=f"bench{i:04d}", kind="overview", page="app.py", title=f"Finding {i + 1}", note="A note.",
                    model=bundle.ref, weights=weights_digest(bundle), prompt=PROMPT, view={"prompt": PROMPT},
                    inputs={}, numbers=overview_numbers(predictions), charts=charts) for i in range(n)]


def _timed(make) -> tuple[float, int]:
    started = time.perf_counter()
    size = len(make())
    return time.perf_counter() - started, size


def run(plan, models: Models) -> list[Row]:
    bundle, name = (models.organism, "shipped organism") if models.organism is not None else (models.big,
                                                                                           "GPT-2-small-shaped")
    started = time.perf_counter()
    vega_bundle()  # once per server process (cached): reported on its own row
    rows = [Row(WORKLOAD, "first export of a process: reading vl-convert's Vega bundle", name,
                Timing((time.perf_counter() - started,)), value=f"{len(vega_bundle()) / 1e6:.2f} MB of JavaScript")]
    times = {}
    for n in COUNTS:
        found = _findings(bundle, n)
        exports = {"HTML report": lambda found: html_report(found, BASE),
                   "Markdown + PNG zip": lambda found: markdown_zip(found, BASE), "JSON": dumps}
        for label, export in exports.items():
            seconds, size = _timed(lambda: export(found))  # noqa: B023 (called at once)
            times[label, n] = seconds
            met = size <= 5e6 if (label, n) == ("HTML report", 10) else None
            rows.append(Row(WORKLOAD, f"{label}, {n} finding{'s' * (n > 1)} of 3 charts", name, Timing((seconds,)),
                            value=f"{size / 1e6:.2f} MB", target="<= 5 MB" if met is not None else "", met=met))
    for label in ("HTML report", "Markdown + PNG zip"):
        ratio = times[label, 50] / max(5 * times[label, 10], 1e-9)
        rows.append(Row(WORKLOAD, f"{label}: time of 50 / (5 x time of 10)", name, value=f"{ratio:.2f}",
                        target="<= 1.5 (linear)", met=ratio <= 1.5))
    return rows
