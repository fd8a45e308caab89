"""Circuit charts: head-detector grids, a head's pattern on the repeated tokens, per-token loss on both copies,
patching heatmaps (residual stream layer x position, heads layer x head), exact vs attribution, ablation.

    >>> st.altair_chart(detector_grid(run.scores, "induction"), on_select=callback, selection_mode=HEAD_PICK,
    ...                 key="circuits_grid")                   # selected_point(event, HEAD_PICK) -> layer, head
    >>> st.altair_chart(resid_patching_heatmap(result, vmax=1.0))

Patching values are signed (a site can push the answer further than the clean run, or the wrong way), so their
colour scale is diverging and centred on 0; exact and attribution heatmaps share one scale via `vmax`.
"""

from __future__ import annotations

import math
import textwrap

import altair as alt
import pandas as pd

from interp_core.charts.heads import HEAD_CELL, clickable_head_grid
from interp_core.circuits import DETECTORS, HeadScores, RepeatedRun, head_label
from interp_core.patching import PatchingResult, TaskAblation
from interp_core.tokens import token_labels

HEAD_PICK = "circuit_head"  # name of the point selection on the detector grids (fields: layer, head)
MAX_SIDE = 640  # pixels; token heatmaps never grow beyond this
DIVERGING = "redblue"  # red = negative (pushes the wrong way), blue = positive (1 = the clean answer restored)


def _cell(n: int, max_side: int = MAX_SIDE, lo: int = 10, hi: int = 30) -> int:
    return int(max(lo, min(hi, max_side // max(n, 1))))


def shared_vmax(*results: PatchingResult) -> float:
    """A symmetric colour range that shows 1 (full recovery) and every value of `results` (NaN-safe)."""
    vmax = 1.0
    for result in results:
        values = result.values[~result.values.isnan()]
        if values.numel():
            vmax = max(vmax, float(values.abs().max()))
    return vmax


# -- detectors -------------------------------------------------------------------------------------------


def _detector_scale(detector: str) -> alt.Scale:
    if detector == "ov_copying":  # an eigenvalue balance: negative is anti-copying
        return alt.Scale(scheme="redblue", domain=[-1, 1])
    return alt.Scale(scheme="blues", domain=[0, 1])


def detector_grid(scores: HeadScores, detector: str, selected: tuple[int, int] | None = None) -> alt.Chart:
    """Layer x head grid coloured by one detector's score (0 to 1; the OV copying score -1 to 1, diverging),
    every detector in the tooltip.

    Clicking a cell selects it through the point selection `HEAD_PICK` (fields layer, head); `selected` is
    outlined. Heads whose score is NaN (no query qualifies on this input) are grey.
    """
    if detector not in scores.detectors:
        raise ValueError(f"Unknown detector {detector!r}; known: {', '.join(scores.detectors)}")
    frame = scores.wide_frame()
    frame["score"] = frame[detector]
    frame["selected"] = [(row.layer, row.head) == selected for row in frame.itertuples()]
    tooltip = [alt.Tooltip("head_label:N", title="head")] + [
        alt.Tooltip(f"{name}:Q", title=f"{name} score", format=".3f") for name in scores.detectors]
    title = alt.TitleParams(f"{detector} score of every head",
                            subtitle=[*textwrap.wrap(f"{DETECTORS[detector]}, on {scores.source}.", 48),
                                      "Click a head to open it."])
    return clickable_head_grid(frame, "score", f"{detector} score", _detector_scale(detector), tooltip,
                               "abs(datum.score) > 0.6", HEAD_PICK, title)


def repeated_pattern_heatmap(run: RepeatedRun, layer: int, head: int) -> alt.Chart:
    """Head (layer, head)'s attention on sequence 0 of the repeated tokens, queries down and keys across.

    Induction shows as a stripe one step right of the diagonal's copy (key = query - n + 1); duplicate-token
    heads sit exactly on it (key = query - n); previous-token heads hug the diagonal.
    """
    n_pos = len(run.tokens)
    labels = token_labels(run.tokens)
    weights = run.attention[layer, head]  # [query_pos, key_pos]
    rows = [{"query": q, "key": k, "query_label": labels[q], "key_label": labels[k], "weight": float(weights[q, k]),
             "query_copy": run.sequences.copy_of(q), "key_copy": run.sequences.copy_of(k)}
            for q in range(n_pos) for k in range(q + 1)]
    cell = _cell(n_pos)
    return (
        alt.Chart(pd.DataFrame(rows), title=alt.TitleParams(
            f"Attention of {head_label(layer, head)} on the repeated random tokens (sequence 1 of "
            f"{run.sequences.ids.shape[0]})",
            subtitle=[f"first copy: positions {run.sequences.prefix}-{run.sequences.prefix + run.sequences.length - 1},"
                      f" second copy: {run.sequences.prefix + run.sequences.length}-{n_pos - 1}"]))
        .mark_rect()
        .encode(
            x=alt.X("key_label:N", sort=labels, title="key (attended-to token)",
                    axis=alt.Axis(labelAngle=-60, labelLimit=100, orient="top")),
            y=alt.Y("query_label:N", sort=labels, title="query (attending token)", axis=alt.Axis(labelLimit=100)),
            color=alt.Color("weight:Q", title="weight", scale=alt.Scale(scheme="blues", domain=[0, 1])),
            tooltip=[alt.Tooltip("query_label:N", title="query"), alt.Tooltip("key_label:N", title="key"),
                     alt.Tooltip("weight:Q", format=".3f")],
        )
        .properties(width=alt.Step(cell), height=alt.Step(cell))
    )


COPY_COLOURS = {"BOS": ("#bdbdbd", "#e0e0e0"), "first copy": ("#8c8c8c", "#c7c7c7"),
                "second copy": ("#2166ac", "#d6604d")}  # per copy: the first run's colour, then the others'


def copy_loss_chart(*runs: RepeatedRun) -> alt.Chart:
    """Per-token loss (mean over the sequences) by position: one line per copy and run (the first run solid,
    ablated runs dashed and in a second colour). Induction shows as a second copy far below the first."""
    frame = pd.concat([run.loss_frame() for run in runs], ignore_index=True)
    frame["line"] = frame["copy"] + ", " + frame["ablation"]
    first_run = frame["ablation"].iloc[0]
    lines = frame.drop_duplicates("line")
    colours = [COPY_COLOURS[row.copy][row.ablation != first_run] for row in lines.itertuples()]
    return (
        alt.Chart(frame, title=alt.TitleParams("Loss on each token of the repeated sequences",
                                               subtitle=["mean over the sequences; lower = better predicted"]))
        .mark_line(point=True)
        .encode(
            x=alt.X("position:Q", title="position of the predicted token"),
            y=alt.Y("loss:Q", title="loss (nats)", scale=alt.Scale(zero=True)),
            color=alt.Color("line:N", title=None, scale=alt.Scale(domain=list(lines["line"]), range=colours),
                            legend=alt.Legend(labelLimit=300)),
            strokeDash=alt.StrokeDash("ablation:N", sort=list(dict.fromkeys(frame["ablation"])), legend=None),
            tooltip=[alt.Tooltip("label:N", title="token (sequence 1)"), alt.Tooltip("copy:N"),
                     alt.Tooltip("ablation:N", title="run"), alt.Tooltip("loss:Q", title="mean loss", format=".3f")],
        )
        .properties(width=560, height=260)
    )


# -- patching -------------------------------------------------------------------------------------------


def _diverging(vmax: float, title: str) -> alt.Color:
    vmax = vmax if vmax and math.isfinite(vmax) else 1.0
    return alt.Color("value:Q", title=title,
                     scale=alt.Scale(scheme=DIVERGING, domain=[-vmax, vmax], domainMid=0))


def _method_title(result: PatchingResult) -> str:
    return "Exact activation patching" if result.method == "exact" else "Attribution patching (estimate)"


def resid_patching_heatmap(result: PatchingResult, vmax: float = 1.0) -> alt.Chart:
    """Residual stream, layer (rows; "final" = output of the last block) x position (columns, clean tokens)."""
    if result.kind != "resid":
        raise ValueError("resid_patching_heatmap needs a result of kind 'resid'")
    frame = result.to_frame()
    labels = token_labels(result.clean_tokens)
    layer_order = [str(layer) for layer in range(result.n_layers)] + ["final"]
    cell = _cell(len(labels), max_side=1000, lo=10, hi=40)
    return (
        alt.Chart(frame, title=alt.TitleParams(_method_title(result), subtitle=["residual stream: layer x position"]))
        .mark_rect()
        .encode(
            x=alt.X("label:N", sort=labels, title="position (clean token)",
                    axis=alt.Axis(labelAngle=-60, labelLimit=100)),
            y=alt.Y("layer_label:N", sort=layer_order, title="residual stream before layer"),
            color=_diverging(vmax, "restored"),
            tooltip=[alt.Tooltip("site:N"), alt.Tooltip("clean:N", title="clean token"),
                     alt.Tooltip("corrupted:N", title="corrupted token"),
                     alt.Tooltip("value:Q", title="restored (1 = clean)", format=".3f")],
        )
        .properties(width=alt.Step(cell), height=alt.Step(24))
    )


def head_patching_heatmap(result: PatchingResult, vmax: float = 1.0) -> alt.Chart:
    """Each head's output at every position patched at once: layer (rows) x head (columns)."""
    if result.kind != "head":
        raise ValueError("head_patching_heatmap needs a result of kind 'head'")
    frame = result.to_frame()
    base = alt.Chart(frame).encode(
        x=alt.X("head:O", title="head", axis=alt.Axis(orient="top", labelAngle=0)),
        y=alt.Y("layer:O", title="layer"),
    )
    rects = base.mark_rect().encode(
        color=_diverging(vmax, "restored"),
        tooltip=[alt.Tooltip("head_label:N", title="head"), alt.Tooltip("site:N"),
                 alt.Tooltip("value:Q", title="restored (1 = clean)", format=".3f")],
    )
    text = base.mark_text(fontSize=10).encode(text=alt.Text("value:Q", format=".2f"))
    return (rects + text).properties(
        width=alt.Step(HEAD_CELL), height=alt.Step(HEAD_CELL),
        title=alt.TitleParams(_method_title(result), subtitle=["each head's output at all positions"]),
    )


def patching_scatter(exact: PatchingResult, approx: PatchingResult, correlation: float) -> alt.Chart:
    """Attribution estimate (y) against the exact value (x) per site, with the line y = x."""
    a, b = exact.to_frame(), approx.to_frame()
    frame = a.assign(exact=a["value"], attribution=b["value"].to_numpy())
    key = "head_label" if exact.kind == "head" else "label"
    lo = float(min(frame["exact"].min(), frame["attribution"].min(), 0.0))
    hi = float(max(frame["exact"].max(), frame["attribution"].max(), 1.0))
    diagonal = alt.Chart(pd.DataFrame({"exact": [lo, hi], "attribution": [lo, hi]})).mark_line(
        color="#8c8c8c", strokeDash=[4, 4]).encode(x="exact:Q", y="attribution:Q")
    tooltip = [alt.Tooltip("site:N"), alt.Tooltip("exact:Q", format=".3f"), alt.Tooltip("attribution:Q", format=".3f")]
    if exact.kind == "resid":
        tooltip.insert(1, alt.Tooltip("label:N", title="position"))
    points = alt.Chart(frame).mark_circle(size=50, opacity=0.7).encode(
        x=alt.X("exact:Q", title="exact patching"), y=alt.Y("attribution:Q", title="attribution patching"),
        tooltip=tooltip, detail=f"{key}:N",
    )
    what = "heads" if exact.kind == "head" else "residual sites"
    return (diagonal + points).properties(
        width=300, height=300,
        title=alt.TitleParams(f"Estimate vs exact, {what}", subtitle=[f"Pearson r = {correlation:.3f}; "
                                                                      "dashed line: a perfect estimate"]),
    )


def ablation_bars(result: TaskAblation) -> alt.Chart:
    """The metric on the patching scale for the intact clean run, the ablated clean run and the corrupted run."""
    frame = result.to_frame()
    order = list(frame["run"])
    return (
        alt.Chart(frame, title=alt.TitleParams(
            f"logit({result.answer}) - logit({result.foil})", subtitle=["1 = clean prompt, 0 = corrupted prompt"]))
        .mark_bar()
        .encode(
            y=alt.Y("run:N", sort=order, title=None, axis=alt.Axis(labelLimit=320)),
            x=alt.X("normalised:Q", title="normalised logit difference"),
            color=alt.Color("normalised:Q", legend=None,
                            scale=alt.Scale(scheme=DIVERGING, domainMid=0)),
            tooltip=[alt.Tooltip("run:N"), alt.Tooltip("logit_diff:Q", title="logit difference", format=".3f"),
                     alt.Tooltip("normalised:Q", format=".3f")],
        )
        .properties(width=420, height=alt.Step(36))
    )
