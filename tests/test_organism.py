"""Known truths of the shipped model organism, re-measured on the committed weights."""

import json

import pytest

from interp_core.organism.corpus import FACTS, NAMES, held_out_name_pairs
from interp_core.organism.evaluate import evaluate_all
from interp_core.settings import SHIPPED_MODEL_DIR
from tests.shipped import shipped_bundle


@pytest.fixture(scope="module")
def metrics():
    bundle = shipped_bundle()
    return evaluate_all(bundle.model, bundle.tokenizer)


def test_capital_of_france_is_paris(metrics):
    assert metrics["france_top1"] == " Paris"


def test_capital_recall_generalises_to_held_out_templates(metrics):
    assert metrics["capital_recall_held_out_0"] >= 0.95
    assert metrics["capital_recall_held_out_1"] >= 0.95


def test_ioi_prefers_indirect_object_on_unseen_name_pairs(metrics):
    assert metrics["ioi_accuracy_held_out_pairs"] >= 0.90


def test_second_copy_of_repeated_tokens_is_predicted_by_induction(metrics):
    assert metrics["induction_loss_ratio"] <= 0.20


def test_model_card_numbers_match_the_shipped_weights(metrics):
    recorded = json.loads((SHIPPED_MODEL_DIR / "eval.json").read_text())
    assert recorded.keys() == metrics.keys()
    for key, value in recorded.items():
        if isinstance(value, str):
            assert metrics[key] == value, key
        else:
            assert metrics[key] == pytest.approx(value, abs=1e-3), key
    card = (SHIPPED_MODEL_DIR / "README.md").read_text()
    assert f"{recorded['ioi_accuracy_held_out_pairs']:.3f}" in card


def test_names_and_places_are_single_tokens_with_a_leading_space():
    tokenizer = shipped_bundle().tokenizer
    words = [w for country, capital, _ in FACTS for w in (country, capital)] + [n for n, _ in NAMES]
    for word in words:
        assert len(tokenizer(" " + word, add_special_tokens=False).input_ids) == 1, word


def test_shipped_folder_is_small_and_safetensors_only():
    shipped_bundle()
    assert (SHIPPED_MODEL_DIR / "model.safetensors").stat().st_size <= 30 * 2**20
    assert not list(SHIPPED_MODEL_DIR.glob("*.bin"))


def test_held_out_pairs_never_meet_in_the_training_corpus():
    import random

    from interp_core.organism.corpus import ioi_document

    held_out = held_out_name_pairs()
    rng = random.Random(0)
    for _ in range(2000):
        doc = ioi_document(rng, held_out)
        present = {name for name, _ in NAMES if f" {name} " in f" {doc} ".replace(",", " ").replace(".", " ")}
        assert frozenset(present) not in held_out


def test_seeded_previous_token_head_attends_to_the_previous_token_and_leaves_values_random():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp_core.organism.train import seed_previous_token_head

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, n_positions=48, n_embd=64, n_layer=2, n_head=4)
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config)
    values_before = model.transformer.h[0].attn.c_attn.weight[:, 2 * 64:].clone()
    assert seed_previous_token_head(model, n_frequencies=4) >= 0.9

    ids = torch.randint(97, (3, 48), generator=torch.Generator().manual_seed(1))  # other tokens than the check's
    with torch.no_grad():
        pattern = model(ids, output_attentions=True).attentions[0][:, 0]  # layer 0, head 0: [batch, query, key]
    positions = torch.arange(1, 48)
    assert pattern[:, positions, positions - 1].mean() >= 0.85  # on tokens the seeding never saw
    assert torch.equal(model.transformer.h[0].attn.c_attn.weight[:, 2 * 64:], values_before)


def test_induction_rows_repeat_a_sequence_once_at_a_random_place_or_fill_the_row():
    from interp_core.organism.train import RowSampler, TrainConfig

    class FakeTokenizer:
        all_special_ids = [0]

        def __len__(self):
            return 5000

    config = TrainConfig()
    sampler = RowSampler(config, FakeTokenizer(), None, None, 0)
    phase, starts, filled = config.phases[0], set(), 0
    for _ in range(200):
        row = sampler.induction_row()
        assert len(row) == config.n_ctx
        periodic = [n for n in range(phase.induction_min_len, phase.induction_max_len + 1) if row[n:] == row[:-n]]
        if periodic:  # the sequence repeated until the row is full
            filled += 1
            continue
        repeats = [start for n in range(phase.induction_min_len, phase.induction_max_len + 1)
                   for start in range(config.n_ctx - 2 * n + 1)
                   if row[start: start + n] == row[start + n: start + 2 * n]]
        assert len(repeats) == 1, row  # one sequence, repeated once, right after itself
        starts.add(repeats[0])
    assert 0.3 < filled / 200 < 0.7  # fill_share 0.5
    assert len(starts) > 20  # the single repeat starts anywhere, not at a fixed offset
