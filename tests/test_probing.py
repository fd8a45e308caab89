"""Probing: datasets, uploaded-CSV validation, batched feature extraction, grouped folds, controls, weights,
and the known truths on the shipped organism."""

from __future__ import annotations

import ast
import io
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from interp_core import budget, probing
from interp_core.charts.probing import accuracy_chart, confusion_chart, selectivity_chart
from interp_core.errors import UserInputError
from interp_core.probing import (
    BUILTIN_DATASETS,
    ProbeConfig,
    ProbeDataError,
    ProbeDataset,
    ProbeExample,
    ProbeFeatures,
    ProbeReport,
    ProbeSummary,
    ProbeWeights,
    builtin_dataset,
    control_task_labels,
    datasets,
    extract_features,
    features,
    fit_probe,
    parse_probe_csv,
    probe_folds,
    run_probes,
    upload,
    with_token_types,
)
from interp_core.settings import Limits
from interp_core.trace import run_trace
from tests.shipped import shipped_bundle

FAST = ProbeConfig(n_folds=5, max_iter=200)


def small(dataset: ProbeDataset, n_sentences: int) -> ProbeDataset:
    """The examples of the first `n_sentences` sentences."""
    keep = sorted({e.sentence_id for e in dataset.examples})[:n_sentences]
    return replace(dataset, examples=tuple(e for e in dataset.examples if e.sentence_id in set(keep)))


def synthetic(resid: np.ndarray, dataset: ProbeDataset, token: str = "last") -> ProbeFeatures:
    n = resid.shape[1]
    return ProbeFeatures(resid=resid.astype(np.float32), positions=np.zeros(n, dtype=np.int64),
                         n_tokens=np.ones(n, dtype=np.int64), token_types=("",) * n, token=token, ref="synthetic",
                         fingerprint=dataset.fingerprint)


def labelled(labels: list[str], per_sentence: int = 1, types: list[str] | None = None) -> ProbeDataset:
    examples = tuple(ProbeExample(text=f"sentence {i // per_sentence}", label=label,
                                  sentence_id=i // per_sentence,
                                  word_type=types[i] if types else f"type {i % 7}")
                     for i, label in enumerate(labels))
    return ProbeDataset(name="synthetic", level="sentence", examples=examples)


# -- built-in datasets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(BUILTIN_DATASETS))
def test_builtin_datasets_are_sized_for_fast_cv_and_every_class_can_be_tested_in_every_fold(key):
    data = builtin_dataset(key)
    assert 1000 <= len(data) <= 2000
    assert len(data.classes) >= 2
    for label in data.classes:
        assert len({e.sentence_id for e in data.examples if e.label == label}) >= 5, label
    for e in data.examples:
        if e.span is not None:
            assert e.word_type == e.text[e.span[0]:e.span[1]].lower()  # the control type is the labelled word


def test_builtin_labelled_words_are_the_ones_the_labels_describe():
    pos = builtin_dataset("pos")
    words = {(e.text[e.span[0]:e.span[1]], e.label) for e in pos.examples}
    assert (".", "PUNCT") in words and ("the", "DET") in words
    number = builtin_dataset("number")
    heads = {e.text[e.span[0]:e.span[1]]: e.label for e in number.examples}
    assert heads.get("dogs", "pl") == "pl" and heads.get("dog", "sg") == "sg"
    facts = builtin_dataset("country_city")
    names = {e.text[e.span[0]:e.span[1]]: e.label for e in facts.examples}
    assert names["France"] == "country" and names["Paris"] == "city"


def test_builtin_datasets_shrink_to_the_hosted_row_cap(monkeypatch):
    monkeypatch.setattr(datasets, "limits", lambda: Limits(max_probe_rows=300))
    for key in BUILTIN_DATASETS:
        assert len(builtin_dataset(key)) <= 300


def test_fingerprint_changes_with_content_only():
    data = builtin_dataset("tense")
    assert data.fingerprint == builtin_dataset("tense").fingerprint
    first = data.examples[0]
    changed = replace(data, examples=(replace(first, label="other"),) + data.examples[1:])
    assert changed.fingerprint != data.fingerprint


# -- uploaded CSVs ------------------------------------------------------------------------------------------
def csv_bytes(rows: list[str], header: str = "text,label") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode("utf-8")


def good_rows(n: int = 20) -> list[str]:
    return [f"Sentence number {i}.,{'a' if i % 2 else 'b'}" for i in range(n)]


def test_good_sentence_csv_loads_every_row_with_text_labels():
    data = parse_probe_csv(csv_bytes(good_rows() + ['"A sentence, with a comma.",b']))
    assert data.level == "sentence" and len(data) == 21 and data.classes == ("a", "b")
    assert data.examples[-1].text == "A sentence, with a comma."
    assert data.token_choices == ("last", "mean")


def test_good_token_csv_groups_rows_of_one_text_into_one_sentence():
    rows = [f"The cat {i}.,{j},{'x' if j else 'y'}" for i in range(6) for j in (0, 1)]
    data = parse_probe_csv(csv_bytes(rows, "Text,Token_Index,Label"))
    assert data.level == "token" and len(data) == 12 and data.n_sentences == 6
    assert [e.token_index for e in data.examples[:2]] == [0, 1]
    assert data.examples[0].sentence_id == data.examples[1].sentence_id


def test_numeric_labels_are_kept_as_text_and_the_user_is_told():
    rows = [f"Sentence {i}.,{i % 2}" for i in range(10)] + [f"Other {i}.,1.0" for i in range(5)]
    data = parse_probe_csv(csv_bytes(rows))
    assert data.classes == ("0", "1", "1.0")
    assert any("as text" in note for note in data.notes)


def test_a_bom_and_blank_lines_are_fine():
    data = parse_probe_csv(b"\xef\xbb\xbf" + csv_bytes(good_rows()) + b"\n\n")
    assert len(data) == 20


@pytest.mark.parametrize(("data", "says"), [
    (b"", "empty"),
    (b"text,label\n", "no rows"),
    (csv_bytes(good_rows(), "sentence,label"), "'text' and 'label'"),
    (csv_bytes(good_rows(), "text,text,label"), "twice"),
    ("text,label\nCafé.,a\n".encode("latin-1"), "not UTF-8"),
    ("text,label\nA.,a\n".encode("utf-16"), "UTF-8"),
    (csv_bytes(["A cat.,a"] * 10), "at least two classes"),
    (csv_bytes(good_rows() + ["Rare.,c"] * 4), "“c” (1)"),
    (csv_bytes(good_rows() + ["   ,a"]), "Row(s) 21 have an empty text"),
    (csv_bytes(good_rows() + ["Text.,"]), "empty label"),
    (csv_bytes(good_rows() + ["Short row"]), "fewer cells"),
    (csv_bytes([f"T {i}.,{v},a" for i, v in enumerate(["1", "-1", "2.5", "x"])], "text,token_index,label"),
     "Row(s) 2, 3, 4 have a token_index"),
    (csv_bytes([f"{row},{' ' if i == 2 else 'w'}" for i, row in enumerate(good_rows())], "text,label,word_type"),
     "Row(s) 3 have an empty word_type"),
    (csv_bytes([f"{row},w,v" for row in good_rows()], "text,label,word_type,Word_Type"), "word_type twice"),
])
def test_bad_csv_is_refused_with_a_message_saying_what_to_fix(data, says):
    with pytest.raises(ProbeDataError) as error:
        parse_probe_csv(data)
    assert says in str(error.value)


def test_csv_over_the_size_and_row_caps_is_refused_naming_the_cap(monkeypatch):
    monkeypatch.setattr(upload, "limits", lambda: Limits(max_upload_bytes=100, max_probe_rows=10))
    with pytest.raises(ProbeDataError, match="max_upload_bytes"):
        parse_probe_csv(csv_bytes(good_rows(20)))
    with pytest.raises(ProbeDataError, match="max_probe_rows"):
        parse_probe_csv(csv_bytes([f"{i},{i % 2}" for i in range(11)]))


def test_classes_need_as_many_sentences_as_folds_not_just_rows():
    rows = [f"Same text.,{j},a" for j in range(6)] + [f"Other {i}.,0,b" for i in range(6)]
    with pytest.raises(ProbeDataError, match="“a” \\(1\\)"):
        parse_probe_csv(csv_bytes(rows, "text,token_index,label"))
    assert len(parse_probe_csv(csv_bytes(good_rows(6)), n_folds=3)) == 6


def test_user_text_in_messages_is_quoted_so_markdown_cannot_render():
    with pytest.raises(ProbeDataError) as error:
        parse_probe_csv(csv_bytes([f"T{i},:red[x] **b** $x$" for i in range(2)] + [f"U{i},b" for i in range(6)]))
    assert "“:red[x] **b** $x$”" in str(error.value)


# -- the control task of uploads ---------------------------------------------------------------------------
def word_identity_upload(word_type_column: bool) -> tuple[ProbeDataset, ProbeFeatures]:
    """600 uploaded sentences, each about one of 20 words whose identity fixes the label, and features that are
    that word's one-hot identity: a probe can memorise the words, so a fair control task must be learnable."""
    rng = np.random.default_rng(2)
    word = rng.integers(0, 20, size=600)  # [example]
    rows = [f"Sentence {i} about w{w}.,{w % 2}" + (f", w{w} " if word_type_column else "")
            for i, w in enumerate(word)]
    data = parse_probe_csv(csv_bytes(rows, "text,label,word_type" if word_type_column else "text,label"))
    resid = rng.normal(scale=0.3, size=(1, 600, 20))
    resid[0, np.arange(600), word] += 3.0
    return data, synthetic(resid, data)


def test_a_sentence_level_upload_without_word_types_gets_no_control_task_and_says_why():
    """Hewitt & Liang 2019 draw one random label per word TYPE. A `text,label` file names none, and its only
    candidate, the text, is what the folds group by: no test fold's type was ever seen in training, so that
    control sat at chance by construction (the old code scored it about 0.5 here) and "selectivity" read as task
    minus chance. Now there is no control task, no selectivity, and a reason."""
    data, feats = word_identity_upload(word_type_column=False)
    assert all(e.word_type is None for e in data.examples) and "No control task" in data.description
    assert control_task_labels(data) is None
    report = run_probes(feats, data, FAST)
    assert report.task_mean[0] > 0.95  # the words are memorisable ...
    assert report.control_scores is None and report.control_labels is None and report.selectivity is None
    assert "word_type" in report.no_control_reason  # ... but without word types nothing can show it
    assert not {"control_mean", "control_std", "selectivity"} & set(report.layer_table().columns)
    assert "control" not in set(report.to_frame()["probe"])
    with pytest.raises(ValueError, match="no control task"):
        selectivity_chart(report)


def test_an_uploaded_word_type_column_keys_a_control_task_that_catches_memorised_words():
    data, feats = word_identity_upload(word_type_column=True)
    assert data.examples[0].word_type == data.examples[0].text.split()[-1].rstrip(".")  # trimmed, as given
    assert not any("Ignored column" in note for note in data.notes)
    report = run_probes(feats, data, FAST)
    assert report.no_control_reason is None
    assert report.task_mean[0] > 0.95 and report.control_mean[0] > 0.9 and report.selectivity[0] < 0.1


def test_word_types_that_never_recur_across_sentences_are_flagged():
    rows = [f"{row},w{i}" for i, row in enumerate(good_rows())]
    data = parse_probe_csv(csv_bytes(rows, "text,label,word_type"))
    assert any("chance by construction" in note for note in data.notes)
    recurring = parse_probe_csv(csv_bytes([f"{row},w{i % 4}" for i, row in enumerate(good_rows())],
                                          "text,label,word_type"))
    assert not any("chance by construction" in note for note in recurring.notes)


def test_a_token_level_upload_takes_its_word_types_from_the_tokens_unless_a_column_gives_them(gpt2_bundle):
    rows = [f"The cat sat {i}.,{j},{'x' if j == 1 else 'y'}" for i in range(6) for j in (1, 2)]
    plain = parse_probe_csv(csv_bytes(rows, "text,token_index,label"))
    feats = extract_features(gpt2_bundle, plain, "labelled")
    assert set(feats.token_types) == {"cat", "sat"}
    assert [e.word_type for e in with_token_types(plain, feats).examples] == list(feats.token_types)
    assert run_probes(feats, plain, FAST).control_scores is not None  # the token's text, as before
    given = parse_probe_csv(csv_bytes([f"{row},w{k % 3}" for k, row in enumerate(rows)],
                                      "text,token_index,label,word_type"))
    typed = with_token_types(given, extract_features(gpt2_bundle, given, "labelled"))
    assert [e.word_type for e in typed.examples] == [f"w{k % 3}" for k in range(len(rows))]


# -- features -----------------------------------------------------------------------------------------------
SENTENCES = ["The cat sat.", "When Mary and John went to the store, John gave a drink to Mary.",
             "Reykjavik is far.", "A dog."]


def test_batched_padded_features_equal_the_single_prompt_trace(tiny_bundle):
    """Right padding, the mask and the pre-norm last layer: every feature equals the unbatched trace's resid."""
    words = ["cat", "store", "Reykjavik", "dog"]
    examples = tuple(ProbeExample(text=t, label=str(i % 2), sentence_id=i, word_type=w,
                                  span=(t.index(w), t.index(w) + len(w)))
                     for i, (t, w) in enumerate(zip(SENTENCES, words, strict=True)))
    data = ProbeDataset(name="t", level="sentence", examples=examples)
    for token in ("last", "mean", "labelled"):
        feats = extract_features(tiny_bundle, data, token, batch_size=3)  # two batches, unequal lengths
        assert feats.resid.shape == (tiny_bundle.n_layers + 1, 4, tiny_bundle.d_model)
        for i, text in enumerate(SENTENCES):
            trace = run_trace(tiny_bundle, text)
            if token == "mean":
                special = np.array(tiny_bundle.tokenizer(text, return_special_tokens_mask=True)
                                   ["special_tokens_mask"], dtype=bool)
                expected = trace.resid[:, ~special].mean(dim=1)
            else:
                expected = trace.resid[:, feats.positions[i]]
            np.testing.assert_allclose(feats.resid[:, i], expected.numpy(), atol=2e-5, err_msg=f"{token} {i}")


def test_memory_budget_splits_batches_without_changing_the_features(gpt2_bundle, monkeypatch):
    data = small(builtin_dataset("number"), 12)
    calls: list[str] = []
    full = extract_features(gpt2_bundle, data, "mean", progress=lambda f, m: calls.append(m))
    assert len(calls) == 1  # twelve short sentences: one batch
    monkeypatch.setattr(budget, "limits", lambda: Limits(ig_batch_memory_mb=0))  # budget: one text per batch
    calls.clear()
    split = extract_features(gpt2_bundle, data, "mean", progress=lambda f, m: calls.append(m))
    assert len(calls) == 12
    np.testing.assert_allclose(split.resid, full.resid, atol=2e-5)


def test_labelled_word_is_read_at_its_last_subtoken(tiny_bundle):
    text, word = "Reykjavik is far.", "Reykjavik"
    ids = tiny_bundle.tokenizer(text)["input_ids"]
    example = ProbeExample(text=text, label="a", sentence_id=0, word_type="x", span=(0, len(word)))
    data = ProbeDataset(name="t", level="token", examples=(example,))
    pos = int(extract_features(tiny_bundle, data, "labelled").positions[0])
    decoded = tiny_bundle.tokenizer.decode(ids[:pos + 1], skip_special_tokens=True)
    assert decoded.strip() == word  # ends exactly at the word's end: its last sub-token
    assert len(tiny_bundle.tokenizer.decode(ids[:pos], skip_special_tokens=True)) < len(word)


def test_token_index_out_of_range_is_refused_before_any_forward(gpt2_bundle, monkeypatch):
    data = parse_probe_csv(csv_bytes([f"Cat {i}.,{50 if i == 3 else 0},{i % 2}" for i in range(10)],
                                     "text,token_index,label"))
    calls = []
    monkeypatch.setattr(gpt2_bundle.model.__class__, "forward",
                        lambda *a, **k: calls.append(1))
    with pytest.raises(ProbeDataError, match="token_index 50 is out of range"):
        extract_features(gpt2_bundle, data, "labelled")
    assert not calls


def test_text_longer_than_the_token_cap_is_refused_naming_the_cap(gpt2_bundle, monkeypatch):
    monkeypatch.setattr(features, "limits", lambda: Limits(max_prompt_tokens=4))
    data = labelled(["a", "b"])
    data = replace(data, examples=tuple(replace(e, text="a much longer text than four tokens") for e in data.examples))
    with pytest.raises(ProbeDataError, match="max_prompt_tokens"):
        extract_features(gpt2_bundle, data, "last")


def test_token_choice_must_fit_the_dataset(gpt2_bundle):
    with pytest.raises(UserInputError, match="does not fit"):
        extract_features(gpt2_bundle, builtin_dataset("pos"), "last")


# -- folds, controls, probes --------------------------------------------------------------------------------
def test_no_sentence_is_ever_in_both_train_and_test():
    data = small(builtin_dataset("pos"), 120)  # ~8 words per sentence: many examples share a sentence
    labels, groups = data.labels, data.sentence_ids
    folds = probe_folds(labels, groups, 5, seed=3)
    tested = np.zeros(len(labels), dtype=int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(set(train) | set(test)) == len(labels)
        tested[test] += 1
    assert (tested == 1).all()  # every example is tested exactly once

    # ... and run_probes uses exactly these folds: every sentence sits in one test fold only.
    rng = np.random.default_rng(0)
    report = run_probes(synthetic(rng.normal(size=(2, len(data), 4)), data), data, replace(FAST, seed=3))
    for sentence in np.unique(groups):
        assert len(set(report.test_fold[groups == sentence])) == 1
    expected = np.zeros(len(labels), dtype=int)
    for f, (_, test) in enumerate(folds):
        expected[test] = f
    np.testing.assert_array_equal(report.test_fold, expected)


def test_random_labels_stay_near_the_baseline_at_every_layer(gpt2_bundle):
    data = small(builtin_dataset("number"), 400)
    rng = random.Random(0)
    data = replace(data, examples=tuple(replace(e, label=rng.choice("ab")) for e in data.examples))
    report = run_probes(extract_features(gpt2_bundle, data, "last"), data, FAST)
    assert report.baseline == pytest.approx(0.5)
    assert np.all(np.abs(report.task_mean - report.baseline) < 0.08), report.task_mean


def test_the_probe_finds_the_layer_where_the_information_is_planted():
    rng = np.random.default_rng(1)
    data = labelled([random.Random(i).choice("xyz") for i in range(300)])
    resid = rng.normal(size=(4, 300, 16))
    resid[2, np.arange(300), data.labels] += 4.0  # one direction per class, at layer 2 only
    report = run_probes(synthetic(resid, data), data, FAST)
    assert report.best_layer == 2 and report.task_mean[2] > 0.9
    assert report.first_good_layer == 2
    resid[3, np.arange(300), data.labels] += 4.0  # now also at layer 3: the information first appears at layer 2
    later = run_probes(synthetic(resid, data), data, FAST)
    assert later.best_layer in (2, 3) and later.first_good_layer == 2
    assert all(abs(report.task_mean[layer] - 1 / 3) < 0.1 for layer in (0, 1, 3))
    assert report.baseline == pytest.approx(1 / 3)
    assert report.majority_share == pytest.approx(np.bincount(data.labels).max() / 300)


def test_control_labels_are_fixed_per_word_type_seeded_and_follow_the_label_distribution():
    types = [f"w{i % 200}" for i in range(2000)]
    labels = ["a" if i % 4 else "b" for i in range(2000)]  # 75% a
    data = labelled(labels, types=types)
    control = control_task_labels(data, seed=5)
    for t in set(types):
        assert len(set(control[np.array(types) == t])) == 1
    np.testing.assert_array_equal(control, control_task_labels(data, seed=5))
    assert not np.array_equal(control, control_task_labels(data, seed=6))
    assert abs((control == 0).mean() - 0.75) < 0.1  # class index 0 = "a"


def test_selectivity_is_task_minus_control_and_memorisable_controls_are_caught():
    """Word identity is in the features: the control task is learnable and selectivity is low at layer 0; at
    layer 1 only the property is there, so the control fails and selectivity is high."""
    rng = np.random.default_rng(2)
    n_types, n = 20, 600
    type_of = rng.integers(0, n_types, size=n)
    label_of_type = np.arange(n_types) % 2
    data = labelled([str(label_of_type[t]) for t in type_of], types=[f"w{t}" for t in type_of])
    resid = rng.normal(scale=0.3, size=(2, n, n_types))
    resid[0, np.arange(n), type_of] += 3.0  # layer 0: one-hot word identity
    resid[1, :, 0] += 3.0 * data.labels  # layer 1: the property alone
    report = run_probes(synthetic(resid, data), data, FAST)
    np.testing.assert_allclose(report.selectivity, report.task_mean - report.control_mean)
    assert report.task_mean[0] > 0.95 and report.control_mean[0] > 0.9 and report.selectivity[0] < 0.1
    assert report.task_mean[1] > 0.95 and report.selectivity[1] > 0.3


def test_mlp_probe_is_scored_on_the_same_folds():
    rng = np.random.default_rng(3)
    data = labelled(["a", "b"] * 100)
    resid = rng.normal(size=(2, 200, 6))
    resid[1, :, 0] += 5 * data.labels
    report = run_probes(synthetic(resid, data), data, replace(FAST, mlp=True))
    assert report.mlp_scores.shape == (2, 5) and report.mlp_scores.mean(axis=1)[1] > 0.9
    assert set(report.to_frame()["probe"]) == {"task", "control", "mlp", "majority baseline"}


def test_report_shapes_are_checked():
    rng = np.random.default_rng(4)
    data = labelled(["a", "b"] * 50)
    report = run_probes(synthetic(rng.normal(size=(3, 100, 4)), data), data, FAST)
    with pytest.raises(ValueError, match="predictions"):
        replace(report, predictions=report.predictions[:, :10])
    with pytest.raises(ValueError, match="control_scores"):
        ProbeReport(**{**report.__dict__, "control_scores": np.zeros((2, 5))})
    assert report.confusion(1).sum() == 100
    frame = report.confusion_frame(1)
    assert set(frame.columns) >= {"true", "predicted", "count", "share"}
    assert frame.groupby("true")["share"].sum().round(6).eq(1).all()


def test_features_from_another_dataset_are_refused():
    data = labelled(["a", "b"] * 10)
    other = labelled(["b", "a"] * 10)
    with pytest.raises(ValueError, match="another dataset"):
        run_probes(synthetic(np.zeros((2, 20, 3)), other), data, FAST)


# -- trained weights ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [("a", "b"), ("a", "b", "c")])
def test_downloaded_weights_load_without_pickle_and_reproduce_the_probe(classes):
    rng = np.random.default_rng(5)
    data = labelled([classes[i % len(classes)] for i in range(90)])
    x = (rng.normal(size=(2, 90, 8)) + data.labels[None, :, None]).astype(np.float32)
    weights = fit_probe(synthetic(x, data), data, 1)
    arrays = np.load(io.BytesIO(weights.to_npz()), allow_pickle=False)
    assert tuple(arrays["classes"]) == classes and int(arrays["layer"]) == 1
    reference = Pipeline([("s", StandardScaler()), ("p", LogisticRegression(C=ProbeConfig().C, class_weight="balanced",
                                                                              max_iter=500))]).fit(x[1], data.labels)
    scores = x[1] @ arrays["coef_raw"].T + arrays["intercept_raw"]
    np.testing.assert_allclose(scores.squeeze(), reference.decision_function(x[1]), rtol=1e-4, atol=1e-4)
    assert len(weights.to_frame()) == arrays["coef"].size


# -- the page's summary -------------------------------------------------------------------------------------
def test_the_page_summary_shows_selectivity_only_with_a_control_task():
    rng = np.random.default_rng(8)
    data = labelled(["a", "b"] * 50)
    report = run_probes(synthetic(rng.normal(size=(3, 100, 4)), data), data, FAST)
    summary = ProbeSummary.from_report(report)
    assert [m.label for m in summary.metrics] == ["Best layer", "Balanced accuracy there", "Selectivity there",
                                                  "Most selective layer", "Layer 0 (embeddings)"]
    assert summary.metrics[0].value == str(report.best_layer) and summary.control_note is None
    assert "Hewitt & Liang 2019" in summary.metrics[2].help
    assert f"{report.baseline:.2f}" in summary.baseline_note
    no_control = ProbeSummary.from_report(run_probes(synthetic(rng.normal(size=(3, 100, 4)), data), data,
                                                     replace(FAST, control=False)))
    assert [m.label for m in no_control.metrics] == ["Best layer", "Balanced accuracy there",
                                                     "Layer 0 (embeddings)"]
    assert no_control.control_note == "No control task: it was switched off (ProbeConfig(control=False))."
    assert "represents" in no_control.where and "Without a control task" in no_control.where


# -- the package ------------------------------------------------------------------------------------------
def test_probing_is_a_package_of_short_topic_modules_without_the_dead_helpers():
    package = Path(probing.__file__)
    assert package.name == "__init__.py"  # was one module of about 1,000 lines
    for path in sorted(package.parent.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert len(source.splitlines()) <= 400, path.name
        assert (ast.get_docstring(ast.parse(source)) or "").strip(), f"{path.name} says what it is"
    assert not hasattr(probing, "dataset_from_path") and not hasattr(ProbeWeights, "decision")  # unused


# -- charts -------------------------------------------------------------------------------------------------
def test_charts_plot_every_layer_and_the_baseline():
    rng = np.random.default_rng(6)
    data = labelled(["a", "b", "c"] * 40)
    report = run_probes(synthetic(rng.normal(size=(3, 120, 4)), data), data, FAST)
    spec = accuracy_chart(report).to_dict()
    values = [row for ds in spec["datasets"].values() for row in ds]
    assert {row["layer"] for row in values if "series" in row} == {0, 1, 2}
    assert any(row.get("baseline") == pytest.approx(report.baseline) for row in values)
    assert selectivity_chart(report).to_dict()
    confusion = confusion_chart(report, 2).to_dict()
    cells = [row for ds in confusion["datasets"].values() for row in ds]
    assert len(cells) == 9 and sum(row["count"] for row in cells) == 120


# -- the shipped organism -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_reports():
    bundle = shipped_bundle()
    reports = {}
    for key in ("number", "tense"):  # sentence level, read at the last token
        data = builtin_dataset(key)
        token = data.token_choices[0]
        reports[key] = run_probes(extract_features(bundle, data, token), data, ProbeConfig())
    return reports


def test_shipped_subject_number_is_read_in_the_middle_layers_with_high_accuracy_and_selectivity(shipped_reports):
    report = shipped_reports["number"]  # sentence level, last token
    good = (report.task_mean >= 0.9) & (report.selectivity >= 0.2)
    middle = good[1:-1]  # after a block, not the embeddings nor the last block's output
    assert middle.any(), report.layer_table().to_string()


def test_shipped_embeddings_alone_do_worse_than_the_best_layer(shipped_reports):
    assert any(r.task_mean[0] < r.task_mean[r.best_layer] - 0.05 for r in shipped_reports.values())
