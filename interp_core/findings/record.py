"""A finding: what a user pinned on one page (its view, model, prompt, charts, key numbers, title and note), and
the versioned JSON schema findings are exported in and imported from (docs/findings-schema.md describes it).

Importing is strict: a file is untrusted input, so every field is checked for its type and size and a bad file
raises FindingsImportError with a sentence saying what is wrong, before anything is added to the user's list.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from interp_core.errors import UserInputError

SCHEMA = "interp-workbench-findings"
VERSION = 1
MAX_TEXT = {"title": 200, "note": 20_000, "prompt": 20_000, "model": 1_000, "page": 200, "kind": 40, "id": 64,
            "weights": 128, "checkable": 1_000, "created": 64}  # characters of each text field
MAX_CHARTS = 12  # per finding
MAX_NUMBERS = 64  # per finding
MAX_NAME = 200  # characters of a number's name or a view key
MAX_VIEW = 64  # entries of a view (a page's URL query holds a dozen)


class FindingsImportError(UserInputError):
    """An imported findings file is not JSON, not our schema or version, over a cap, or has a bad field."""


@dataclass(frozen=True)
class FindingChart:
    """One chart of a finding: its title and its Vega-Lite spec with every dataset inline (lists of records)."""

    title: str
    spec: dict


@dataclass(frozen=True)
class Finding:
    """One pinned observation.

    `page` is the page's file relative to app.py ("app.py", "pages/2_Attribution.py"); `view` the page's URL
    query (str -> str) that reopens it, the prompt included; `model` the model reference and `weights` a sha256 of
    its parameters (interp_core.findings.kinds.weights_digest), so a re-check knows whether it has the same model.
    `inputs` are what the finding's `kind` recomputes `numbers` from (JSON values); `numbers` name -> finite
    float. `checkable` is "" when a re-check can recompute the numbers, else the reason it cannot (an uploaded
    file, a lens trained in the session).
    """

    id: str
    kind: str
    page: str
    title: str
    note: str
    model: str
    weights: str
    prompt: str
    view: dict[str, str]
    inputs: dict
    numbers: dict[str, float]
    charts: tuple[FindingChart, ...] = ()
    checkable: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self):
        bad = [name for name, value in self.numbers.items() if not math.isfinite(value)]
        if bad:
            raise ValueError(f"numbers must be finite: {bad}")

    def to_json(self) -> dict:
        return asdict(self)


def dumps(findings: list[Finding]) -> str:
    """The findings as one JSON document of the schema (indented, UTF-8 text)."""
    document = {"schema": SCHEMA, "version": VERSION,
                "exported": datetime.now(UTC).isoformat(timespec="seconds"),
                "findings": [finding.to_json() for finding in findings]}
    return json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False)


def new_id() -> str:
    """A fresh finding id: 12 hex characters of a random UUID."""
    return uuid.uuid4().hex[:12]


def loads(data: bytes | str, max_findings: int, max_bytes: int) -> list[Finding]:
    """The findings of a document `dumps` wrote, checked field by field (module docstring); raises
    FindingsImportError with one sentence naming the first problem. Unknown keys are ignored."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        size = math.ceil(len(raw) / 1e5) / 10  # MB, rounded up so that it never reads as the limit
        raise FindingsImportError(f"The file is {size:.1f} MB; the limit is {max_bytes / 1e6:g} MB.")
    document = _parse(raw)
    if not isinstance(document, dict):
        raise FindingsImportError("The file is JSON but not a findings document (its top level is not an object).")
    if document.get("schema") != SCHEMA:
        raise FindingsImportError(f'The file is not a findings export: its "schema" is not "{SCHEMA}".')
    version = document.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise FindingsImportError(f"This file was written by a newer version ({version}); this app reads version "
                                  f"{VERSION}.")
    if version != VERSION or isinstance(version, bool):
        raise FindingsImportError(f'The file\'s "version" is {json.dumps(version)[:40]}; this app reads version '
                                  f"{VERSION}.")
    items = document.get("findings")
    if not isinstance(items, list):
        raise FindingsImportError('The file\'s "findings" is not a list.')
    if len(items) > max_findings:
        raise FindingsImportError(f"The file holds {len(items)} findings; the limit is {max_findings}.")
    return [_finding(item, f"Finding {i}") for i, item in enumerate(items, start=1)]


def _parse(raw: bytes):
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark some editors write is not an error
    except UnicodeDecodeError as exc:
        raise FindingsImportError("The file is not UTF-8 text.") from exc
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FindingsImportError(f"The file is not valid JSON ({str(exc)[:120]}).") from exc


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finding(item, where: str) -> Finding:
    if not isinstance(item, dict):
        raise FindingsImportError(f"{where} is not an object.")

    def get(name: str, kind: type, label: str):
        if name not in item:
            raise FindingsImportError(f"{where}: {name} is missing.")
        value = item[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise FindingsImportError(f"{where}: {name} must be {label}.")
        return value

    texts = {name: _text(get(name, str, "a string"), MAX_TEXT[name], f"{where}: {name}") for name in MAX_TEXT}
    return Finding(**texts, view=_view(get("view", dict, "an object"), where),
                   inputs=get("inputs", dict, "an object"), numbers=_numbers(get("numbers", dict, "an object"), where),
                   charts=_charts(get("charts", list, "a list"), where))


def _text(value: str, cap: int, what: str) -> str:
    if len(value) > cap:
        raise FindingsImportError(f"{what} is {len(value):,} characters long; the limit is {cap:,}.")
    return value


def _view(view: dict, where: str) -> dict[str, str]:
    if len(view) > MAX_VIEW:
        raise FindingsImportError(f"{where}: view has {len(view)} entries; the limit is {MAX_VIEW}.")
    for key, value in view.items():
        if not isinstance(value, str):
            raise FindingsImportError(f"{where}: view[{key[:40]!r}] must be a string.")
        _text(key, MAX_NAME, f"{where}: a view key")
        _text(value, MAX_TEXT["prompt"], f"{where}: view[{key[:40]!r}]")
    return view


def _numbers(numbers: dict, where: str) -> dict[str, float]:
    if len(numbers) > MAX_NUMBERS:
        raise FindingsImportError(f"{where}: numbers has {len(numbers)} entries; the limit is {MAX_NUMBERS}.")
    checked = {}
    for name, value in numbers.items():
        _text(name, MAX_NAME, f"{where}: a number's name")
        checked[name] = _finite(value, f"{where}: numbers[{name[:40]!r}]")
    return checked


def _finite(value, what: str) -> float:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    except OverflowError:  # an integer too large for a float
        pass
    raise FindingsImportError(f"{what} must be a finite number.")


def _charts(charts: list, where: str) -> tuple[FindingChart, ...]:
    if len(charts) > MAX_CHARTS:
        raise FindingsImportError(f"{where}: charts has {len(charts)} entries; the limit is {MAX_CHARTS}.")
    checked = []
    for i, chart in enumerate(charts, start=1):
        what = f"{where}: chart {i}"
        title, spec = (chart.get("title"), chart.get("spec")) if isinstance(chart, dict) else (None, None)
        if not isinstance(title, str) or not isinstance(spec, dict):
            raise FindingsImportError(f'{what} must be an object with a "title" string and a "spec" object.')
        if _has_url(spec):
            raise FindingsImportError(f"{what} loads something from a URL; only charts with inline data are read.")
        checked.append(FindingChart(_text(title, MAX_TEXT["title"], f"{what}'s title"), spec))
    return tuple(checked)


def _has_url(spec: dict) -> bool:
    """Whether any object in the spec has a "url" key (data, an image mark's url channel): a chart drawn from an
    imported file must not make the browser, or the PNG renderer, fetch anything."""
    stack = [spec]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if "url" in value:
                return True
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False
