"""BENCHMARKS.md from the rows of one run: the machine, one results table, then what missed its target and why."""

from __future__ import annotations

import datetime

from bench.common import Plan, Row


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _met(row: Row) -> str:
    if row.met is None:
        return ""
    return "yes" if row.met else "**MISSED**"


def _block(profile: str) -> list[str]:
    """A markdown table as it is; anything else (a profiler table) as a code block."""
    if profile.startswith("|"):
        return [profile, ""]
    return ["```", profile.strip() or "(no profile recorded)", "```", ""]


def results_table(rows: list[Row]) -> str:
    lines = ["| workload | case | model | ours | anchor | anchor's time | ours / anchor | target | met | check |",
             "|---|---|---|---|---|---|---:|---|---|---|"]
    for r in rows:
        ours = r.ours.fmt() if r.ours is not None else r.value
        if r.ours is not None and r.value:
            ours += f"; {r.value}"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        check = r.check + (f" ({r.note})" if r.note else "")
        lines.append("| " + " | ".join(_cell(x) for x in (
            r.workload, r.case, r.model, ours, r.anchor_name, r.anchor.fmt() if r.anchor else "", ratio, r.target,
            _met(r), check)) + " |")
    return "\n".join(lines)


def render(plan: Plan, machine: dict[str, str], rows: list[Row], notes: list[str], elapsed_s: float,
           command: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks: the workbench vs TransformerLens and Captum, side by side",
        "",
        f"Written by `{command}` (bench/run.py, plan `{plan.name}`) on {now}; the whole run took "
        f"{elapsed_s / 60:.1f} minutes. Every number below comes from that one run: ours and the anchor on the same "
        "machine, model and inputs, interleaved repeat by repeat. Times are medians with (min-max, number of "
        "repeats); **ours / anchor** is the ratio of the medians (below 1: we are faster).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in machine.items()]
    out += ["", "## Results", "", results_table(rows), ""]
    missed = [r for r in rows if r.met is False]
    met_count = sum(1 for r in rows if r.met)
    out += ["## Targets", "",
            f"{met_count} of {met_count + len(missed)} rows with a target met it"
            + (":  none missed." if not missed else f"; {len(missed)} missed, each explained below with the "
                                                     "profile that shows where the time or memory goes."), ""]
    for r in missed:
        out += [f"### Missed: {r.workload} - {r.case} ({r.model})", ""]
        if r.ratio is not None:
            out.append(f"Ours {r.ours.fmt()} vs {r.anchor_name} {r.anchor.fmt()}: {r.ratio:.2f}x; target {r.target}.")
        else:
            out.append(f"Measured {r.value or (r.ours.fmt() if r.ours else '')}; target {r.target}.")
        out += [""] + _block(r.profile)
    for r in rows:
        if r.section and r.met is not False:
            out += [f"## {r.section}", "", r.profile.strip(), ""]
    details = [r for r in rows if r.profile and r.met is not False and not r.section]
    if details:
        out += ["## Breakdowns", ""]
        for r in details:
            out += [f"### {r.workload} - {r.case} ({r.model})", ""]
            out += _block(r.profile)
    out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
