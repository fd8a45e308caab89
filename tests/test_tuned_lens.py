"""The tuned lens (interp_core.lens.tuned): untrained it is the logit lens, training lowers its KL without touching
the model, its files round-trip in both formats and bad folders are refused, and the shipped organism's lens
meets issue 21's targets on held-out text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from interp_core import lens as logit
from interp_core.charts.lens import lens_heatmap
from interp_core.lens import tuned
from interp_core.lens.lens import resid_labels
from interp_core.trace import run_trace
from tests.shipped import shipped_bundle

PROMPT = "When Mary and John went to the store, John gave a drink to"
LIBRARY_SITE = Path(__file__).resolve().parent.parent / ".venv" / "tuned-lens"  # make .venv/.stamp-dev


def _random_lens(bundle, seed: int = 0) -> tuned.TunedLens:
    generator = torch.Generator().manual_seed(seed)
    n, d = bundle.n_layers, bundle.d_model
    return tuned.TunedLens(0.05 * torch.randn(n, d, d, generator=generator), 0.1 * torch.randn(n, d,
                           generator=generator), "random")


def _batches(bundle, n_tokens: int = 600, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return list(torch.randint(3, bundle.d_vocab, (n_tokens // 24, 24), generator=generator).split(5))


def test_the_untrained_tuned_lens_is_the_logit_lens_and_the_last_row_is_the_models_output(tiny_bundle):
    trace = run_trace(tiny_bundle, PROMPT)
    plain = logit.logit_lens(tiny_bundle, trace)
    untrained = logit.logit_lens(tiny_bundle, trace, tuned=tuned.zero_lens(tiny_bundle))
    torch.testing.assert_close(untrained.kl_to_final, plain.kl_to_final, rtol=0, atol=0)
    translated = logit.logit_lens(tiny_bundle, trace, tuned=_random_lens(tiny_bundle))
    assert float((translated.kl_to_final[:-1] - plain.kl_to_final[:-1]).abs().max()) > 1e-3
    torch.testing.assert_close(translated.kl_to_final[-1], torch.zeros(trace.n_pos), rtol=0, atol=1e-6)
    titles = [lens_heatmap(result).to_dict()["title"]["text"] for result in (plain, translated)]
    assert [title.split(":")[0] for title in titles] == ["Logit lens", "Tuned lens"]


def test_training_lowers_the_kl_and_leaves_the_shared_model_untouched(gpt2_bundle):
    before = {name: p.detach().clone() for name, p in gpt2_bundle.model.named_parameters()}
    batches = _batches(gpt2_bundle)
    training = tuned.train(gpt2_bundle, batches, steps=40, seed=0)
    assert training.losses[-1] < 0.7 * training.losses[0]
    assert training.tokens == sum(b.numel() for b in (batches * 40)[:40])
    for name, p in gpt2_bundle.model.named_parameters():
        assert p.grad is None and torch.equal(p, before[name]), name
    labels = resid_labels(gpt2_bundle.n_layers)
    measured = tuned.layer_divergence(gpt2_bundle, batches, training.lens, "training text", labels)
    assert bool((measured.tuned_kl[:-1] < measured.logit_kl[:-1]).all())
    assert float(measured.tuned_kl[-1]) == pytest.approx(0.0, abs=1e-5)
    assert float(measured.tuned_agreement[-1]) == 1.0


def test_a_lens_round_trips_in_our_format_and_in_the_libraries(tiny_bundle, tmp_path):
    lens = _random_lens(tiny_bundle)
    tuned.save(lens, tmp_path / "ours", {"steps": 1})
    loaded = tuned.load(tiny_bundle, tmp_path / "ours")
    assert torch.equal(loaded.weight, lens.weight) and torch.equal(loaded.bias, lens.bias)
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["steps"] == 1
    library = _save_like_the_library(lens, tiny_bundle, tmp_path / "library")
    loaded = tuned.load(tiny_bundle, library)
    resid = torch.randn(7, tiny_bundle.d_model)
    for row in range(tiny_bundle.n_layers):
        torch.testing.assert_close(loaded.translate(resid, row), lens.translate(resid, row), rtol=0, atol=0)


def _save_like_the_library(lens: tuned.TunedLens, bundle, folder: Path, bias: bool = True) -> Path:
    """What tuned-lens' TunedLens.save writes: config.json and params.pt, the state dict of its nn.ModuleList of
    nn.Linear translators (weight [d, d], bias [d]), for hidden states 0 .. n_layers - 1."""
    folder.mkdir(parents=True)
    translators = torch.nn.ModuleList(torch.nn.Linear(bundle.d_model, bundle.d_model, bias=bias)
                                      for _ in range(lens.n_layers))
    with torch.no_grad():
        for layer, translator in enumerate(translators):
            translator.weight.copy_(lens.weight[layer])
            if bias:
                translator.bias.copy_(lens.bias[layer])
    torch.save(translators.state_dict(), folder / "params.pt")
    (folder / "config.json").write_text(json.dumps({
        "base_model_name_or_path": "tiny", "d_model": bundle.d_model, "num_hidden_layers": lens.n_layers,
        "bias": bias, "base_model_revision": None, "unembed_hash": None, "lens_type": "linear_tuned_lens"}))
    return folder


def test_a_library_lens_gives_the_librarys_own_logits(gpt2_bundle, tmp_path, monkeypatch):
    """With tuned-lens 0.2.0 (a test requirement, installed apart: see requirements-dev.txt): its TunedLens
    forward on the same folder and hidden states equals ours within 1e-5."""
    if str(LIBRARY_SITE) not in sys.path:
        sys.path.append(str(LIBRARY_SITE))
    from tuned_lens.nn import lenses
    # Its model_surgery asks `isinstance(model, transformer_lens.HookedTransformer)` when TransformerLens is
    # installed; TransformerLens 4 (our bench pin) removed that class and raises on the name.
    monkeypatch.setattr("tuned_lens.model_surgery._transformer_lens_available", False)
    folder = _save_like_the_library(_random_lens(gpt2_bundle), gpt2_bundle, tmp_path / "library")
    theirs = lenses.TunedLens.from_model_and_pretrained(gpt2_bundle.model, str(folder))
    ours = tuned.load(gpt2_bundle, folder)
    trace = run_trace(gpt2_bundle, PROMPT)
    from interp_core.components import resid_to_logits

    with torch.no_grad():
        for row in range(gpt2_bundle.n_layers):
            expected = theirs(trace.resid[row], row)
            torch.testing.assert_close(resid_to_logits(gpt2_bundle, ours.translate(trace.resid[row], row)),
                                       expected, rtol=0, atol=1e-5)


class _NotATensor:
    pass


@pytest.mark.parametrize("problem, says", [
    ("no config", "no readable config.json"),
    ("no weights", "neither lens.safetensors"),
    ("wrong width", "this model needs"),
    ("a pickled object", "not a file of plain tensors"),
    ("missing translator", "not the weights and biases"),
])
def test_a_bad_lens_folder_is_refused_with_a_clear_message(gpt2_bundle, tmp_path, problem, says):
    folder = _save_like_the_library(_random_lens(gpt2_bundle), gpt2_bundle, tmp_path / "lens")
    if problem == "no config":
        (folder / "config.json").unlink()
    elif problem == "no weights":
        (folder / "params.pt").unlink()
    elif problem == "wrong width":
        state = torch.load(folder / "params.pt", weights_only=True)
        torch.save({k: v[..., :4] if k.endswith("weight") else v[:4] for k, v in state.items()}, folder / "params.pt")
    elif problem == "a pickled object":
        torch.save({"0.weight": _NotATensor()}, folder / "params.pt")
    else:
        state = torch.load(folder / "params.pt", weights_only=True)
        del state["0.bias"]
        torch.save(state, folder / "params.pt")
    with pytest.raises(tuned.LensFileError, match=says):
        tuned.load(gpt2_bundle, folder)


def test_text_too_short_for_one_batch_is_refused(gpt2_bundle):
    with pytest.raises(ValueError, match="at least one batch"):
        tuned.train(gpt2_bundle, tuned.text_batches(gpt2_bundle, "a few words", seq_len=64, batch_size=8), steps=5)


def test_the_shipped_lens_meets_the_issues_targets_on_held_out_text():
    """Issue 21: on held-out organism text (rows as the organism trained on, drawn with another seed), the tuned
    lens' KL to the final distribution is at most a fifth of the logit lens' wherever that exceeds 0.1 nats and
    below it at every row but the last (both 0 there), and its top-1 agreement with the model's output is at least
    as high at every row."""
    from interp_core.organism.tuned_lens import HELD_OUT_SEED, LENS_DIR, TRAIN_SEED, held_out_batches, organism_batches

    bundle = shipped_bundle()
    lens = tuned.load(bundle, LENS_DIR)
    measured = tuned.layer_divergence(bundle, held_out_batches(bundle, tokens=12_000), lens, "held-out text",
                                      resid_labels(bundle.n_layers))
    logit_kl, tuned_kl = measured.logit_kl, measured.tuned_kl
    big = logit_kl > 0.1
    assert bool(big[:-1].any())
    assert bool((tuned_kl[big] <= logit_kl[big] / 5).all()), (logit_kl, tuned_kl)
    assert bool((tuned_kl[:-1] < logit_kl[:-1]).all())
    assert float(tuned_kl[-1]) == pytest.approx(0.0, abs=1e-5) and float(logit_kl[-1]) == pytest.approx(0.0, abs=1e-5)
    assert bool((measured.tuned_agreement >= measured.logit_agreement).all())
    induction = tuned.layer_divergence(bundle, held_out_batches(bundle, tokens=4_096, kind="induction"), lens,
                                       "held-out induction rows", resid_labels(bundle.n_layers))
    # Rows of repeated random tokens: no affine map of the residual stream before the induction head can know what
    # will be copied (1/2.7 and 1/1.4 after the embeddings and block 0), but the lens trained on the organism's
    # whole training mix is still closer to the output than the logit lens at every row.
    assert bool((induction.tuned_kl[:-1] < induction.logit_kl[:-1]).all()), (induction.logit_kl, induction.tuned_kl)
    held, trained = (organism_batches(bundle.tokenizer, 4096, seed)[0] for seed in (HELD_OUT_SEED, TRAIN_SEED))
    assert not torch.equal(held, trained)  # held out: other draws
