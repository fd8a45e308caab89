"""A feature's dashboard card (features/card.py): the sparse table of fired latents, the card's contexts, bins,
logit effects and Neuronpedia export, a dead latent, and one prompt's top features."""

from __future__ import annotations

import json

import pytest
import torch

from interp_core import activations
from interp_core.components import final_norm_form
from interp_core.errors import UserInputError
from interp_core.features import card
from interp_core.features.sae import SAE
from interp_core.lens.lens import decode_ids

HOOK = "blocks.1.hook_resid_pre"
D_SAE, DEAD = 32, 31  # latent 31 can never fire (its pre-activation is -1000 on every token)


def random_sae(bundle, seed: int = 0) -> SAE:
    """A random TopK SAE (k 4, 32 latents) on blocks.1.hook_resid_pre with unit-norm decoder rows."""
    g = torch.Generator().manual_seed(seed)
    w_enc = torch.randn(bundle.d_model, D_SAE, generator=g) * 0.3
    b_enc = torch.randn(D_SAE, generator=g) * 0.1
    w_enc[:, DEAD], b_enc[DEAD] = 0.0, -1000.0
    w_dec = torch.randn(D_SAE, bundle.d_model, generator=g)
    return SAE(w_enc, b_enc, w_dec / w_dec.norm(dim=-1, keepdim=True), torch.randn(bundle.d_model, generator=g) * 0.1,
               "topk", HOOK, k=4)


def corpus(bundle, rows: int = 6, pos: int = 24) -> torch.Tensor:
    return torch.randint(0, len(bundle.tokenizer), (rows, pos), generator=torch.Generator().manual_seed(1))


def dense_latents(bundle, sae: SAE, ids: torch.Tensor) -> torch.Tensor:
    """[row * pos, d_sae]: the SAE's latents on the whole corpus in one pass, encoded densely."""
    with torch.no_grad():
        acts = activations.run(bundle, ids, record=[HOOK], fused_attention=True).acts[HOOK]
    return sae.encode(acts.float().cpu()).flatten(0, 1)


@pytest.fixture(scope="module")
def setup(gpt2_bundle):
    sae, ids = random_sae(gpt2_bundle), corpus(gpt2_bundle)
    dense = dense_latents(gpt2_bundle, sae, ids)
    table = card.fired_table(gpt2_bundle, sae, ids)
    latent = int((dense > 0).sum(0).argmax())  # the most frequent latent
    return gpt2_bundle, sae, ids, dense, table, latent, card.feature_card(gpt2_bundle, sae, table, latent, k=5)


def test_fired_table_holds_exactly_the_non_zeros_of_a_dense_encode(tiny_bundle, monkeypatch):
    monkeypatch.setattr(card, "ROWS_PER_PASS", 4)  # 6 rows: two batches
    sae, ids = random_sae(tiny_bundle), corpus(tiny_bundle)
    dense = dense_latents(tiny_bundle, sae, ids)
    seen = []
    table = card.fired_table(tiny_bundle, sae, ids, progress=lambda fraction, text: seen.append(fraction))
    rebuilt = torch.zeros_like(dense)
    rebuilt[table.token, table.latent] = table.value
    assert torch.equal(rebuilt, dense)
    assert len(table.value) == int((dense != 0).sum())  # no entry twice, no zero kept
    assert seen == [4 / 6, 1.0]
    assert bool((table.latent.diff() >= 0).all())
    same = table.latent[1:] == table.latent[:-1]
    assert bool((table.value[1:][same] <= table.value[:-1][same]).all())  # value descending within a latent


def test_card_density_is_the_dense_count_over_the_tokens(setup):
    bundle, sae, ids, dense, table, latent, feature = setup
    assert feature.density == int((dense[:, latent] > 0).sum()) / ids.numel()
    assert feature.n_tokens == ids.numel() and not feature.dead
    assert torch.allclose(table.densities(), (dense > 0).float().mean(0))


def test_top_contexts_are_the_largest_activations_with_the_peak_in_the_window(setup):
    bundle, sae, ids, dense, table, latent, feature = setup
    label, top = feature.bins[0]
    assert label == "top" and len(top) == 5
    assert [c.activation for c in top] == dense[:, latent].topk(5).values.tolist()
    assert feature.max_activation == top[0].activation == float(dense[:, latent].max())
    n_pos = ids.shape[1]
    for c in top:
        assert c.values[c.peak] == c.activation == float(dense[c.row * n_pos + c.pos, latent])
        assert c.tokens[c.peak] == decode_ids(bundle, ids[c.row, c.pos:c.pos + 1])[int(ids[c.row, c.pos])]
        assert c.peak == min(c.pos, card.WINDOW_BEFORE)
        assert len(c.tokens) == c.peak + 1 + min(card.WINDOW_AFTER, n_pos - 1 - c.pos)


def test_interval_bins_are_disjoint_ordered_and_cover_every_activation(setup):
    bundle, sae, ids, dense, table, latent, feature = setup
    intervals = list(zip(feature.bins[1:], feature.bin_bounds[1:], strict=True))
    assert len(intervals) == card.N_BINS
    highs = [high for _, (low, high, share) in intervals]
    lows = [low for _, (low, high, share) in intervals]
    assert highs[0] == feature.max_activation and lows[-1] == 0.0
    assert highs[1:] == lows[:-1] and lows == sorted(lows, reverse=True)  # adjacent, highest first
    picked = set()
    for (_, contexts), (low, high, share) in intervals:
        assert len(contexts) <= 5 and all(low < c.activation <= high for c in contexts)
        assert share == int(((dense[:, latent] > low) & (dense[:, latent] <= high)).sum()) / ids.numel()
        picked |= {(c.row, c.pos) for c in contexts}
    assert len(picked) == sum(len(contexts) for (_, contexts), _ in intervals)  # no context in two bins
    assert sum(share for _, (_, _, share) in intervals) == pytest.approx(feature.density)
    again = card.feature_card(bundle, sae, table, latent, k=5)
    assert again.to_frame().equals(feature.to_frame())  # seeded


def test_promoted_and_suppressed_tokens_are_the_decoder_rows_top_logit_effects(tiny_bundle):
    sae, ids = random_sae(tiny_bundle), corpus(tiny_bundle)
    feature = card.feature_card(tiny_bundle, sae, card.fired_table(tiny_bundle, sae, ids), latent=3)
    w_u = tiny_bundle.adapter.unembed_weight(tiny_bundle.model).detach().float()  # [d_vocab, d_model]
    effects = w_u @ final_norm_form(tiny_bundle).linear(sae.W_dec[3])  # [d_vocab]
    up, down = effects.topk(card.N_LOGITS), (-effects).topk(card.N_LOGITS)
    names = decode_ids(tiny_bundle, torch.cat([up.indices, down.indices]))
    assert [t for t, _ in feature.promoted] == [names[i] for i in up.indices.tolist()]
    assert [t for t, _ in feature.suppressed] == [names[i] for i in down.indices.tolist()]
    assert torch.allclose(torch.tensor([v for _, v in feature.promoted]), up.values, atol=1e-5)
    assert torch.allclose(torch.tensor([v for _, v in feature.suppressed]), -down.values, atol=1e-5)
    assert feature.logit_histogram.counts.sum() == tiny_bundle.d_vocab


def test_a_latent_that_never_fires_gives_the_dead_card(setup):
    bundle, sae, ids, dense, table, latent, feature = setup
    dead = card.feature_card(bundle, sae, table, DEAD)
    assert dead.dead and dead.density == 0 and dead.max_activation == 0 and dead.bins == ()
    assert dead.histogram.counts.numel() == 0 and len(dead.to_frame()) == 0
    assert len(dead.promoted) == card.N_LOGITS  # its decoder direction still has logit effects
    assert dead.neuronpedia_json("tiny")["activations"] == []


def test_neuronpedia_json_has_saedashboards_field_names_and_serialises(setup):
    bundle, sae, ids, dense, table, latent, feature = setup
    exported = json.loads(json.dumps(feature.neuronpedia_json("tiny-gpt2")))
    assert set(exported) == {
        "modelId", "layer", "index", "hookName", "maxActApprox", "frac_nonzero", "pos_str", "pos_values", "neg_str",
        "neg_values", "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "logits_hist_data_bar_heights",
        "logits_hist_data_bar_values", "activations"}
    assert (exported["modelId"], exported["layer"], exported["index"]) == ("tiny-gpt2", "1-workbench", str(latent))
    assert exported["frac_nonzero"] == feature.density
    assert len(exported["activations"]) == sum(len(contexts) for _, contexts in feature.bins)
    for activation in exported["activations"]:
        assert set(activation) == {"modelId", "layer", "index", "tokens", "values", "maxValue", "maxValueTokenIndex",
                                   "minValue", "binMin", "binMax", "binContains", "qualifyingTokenIndex"}
        assert activation["maxValue"] == activation["values"][activation["maxValueTokenIndex"]]
        assert len(activation["tokens"]) == len(activation["values"])
    first = exported["activations"][0]
    assert (first["binMin"], first["binContains"]) == (-1.0, -1.0)  # SAEDashboard's top group
    assert "␣" not in "".join(first["tokens"])  # raw token texts, not the readable marks


def test_card_to_frame_has_one_row_per_context(setup):
    bundle, sae, ids, dense, table, latent, feature = setup
    frame = feature.to_frame()
    assert list(frame.columns) == ["bin", "row", "pos", "activation", "peak_token", "text"]
    assert len(frame) == sum(len(contexts) for _, contexts in feature.bins)
    assert frame["bin"].iloc[0] == "top"


def test_prompt_top_features_are_each_tokens_largest_latents(gpt2_bundle):
    sae, ids = random_sae(gpt2_bundle), corpus(gpt2_bundle)[0]
    dense = dense_latents(gpt2_bundle, sae, ids[None])  # [pos, d_sae]
    found = card.top_features(gpt2_bundle, sae, ids, k=3)
    assert torch.equal(found.values, dense.topk(3).values)
    assert torch.equal(dense.gather(1, found.latents), found.values)
    assert torch.equal(found.latent_values(5), dense[:, 5])
    assert len(found.to_frame()) == int((found.values > 0).sum()) and len(found.tokens) == len(ids)
    wide = card.top_features(gpt2_bundle, sae, ids, k=6)  # more than the SAE's k = 4 ever fire
    assert bool((wide.latents[:, 4:] == -1).all()) and bool((wide.values[:, 4:] == 0).all())


def test_the_first_latent_shown_is_the_most_active_at_the_last_token_that_is_not_dense(gpt2_bundle):
    sae, ids = random_sae(gpt2_bundle), corpus(gpt2_bundle)[0]
    found = card.top_features(gpt2_bundle, sae, ids, k=3)
    first, second = found.latents[-1, :2].tolist()
    densities = torch.zeros(D_SAE)
    assert found.specific_latent() == found.specific_latent(densities) == first
    densities[first] = card.DENSE  # fires on a tenth of the corpus: dense
    assert found.specific_latent(densities) == second
    assert found.specific_latent(torch.ones(D_SAE)) == first  # all dense: the most active still


@pytest.mark.parametrize("latent", [-1, D_SAE, 2.5])
def test_a_latent_the_sae_does_not_have_is_refused(setup, latent):
    bundle, sae, ids, dense, table, _, _ = setup
    with pytest.raises(UserInputError, match="does not exist: this SAE has latents 0 to 31"):
        card.feature_card(bundle, sae, table, latent)
