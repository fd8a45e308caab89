"""Steering by an SAE feature (features/steering.py): a zero vector and a clamp to the feature's own value change
nothing, a large vector moves the activation by exactly that vector where chosen and changes the prediction,
and bad settings are refused with a sentence."""

from __future__ import annotations

import math

import pytest
import torch
from test_feature_card import HOOK, random_sae

from interp_core import activations
from interp_core.errors import UserInputError
from interp_core.features import steering


def prompt(bundle, n: int = 10) -> torch.Tensor:
    return torch.randint(0, len(bundle.tokenizer), (n,), generator=torch.Generator().manual_seed(2))


def recorded(bundle, ids: torch.Tensor, edits=None) -> torch.Tensor:
    """[pos, d_in] the activation at HOOK (after any edits there)."""
    with torch.no_grad():
        return activations.run(bundle, ids[None], record=[HOOK], edits=edits).acts[HOOK][0]


def test_adding_zero_gives_exactly_the_unsteered_run(tiny_bundle):
    result = steering.steer(tiny_bundle, random_sae(tiny_bundle), prompt(tiny_bundle), latent=3, mode="add",
                            amount=0.0, positions=[2, 7], n_new_tokens=4)
    assert torch.equal(result.steered_probs, result.unsteered_probs) and result.kl == 0.0
    assert result.steered_continuation == result.unsteered_continuation and len(result.steered_continuation) == 4
    assert result.steer_generated


def test_unsteered_probabilities_are_the_models_own(gpt2_bundle):
    ids = prompt(gpt2_bundle)
    result = steering.steer(gpt2_bundle, random_sae(gpt2_bundle), ids, 3, "add", 5.0, [4], n_new_tokens=0, top=5)
    with torch.no_grad():
        probs = activations.forward(gpt2_bundle, ids[None])[0, -1].float().softmax(-1)
    assert torch.allclose(result.unsteered_probs, probs[result.token_ids], atol=1e-6)
    assert set(probs.topk(5).indices.tolist()) <= set(result.token_ids.tolist())
    assert result.unsteered_continuation == () and len(result.to_frame()) == len(result.tokens)


def test_clamping_a_feature_to_its_own_value_changes_nothing(tiny_bundle):
    sae, ids = random_sae(tiny_bundle), prompt(tiny_bundle)
    f = sae.encode(recorded(tiny_bundle, ids).float())  # [pos, d_sae]
    latent = int(f[5].argmax())  # active at position 5
    result = steering.steer(tiny_bundle, sae, ids, latent, "clamp", float(f[5, latent]), [5], n_new_tokens=3)
    assert torch.allclose(result.steered_probs, result.unsteered_probs, atol=1e-5) and abs(result.kl) < 1e-5
    assert result.steered_continuation == result.unsteered_continuation
    assert not result.steer_generated  # a clamp never steers generated positions
    vectors = steering.steering_vectors(tiny_bundle, sae, ids, latent, "clamp", 3.0, [5])
    assert torch.allclose(vectors[0], (3.0 - f[5, latent]) * sae.W_dec[latent], atol=1e-6)


def test_adding_a_large_vector_moves_the_activation_by_exactly_that_where_chosen(gpt2_bundle):
    sae, ids, alpha, positions = random_sae(gpt2_bundle), prompt(gpt2_bundle), 40.0, [3, 6]
    result = steering.steer(gpt2_bundle, sae, ids, 3, "add", alpha, positions, n_new_tokens=2)
    assert result.kl > 1e-3
    clean = recorded(gpt2_bundle, ids)
    vectors = steering.steering_vectors(gpt2_bundle, sae, ids, 3, "add", alpha, positions)
    steered = recorded(gpt2_bundle, ids, {HOOK: steering.steering_edit(vectors, positions)})
    expected = clean.clone()
    expected[positions] = clean[positions] + alpha * sae.W_dec[3]
    assert torch.equal(steered, expected)  # moved at 3 and 6 by alpha * W_dec[3], nowhere else
    longer = torch.cat([ids, prompt(gpt2_bundle, 3)])  # the prompt and three generated tokens
    edit = steering.steering_edit(vectors, positions, generated=range(len(ids), len(longer)))
    moved = (recorded(gpt2_bundle, longer, {HOOK: edit}) - recorded(gpt2_bundle, longer)).abs().sum(-1) > 0
    assert moved.nonzero().flatten().tolist() == positions + [10, 11, 12]


def test_the_continuation_stops_at_the_models_context(gpt2_bundle):
    ids = prompt(gpt2_bundle, gpt2_bundle.n_ctx - 2)
    result = steering.steer(gpt2_bundle, random_sae(gpt2_bundle), ids, 3, "add", 1.0, [0], n_new_tokens=10)
    assert len(result.unsteered_continuation) == len(result.steered_continuation) == 2


@pytest.mark.parametrize(("changes", "message"), [
    ({"latent": 32}, "Latent 32 does not exist: this SAE has latents 0 to 31"),
    ({"positions": []}, "Choose at least one prompt position"),
    ({"positions": [2, 10]}, "Position 10 is not in the prompt; its positions are 0 to 9"),
    ({"amount": math.nan}, "must be a finite number, not nan"),
    ({"amount": math.inf}, "must be a finite number, not inf"),
    ({"mode": "scale"}, "Unknown steering mode 'scale'; choose one of add, clamp"),
    ({"n_new_tokens": -1}, "cannot be negative"),
])
def test_bad_steering_settings_are_refused_with_a_sentence(gpt2_bundle, changes, message):
    settings = {"latent": 3, "mode": "add", "amount": 1.0, "positions": [2]} | changes
    with pytest.raises(UserInputError, match=message):
        steering.steer(gpt2_bundle, random_sae(gpt2_bundle), prompt(gpt2_bundle), **settings)
