"""The Features page's charts (charts/features.py) are valid Vega-Lite and show their data: the histogram's bars
start at zero tokens, the logit effects and steering charts have one row per token, the quality chart one point
per (k, metric)."""

from __future__ import annotations

from test_feature_card import random_sae
from test_steering import prompt

from interp_core.charts import features as charts
from interp_core.features import card, steering
from interp_core.features.quality import quality_frame


def _rows(chart) -> list[dict]:
    spec = chart.to_dict()  # validates against the Vega-Lite schema
    return [row for rows in spec["datasets"].values() for row in rows]


def test_every_features_chart_validates_and_carries_its_data(gpt2_bundle):
    sae = random_sae(gpt2_bundle)
    ids = prompt(gpt2_bundle, 24)[None].repeat(3, 1)
    table = card.fired_table(gpt2_bundle, sae, ids)
    latent = int(table.latent.bincount().argmax())
    the_card = card.feature_card(gpt2_bundle, sae, table, latent, k=5)
    histogram = _rows(charts.activation_histogram(the_card))
    assert sum(row["tokens"] for row in histogram) == int((table.latent == latent).sum())
    assert charts.activation_histogram(the_card).to_dict()["encoding"]["y2"] == {"datum": 0}
    effects = _rows(charts.logit_effects(the_card))
    assert len(effects) == len(the_card.promoted) + len(the_card.suppressed)
    steered = steering.steer(gpt2_bundle, sae, prompt(gpt2_bundle), latent, "add", 5.0, [9], n_new_tokens=2)
    assert _rows(charts.steering_chart(steered))
    sweep = quality_frame({"k_sweep": {"points": [{"k": k, "l0": k, "explained_variance": 0.9, "loss_recovered": 0.99}
                                                  for k in (8, 12)]}})
    assert len(_rows(charts.quality_chart(sweep))) == 4
