"""Logit-lens and direct-logit-attribution charts.

    >>> lens_heatmap(lens, "kl_to_final")               # layer x position, cells labelled with the top-1 token
    >>> target_trajectory_chart(lens, pos=-1)            # the target's probability and rank per layer
    >>> event = st.altair_chart(dla_heatmap(dla), on_select="rerun", key="dla")   # click -> COMPONENT_PICK
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from interp_core.charts import natural_size, token_axis
from interp_core.lens import LENS_METRICS, LensResult, LogitAttribution, TokenEffects
from interp_core.tokens import token_labels

COMPONENT_PICK = "component_pick"  # name of the point selection on the DLA heatmap (field: component)
LENS_CELL_W, LENS_CELL_H = 68, 26  # pixels: room for a short token in each cell (widest)
LENS_WIDTH = 640  # pixels: the most the lens heatmap's cells take (the main column at a 1,280-px window)
_SCALES = {  # metric -> colour scheme (probabilities on a fixed 0..1 scale)
    "top1_prob": alt.Scale(scheme="blues", domain=[0, 1]),
    "target_prob": alt.Scale(scheme="blues", domain=[0, 1]),
    "entropy": alt.Scale(scheme="purples", domainMin=0),
    "kl_to_final": alt.Scale(scheme="oranges", domainMin=0),
}


def _flip(frame: pd.DataFrame, metric: str) -> float:
    """Metric value above which a cell is dark enough for white text."""
    top = 1.0 if metric.endswith("prob") else float(frame[metric].max())
    return 0.6 * top


def lens_heatmap(lens: LensResult, metric: str = "top1_prob", start: int = 0, stop: int | None = None) -> alt.Chart:
    """Layer x position heatmap of positions [start, stop): each cell shows the lens' top-1 token; the colour is
    `metric` (a LENS_METRICS key). Layers run upwards to the model's output at the top. Tooltip: the top-k tokens
    with their probabilities, entropy, KL to the final layer, and the target's probability and rank."""
    if metric not in LENS_METRICS:
        raise ValueError(f"Unknown lens metric {metric!r}; known: {', '.join(LENS_METRICS)}")
    stop = lens.n_pos if stop is None else stop
    frame = lens.to_frame()
    frame = frame[(frame["pos"] >= start) & (frame["pos"] < stop)]
    columns = token_labels(lens.tokens)[start:stop]
    rows = list(reversed(lens.layer_labels))  # output at the top
    title, _ = LENS_METRICS[metric]
    cell_w = max(40, min(LENS_CELL_W, LENS_WIDTH // max(len(columns), 1)))
    base = alt.Chart(frame).encode(
        x=alt.X("pos_label:N", sort=columns, title="input position (predicting the token after it)",
                axis=token_axis(labelAngle=-45, labelLimit=110, orient="top")),
        y=alt.Y("layer_label:N", sort=rows, title="residual stream after"),
    )
    rects = base.mark_rect().encode(
        color=alt.Color(f"{metric}:Q", title=title, scale=_SCALES[metric],
                        legend=alt.Legend(orient="bottom", direction="horizontal", titleOrient="left")),
        tooltip=[
            alt.Tooltip("pos_label:N", title="position"),
            alt.Tooltip("layer_label:N", title="layer"),
            alt.Tooltip("top_k:N", title="top tokens (probability)"),
            alt.Tooltip("entropy:Q", title="entropy (nats)", format=".3f"),
            alt.Tooltip("kl_to_final:Q", title="KL(final || layer)", format=".3f"),
            alt.Tooltip("target:N", title="target"),
            alt.Tooltip("target_prob:Q", title="target probability", format=".4f"),
            alt.Tooltip("target_rank:Q", title="target rank"),
        ],
    )
    text = base.mark_text(fontSize=10, limit=cell_w - 6).encode(
        text="top1:N",
        color=alt.condition(f"datum.{metric} > {_flip(frame, metric)}", alt.value("#ffffff"),
                            alt.value("#1f2430")),
    )
    return natural_size((rects + text).properties(
        width=cell_w * len(columns), height=LENS_CELL_H * len(rows),
        title=alt.TitleParams(f"{lens.lens_name}: the top-1 token at every layer and position",
                              subtitle=[f"colour: {title}"]),
    ))


def target_trajectory_chart(lens: LensResult, pos: int) -> alt.Chart:
    """Two small line charts over the layers for one position: the target's probability, and its rank
    (log scale, rank 1 at the top)."""
    frame = lens.trajectory_frame(pos)
    label = token_labels(lens.tokens)[pos % lens.n_pos]
    base = alt.Chart(frame).encode(
        x=alt.X("layer_label:N", sort=lens.layer_labels, title="residual stream after",
                axis=token_axis(labelAngle=-30)),
        tooltip=[
            alt.Tooltip("layer_label:N", title="layer"),
            alt.Tooltip("target:N", title="target"),
            alt.Tooltip("target_prob:Q", title="probability", format=".4f"),
            alt.Tooltip("target_rank:Q", title="rank"),
            alt.Tooltip("top1:N", title="top-1 token"),
        ],
    )
    prob = (base.mark_line(point=True)
            .encode(y=alt.Y("target_prob:Q", title="probability", scale=alt.Scale(domain=[0, 1])))
            .properties(width=320, height=220, title=f"p({lens.target_token}) after {label}"))
    rank = (base.mark_line(point=True, color="#e4572e")
            .encode(y=alt.Y("target_rank:Q", title="rank (1 = top)", scale=alt.Scale(type="log", reverse=True),
                           axis=alt.Axis(tickCount=4)))
            .properties(width=320, height=220, title=f"rank of {lens.target_token}"))
    return natural_size(alt.hconcat(prob, rank))


DLA_CELL_W = 46  # pixels: "+12.34" fits; GPT-2 small's 15 components (embed, 12 heads, bias, MLP) fit 1,280 px


def dla_heatmap(dla: LogitAttribution, selected: str | None = None) -> alt.Chart:
    """Layer x component heatmap of direct logit attributions (embeddings, each head, attention bias, MLP),
    blue = pushes the target's logit up, red = down, white = 0. Clicking a cell selects it through the point
    selection `COMPONENT_PICK` (field: component); the `selected` component is outlined. The constant bias term
    is left out (see the table)."""
    frame = dla.to_frame()
    frame = frame[frame["kind"] != "bias"].copy()
    frame["selected"] = frame["component"] == selected
    rows = ["embed"] + sorted({r for r in frame["row"] if r != "embed"}, key=lambda r: int(r[1:]))
    heads = sorted({c for c in frame["column"] if c.startswith("H")}, key=lambda c: int(c[1:]))
    columns = ["embed"] + heads + [c for c in ("attn bias", "MLP") if c in set(frame["column"])]
    extent = float(frame["contribution"].abs().max()) or 1.0
    pick = alt.selection_point(name=COMPONENT_PICK, fields=["component"], on="click", clear=False)
    base = alt.Chart(frame).encode(
        x=alt.X("column:N", sort=columns, title="component", axis=alt.Axis(orient="top", labelAngle=0)),
        y=alt.Y("row:N", sort=rows, title="layer"),
    )
    rects = base.mark_rect(cursor="pointer").encode(
        color=alt.Color("contribution:Q", title="logit contribution",
                        scale=alt.Scale(scheme="redblue", domain=[-extent, extent], domainMid=0),
                        legend=alt.Legend(orient="bottom", direction="horizontal", titleOrient="left")),
        stroke=alt.condition("datum.selected", alt.value("#e4572e"), alt.value("#ffffff")),
        strokeWidth=alt.condition("datum.selected", alt.value(3), alt.value(1)),
        tooltip=[alt.Tooltip("component:N"), alt.Tooltip("contribution:Q", format="+.3f"),
                 alt.Tooltip("rank:Q", title="rank by |contribution|")],
    ).add_params(pick)
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("contribution:Q", format="+.2f"),
        color=alt.condition(f"abs(datum.contribution) > {0.6 * extent}", alt.value("#ffffff"),
                            alt.value("#1f2430")),
    )
    return natural_size((rects + text).properties(
        width=DLA_CELL_W * len(columns), height=30 * len(rows),
        title=alt.TitleParams(f"Direct logit attribution to {dla.target_token} at position {dla.pos}",
                              subtitle=["click a cell to list the tokens that component promotes and suppresses"]),
    ))


def token_effects_chart(effects: TokenEffects) -> alt.Chart:
    """Horizontal bars: the tokens `effects.component` promotes most (blue) and suppresses most (red)."""
    frame = effects.to_frame()
    frame["label"] = [f"{t} (#{i})" for t, i in zip(frame["token"], frame["token_id"], strict=True)]
    order = list(frame.sort_values("logit_effect", ascending=False)["label"])
    extent = float(frame["logit_effect"].abs().max()) or 1.0
    return natural_size(
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("logit_effect:Q", title="direct effect on the logit"),
            y=alt.Y("label:N", sort=order, title=None, axis=token_axis(labelLimit=160)),
            color=alt.Color("logit_effect:Q", legend=None,
                            scale=alt.Scale(scheme="redblue", domain=[-extent, extent], domainMid=0)),
            tooltip=["direction:N", "token:N", "token_id:Q", alt.Tooltip("logit_effect:Q", format="+.3f")],
        )
        .properties(width=360, height=16 * len(frame),
                    title=f"Tokens {effects.component} promotes and suppresses at position {effects.pos}")
    )


def lens_divergence_chart(frame: pd.DataFrame, layer_labels: list[str]) -> alt.Chart:
    """Per residual row, each lens' mean KL(final || lens) on each text (log scale; the last row, 0 by definition,
    is left out of the scale) and its top-1 agreement with the model's output. `frame` is Divergence.to_frame()
    rows, one text or several."""
    shown = frame[frame["layer_label"] != layer_labels[-1]].assign(kl=lambda f: f["kl"].clip(lower=1e-4))
    base = alt.Chart(shown).encode(
        x=alt.X("layer_label:N", sort=layer_labels, title="residual stream after", axis=token_axis(labelAngle=-30)),
        color=alt.Color("lens:N", title="lens", scale=alt.Scale(domain=["logit lens", "tuned lens"],
                                                                range=["#4c78a8", "#e4572e"])),
        detail="text:N",
        tooltip=[alt.Tooltip("layer_label:N", title="layer"), alt.Tooltip("lens:N"), alt.Tooltip("text:N"),
                 alt.Tooltip("kl:Q", title="KL (nats)", format=".4f"),
                 alt.Tooltip("top1_agreement:Q", title="top-1 agreement", format=".1%")],
    )
    dash = alt.StrokeDash("text:N", title="text", legend=alt.Legend(symbolType="stroke", symbolStrokeColor="#555",
                                                                     symbolStrokeWidth=2))  # solid or dashed lines

    def panel(y: alt.Y, title: str) -> alt.LayerChart:  # the dash on the lines only: the legend then shows lines
        lines = base.mark_line().encode(y=y, strokeDash=dash)
        return (lines + base.mark_point(filled=True).encode(y=y)).properties(width=260, height=220, title=title)

    kl = panel(alt.Y("kl:Q", title="KL(final || lens), nats", scale=alt.Scale(type="log")),
               "distance from the model's output")
    agreement = panel(alt.Y("top1_agreement:Q", title="top-1 = the model's", scale=alt.Scale(domain=[0, 1]),
                            axis=alt.Axis(format="%")), "top-1 agreement with the output")
    return natural_size(alt.hconcat(kl, agreement))
