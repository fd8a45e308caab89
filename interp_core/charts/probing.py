"""Probing charts: accuracy per layer with its controls, selectivity per layer, and a confusion matrix.

    >>> accuracy_chart(report)           # balanced accuracy vs layer, error bars = std over folds, baseline rule
    >>> selectivity_chart(report)        # task - control accuracy per layer (Hewitt & Liang 2019)
    >>> confusion_chart(report, layer)   # true x predicted class counts of the held-out predictions
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from interp_core.probing import ProbeReport

# probe id (ProbeReport.to_frame) -> legend label, in legend order
SERIES = {
    "task": "linear probe: task",
    "mlp": "MLP probe: task",
    "control": "linear probe: control task",
}
SERIES_COLORS = {"task": "#1f77b4", "mlp": "#9467bd", "control": "#ff7f0e"}
LAYER_WIDTH = 70  # pixels per layer on the x axis (minimum chart width 360)
CELL = 46  # pixels per confusion-matrix cell
# Streamlit fits the WHOLE chart (title, axes, legend) into width x height unless autosize is "pad"; with
# "pad" width and height are the plot area, as Altair documents (measured with streamlit 1.67 in Chromium).
PAD = alt.AutoSizeParams(type="pad")


def _layer_axis(report: ProbeReport) -> alt.X:
    return alt.X("layer:O", sort=[int(x) for x in report.layers],
                 title="residual-stream layer (0 = embeddings)", axis=alt.Axis(labelAngle=0))


def _width(report: ProbeReport) -> int:
    return max(360, LAYER_WIDTH * (report.n_layers + 1))


def accuracy_chart(report: ProbeReport) -> alt.LayerChart:
    """Balanced accuracy (held-out, mean over folds) against layer for every probe in the report, error bars
    at mean +/- std over folds, and the majority-class baseline as a dashed rule."""
    frame = report.to_frame()
    lines = frame[frame["probe"] != "majority baseline"].copy()
    lines["series"] = lines["probe"].map(SERIES)
    present = [p for p in SERIES if p in set(lines["probe"])]
    color = alt.Color("series:N", title="probe", sort=[SERIES[p] for p in present],
                      scale=alt.Scale(domain=[SERIES[p] for p in present], range=[SERIES_COLORS[p] for p in present]),
                      legend=alt.Legend(orient="right"))
    tooltip = [alt.Tooltip("series:N", title="probe"), alt.Tooltip("layer:O", title="layer"),
               alt.Tooltip("reads:N", title="reads"),
               alt.Tooltip("balanced_accuracy:Q", title="balanced accuracy (mean)", format=".3f"),
               alt.Tooltip("std:Q", title="std over folds", format=".3f")]
    base = alt.Chart(lines).encode(x=_layer_axis(report), color=color)
    line = base.mark_line(point=alt.OverlayMarkDef(size=60)).encode(
        y=alt.Y("balanced_accuracy:Q", title="balanced accuracy (held-out sentences)",
                scale=alt.Scale(domain=[0, 1])),
        tooltip=tooltip,
    )
    bars = base.mark_errorbar(ticks=True).encode(
        y=alt.Y("low:Q", title="balanced accuracy (held-out sentences)", scale=alt.Scale(domain=[0, 1])),
        y2="high:Q", tooltip=tooltip)
    baseline = pd.DataFrame({"baseline": [report.baseline],
                             "label": [f"majority baseline {report.baseline:.2f}"]})
    rule = alt.Chart(baseline).mark_rule(strokeDash=[6, 4], color="#555555").encode(
        y="baseline:Q",
        tooltip=[alt.Tooltip("label:N", title="baseline"),
                 alt.Tooltip("baseline:Q", title="balanced accuracy", format=".3f")],
    )
    text = alt.Chart(baseline).mark_text(align="right", dx=-2, dy=-7, color="#555555", fontSize=11).encode(
        y="baseline:Q", x=alt.value(_width(report)), text="label:N")
    return (rule + text + bars + line).properties(
        width=_width(report), height=320, autosize=PAD,
        title=alt.TitleParams(f"Probe accuracy by layer: {report.dataset_name}",
                              subtitle=[f"{report.config.n_folds}-fold cross-validation grouped by sentence; "
                                        "error bars: mean +/- std over folds"]),
    )


def selectivity_chart(report: ProbeReport) -> alt.LayerChart:
    """Selectivity (task - control balanced accuracy, Hewitt & Liang 2019) per layer as bars from 0 (blue above,
    red below). Raises ValueError when the report has no control task (report.no_control_reason says why)."""
    if report.selectivity is None:
        raise ValueError("this report has no control task, so it has no selectivity")
    table = report.layer_table()
    bars = alt.Chart(table).mark_bar(size=min(40, LAYER_WIDTH - 20)).encode(
        x=_layer_axis(report),
        y=alt.Y("selectivity:Q", title="selectivity (task - control)", scale=alt.Scale(domain=[-0.2, 1])),
        color=alt.condition("datum.selectivity < 0", alt.value("#d62728"), alt.value("#1f77b4")),
        tooltip=[alt.Tooltip("layer:O", title="layer"), alt.Tooltip("reads:N", title="reads"),
                 alt.Tooltip("task_mean:Q", title="task accuracy", format=".3f"),
                 alt.Tooltip("control_mean:Q", title="control accuracy", format=".3f"),
                 alt.Tooltip("selectivity:Q", title="selectivity", format=".3f")],
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#333333").encode(y="y:Q")
    return (bars + zero).properties(
        width=_width(report), height=220, autosize=PAD,
        title=alt.TitleParams("Selectivity by layer (Hewitt & Liang 2019)",
                              subtitle=["high: the probe reads the property; near 0: it could as well be "
                                        "memorising word identities"]),
    )


def confusion_chart(report: ProbeReport, layer: int) -> alt.LayerChart:
    """True (rows) x predicted (columns) heatmap of the out-of-fold predictions at `layer`; colour = share of
    the true class (row-normalised, 0..1), text = count."""
    frame = report.confusion_frame(layer)
    classes = list(report.classes)
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=classes, title="predicted class", axis=alt.Axis(labelAngle=-30, orient="top")),
        y=alt.Y("true:N", sort=classes, title="true class"),
    )
    rects = base.mark_rect().encode(
        color=alt.Color("share:Q", title="share of true class", scale=alt.Scale(scheme="blues", domain=[0, 1])),
        tooltip=[alt.Tooltip("true:N", title="true"), alt.Tooltip("predicted:N", title="predicted"),
                 alt.Tooltip("count:Q", title="examples"), alt.Tooltip("share:Q", title="share of true class",
                                                                      format=".1%")],
    )
    text = base.mark_text(fontSize=11).encode(
        text="count:Q",
        color=alt.condition("datum.share > 0.6", alt.value("#ffffff"), alt.value("#1f2430")),
    )
    side = max(160, CELL * len(classes))
    return (rects + text).properties(
        width=side, height=side, autosize=PAD,
        title=alt.TitleParams(f"Confusion matrix at layer {layer}",
                              subtitle=["held-out predictions of the linear probe, all folds together"]),
    )
