"""The organism's known truth per token (organism/token_labels.py) and the best-matching latent per label
(features/truth.py)."""

from __future__ import annotations

import hashlib
import random

import pytest
import torch

from interp_core.features import sae as saes
from interp_core.features.card import FiredTable
from interp_core.features.metrics import measure
from interp_core.features.truth import known_truth, label_matches
from interp_core.organism import corpus, train_sae
from interp_core.organism.token_labels import card_rows, labelled_rows
from tests.shipped import shipped_bundle


def test_the_corpus_draws_the_same_text_as_the_organism_was_trained_on():
    """Labelling the documents must not change them: the hash of text_document's first 500 draws, recorded before
    the labels were added."""
    rng, held_out = random.Random(0), corpus.held_out_name_pairs()
    text = "\n".join(corpus.text_document(rng, corpus.CorpusMix(), held_out, i % 2 == 0) for i in range(500))
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "b60ffcc03ee881fcdc18be71e0616de2f0da93b72f5835ec560264ed8785d34e")


def test_document_spans_cover_the_words_the_generator_put_in_each_role():
    rng, held_out = random.Random(3), corpus.held_out_name_pairs()
    countries = {c for c, _, _ in corpus.FACTS}
    seen = set()
    for _ in range(300):
        doc = corpus.labelled_document(rng, corpus.CorpusMix(), held_out)
        for label, start, end in doc.spans:
            word = doc.text[start:end]
            seen.add(label)
            if label == "country":
                assert word in countries
            if label == "plural_subject":
                assert doc.kind == "grammar" and (word.endswith("s") or word.lower() in ("children", "men", "women",
                                                                                         "they", "we"))
            if label == "ioi_name":
                assert doc.kind == "ioi"
    assert seen == {"country", "capital", "ioi_name", "plural_subject"}


def test_labelled_rows_mark_the_right_tokens():
    bundle = shipped_bundle()
    rows = labelled_rows(bundle.tokenizer, 60, seed=4)
    assert rows.ids.shape == (60, 128)
    capitals = {capital for _, capital, _ in corpus.FACTS}
    starts = [bundle.tokenizer.decode([int(i)]).strip() for i in rows.ids[rows.labels["capital"]]]
    assert sum(any(c.startswith(s) for c in capitals) for s in starts) == len(starts) > 0
    copy = rows.labels["second_copy"]
    for r in copy.any(1).nonzero().flatten().tolist():
        where = copy[r].nonzero().flatten()
        length = len(where)
        assert 10 <= length <= 40 and bool((where.diff() == 1).all())
        assert torch.equal(rows.ids[r, where], rows.ids[r, where - length])  # a copy of what came just before


def _table(fired: torch.Tensor, values: torch.Tensor | None = None) -> FiredTable:
    """The fired table of a [token, latent] bool mask, sorted as fired_table sorts it; values [token, latent]
    (default 1 where fired)."""
    values = fired.float() if values is None else values
    latent, token = fired.T.nonzero().unbind(1)
    value = values[token, latent]
    order = torch.argsort(latent * 1e6 - value, stable=True)  # by latent, then value descending
    return FiredTable(token[order], latent[order], value[order], torch.zeros(1, fired.shape[0], dtype=torch.long),
                      fired.shape[1], "blocks.0.hook_resid_pre", "test")


def test_label_matches_finds_the_latent_with_the_best_f1_and_reports_its_precision_and_recall():
    torch.manual_seed(0)
    n, d_sae = 1000, 8
    label_a = torch.rand(n) < 0.1
    label_b = torch.rand(n) < 0.2
    label_b[1] = False  # the stray token below
    fired = torch.zeros(n, d_sae, dtype=torch.bool)
    fired[:, 3] = label_a  # exact
    half = label_b & (torch.arange(n) % 2 == 0)
    fired[:, 5] = half | (torch.arange(n) == 1)  # half of B plus one stray token
    fired[:, 6] = torch.rand(n) < 0.5  # noise
    table = _table(fired)
    truth = label_matches(table, {"a": label_a[None], "b": label_b[None]})
    a, b = truth.matches
    assert (a.latent, a.precision, a.recall) == (3, 1.0, 1.0)
    assert b.latent == 5 and b.precision == pytest.approx(int(half.sum()) / (int(half.sum()) + 1))
    assert b.recall == pytest.approx(int(half.sum()) / int(label_b.sum()))
    assert (a.precise_latent, b.precise_latent) == (3, 5)  # 5: precision 0.99, the best recall at >= 0.9
    assert list(truth.to_frame().columns) == ["label", "description", "latent", "precision", "recall", "f1",
                                              "labelled_tokens", "precise_latent", "precise_threshold",
                                              "precise_precision",
                                              "precise_recall"]
    assert truth.n_met == 1  # a; b's recall is about a half... of its half: under 0.5


def test_the_precise_match_is_the_most_recalling_latent_at_precision_0_9_not_the_best_f1():
    n = 1000
    label = torch.arange(n) < 100
    fired = torch.zeros(n, 3, dtype=torch.bool)
    fired[:, 0] = torch.arange(n) < 130  # every labelled token and 30 more: precision 0.77, recall 1, F1 0.87
    fired[:, 1] = torch.arange(n) < 55  # precision 1, recall 0.55
    fired[:, 2] = (torch.arange(n) < 70) & (torch.arange(n) >= 5) | (torch.arange(n) == 999)  # 65/66, recall 0.65
    table = _table(fired)
    (match,) = label_matches(table, {"x": label[None]}).matches
    assert match.latent == 0 and match.precise_latent == 2
    assert match.precise_recall == pytest.approx(0.65) and match.precise_precision == pytest.approx(65 / 66)
    none = label_matches(table, {"x": (torch.arange(n) >= 500)[None]}).matches[0]  # no latent is 0.9 precise
    assert (none.precise_latent, none.precise_recall) == (-1, 0.0)


def test_the_precise_match_may_count_a_latent_only_above_a_threshold_and_never_splits_a_tie():
    n = 1000
    label = torch.arange(n) < 100
    fired = (torch.arange(n) < 200)[:, None].repeat(1, 2)
    values = torch.ones(n, 2)
    values[:80, 0] = 3.0  # latent 0's strongest 80 are labelled: above 3 it is exact, recall 0.8
    values[:80, 1], values[150, 1] = 3.0, 3.0  # latent 1 ties an unlabelled token with them: 80 of 81
    values[80:100, 1] = 2.0  # and 20 more labelled below: above 2, 100 of 101
    (match,) = label_matches(_table(fired, values), {"x": label[None]}).matches
    assert (match.precise_latent, match.precise_threshold) == (1, 2.0)
    assert match.precise_recall == pytest.approx(1.0) and match.precise_precision == pytest.approx(100 / 101)
    alone = label_matches(_table(fired[:, :1], values[:, :1]), {"x": label[None]}).matches[0]
    assert (alone.precise_threshold, alone.precise_precision, alone.precise_recall) == (3.0, 1.0, 0.8)
    with pytest.raises(ValueError, match="sorted by latent"):
        FiredTable(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.ones(2), torch.zeros(1, 2, dtype=torch.long), 2,
                   "blocks.0.hook_resid_pre", "test")


def test_the_shipped_sae_meets_its_quality_bar_on_held_out_rows_and_finds_the_country_and_the_capital():
    """Issue 20's bar on 65,536 held-out tokens (the card's 1 M are measured by organism.train_sae); of the five
    labels, two have a latent at precision >= 0.9 and recall >= 0.5 (the others are written up on the issue)."""
    bundle = shipped_bundle()
    sae = saes.load(bundle, train_sae.SAE_DIR)
    measured = measure(bundle, sae, train_sae.held_out_batches(bundle, tokens=65_536))
    assert measured.explained_variance >= 0.95 and measured.loss_recovered >= 0.99 and measured.l0 <= 12
    truth = {m.label: m for m in known_truth(bundle, sae, card_rows(bundle.tokenizer)).matches}
    for label in ("country", "capital"):
        assert truth[label].precise_precision >= 0.9 and truth[label].precise_recall >= 0.5, truth[label]
