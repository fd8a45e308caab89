"""Charts of the Features page: a feature's activation histogram and logit effects, steering's next-token
distributions, and an SAE's quality against its sparsity."""

from __future__ import annotations

import altair as alt
import pandas as pd

from interp_core.charts import natural_size, token_axis
from interp_core.features.card import FeatureCard
from interp_core.features.steering import Steering

BLUE, RED, GREY = "#1f77b4", "#d62728", "#9e9e9e"
ROW_H = 18  # pixels per token row: every label shows
WIDTH, HEIGHT = 320, 180  # the data area of the histogram, the token charts and the sweep


def activation_histogram(card: FeatureCard) -> alt.Chart:
    """Counts of the latent's non-zero activations over the corpus, one bar per bin."""
    edges = card.histogram.edges.tolist()
    frame = pd.DataFrame({"start": edges[:-1], "end": edges[1:], "tokens": card.histogram.counts.tolist()})
    return natural_size(alt.Chart(frame, title=alt.Title(
        f"Latent {card.latent}: activations where it fires",
        subtitle=f"fires on {card.density:.3%} of {card.n_tokens:,} corpus tokens")).mark_bar(color=BLUE).encode(
        x=alt.X("start:Q", title="activation", scale=alt.Scale(zero=False)), x2="end:Q",
        y=alt.Y("tokens:Q", title="tokens"), y2=alt.datum(0),
        tooltip=[alt.Tooltip("start:Q", format=".3f", title="from"), alt.Tooltip("end:Q", format=".3f", title="to"),
                 "tokens:Q"],
    ).properties(width=WIDTH, height=HEIGHT))


def logit_effects(card: FeatureCard) -> alt.Chart:
    """The tokens the latent's decoder direction raises and lowers most, through the final norm and unembedding."""
    rows = [{"token": t, "effect": v, "direction": "promotes"} for t, v in card.promoted]
    rows += [{"token": t, "effect": v, "direction": "suppresses"} for t, v in card.suppressed]
    frame = pd.DataFrame(rows, columns=["token", "effect", "direction"])
    return natural_size(alt.Chart(frame, title=alt.Title("What its decoder direction writes",
                                            subtitle="direct effect on each token's logit, per unit of activation")
                     ).mark_bar().encode(
        x=alt.X("effect:Q", title="logit effect"),
        y=alt.Y("token:N", sort="-x", title=None, axis=token_axis(ROW_H, labelLimit=120)),
        color=alt.Color("direction:N", scale=alt.Scale(domain=["promotes", "suppresses"], range=[BLUE, RED]),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["token:N", alt.Tooltip("effect:Q", format="+.3f")],
    ).properties(width=WIDTH, height=ROW_H * max(len(frame), 4)))


def steering_chart(steering: Steering) -> alt.Chart:
    """Each top token's next-token probability without (grey) and with (blue) the steering, joined by a line."""
    frame = steering.to_frame()
    long = frame.melt(id_vars=["token"], value_vars=["unsteered", "steered"], var_name="run", value_name="probability")
    order = frame.sort_values("unsteered", ascending=False).token.tolist()
    y = alt.Y("token:N", sort=order, title=None, axis=token_axis(ROW_H, labelLimit=120))
    x = alt.X("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1]))
    lines = alt.Chart(frame).mark_rule(color=GREY).encode(y=y, x="unsteered:Q", x2="steered:Q")
    dots = alt.Chart(long).mark_circle(size=90, opacity=1).encode(
        y=y, x=x, color=alt.Color("run:N", scale=alt.Scale(domain=["unsteered", "steered"], range=[GREY, BLUE]),
                                  legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["token:N", "run:N", alt.Tooltip("probability:Q", format=".3f")])
    return natural_size(alt.layer(lines, dots, title=alt.Title("Next-token probabilities", subtitle=(
        f"KL(unsteered || steered) = {steering.kl:.3f} nats"))).properties(width=WIDTH,
                                                                           height=ROW_H * max(len(frame), 4)))


def quality_chart(frame: pd.DataFrame) -> alt.Chart:
    """Explained variance and loss recovered against L0 (one point per k), from rows k, l0, metric, value."""
    return natural_size(alt.Chart(frame, title=alt.Title("Quality against sparsity",
                                                         subtitle="one SAE per k, trained alike")
                     ).mark_line(point=True).encode(
        x=alt.X("l0:Q", title="L0 (latents active per token)"),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=alt.Color("metric:N", legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["k:Q", alt.Tooltip("l0:Q", format=".1f"), "metric:N", alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=WIDTH, height=HEIGHT))
