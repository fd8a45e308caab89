"""Sparse autoencoders (interp_core.features): encode and decode in SAELens' architectures, the SAELens folder
format round trip and its refusals, the trainer (loss falls, unit decoder rows, AuxK revives dead latents) and
the reconstruction metrics at their known end points."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from interp_core import activations
from interp_core.errors import UserInputError
from interp_core.features import metrics, sae, train
from interp_core.settings import Limits

HOOK = "blocks.0.hook_resid_pre"
D_IN = 32  # the tiny models' d_model


def random_sae(architecture: str = "topk", d_in: int = D_IN, d_sae: int = 64, k: int = 4, seed: int = 0,
               hook_name: str = HOOK) -> sae.SAE:
    generator = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_sae, d_in, generator=generator)
    return sae.SAE(W_enc=torch.randn(d_in, d_sae, generator=generator) / d_in ** 0.5,
                   b_enc=0.1 * torch.randn(d_sae, generator=generator),
                   W_dec=W_dec / W_dec.norm(dim=-1, keepdim=True), b_dec=0.1 * torch.randn(d_in, generator=generator),
                   architecture=architecture, hook_name=hook_name, k=k if architecture == "topk" else None,
                   threshold=0.2 * torch.rand(d_sae, generator=generator) if architecture == "jumprelu" else None)


def id_batches(bundle, n_batches: int = 8, batch: int = 8, pos: int = 32, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return list(torch.randint(3, bundle.d_vocab, (n_batches * batch, pos), generator=generator).split(batch))


def endless(batches):
    while True:
        yield from batches


# -- the SAE ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", sae.ARCHITECTURES)
def test_encode_and_decode_keep_the_leading_dimensions(architecture):
    model = random_sae(architecture)
    x = torch.randn(2, 5, D_IN)
    f = model.encode(x)
    assert f.shape == (2, 5, 64) and model.decode(f).shape == (2, 5, D_IN)
    assert (f >= 0).all()


def test_topk_keeps_exactly_the_k_largest_pre_activations():
    model = random_sae("topk", k=5)
    model = dataclasses.replace(model, b_enc=model.b_enc + 100.0)  # every pre-activation positive
    x = torch.randn(50, D_IN)
    f, hidden = model.encode(x), model.pre_activations(x)
    assert ((f != 0).sum(-1) == 5).all()
    assert torch.equal(f.topk(5).indices.sort().values, hidden.topk(5).indices.sort().values)


def test_jumprelu_zeroes_pre_activations_at_or_below_the_threshold():
    model = random_sae("jumprelu")
    x = torch.randn(40, D_IN)
    hidden, f = model.pre_activations(x), model.encode(x)
    assert torch.equal(f, torch.where(hidden > model.threshold, hidden.relu(), torch.zeros(())))


# -- files ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", sae.ARCHITECTURES)
def test_the_sae_lens_folder_round_trip_is_bit_equal(gpt2_bundle, tmp_path, architecture):
    model = random_sae(architecture)
    sae.save(model, tmp_path, {"model_name": "tiny-gpt2"})
    loaded = sae.load(gpt2_bundle, tmp_path)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec") + (("threshold",) if architecture == "jumprelu" else ()):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    assert (loaded.architecture, loaded.k, loaded.hook_name) == (architecture, model.k, HOOK)
    assert loaded.digest == model.digest
    cfg = json.loads((tmp_path / sae.CFG_FILE).read_text())
    assert cfg["metadata"]["model_name"] == "tiny-gpt2" and cfg["normalize_activations"] == "none"


def _write(folder, cfg_changes=None, model=None):
    sae.save(model or random_sae(), folder)
    cfg = json.loads((folder / sae.CFG_FILE).read_text())
    cfg.update(cfg_changes or {})
    (folder / sae.CFG_FILE).write_text(json.dumps(cfg))
    return folder


def test_a_folder_without_the_weights_file_is_refused(gpt2_bundle, tmp_path):
    (_write(tmp_path) / sae.WEIGHTS_FILE).unlink()
    with pytest.raises(sae.SAEFileError, match="has no sae_weights.safetensors"):
        sae.load(gpt2_bundle, tmp_path)


def test_a_pickled_sae_is_refused_and_never_unpickled(gpt2_bundle, tmp_path):
    (_write(tmp_path) / sae.WEIGHTS_FILE).unlink()
    (tmp_path / "sae_weights.pt").write_bytes(b"not to be unpickled")
    with pytest.raises(sae.SAEFileError, match="sae_weights.pt, a pickle, which is never read"):
        sae.load(gpt2_bundle, tmp_path)


def test_an_sae_of_another_width_is_refused(gpt2_bundle, tmp_path):
    _write(tmp_path, model=random_sae(d_in=16))
    with pytest.raises(sae.SAEFileError, match="reads 16-wide activations, but blocks.0.hook_resid_pre of tiny-gpt2 "
                                               "is 32 wide"):
        sae.load(gpt2_bundle, tmp_path)


@pytest.mark.parametrize("hook_name", ["blocks.7.hook_resid_pre", "blocks.0.hook_resid_middle"])
def test_an_sae_on_an_activation_the_model_lacks_is_refused(gpt2_bundle, tmp_path, hook_name):
    _write(tmp_path, model=random_sae(hook_name=hook_name))
    with pytest.raises(sae.SAEFileError, match=f"'{hook_name}' is not an activation of tiny-gpt2"):
        sae.load(gpt2_bundle, tmp_path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"architecture": "gated"}, "holds a 'gated' SAE; supported architectures: topk, standard, jumprelu"),
    ({"normalize_activations": "layer_norm"}, "normalize_activations 'layer_norm' is not supported"),
    ({"reshape_activations": "hook_z"}, "reshape_activations 'hook_z' is not supported"),
    ({"d_sae": 65}, "says d_in 32 and d_sae 65, but W_enc"),
])
def test_unknown_architectures_and_unsupported_options_are_refused(gpt2_bundle, tmp_path, changes, message):
    _write(tmp_path, changes)
    with pytest.raises(sae.SAEFileError, match=message):
        sae.load(gpt2_bundle, tmp_path)


def test_the_older_sae_lens_format_with_hook_point_loads(gpt2_bundle, tmp_path):
    model = random_sae("standard")
    sae.save(model, tmp_path)
    (tmp_path / sae.CFG_FILE).write_text(json.dumps({"d_in": D_IN, "d_sae": 64, "hook_point": HOOK,
                                                     "activation_fn_str": "relu", "dtype": "torch.float32"}))
    loaded = sae.load(gpt2_bundle, tmp_path)
    assert loaded.architecture == "standard" and torch.equal(loaded.encode(torch.ones(D_IN)),
                                                             model.encode(torch.ones(D_IN)))


def test_sae_load_errors_are_user_input_errors():
    assert issubclass(sae.SAEFileError, UserInputError)


# -- training -------------------------------------------------------------------------------------------------------


def test_the_recorded_activation_stops_early_and_equals_the_activation_api(gpt2_bundle):
    ids = id_batches(gpt2_bundle)[0]
    with torch.no_grad():
        expected = activations.run(gpt2_bundle, ids, record=[HOOK], fused_attention=True).acts[HOOK]
    assert torch.equal(train.recorded_activation(gpt2_bundle, ids, HOOK), expected)


@pytest.mark.parametrize("batch_topk", [False, True])
def test_training_lowers_the_loss_and_keeps_unit_decoder_rows(gpt2_bundle, batch_topk):
    settings = train.TrainSettings(HOOK, d_sae=64, k=4, batch_topk=batch_topk, tokens=60 * 256, batch_tokens=256,
                                   buffer_tokens=1024, lr=5e-3, dead_tokens=2048)
    seen = []
    training = train.train(gpt2_bundle, endless(id_batches(gpt2_bundle)), settings,
                           progress=lambda done, text: seen.append(done))
    assert len(training.fvu) == settings.steps and training.tokens == settings.tokens and seen[-1] == 1.0
    assert sum(training.fvu[-5:]) < 0.8 * sum(training.fvu[:5])
    assert torch.allclose(training.sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5)
    assert training.sae.architecture == ("jumprelu" if batch_topk else "topk")
    assert all(not p.requires_grad for p in gpt2_bundle.model.parameters())
    again = train.train(gpt2_bundle, endless(id_batches(gpt2_bundle)), settings)
    assert torch.equal(again.sae.W_enc, training.sae.W_enc)  # seeded


def _in_a_plane(n_batches: int, batch: int, d_in: int, n_directions: int, seed: int = 0) -> list[torch.Tensor]:
    """Activations along one of `n_directions` random directions of the first two dimensions, with random positive
    sizes: most of a random dictionary in d_in dimensions points away from them and never fires."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.zeros(n_directions, d_in)
    directions[:, :2] = torch.randn(n_directions, 2, generator=generator)
    directions /= directions.norm(dim=-1, keepdim=True)
    picks = torch.randint(0, n_directions, (n_batches * batch,), generator=generator)
    sizes = 1 + torch.rand(n_batches * batch, 1, generator=generator)
    return list((directions[picks] * sizes).split(batch))


def test_the_auxk_loss_trains_dead_latents_on_the_error():
    """Latents that never fire get no gradient from the reconstruction: without the auxiliary loss their rows stay
    where they started; with it the dead latents learn to reconstruct the residual error (Gao et al. 2024, AuxK).
    (On this toy, k 1, they do not win back a place in the top k: the mechanism is what is tested, not revival.)"""
    data = _in_a_plane(200, 256, d_in=32, n_directions=128)
    runs = {}
    for coefficient in (0.0, 1 / 32):
        settings = train.TrainSettings("x", d_sae=128, k=1, tokens=200 * 256, batch_tokens=256, lr=5e-3,
                                       dead_tokens=1024, aux_coefficient=coefficient)
        runs[coefficient] = train.fit(data, settings)
    start = train._Params.initial(data[0], 128, torch.Generator().manual_seed(0)).W_dec.detach()
    untouched = (runs[0.0].sae.W_dec - start).abs().amax(-1) < 1e-6  # rows no gradient ever reached
    assert untouched.sum() > 64  # most of the dictionary never fired
    aux = [loss for loss in runs[1 / 32].aux_loss if loss > 0]
    assert aux[-1] < aux[0] / 2, (aux[0], aux[-1])  # the dead latents' reconstruction of the error improved
    moved = 1 - (runs[1 / 32].sae.W_dec[untouched] * start[untouched]).sum(-1)  # 1 - cosine (unit rows)
    assert (moved > 0.01).float().mean() > 0.9


def test_training_caps_come_from_limits():
    caps = Limits(max_sae_train_tokens=10_000, max_sae_latents=128)
    train.check_limits(train.TrainSettings(HOOK, d_sae=128, tokens=10_000), caps)
    with pytest.raises(UserInputError, match="above the cap of 10,000"):
        train.check_limits(train.TrainSettings(HOOK, d_sae=128, tokens=20_000), caps)
    with pytest.raises(UserInputError, match="latents is above the cap of 128"):
        train.check_limits(train.TrainSettings(HOOK, d_sae=256, tokens=10_000), caps)


# -- metrics --------------------------------------------------------------------------------------------------------


def _identity_sae() -> sae.SAE:
    """A ReLU SAE that reconstructs exactly: f = (ReLU(x), ReLU(-x)), x_hat = ReLU(x) - ReLU(-x) = x."""
    eye = torch.eye(D_IN)
    return sae.SAE(W_enc=torch.cat([eye, -eye], 1), b_enc=torch.zeros(2 * D_IN), W_dec=torch.cat([eye, -eye]),
                   b_dec=torch.zeros(D_IN), architecture="standard", hook_name="blocks.1.hook_resid_pre")


def test_a_perfect_reconstruction_explains_all_variance_and_recovers_all_loss(gpt2_bundle):
    result = metrics.measure(gpt2_bundle, _identity_sae(), id_batches(gpt2_bundle, n_batches=2))
    assert result.explained_variance == 1.0 and result.loss_recovered == 1.0
    assert result.ce_sae == result.ce_clean != result.ce_zero
    assert result.tokens == 2 * 8 * 32 and 0 < result.l0 <= D_IN


def test_the_zero_sae_recovers_no_loss(gpt2_bundle):
    zero = _identity_sae()
    zero = dataclasses.replace(zero, W_dec=torch.zeros_like(zero.W_dec))
    result = metrics.measure(gpt2_bundle, zero, id_batches(gpt2_bundle, n_batches=2))
    assert result.loss_recovered == 0.0 and result.ce_sae == result.ce_zero
    assert result.explained_variance < 0


def test_the_reported_loss_is_the_loss_with_the_reconstruction_spliced_in(gpt2_bundle):
    model, ids = random_sae(hook_name="blocks.1.hook_resid_pre"), id_batches(gpt2_bundle, n_batches=1)[0]
    result = metrics.measure(gpt2_bundle, model, [ids])
    with torch.no_grad():
        logits = activations.run(gpt2_bundle, ids, edits={model.hook_name: model.reconstruct}, logits_to_keep=0).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert result.ce_sae == pytest.approx(float(loss), abs=1e-5)
    assert result.dead_fraction == float((result.frequency == 0).float().mean())
