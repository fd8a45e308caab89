"""Attribution charts and text: per-token scores, a continuation's output x input heatmap, deletion curves, and
the prompt shaded by its scores.

    >>> attribution_bar(attr)                  # one bar per prompt token, in prompt order
    >>> continuation_heatmap(cont)             # output token (rows) x input token (columns)
    >>> deletion_chart(compare_methods(...))   # target metric as top-ranked tokens are removed, vs random
    >>> attribution_tokens_html(attr)          # the prompt's tokens shaded by score (escaped HTML)

Signed scores use a diverging red-blue scale centred on 0 (blue: supports the target, red: opposes it), the same
colours as the coloured-token text; unsigned scores (saliency, L2 norms) use a sequential blue scale from 0.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from interp_core.attribution import METHOD_NAMES, Attribution, ContinuationAttribution, MethodComparison
from interp_core.charts import natural_size, token_axis
from interp_core.charts.tokens import coloured_tokens_html
from interp_core.tokens import token_labels

TOKEN_STEP = 30  # pixels per token on a token axis: room for a rotated label
METHOD_COLOURS = {METHOD_NAMES[m]: c for m, c in zip(METHOD_NAMES, ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"],
                                                      strict=True)}
RANDOM_COLOUR = "#9a9a9a"  # the random-order baseline curve, grey and dashed
MIN_WIDTH = 520  # pixels: room for the title of a chart over a short prompt
MAX_WIDTH = 660  # pixels: the page's main column at a 1,280-px window, labels included; longer prompts pack tighter


def _token_width(n_tokens: int) -> tuple[int, float]:
    """(width, pixels per token) of a token axis over `n_tokens`: TOKEN_STEP each, within MIN_WIDTH..MAX_WIDTH."""
    width = min(MAX_WIDTH, max(MIN_WIDTH, TOKEN_STEP * n_tokens))
    return width, width / max(n_tokens, 1)


def score_title(attr: Attribution | ContinuationAttribution) -> str:
    """Short axis / legend title saying what a score is (aggregation and units)."""
    if attr.method == "occlusion":
        return "drop in target"
    if attr.method == "saliency":
        return "|gradient| " + ("(L1 norm)" if attr.aggregation == "sum" else "(L2 norm)")
    return "score " + ("(signed sum)" if attr.aggregation == "sum" else "(L2 norm)")


def attribution_summary(attr: Attribution) -> str:
    """One plain-text line: the target and its value with units, the method and the baseline (holds token text:
    show it as text, never as Markdown)."""
    return (f"Target: {attr.target_label} = {attr.target_value:.3f} {attr.units}   ·   method: "
            f"{METHOD_NAMES[attr.method]}   ·   baseline: {attr.baseline_label}")


def bar_heading(attr: Attribution) -> str:
    """The plain-text heading of `attribution_bar`: method, what a score is, and the target."""
    return f"{METHOD_NAMES[attr.method]}: {score_title(attr)} per prompt token, for {attr.target_label}"


def attribution_tokens_html(attr: Attribution) -> str:
    """The prompt's tokens shaded by score (diverging for signed scores), with a legend; escaped HTML."""
    legend = ("blue: raises the target, red: lowers it, white: no effect" if attr.signed
              else "darker blue: larger (unsigned) score")
    return coloured_tokens_html(attr.tokens, attr.scores, diverging=attr.signed, legend=legend)


def continuation_tokens_html(cont: ContinuationAttribution) -> str:
    """The prompt (grey), then the continuation shaded by p(token | everything before); escaped HTML."""
    probs = cont.target_values.exp().tolist()
    return coloured_tokens_html(cont.input_tokens[:cont.n_prompt] + cont.output_tokens,
                                [float("nan")] * cont.n_prompt + probs, diverging=False, vmax=1.0,
                                legend="prompt (grey), then the continuation shaded by p(token | everything before)")


def _colour(field: str, signed: bool, extent: float, title: str) -> alt.Color:
    if signed:
        scale = alt.Scale(scheme="redblue", domain=[-extent, extent], domainMid=0)
    else:
        scale = alt.Scale(scheme="blues", domain=[0, extent])
    return alt.Color(f"{field}:Q", title=title, scale=scale)


def attribution_bar(attr: Attribution) -> alt.Chart:
    """One bar per prompt token (prompt order, labels "i token"), height = score; tooltip with the token, its id,
    the score and the target. Diverging colours centred on 0 for signed scores. The page says above it which
    method and target it shows."""
    frame = attr.to_frame()
    extent = float(frame["score"].abs().max()) or 1.0
    title = score_title(attr)
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("label:N", sort=token_labels(attr.tokens), title="prompt token",
                    axis=token_axis(_token_width(len(attr.tokens))[1], labelAngle=-45, labelLimit=120)),
            y=alt.Y("score:Q", title=title),
            color=_colour("score", attr.signed, extent, "score"),
            tooltip=[alt.Tooltip("position:Q"), alt.Tooltip("token:N"), alt.Tooltip("token_id:Q"),
                     alt.Tooltip("score:Q", format="+.4f"), alt.Tooltip("target:N")],
        )
        .properties(width=_token_width(len(attr.tokens))[0], height=300)
    )  # no chart title: Streamlit fits title, labels and plot into `height`, and a title squeezes the bars


def continuation_heatmap(cont: ContinuationAttribution) -> alt.Chart:
    """Output token (rows, in generation order) x input token (columns, in sequence order): the score of each
    input token for each generated token (teacher forcing). Cells after a step's prediction are left empty."""
    frame = cont.to_frame()
    extent = float(frame["score"].abs().max()) or 1.0
    title = score_title(cont)
    frame["source"] = frame["in_prompt"].map({True: "prompt", False: "continuation"})
    base = alt.Chart(frame).encode(
        x=alt.X("input_label:N", sort=token_labels(cont.input_tokens), title="input token",
                axis=token_axis(_token_width(len(cont.input_tokens))[1], labelAngle=-45, labelLimit=120,
                                orient="top")),
        y=alt.Y("output_label:N", sort=cont.output_labels(), title="generated token (target)",
                axis=alt.Axis(labelLimit=140)),
    )
    rects = base.mark_rect(stroke="#ffffff", strokeWidth=0.5).encode(
        color=_colour("score", cont.signed, extent, "score"),
        tooltip=[alt.Tooltip("output_label:N", title="target token"),
                 alt.Tooltip("target_logprob:Q", title="log p(target)", format=".3f"),
                 alt.Tooltip("input_label:N", title="input token"), alt.Tooltip("source:N"),
                 alt.Tooltip("score:Q", format="+.4f")],
    )
    kind = "generated greedily" if cont.generated else "as typed (teacher forcing)"
    return rects.properties(
        width=_token_width(len(cont.input_tokens))[0], height=alt.Step(24),
        title=alt.TitleParams(f"{METHOD_NAMES[cont.method]}: each continuation token ({kind}) by input token",
                              subtitle=[f"colour: {title}; target of each row: log p(that token | everything before)"]),
    )


def deletion_frame(comparison: MethodComparison) -> pd.DataFrame:
    """The deletion curve of each method compared plus the random-order curve once, with a `series` column."""
    frames = []
    for i, curve in enumerate(comparison.curves):
        frame = curve.to_frame()
        is_random = frame["order"] != "attribution order"
        frame["series"] = [order if rand else METHOD_NAMES[curve.method]
                           for order, rand in zip(frame["order"], is_random, strict=True)]
        frames.append(frame if i == 0 else frame[~is_random])  # every curve shares the seeded random orders
    return pd.concat(frames, ignore_index=True)


def deletion_chart(comparison: MethodComparison) -> alt.Chart:
    """Line chart: the target metric (probability, or logit difference for a contrast) after replacing the
    k top-ranked tokens by the baseline, one line per method, and the mean of the random orders dashed."""
    curves = comparison.curves
    frame = deletion_frame(comparison)
    series = [s for s in dict.fromkeys(frame["series"])]
    return natural_size(
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("k:Q", title="tokens replaced by the baseline (most important first)",
                    axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q", title=curves[0].metric_label),
            color=alt.Color("series:N", sort=series, title="order",
                            scale=alt.Scale(domain=series, range=[METHOD_COLOURS.get(name, RANDOM_COLOUR)
                                                                  for name in series])),
            strokeDash=alt.StrokeDash("order:N", title="", legend=None),
            tooltip=[alt.Tooltip("series:N", title="order"), alt.Tooltip("k:Q"),
                     alt.Tooltip("removed:N", title="last token removed"),
                     alt.Tooltip("value:Q", title=curves[0].metric_label, format=".4f")],
        )
        .properties(width=520, height=280,
                    title=alt.TitleParams("Deletion curves: does removing the top-ranked tokens hurt the target?",
                                          subtitle=[f"tokens replaced by the {curves[0].baseline_label} (special "
                                                    "tokens such as BOS kept); faster fall than random = more "
                                                    "faithful"]))
    )
