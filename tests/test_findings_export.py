"""Findings exports: the JSON schema round trip and its strict import (every bad file a clear sentence), charts'
datasets inlined, the self-contained HTML report (user text escaped, nothing from a network, Vega inlined once),
reopen links, and the Markdown zip with one PNG per chart."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import altair as alt
import pandas as pd
import pytest
import torch

from interp_core.charts import arrow_datasets, inline_datasets
from interp_core.charts.overview import prediction_bar
from interp_core.findings import Finding, FindingChart, FindingsImportError, dumps, html_report, loads, markdown_zip
from interp_core.findings.record import MAX_CHARTS, MAX_NUMBERS, MAX_TEXT, new_id
from interp_core.findings.report import page_url_path, reopen_link, vega_bundle
from interp_core.lens import NextTokenPredictions

BASE = "http://localhost:8501"
HOSTILE = "<script>alert(1)</script>"
SPEC_BLOCK = re.compile(r'<script type="application/json" id="spec-\d+">(.*?)</script>', re.S)


def prediction_spec(tokens=(" Paris", HOSTILE, " Rome")) -> dict:
    """A real chart of interp_core.charts (the Overview's prediction bars) with a token that is HTML."""
    k = len(tokens)
    predictions = NextTokenPredictions(torch.arange(k), list(tokens), torch.linspace(0.5, 0.1, k),
                                       torch.linspace(3.0, 1.0, k))
    return prediction_bar(predictions).to_dict()


def bar_spec(title: str = "plain bars") -> dict:
    frame = pd.DataFrame({"layer": [0, 1, 2], "score": [0.25, 0.5, 0.125]})
    return alt.Chart(frame).mark_bar().encode(x="layer:O", y="score:Q").properties(title=title).to_dict()


def make_finding(i: int = 1, n_charts: int = 2, **fields) -> Finding:
    charts = tuple(FindingChart(f"chart {j} {HOSTILE}", prediction_spec() if j % 2 else bar_spec(HOSTILE))
                   for j in range(1, n_charts + 1))
    values = dict(id=new_id(), kind="attribution", page="pages/2_Attribution.py", title=f"Finding {i} {HOSTILE}",
                  note=f"A **note** with <b>HTML</b> and {HOSTILE}\nover two lines", model="gpt2",
                  weights="0123456789abcdef", prompt="When Mary and John went to the store, ``` John",
                  view={"model": "gpt2", "prompt": "When Mary & John", "method": "ig"},
                  inputs={"target": " Mary", "steps": 16}, numbers={"completeness residual": 1.234567891e-5,
                                                                     "deletion AOPC": 0.5, "rank": 3.0},
                  charts=charts)
    return Finding(**{**values, **fields})


@pytest.fixture(scope="module")
def two_findings() -> list[Finding]:
    return [make_finding(1), make_finding(2, n_charts=1, note="", numbers={})]


# --- JSON ---------------------------------------------------------------------------------------------------------
def test_dumps_then_loads_gives_the_same_findings(two_findings):
    assert loads(dumps(two_findings), max_findings=10, max_bytes=10_000_000) == two_findings
    assert loads(dumps(two_findings).encode("utf-8"), 10, 10_000_000) == two_findings


def test_html_in_titles_and_notes_is_kept_as_data(two_findings):
    again = loads(dumps(two_findings), 10, 10_000_000)[0]
    assert HOSTILE in again.title and "<b>HTML</b>" in again.note and HOSTILE in again.charts[0].title


def test_new_ids_are_12_hex_characters_and_differ():
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


def _document() -> dict:
    return json.loads(dumps([make_finding(1, n_charts=1), make_finding(2, n_charts=1)]))


def _second(change):
    def edit(doc):
        change(doc["findings"][1])
    return edit


def _set(key, value):
    return lambda doc: doc.__setitem__(key, value)


BAD_DOCUMENTS = {  # name -> (edit of a good two-finding document, words the message must hold)
    "not an object": (lambda doc: doc.clear() or doc.update(x=1), "schema"),
    "other schema": (_set("schema", "something-else"), '"interp-workbench-findings"'),
    "no schema": (lambda doc: doc.pop("schema"), '"interp-workbench-findings"'),
    "newer version": (_set("version", 2), "written by a newer version (2); this app reads version 1"),
    "version as text": (_set("version", "1"), "this app reads version 1"),
    "version true": (_set("version", True), "this app reads version 1"),
    "findings not a list": (_set("findings", {"a": 1}), '"findings" is not a list'),
    "finding not an object": (lambda doc: doc["findings"].append(3), "Finding 3 is not an object"),
    "missing title": (_second(lambda f: f.pop("title")), "Finding 2: title is missing"),
    "missing numbers": (_second(lambda f: f.pop("numbers")), "Finding 2: numbers is missing"),
    "title a number": (_second(lambda f: f.update(title=5)), "Finding 2: title must be a string"),
    "title too long": (_second(lambda f: f.update(title="x" * (MAX_TEXT["title"] + 1))),
                       "Finding 2: title is 201 characters long; the limit is 200"),
    "note too long": (_second(lambda f: f.update(note="x" * (MAX_TEXT["note"] + 1))), "note is 20,001 characters"),
    "prompt too long": (_second(lambda f: f.update(prompt="x" * 20_001)), "prompt is 20,001 characters"),
    "id too long": (_second(lambda f: f.update(id="x" * 65)), "Finding 2: id is 65 characters"),
    "kind too long": (_second(lambda f: f.update(kind="x" * 41)), "Finding 2: kind is 41 characters"),
    "id a list": (_second(lambda f: f.update(id=["a"])), "Finding 2: id must be a string"),
    "view a list": (_second(lambda f: f.update(view=["model"])), "Finding 2: view must be an object"),
    "view value a number": (_second(lambda f: f["view"].update(layer=3)), "Finding 2: view['layer'] must be a string"),
    "inputs a list": (_second(lambda f: f.update(inputs=[1])), "Finding 2: inputs must be an object"),
    "numbers a list": (_second(lambda f: f.update(numbers=[1.0])), "Finding 2: numbers must be an object"),
    "number a bool": (_second(lambda f: f["numbers"].update(flag=True)), "numbers['flag'] must be a finite number"),
    "number a string": (_second(lambda f: f["numbers"].update(x="1")), "numbers['x'] must be a finite number"),
    "number huge int": (_second(lambda f: f["numbers"].update(x=10**400)), "numbers['x'] must be a finite number"),
    "too many numbers": (_second(lambda f: f.update(numbers={f"n{i}": 1.0 for i in range(MAX_NUMBERS + 1)})),
                         f"numbers has {MAX_NUMBERS + 1} entries; the limit is {MAX_NUMBERS}"),
    "charts an object": (_second(lambda f: f.update(charts={})), "Finding 2: charts must be a list"),
    "chart a string": (_second(lambda f: f.update(charts=["bars"])), 'chart 1 must be an object with a "title"'),
    "chart spec a list": (_second(lambda f: f["charts"][0].update(spec=[])), 'chart 1 must be an object'),
    "chart without title": (_second(lambda f: f["charts"][0].pop("title")), 'chart 1 must be an object'),
    "chart title too long": (_second(lambda f: f["charts"][0].update(title="x" * 201)), "chart 1's title is 201"),
    "too many charts": (_second(lambda f: f.update(charts=f["charts"] * (MAX_CHARTS + 1))),
                        f"charts has {MAX_CHARTS + 1} entries; the limit is {MAX_CHARTS}"),
    "chart from a URL": (_second(lambda f: f["charts"][0]["spec"].update(data={"url": "http://example.org/x.csv"})),
                         "chart 1 loads something from a URL"),
}


@pytest.mark.parametrize("name", BAD_DOCUMENTS)
def test_a_bad_document_is_refused_with_a_sentence_saying_what_is_wrong(name):
    edit, words = BAD_DOCUMENTS[name]
    document = _document()
    edit(document)
    with pytest.raises(FindingsImportError, match=re.escape(words)):
        loads(json.dumps(document), max_findings=10, max_bytes=10_000_000)


BAD_FILES = {  # name -> (file bytes, max_findings, max_bytes, words)
    "over the size cap": (b"{}" * 600_000, 10, 1_000_000, "The file is 1.2 MB; the limit is 1 MB"),
    "not UTF-8": (b'{"schema": "\xff\xfe"}', 10, 1_000, "not UTF-8"),
    "not JSON": (b'{"schema": ', 10, 1_000, "not valid JSON"),
    "NaN is not JSON": (b'{"numbers": NaN}', 10, 1_000, "not valid JSON"),
    "an array": (b"[1, 2]", 10, 1_000, "not an object"),
    "too deep": (b"[" * 100_000, 10, 1_000_000, "not valid JSON"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_is_refused_with_a_sentence_saying_what_is_wrong(name):
    data, max_findings, max_bytes, words = BAD_FILES[name]
    with pytest.raises(FindingsImportError, match=re.escape(words)):
        loads(data, max_findings, max_bytes)


def test_more_findings_than_the_limit_are_refused():
    with pytest.raises(FindingsImportError, match="The file holds 2 findings; the limit is 1"):
        loads(json.dumps(_document()), max_findings=1, max_bytes=10_000_000)


def test_the_example_of_the_schema_doc_loads():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "findings-schema.md").read_text()
    example = re.search(r"```json\n(.*?)```", doc, re.S).group(1)
    assert loads(example, 10, 100_000)[0].numbers == {"previous-token score": 0.81, "self score": 0.04}


def test_unknown_keys_are_ignored():
    document = _document()
    document["extra"] = 1
    document["findings"][0]["future_field"] = {"a": 1}
    assert len(loads(json.dumps(document), 10, 10_000_000)) == 2


# --- datasets -----------------------------------------------------------------------------------------------------
def test_inline_datasets_inverts_arrow_datasets_on_a_real_chart():
    spec = prediction_spec()
    arrowed = arrow_datasets(spec)
    assert all(isinstance(rows, bytes) for rows in arrowed["datasets"].values())
    assert inline_datasets(arrowed) == spec
    json.dumps(inline_datasets(arrowed), allow_nan=False)


def test_inline_datasets_gives_plain_json_values():
    import numpy as np

    spec = {"datasets": {"d": [{"a": np.float32(0.5), "b": float("nan"), "c": np.int64(3)}]}}
    assert inline_datasets(spec) == {"datasets": {"d": [{"a": 0.5, "b": None, "c": 3}]}}
    assert inline_datasets({"mark": "bar"}) == {"mark": "bar"}


# --- reopen links -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("page", "path"), [("app.py", ""), ("pages/2_Attribution.py", "Attribution"),
                                            ("pages/4_Logit_Lens.py", "Logit_Lens")])
def test_page_url_path_is_streamlits(page, path):
    assert page_url_path(page) == path


def test_reopen_link_opens_the_page_on_its_view():
    finding = make_finding(view={"model": "gpt2", "prompt": "Mary & John?"})
    expected = "http://localhost:8501/Attribution?model=gpt2&prompt=Mary+%26+John%3F"
    assert reopen_link(finding, BASE) == reopen_link(finding, BASE + "/") == expected
    assert reopen_link(make_finding(page="app.py", view={"model": "m"}), BASE) == "http://localhost:8501/?model=m"


# --- HTML ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report() -> str:
    return html_report([make_finding(i) for i in range(1, 4)], BASE)  # 3 findings of 2 charts


def test_user_text_is_escaped_in_the_html_report(report):
    assert HOSTILE not in report and "<b>HTML</b>" not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report and "&lt;b&gt;HTML&lt;/b&gt;" in report
    blocks = SPEC_BLOCK.findall(report)
    assert len(blocks) == 6
    assert not any("<" in block or ">" in block for block in blocks)  # so none can close its element
    specs = [json.loads(block) for block in blocks]
    assert specs[1]["title"] == HOSTILE  # the bar chart's title, kept as data
    assert any(row["token"] == HOSTILE for row in next(iter(specs[0]["datasets"].values())))


def test_html_report_has_contents_numbers_and_reopen_links(report):
    for i in range(1, 4):
        assert f'<a href="#finding-{i}">' in report and f'id="finding-{i}"' in report
    assert 'href="http://localhost:8501/Attribution?model=gpt2&amp;prompt=When+Mary+%26+John&amp;method=ig"' in report
    assert 'title="1.234567891e-05">1.23457e-05<' in report


def test_html_report_loads_nothing_from_a_network_and_inlines_vega_once(report):
    assert report.count(vega_bundle()) == 1 and report.count("window.vegaEmbed=") == 1
    assert "<link" not in report and "@import" not in report and "@font-face" not in report
    assert not re.search(r"""\bsrc\s*=\s*["']?\s*(https?:)?//""", report)
    hrefs = re.findall(r'<a [^>]*href="(https?:[^"]*)"', report)
    assert len(hrefs) == 3 and all(h.startswith(BASE + "/Attribution?") for h in hrefs)
    assert "default-src 'none'" in report  # the Content-Security-Policy


def test_ten_findings_of_three_charts_make_at_most_5_mb():
    assert len(html_report([make_finding(i, n_charts=3) for i in range(10)], BASE).encode("utf-8")) <= 5_000_000


# --- Markdown -----------------------------------------------------------------------------------------------------
def test_markdown_zip_has_the_report_and_one_png_per_chart(two_findings):
    archive = zipfile.ZipFile(io.BytesIO(markdown_zip(two_findings, BASE)))
    pngs = sorted(name for name in archive.namelist() if name.endswith(".png"))
    assert pngs == ["charts/finding-1-chart-1.png", "charts/finding-1-chart-2.png", "charts/finding-2-chart-1.png"]
    assert all(archive.read(name).startswith(b"\x89PNG") for name in pngs)
    text = archive.read("report.md").decode("utf-8")
    assert all(f"]({name})" in text for name in pngs)
    assert not re.search(r"(?<!\\)<(script|b>)", text)  # titles backslash-escaped, the note's HTML as &lt;
    assert "## 1. Finding 1 \\<script\\>" in text
    assert "````text\nWhen Mary and John went to the store, ``` John\n````" in text  # a fence longer than ```
    assert "| completeness residual | 1.23457e-05 |" in text
    assert "(<http://localhost:8501/Attribution?model=gpt2&prompt=When+Mary+%26+John&method=ig>)" in text


def test_a_note_renders_as_markdown_with_its_html_and_unsafe_links_as_text():
    from interp_core.findings.report import note_html

    rendered = note_html("**Name movers** copy it.\n\n<script>alert(1)</script> [x](javascript:alert(1))")
    assert "<strong>Name movers</strong>" in rendered
    assert "<script>" not in rendered and "&lt;script&gt;" in rendered
    assert 'href="javascript:' not in rendered
