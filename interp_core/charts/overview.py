"""Overview dashboard charts: the next-token prediction, hidden-state evolution, the last position's logit lens,
and a token-importance bar.

    >>> prediction_bar(next_token_predictions(bundle, trace))
    >>> residual_evolution_chart(residual_evolution(trace))
"""

from __future__ import annotations

import altair as alt

from interp_core.charts import natural_size, token_axis
from interp_core.lens import LensResult, NextTokenPredictions, ResidualEvolution
from interp_core.tokens import token_labels

PANEL_WIDTH = 300  # pixels of data: two panels side by side, labels and legends included, fit a 1,280-px window
BAR_WIDTH = 200  # pixels: the prediction bars and their token labels beside the top-k table


def prediction_bar(predictions: NextTokenPredictions) -> alt.Chart:
    """Horizontal bars of the model's top-k next tokens with their probabilities, most likely on top."""
    frame = predictions.to_frame()
    frame["label"] = [f"{r}. {t}" for r, t in zip(frame["rank"], frame["token"], strict=True)]
    return natural_size(
        alt.Chart(frame)
        .mark_bar(color="#3b5ba5")
        .encode(
            x=alt.X("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("label:N", sort=list(frame["label"]), title=None, axis=token_axis(labelLimit=160)),
            tooltip=["rank:Q", "token:N", "token_id:Q", alt.Tooltip("probability:Q", format=".4f"),
                     alt.Tooltip("logit:Q", format=".3f")],
        )
        .properties(width=BAR_WIDTH, height=22 * len(frame), title="Next-token prediction")
    )


_LEGEND_BELOW = alt.Legend(orient="bottom", direction="horizontal")  # a panel is narrow


def _pos_step(n_pos: int) -> int:
    return max(4, min(28, (PANEL_WIDTH - 40) // max(n_pos, 1)))


def residual_evolution_chart(evo: ResidualEvolution, start: int = 0, stop: int | None = None) -> alt.Chart:
    """Two layer x position heatmaps of positions [start, stop), one above the other: the residual stream's norm,
    and the cosine similarity between each layer's residual and the one before it (low = the block changed the
    vector a lot)."""
    stop = len(evo.tokens) if stop is None else stop
    frame = evo.to_frame()
    frame = frame[(frame["pos"] >= start) & (frame["pos"] < stop)]
    columns = token_labels(evo.tokens)[start:stop]
    rows = list(reversed(evo.layer_labels))
    step = _pos_step(len(columns))
    window = "" if (start, stop) == (0, len(evo.tokens)) else f", positions {start}-{stop - 1}"
    x = alt.X("pos_label:N", sort=columns, title="position", axis=token_axis(step, labelAngle=-60, labelLimit=90))
    y = alt.Y("layer_label:N", sort=rows, title="residual stream after")
    tooltip = [alt.Tooltip("pos_label:N", title="position"), alt.Tooltip("layer_label:N", title="layer"),
               alt.Tooltip("norm:Q", format=".2f"), alt.Tooltip("cosine_to_previous:Q", format=".3f")]
    norm = (alt.Chart(frame).mark_rect()
            .encode(x=x, y=y, color=alt.Color("norm:Q", title="norm", legend=_LEGEND_BELOW,
                                              scale=alt.Scale(scheme="greens", domainMin=0)),
                    tooltip=tooltip)
            .properties(width=alt.Step(step), height=alt.Step(22), title=f"Residual norm{window}"))
    cos_frame = frame.dropna(subset=["cosine_to_previous"])
    cos = (alt.Chart(cos_frame).mark_rect()
           .encode(x=x, y=alt.Y("layer_label:N", sort=rows, title=None),
                   color=alt.Color("cosine_to_previous:Q", title="cosine to previous", legend=_LEGEND_BELOW,
                                   scale=alt.Scale(scheme="redblue", domain=[-1, 1], domainMid=0)),
                   tooltip=tooltip)
           .properties(width=alt.Step(step), height=alt.Step(22), title="Cosine to the layer before"))
    return natural_size(alt.vconcat(norm, cos).resolve_scale(color="independent"))


def lens_last_position_chart(lens: LensResult) -> alt.Chart:
    """For the last prompt position: the lens' top-1 token and its probability at every layer (bars labelled
    with the token), with the target's probability as a line."""
    frame = lens.to_frame()
    frame = frame[frame["pos"] == lens.n_pos - 1]
    rows = list(reversed(lens.layer_labels))
    base = alt.Chart(frame).encode(
        y=alt.Y("layer_label:N", sort=rows, title="residual stream after"),
        tooltip=[alt.Tooltip("layer_label:N", title="layer"), alt.Tooltip("top_k:N", title="top tokens"),
                 alt.Tooltip("target:N"), alt.Tooltip("target_prob:Q", format=".4f"),
                 alt.Tooltip("target_rank:Q")],
    )
    bars = base.mark_bar(color="#9db4e0").encode(
        x=alt.X("top1_prob:Q", title="top-1 probability", scale=alt.Scale(domain=[0, 1])))
    text = base.mark_text(align="left", dx=4, fontSize=11).encode(x="top1_prob:Q", text="top1:N")
    return natural_size((bars + text).properties(width=PANEL_WIDTH - 60, height=alt.Step(24),
                                    title=f"Logit lens at the last position ({lens.tokens[-1]})"))


def token_importance_chart(attribution, start: int = 0, stop: int | None = None) -> alt.Chart:
    """Signed bars, one per prompt token of positions [start, stop) in prompt order, from an
    `interp_core.attribution.Attribution` (blue raises the target, red lowers it)."""
    frame = attribution.to_frame()
    stop = len(frame) if stop is None else stop
    frame = frame[(frame["position"] >= start) & (frame["position"] < stop)]
    extent = float(frame["score"].abs().max()) or 1.0
    window = "" if (start, stop) == (0, len(attribution.tokens)) else f", positions {start}-{stop - 1}"
    return natural_size(
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("label:N", sort=list(frame["label"]), title=None,
                    axis=token_axis(_pos_step(len(frame)), labelAngle=-60, labelLimit=90)),
            y=alt.Y("score:Q", title="input × gradient"),
            color=alt.Color("score:Q", legend=None,
                            scale=alt.Scale(scheme="redblue", domain=[-extent, extent], domainMid=0)),
            tooltip=[alt.Tooltip("label:N", title="token"), alt.Tooltip("score:Q", format="+.4f")],
        )
        .properties(width=alt.Step(_pos_step(len(frame))), height=200,
                    title=alt.TitleParams(f"Token importance{window}", subtitle=[f"for {attribution.target_label}"]))
    )
