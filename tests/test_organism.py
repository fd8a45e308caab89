"""Known truths of the shipped model organism, re-measured on the committed weights."""

import json

import pytest

from interp_core.organism.corpus import FACTS, NAMES, held_out_name_pairs
from interp_core.organism.evaluate import evaluate_all
from interp_core.settings import SHIPPED_MODEL_DIR
from tests.shipped import NO_INDUCTION_YET, shipped_bundle


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


@NO_INDUCTION_YET
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
