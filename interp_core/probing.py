"""Probing: from which layer on a labelled property is linearly readable from the residual stream.

    >>> data = builtin_dataset("number")                       # subject number of 1,500 grammar sentences
    >>> feats = extract_features(bundle, data, token="last")   # resid [layer + 1, example, d_model]
    >>> report = run_probes(feats, data)                        # balanced accuracy per layer, with controls
    >>> report.best_layer, report.layer_table()

The recipe (Hewitt & Liang 2019; see /work/shared/notes/algorithms.md):
1. Features: the residual stream at every layer l = 0..n_layers for one token of each example (the last
   token, the mean over the text's tokens, or the labelled word's last sub-token). resid[0] is the embedding,
   resid[l] the input of block l, resid[n_layers] the last block's output BEFORE the final norm.
2. Probe: StandardScaler -> LogisticRegression(class_weight="balanced"), cross-validated with k folds grouped by
   sentence (StratifiedGroupKFold), so no sentence is ever in both the train and the test part of a fold.
   Score: balanced accuracy (mean of per-class recall), mean +/- std over folds, next to the majority-class
   baseline scored the same way (which is 1 / n_classes under balanced accuracy).
3. Control task: every word TYPE gets one random label, drawn once from the task's label distribution with a
   fixed seed; the same probe on the same features and folds learns it. Selectivity = task - control accuracy.
   A probe that also does well on the control is memorising word identities, not reading the property.

Dimension names: `example` is one labelled item (a sentence, or one word of a sentence); the others follow
docs/architecture.md (layer, pos, d_model, class).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import string
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from interp_core import activations
from interp_core.budget import tokens_per_batch
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
from interp_core.names import act_name
from interp_core.organism import corpus
from interp_core.settings import SHIPPED_MODEL_DIR, limits
from interp_core.tokens import decode, encode

Progress = Callable[[float, str], None]

LEVELS = ("sentence", "token")
# How the feature vector of an example is read from its tokens (see `extract_features`).
TOKEN_CHOICES = {
    "last": "last token",
    "mean": "mean over tokens",
    "labelled": "labelled word (its last sub-token)",
}
GRAMMAR_FILE = SHIPPED_MODEL_DIR / "probe_grammar.jsonl"
GRAMMAR_SEED = 20_19  # seeds the fallback grammar sentences when the organism's file is not there
GRAMMAR_FALLBACK_SENTENCES = 3000  # as many as the organism writes
SENTENCE_EXAMPLES = 1500  # sentence-level built-ins: enough for a tight 5-fold estimate, CV stays ~seconds
TOKEN_EXAMPLES = 2000  # token-level built-ins: same budget in words
FACT_TEMPLATES_PER_COUNTRY = 8  # 79 countries x 8 sentences x 2 names = 1,264 examples
DEFAULT_FOLDS = 5  # each test fold holds 20% of the sentences; five scores give a usable std
FEATURE_BATCH = 32  # most texts per forward pass; fewer when the hidden states would outgrow the memory budget
CONTROL_DRAWS = 100  # redraws allowed until the control labels hold at least two classes


class ProbeDataError(UserInputError):
    """A probing dataset (usually an uploaded CSV) cannot be used; the message says what to fix."""


# ---------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeExample:
    """One labelled item: a whole sentence, or one word (or token) of it."""

    text: str  # the sentence the model reads, exactly as typed
    label: str  # the class, as text
    sentence_id: int  # examples sharing an id are one sentence: never split between train and test
    word_type: str  # control-task key: every example of a type gets the same random control label
    span: tuple[int, int] | None = None  # [start, end) characters of the labelled word in `text`
    token_index: int | None = None  # or: the labelled token's index in the model's tokens (special included)

    def __post_init__(self) -> None:
        if self.span is not None:
            start, end = self.span
            if not 0 <= start < end <= len(self.text):
                raise ValueError(f"span {self.span} is outside the text {self.text!r}")
            if self.token_index is not None:
                raise ValueError("give a span or a token_index, not both")
        if self.token_index is not None and self.token_index < 0:
            raise ValueError(f"token_index must be >= 0, got {self.token_index}")


@dataclass(frozen=True)
class ProbeDataset:
    """Labelled examples for probing, immutable and safe to share between sessions.

    `level` "sentence": one label per sentence (read at the last token, the mean, or the labelled word);
    `level` "token": one label per word or token (read at that token). `fingerprint` identifies the content.
    """

    name: str
    level: str  # "sentence" or "token"
    examples: tuple[ProbeExample, ...]  # [example]
    description: str = ""  # one paragraph shown on the page
    notes: tuple[str, ...] = ()  # things the user should know about how the data was read

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if not self.examples:
            raise ValueError("a ProbeDataset needs at least one example")
        if self.level == "token" and any(e.span is None and e.token_index is None for e in self.examples):
            raise ValueError("every example of a token-level dataset needs a span or a token_index")

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def classes(self) -> tuple[str, ...]:
        """The distinct labels, sorted: [class]."""
        return tuple(sorted({e.label for e in self.examples}))

    @property
    def labels(self) -> np.ndarray:
        """Class index of every example: [example] int, into `classes`."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[e.label] for e in self.examples], dtype=np.int64)

    @property
    def sentence_ids(self) -> np.ndarray:
        """[example] int: the grouping used by the folds."""
        return np.array([e.sentence_id for e in self.examples], dtype=np.int64)

    @property
    def n_sentences(self) -> int:
        return len({e.sentence_id for e in self.examples})

    @property
    def token_choices(self) -> tuple[str, ...]:
        """The `token` values `extract_features` accepts for this dataset (first = the natural default)."""
        if self.level == "token":
            return ("labelled",)
        located = all(e.span is not None or e.token_index is not None for e in self.examples)
        return ("last", "mean", "labelled") if located else ("last", "mean")

    @property
    def fingerprint(self) -> str:
        """sha256 (hex, 16 characters) of the level and every example: equal content, equal fingerprint."""
        payload = json.dumps([self.level, [[e.text, e.label, e.sentence_id, e.word_type,
                                            list(e.span) if e.span else None, e.token_index]
                                           for e in self.examples]], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def class_counts(self) -> dict[str, int]:
        """Examples per class, in `classes` order."""
        counts = Counter(e.label for e in self.examples)
        return {c: counts[c] for c in self.classes}

    def to_frame(self) -> pd.DataFrame:
        """One row per example: text, label, sentence_id, word_type, the labelled word (when known), token_index."""
        return pd.DataFrame({
            "sentence_id": [e.sentence_id for e in self.examples],
            "text": [e.text for e in self.examples],
            "word": [e.text[e.span[0]:e.span[1]] if e.span else "" for e in self.examples],
            "token_index": [e.token_index if e.token_index is not None else -1 for e in self.examples],
            "label": [e.label for e in self.examples],
            "word_type": [e.word_type for e in self.examples],
        })


def _word_spans(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) of each word in `text`, found left to right."""
    spans, cursor = [], 0
    for word in words:
        start = text.find(word, cursor)
        if start < 0:
            raise ValueError(f"word {word!r} not found in {text!r} after character {cursor}")
        spans.append((start, start + len(word)))
        cursor = start + len(word)
    return spans


def _fallback_grammar_records() -> list[dict]:
    """Grammar sentences in the organism's probe_grammar.jsonl format, generated with a fixed seed."""
    rng = random.Random(GRAMMAR_SEED)
    records = []
    for sentence_id in range(GRAMMAR_FALLBACK_SENTENCES):
        s = corpus.grammar_sentence(rng)
        records.append({"sentence_id": sentence_id, "text": s.text, "words": list(s.words),
                        "pos": list(s.pos_tags), "number": s.number, "tense": s.tense})
    return records


@lru_cache(maxsize=2)
def _grammar_records_cached(path: str, mtime: float) -> tuple[dict, ...]:
    if not path:
        return tuple(_fallback_grammar_records())
    with open(path, encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def grammar_records() -> tuple[dict, ...]:
    """The organism's labelled grammar sentences (models/organism/probe_grammar.jsonl), or, while that file is
    not there, the same kind of sentences generated from interp_core/organism/corpus.py with a fixed seed."""
    if GRAMMAR_FILE.is_file():
        return _grammar_records_cached(str(GRAMMAR_FILE), GRAMMAR_FILE.stat().st_mtime)
    return _grammar_records_cached("", 0.0)


def _grammar_source_note() -> str:
    if GRAMMAR_FILE.is_file():
        return f"Sentences from {GRAMMAR_FILE.name}, written by the organism's training script."
    return ("The organism's probe_grammar.jsonl is not there yet, so the same grammar generated these "
            "sentences from a fixed seed.")


def _sentence_dataset(name: str, key: str, head_tags: tuple[str, ...], description: str,
                      max_rows: int) -> ProbeDataset:
    """Sentence-level labels `key` ("number"/"tense"), located at the first word tagged in `head_tags`."""
    examples = []
    for record in grammar_records()[:min(SENTENCE_EXAMPLES, max_rows)]:
        spans = _word_spans(record["text"], record["words"])
        head = next(i for i, tag in enumerate(record["pos"]) if tag in head_tags)
        examples.append(ProbeExample(text=record["text"], label=str(record[key]),
                                     sentence_id=int(record["sentence_id"]),
                                     word_type=record["words"][head].lower(), span=spans[head]))
    return ProbeDataset(name=name, level="sentence", examples=tuple(examples), description=description,
                        notes=(_grammar_source_note(),))


def _pos_dataset(max_rows: int) -> ProbeDataset:
    examples: list[ProbeExample] = []
    for record in grammar_records():
        if len(examples) + len(record["words"]) > min(TOKEN_EXAMPLES, max_rows):
            break
        spans = _word_spans(record["text"], record["words"])
        for word, tag, span in zip(record["words"], record["pos"], spans, strict=True):
            examples.append(ProbeExample(text=record["text"], label=tag, sentence_id=int(record["sentence_id"]),
                                         word_type=word.lower(), span=span))
    return ProbeDataset(
        name="Part of speech (grammar, per word)", level="token", examples=tuple(examples),
        description="Every word of the grammar sentences labelled with its part of speech (DET, ADJ, NOUN, PROPN, "
                    "PRON, VERB, ADP, PUNCT), read at the word's last token. Control task: one random tag per "
                    "word type, as in Hewitt & Liang.",
        notes=(_grammar_source_note(),),
    )


def _fill(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """`template.format(**values)` and the [start, end) span of every field in the result."""
    text, spans = "", {}
    for literal, field_name, _, _ in string.Formatter().parse(template):
        text += literal
        if field_name is not None:
            spans[field_name] = (len(text), len(text) + len(values[field_name]))
            text += values[field_name]
    return text, spans


def _facts_dataset(max_rows: int) -> ProbeDataset:
    rng = random.Random(GRAMMAR_SEED + 1)
    templates = corpus.CAPITAL_TEMPLATES_TRAIN + corpus.CAPITAL_TEMPLATES_HELD_OUT
    per_country = max(1, min(FACT_TEMPLATES_PER_COUNTRY, max_rows // (2 * len(corpus.FACTS))))
    examples, sentence_id = [], 0
    for country, capital, _ in corpus.FACTS:
        for template in rng.sample(templates, per_country):
            text, spans = _fill(template, {"country": country, "capital": capital})
            for field_name, label, word in (("country", "country", country), ("capital", "city", capital)):
                examples.append(ProbeExample(text=text, label=label, sentence_id=sentence_id,
                                             word_type=word.lower(), span=spans[field_name]))
            sentence_id += 1
    return ProbeDataset(
        name="Country or city (facts, per word)", level="token", examples=tuple(examples),
        description="Capital facts such as 'The capital of France is Paris.': is the word a country or a city? "
                    "Every name occurs in several sentences, so a probe can also memorise names - the control "
                    "task (one random label per name) shows how much of the accuracy that explains.",
        notes=(f"{len(corpus.FACTS)} countries, {per_country} phrasings each, from the organism's "
               "fact templates (two of them never seen in training).",),
    )


BUILTIN_DATASETS: dict[str, str] = {
    "number": "Subject number: singular or plural (grammar, per sentence)",
    "tense": "Tense: present or past (grammar, per sentence)",
    "pos": "Part of speech (grammar, per word)",
    "country_city": "Country or city (facts, per word)",
}


@lru_cache(maxsize=8)
def _builtin(key: str, grammar_version: float, max_rows: int) -> ProbeDataset:
    if key == "number":
        return _sentence_dataset(
            BUILTIN_DATASETS[key], "number", ("NOUN", "PROPN", "PRON"),
            "Is the subject singular or plural ('The dog sees...' vs 'Two dogs see...')? Labelled word: the "
            "subject's head. Control task: one random label per subject word, so a probe that merely "
            "recognises the subject word cannot pass it as number.", max_rows)
    if key == "tense":
        return _sentence_dataset(
            BUILTIN_DATASETS[key], "tense", ("VERB",),
            "Is the sentence in the present or the past tense? Labelled word: the verb. Control task: one "
            "random label per verb form.", max_rows)
    if key == "pos":
        return _pos_dataset(max_rows)
    if key == "country_city":
        return _facts_dataset(max_rows)
    raise ValueError(f"unknown built-in dataset {key!r}; known: {', '.join(BUILTIN_DATASETS)}")


def builtin_dataset(key: str) -> ProbeDataset:
    """A built-in dataset by key (see BUILTIN_DATASETS): "number", "tense", "pos" or "country_city".

    Sizes: 1,500 sentences or about 2,000 words, fewer when limits().max_probe_rows is lower (hosted mode).
    """
    version = GRAMMAR_FILE.stat().st_mtime if GRAMMAR_FILE.is_file() else 0.0
    return _builtin(key, version, limits().max_probe_rows)


# ---------------------------------------------------------------------------------------------------------
# Uploaded CSV
# ---------------------------------------------------------------------------------------------------------
def _short(text: str, n: int = 60) -> str:
    """`text` cut to n characters and wrapped in backticks, so that a message shown as Markdown (st.error)
    prints user text literally: no **bold**, :red[colour] or $maths$ from inside a sentence or label."""
    text = " ".join(text.split()).replace("`", "'")
    return "`" + (text if len(text) <= n else text[: n - 1] + "…") + "`"


def _rows_list(rows: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_probe_csv(data: bytes, n_folds: int = DEFAULT_FOLDS, name: str = "uploaded CSV") -> ProbeDataset:
    """Read an uploaded probing CSV into a ProbeDataset, or raise ProbeDataError saying what to fix.

    Two layouts (a header row is required; column names are case-insensitive, other columns are ignored):
    - `text,label`: one label per sentence;
    - `text,token_index,label`: one label per token, `token_index` counting the model's tokens from 0 as
      the Attention page shows them (special tokens such as a BOS included). Rows with the same text are one
      sentence, so they are never split between train and test. Whether an index is in range depends on the
      model, so `extract_features` checks it (before running anything).

    Checks, each with its own message: size <= limits().max_upload_bytes, UTF-8 (a BOM is fine), a header with
    the columns, 1..limits().max_probe_rows rows, no empty text or label, token_index a whole number >= 0, at
    least two classes, and every class in at least `n_folds` sentences (so each fold can test every class).
    Labels are text, compared after trimming spaces: "1" and "1.0" are two classes. Nothing is written to
    disk and nothing is unpickled. Control-task word types: the token's text cannot be known before the model
    is chosen, so a token-level row's type is its (text, token_index) - fixed by `extract_features`' caller
    through `with_token_types`; a sentence's type is its text (the control then is random labels per sentence).
    """
    cap = limits()
    if len(data) > cap.max_upload_bytes:
        raise ProbeDataError(f"The file is {len(data) / 1e6:.1f} MB; the limit for uploads "
                             f"(max_upload_bytes) is {cap.max_upload_bytes / 1e6:.1f} MB. Upload fewer rows.")
    if not data.strip():
        raise ProbeDataError("The file is empty. Upload a CSV with a header row 'text,label' and one row per "
                             "example.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ProbeDataError(f"The file is not UTF-8 text (the byte at position {error.start} cannot be read). "
                             "Save it as 'CSV UTF-8' and upload it again.") from None
    if "\x00" in text:
        raise ProbeDataError("The file contains NUL bytes, so it is not a plain CSV text file (is it a "
                             "spreadsheet or UTF-16?). Save it as 'CSV UTF-8' and upload it again.")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise ProbeDataError(f"The file is not a readable CSV: {error}.") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]  # blank lines are not rows
    if not rows:
        raise ProbeDataError("The file has no rows, only blank lines or empty cells. Upload a CSV with a header "
                             "row 'text,label' and one row per example.")
    header = [cell.strip().lower() for cell in rows[0]]
    if "text" not in header or "label" not in header:
        raise ProbeDataError(f"The header row must name the columns 'text' and 'label' (and optionally "
                             f"'token_index'); this file's header is: {_short(','.join(rows[0]))}.")
    duplicated = sorted({c for c in header if c and header.count(c) > 1} & {"text", "label", "token_index"})
    if duplicated:
        raise ProbeDataError(f"The header names the column(s) {', '.join(duplicated)} twice. Keep one of each.")
    body = rows[1:]
    if not body:
        raise ProbeDataError("The file has a header but no rows. Add one row per labelled example.")
    if len(body) > cap.max_probe_rows:
        raise ProbeDataError(f"The file has {len(body)} rows; the limit (max_probe_rows) is "
                             f"{cap.max_probe_rows}. Upload a sample of at most {cap.max_probe_rows} rows.")
    col = {name: header.index(name) for name in ("text", "label", "token_index") if name in header}
    short = [i for i, row in enumerate(body, 1) if len(row) <= max(col.values())]
    if short:
        raise ProbeDataError(f"Row(s) {_rows_list(short)} have fewer cells than the header. Check for "
                             "missing commas, or quote texts that contain commas.")
    texts = [row[col["text"]] for row in body]
    labels = [row[col["label"]].strip() for row in body]
    empty_text = [i for i, t in enumerate(texts, 1) if not t.strip()]
    if empty_text:
        raise ProbeDataError(f"Row(s) {_rows_list(empty_text)} have an empty text. Every row needs a sentence.")
    empty_label = [i for i, label in enumerate(labels, 1) if not label]
    if empty_label:
        raise ProbeDataError(f"Row(s) {_rows_list(empty_label)} have an empty label. Every row needs a label.")
    token_level = "token_index" in col
    indexes: list[int | None] = [None] * len(body)
    if token_level:
        bad = []
        for i, row in enumerate(body):
            raw = row[col["token_index"]].strip()
            if raw.isdigit():  # digits only: rejects "-1", "2.5", "3e2", "" and words
                indexes[i] = int(raw)
            else:
                bad.append(i + 1)
        if bad:
            raise ProbeDataError(f"Row(s) {_rows_list(bad)} have a token_index that is not a whole number "
                                 "from 0 up (the position of the token in the model's tokens, counting from 0).")

    # One sentence per distinct text, numbered in order of first appearance.
    sentence_of = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    sentences_per_class: dict[str, set[int]] = {}
    for t, label in zip(texts, labels, strict=True):
        sentences_per_class.setdefault(label, set()).add(sentence_of[t])
    if len(sentences_per_class) < 2:
        only = next(iter(sentences_per_class))
        raise ProbeDataError(f"Every row has the label {_short(only)}. A probe needs at least two classes.")
    thin = sorted((c for c, s in sentences_per_class.items() if len(s) < n_folds),
                  key=lambda c: (len(sentences_per_class[c]), c))
    if thin:
        listed = ", ".join(f"{_short(c, 30)} ({len(sentences_per_class[c])})" for c in thin[:5])
        more = f" and {len(thin) - 5} more" if len(thin) > 5 else ""
        raise ProbeDataError(f"Each class needs examples in at least {n_folds} different sentences, so that "
                             f"every one of the {n_folds} cross-validation folds can test it. Too few: {listed}"
                             f"{more}. Add examples or merge rare classes.")

    examples = tuple(
        ProbeExample(text=t, label=label, sentence_id=sentence_of[t],
                     word_type=f"{t}\x1f{index}" if token_level else t, token_index=index)
        for t, label, index in zip(texts, labels, indexes, strict=True)
    )
    notes = []
    numeric = [_looks_numeric(label) for label in sentences_per_class]
    if any(numeric) and not all(numeric):
        notes.append("Some labels look like numbers and others do not; all labels are used as text.")
    elif all(numeric):
        notes.append("Labels are used as text, so '1' and '1.0' would be two different classes.")
    if len(sentence_of) < len(texts) and not token_level:
        notes.append(f"{len(texts) - len(sentence_of)} rows repeat an earlier text; rows with the same text "
                     "count as one sentence, so they always land in the same fold.")
    ignored = [c for c in rows[0] if c.strip().lower() not in col]
    if ignored:
        notes.append(f"Ignored column(s): {', '.join(_short(c, 30) for c in ignored)}.")
    level = "token" if token_level else "sentence"
    description = (f"{len(examples)} rows, {len(sentence_of)} distinct texts, {len(sentences_per_class)} "
                   f"classes, one label per {'token' if token_level else 'sentence'}. Control task: one random "
                   f"label per {'token type' if token_level else 'distinct text'}.")
    return ProbeDataset(name=name, level=level, examples=examples, description=description, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ProbeFeatures:
    """The residual stream at every layer for one token (or the mean) of every example."""

    resid: np.ndarray  # [layer + 1, example, d_model] float32; [0] embeddings, [-1] last block output pre-norm
    positions: np.ndarray  # [example] int: the token read (-1 for the mean over tokens)
    n_tokens: np.ndarray  # [example] int: tokens of the example's text (special tokens included)
    token_types: tuple[str, ...]  # [example] readable text of the token read ("" for the mean)
    token: str  # "last", "mean" or "labelled"
    ref: str  # the model reference (ModelBundle.ref)
    fingerprint: str  # the dataset's fingerprint

    def __post_init__(self) -> None:
        if self.resid.ndim != 3:
            raise ValueError(f"resid must be [layer + 1, example, d_model], got shape {self.resid.shape}")
        n = self.resid.shape[1]
        for name in ("positions", "n_tokens"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({n},)")
        if len(self.token_types) != n:
            raise ValueError(f"token_types has {len(self.token_types)} entries, expected {n}")
        if self.token not in TOKEN_CHOICES:
            raise ValueError(f"token must be one of {tuple(TOKEN_CHOICES)}, got {self.token!r}")

    @property
    def n_layers(self) -> int:
        """Number of blocks (the features hold n_layers + 1 residual-stream layers)."""
        return self.resid.shape[0] - 1

    @property
    def d_model(self) -> int:
        return self.resid.shape[2]


def _resolve_position(example: ProbeExample, token: str, special: list[int],
                      offsets: list[tuple[int, int]] | None, n_tokens: int) -> int:
    """The token index read for `example` (-1: mean). Raises ProbeDataError when it cannot be found."""
    if token == "mean":
        return -1
    if token == "last":
        real = [i for i, s in enumerate(special) if not s]
        return real[-1] if real else n_tokens - 1
    if example.token_index is not None:
        if example.token_index >= n_tokens:
            raise ProbeDataError(
                f"token_index {example.token_index} is out of range for {_short(example.text)}: this model "
                f"splits it into {n_tokens} tokens (indexes 0 to {n_tokens - 1}). Check the index on the "
                "Attention page.")
        return example.token_index
    start, end = example.span
    hits = [i for i, (s, e) in enumerate(offsets) if not special[i] and s < end and e > start]
    if not hits:
        raise ProbeDataError(f"No token of this model covers the word {_short(example.text[start:end])} in "
                             f"{_short(example.text)}.")
    return hits[-1]  # the word's LAST sub-token: in a causal model the only one that has seen the whole word


def extract_features(bundle: ModelBundle, dataset: ProbeDataset, token: str = "last",
                     batch_size: int = FEATURE_BATCH, progress: Progress | None = None) -> ProbeFeatures:
    """The residual stream at every layer for every example of `dataset`: ProbeFeatures.resid
    [layer + 1, example, d_model] (float32, CPU).

    `token`: "last" (the text's last non-special token), "mean" (the mean over the text's non-special tokens)
    or "labelled" (the labelled word's last sub-token, found with the fast tokenizer's offset mapping, or the
    row's token_index). Each distinct text runs once; texts go through the model in right-padded batches with
    an attention mask (padding after the text leaves every real token's position unchanged), one no-grad
    forward per batch (`activations.run`). The last layer is the last block's output before the final norm.
    Everything is checked before the first forward: a text longer than min(limits().max_prompt_tokens, n_ctx)
    tokens, a token_index out of range or a word no token covers raises
    ProbeDataError.
    """
    if token not in dataset.token_choices:
        raise UserInputError(f"The token choice '{token}' does not fit this dataset; choose one of "
                             f"{', '.join(dataset.token_choices)}.")
    tokenizer = bundle.tokenizer
    needs_offsets = token == "labelled" and any(e.span is not None for e in dataset.examples)
    if needs_offsets and not getattr(tokenizer, "is_fast", False):
        raise UserInputError("Finding the labelled word needs a fast tokenizer (with offset mapping); this model's "
                             "tokenizer is a slow one. Pick the last token or the mean instead.")
    cap = min(limits().max_prompt_tokens, bundle.n_ctx)

    texts = list(dict.fromkeys(e.text for e in dataset.examples))  # distinct texts, first appearance order
    text_index = {t: i for i, t in enumerate(texts)}
    encoded = []  # per text: (ids, special mask, offsets)
    for t in texts:
        enc = encode(bundle, t, return_special_tokens_mask=True, return_offsets_mapping=needs_offsets)
        ids = list(enc["input_ids"])
        if not ids:
            raise ProbeDataError(f"The text {_short(t)} became no tokens at all.")
        if len(ids) > cap:
            raise ProbeDataError(f"The text {_short(t)} is {len(ids)} tokens long; the limit is {cap} tokens "
                                 "(max_prompt_tokens, or the model's context). Shorten it or leave it out.")
        special = list(enc.get("special_tokens_mask") or [0] * len(ids))
        offsets = [tuple(o) for o in enc["offset_mapping"]] if needs_offsets else None
        encoded.append((ids, special, offsets))

    positions = np.array([_resolve_position(e, token, encoded[text_index[e.text]][1], encoded[text_index[e.text]][2],
                                            len(encoded[text_index[e.text]][0])) for e in dataset.examples],
                         dtype=np.int64)  # [example]
    n_tokens = np.array([len(encoded[text_index[e.text]][0]) for e in dataset.examples], dtype=np.int64)
    examples_of: list[list[int]] = [[] for _ in texts]  # text -> its examples
    for i, e in enumerate(dataset.examples):
        examples_of[text_index[e.text]].append(i)

    n_layers, d_model = bundle.n_layers, bundle.d_model
    resid = np.zeros((n_layers + 1, len(dataset), d_model), dtype=np.float32)  # [layer + 1, example, d_model]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))  # similar lengths pad less
    resid_names = [act_name("resid_pre", layer) for layer in range(n_layers)] + [act_name("resid_post",
                                                                                        n_layers - 1)]
    token_budget = tokens_per_batch(bundle, kept_layers=n_layers + 1)  # the records keep every layer
    batches: list[list[int]] = [[]]
    for i in order:  # ascending length: a batch's width is its last text's length
        if batches[-1] and (len(batches[-1]) >= batch_size
                            or (len(batches[-1]) + 1) * len(encoded[i][0]) > token_budget):
            batches.append([])
        batches[-1].append(i)
    done = 0
    for batch in batches:
        width = max(len(encoded[i][0]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # [batch, pos]
        mask = torch.zeros((len(batch), width), dtype=torch.long)  # [batch, pos] 1 = real token
        for row, i in enumerate(batch):
            ids = encoded[i][0]
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        with torch.no_grad():  # one activations.run per batch: other requests get the model in between
            acts = activations.run(bundle, input_ids, record=resid_names, attention_mask=mask,
                                   fused_attention=True).acts
        layers = [acts.pop(name) for name in resid_names]  # [batch, pos, d_model] each
        for layer, hidden in enumerate(layers):  # one layer on the CPU at a time
            hidden = hidden.float().cpu().numpy()  # [batch, pos, d_model]
            for row, i in enumerate(batch):
                ids, special, _ = encoded[i]
                for e in examples_of[i]:
                    if positions[e] >= 0:
                        resid[layer, e] = hidden[row, positions[e]]
                    else:  # mean over the text's own tokens (special tokens such as BOS left out: attention sinks)
                        keep = ~np.array(special, dtype=bool) if not all(special) else np.ones(len(ids), bool)
                        resid[layer, e] = hidden[row, :len(ids)][keep].mean(axis=0)
        del layers
        done += len(batch)
        if progress is not None:
            progress(done / len(texts), f"Running the model: {done} / {len(texts)} texts")

    token_types = []
    for e, p in zip(dataset.examples, positions, strict=True):
        if p < 0:
            token_types.append("")
        else:
            token_types.append(decode(bundle, [encoded[text_index[e.text]][0][p]]).strip().lower())
    return ProbeFeatures(resid=resid, positions=positions, n_tokens=n_tokens, token_types=tuple(token_types),
                         token=token, ref=bundle.ref, fingerprint=dataset.fingerprint)


def with_token_types(dataset: ProbeDataset, features: ProbeFeatures) -> ProbeDataset:
    """For an uploaded token-level dataset, make each example's control word type the text of the token it
    reads (known only once the model has tokenised it); other datasets come back unchanged."""
    if dataset.level != "token" or any(e.token_index is None for e in dataset.examples):
        return dataset
    examples = tuple(ProbeExample(text=e.text, label=e.label, sentence_id=e.sentence_id, word_type=t or e.word_type,
                                  token_index=e.token_index)
                     for e, t in zip(dataset.examples, features.token_types, strict=True))
    return ProbeDataset(name=dataset.name, level=dataset.level, examples=examples, description=dataset.description,
                        notes=dataset.notes)


# ---------------------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeConfig:
    """How the probes are trained and scored."""

    n_folds: int = DEFAULT_FOLDS  # each test fold holds 1/n_folds of the sentences
    # Inverse L2 strength on standardised features. Simpler probes are more selective (Hewitt & Liang): on the
    # organism, C=0.01 keeps task accuracy within ~0.01 of sklearn's C=1 while control accuracy falls by 0.05-0.15.
    C: float = 0.01
    max_iter: int = 500  # lbfgs converges well before this on a few thousand standardised rows
    seed: int = 0  # fold shuffling and the control labels
    control: bool = True  # also train on the control task (Hewitt & Liang)
    mlp: bool = False  # also train a small MLP probe, for comparison (slower; sklearn's MLP has no class weights)
    mlp_hidden: int = 64  # one hidden layer: enough to show what a nonlinear probe adds

    def __post_init__(self) -> None:
        if not 2 <= self.n_folds <= 20:
            raise UserInputError(f"The number of folds must be from 2 to 20 (got {self.n_folds}).")


def probe_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int = DEFAULT_FOLDS,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) example indexes of each fold: StratifiedGroupKFold, so every group (sentence) is in the test
    part of exactly one fold and never in a fold's train and test parts at once, with class shares kept as
    even as the groups allow. Raises ProbeDataError when there are fewer groups than folds."""
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ProbeDataError(f"The data has {n_groups} distinct sentences; {n_folds}-fold cross-validation "
                             f"grouped by sentence needs at least {n_folds}.")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only k members"
        folds = list(splitter.split(np.zeros(len(labels)), labels, groups))
    if any(len(test) == 0 for _, test in folds):
        raise ProbeDataError(f"{n_folds}-fold cross-validation left a fold without examples; use fewer folds.")
    return folds


def control_task_labels(dataset: ProbeDataset, seed: int = 0) -> np.ndarray | None:
    """Hewitt & Liang control labels: [example] int (class index). Every word type (sorted) draws one label from
    the task's label distribution with `seed`; all examples of a type share it. Redrawn (up to CONTROL_DRAWS
    times) until two classes occur. None when the dataset has a single word type."""
    types = sorted({e.word_type for e in dataset.examples})
    if len(types) < 2:
        return None
    labels = dataset.labels
    share = np.bincount(labels, minlength=len(dataset.classes)) / len(labels)  # [class]
    position = {t: i for i, t in enumerate(types)}
    type_index = np.array([position[e.word_type] for e in dataset.examples])  # [example]
    rng = np.random.default_rng(seed)
    for _ in range(CONTROL_DRAWS):
        per_type = rng.choice(len(share), size=len(types), p=share)  # [type]
        control = per_type[type_index]  # [example]
        if len(np.unique(control)) >= 2:
            return control.astype(np.int64)
    return None


def _linear_probe(config: ProbeConfig) -> Pipeline:
    return Pipeline([("scale", StandardScaler()),
                     ("probe", LogisticRegression(C=config.C, class_weight="balanced", max_iter=config.max_iter))])


def _mlp_probe(config: ProbeConfig) -> Pipeline:
    return Pipeline([("scale", StandardScaler()),
                     ("probe", MLPClassifier(hidden_layer_sizes=(config.mlp_hidden,), max_iter=200,
                                             early_stopping=False, random_state=config.seed))])


def _fit_predict(make: Callable[[], Pipeline], x_train: np.ndarray, y_train: np.ndarray,
                 x_test: np.ndarray) -> np.ndarray:
    """Predictions for x_test of a probe fit on (x_train, y_train); a one-class train part predicts that class."""
    present = np.unique(y_train)
    if len(present) == 1:  # possible for the control labels of a small dataset
        return np.full(len(x_test), present[0])
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    return model.predict(x_test)


def _score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(y_true, y_pred))


@dataclass(frozen=True, eq=False)
class ProbeReport:
    """Cross-validated probes at every layer: balanced accuracy per layer and fold, with controls."""

    dataset_name: str
    token: str  # which token the features were read at
    classes: tuple[str, ...]  # [class]
    labels: np.ndarray  # [example] int: the true class index
    sentence_ids: np.ndarray  # [example] int: the grouping of the folds
    test_fold: np.ndarray  # [example] int: the fold whose test part held the example
    task_scores: np.ndarray  # [layer + 1, fold] balanced accuracy of the linear probe on held-out sentences
    predictions: np.ndarray  # [layer + 1, example] int: out-of-fold predicted class of the linear probe
    baseline_scores: np.ndarray  # [fold] balanced accuracy of predicting the train part's majority class
    control_scores: np.ndarray | None  # [layer + 1, fold] the same probe on the control labels
    control_labels: np.ndarray | None  # [example] int: the control task's class index
    mlp_scores: np.ndarray | None  # [layer + 1, fold] a small MLP probe (optional)
    config: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        n_layers1, n_folds = self.task_scores.shape
        n = len(self.labels)
        expected = {"labels": (n,), "sentence_ids": (n,), "test_fold": (n,), "predictions": (n_layers1, n),
                    "baseline_scores": (n_folds,), "control_scores": (n_layers1, n_folds),
                    "control_labels": (n,), "mlp_scores": (n_layers1, n_folds)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"ProbeReport.{name} has shape {tuple(value.shape)}, expected {shape}")
        if n_folds != self.config.n_folds:
            raise ValueError(f"{n_folds} folds of scores, but the config says {self.config.n_folds}")

    @property
    def n_layers(self) -> int:
        """Blocks of the model; scores cover layers 0..n_layers."""
        return self.task_scores.shape[0] - 1

    @property
    def layers(self) -> np.ndarray:
        return np.arange(self.n_layers + 1)

    @property
    def task_mean(self) -> np.ndarray:
        """[layer + 1] mean balanced accuracy over folds."""
        return self.task_scores.mean(axis=1)

    @property
    def task_std(self) -> np.ndarray:
        """[layer + 1] standard deviation over folds (ddof=0, as sklearn's cross_val_score users report)."""
        return self.task_scores.std(axis=1)

    @property
    def baseline(self) -> float:
        """Majority-class baseline, balanced accuracy (1 / n_classes when every test fold holds every class)."""
        return float(self.baseline_scores.mean())

    @property
    def majority_share(self) -> float:
        """Share of the most common class: the plain accuracy of always guessing it."""
        return float(np.bincount(self.labels).max() / len(self.labels))

    @property
    def control_mean(self) -> np.ndarray | None:
        return None if self.control_scores is None else self.control_scores.mean(axis=1)

    @property
    def selectivity(self) -> np.ndarray | None:
        """[layer + 1] task - control mean balanced accuracy (Hewitt & Liang); None without a control task."""
        return None if self.control_scores is None else self.task_mean - self.control_mean

    @property
    def best_layer(self) -> int:
        """The layer with the highest mean task accuracy (the earliest one on ties)."""
        return int(np.argmax(self.task_mean))

    @property
    def first_good_layer(self) -> int:
        """The first layer that reaches 95% of the best layer's gain over the baseline (mean accuracies): where
        the information has (nearly) all appeared."""
        best = self.task_mean[self.best_layer]
        threshold = self.baseline + 0.95 * (best - self.baseline)
        return int(np.flatnonzero(self.task_mean >= threshold - 1e-12)[0])

    def layer_table(self) -> pd.DataFrame:
        """One row per layer: task, control and MLP accuracy (mean, std), selectivity and the baseline."""
        table = pd.DataFrame({
            "layer": self.layers,
            "reads": [resid_stage(layer, self.n_layers) for layer in self.layers],
            "task_mean": self.task_mean, "task_std": self.task_std,
        })
        if self.control_scores is not None:
            table["control_mean"] = self.control_mean
            table["control_std"] = self.control_scores.std(axis=1)
            table["selectivity"] = self.selectivity
        if self.mlp_scores is not None:
            table["mlp_mean"] = self.mlp_scores.mean(axis=1)
            table["mlp_std"] = self.mlp_scores.std(axis=1)
        table["baseline"] = self.baseline
        return table

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per (layer, probe) with the balanced accuracy mean, std, low/high (mean -/+ std).

        probe is "task" (linear), "control" (linear on control labels), "mlp", or "majority baseline".
        """
        rows = []
        series = [("task", self.task_scores), ("control", self.control_scores), ("mlp", self.mlp_scores)]
        for probe, scores in series:
            if scores is None:
                continue
            for layer in self.layers:
                mean, std = float(scores[layer].mean()), float(scores[layer].std())
                rows.append({"layer": int(layer), "reads": resid_stage(int(layer), self.n_layers),
                             "probe": probe, "balanced_accuracy": mean, "std": std,
                             "low": mean - std, "high": mean + std})
        for layer in self.layers:
            rows.append({"layer": int(layer), "reads": resid_stage(int(layer), self.n_layers),
                         "probe": "majority baseline", "balanced_accuracy": self.baseline,
                         "std": float(self.baseline_scores.std()), "low": self.baseline, "high": self.baseline})
        return pd.DataFrame(rows)

    def confusion(self, layer: int) -> np.ndarray:
        """[true class, predicted class] counts of the out-of-fold predictions at `layer`."""
        if not 0 <= layer <= self.n_layers:
            raise UserInputError(f"Layer {layer} is out of range: choose 0 to {self.n_layers}.")
        return confusion_matrix(self.labels, self.predictions[layer], labels=np.arange(len(self.classes)))

    def confusion_frame(self, layer: int) -> pd.DataFrame:
        """Tidy confusion matrix at `layer`: true, predicted, count, share of the true class (row-normalised)."""
        matrix = self.confusion(layer)
        totals = matrix.sum(axis=1, keepdims=True)
        share = matrix / np.maximum(totals, 1)
        return pd.DataFrame([{"layer": layer, "true": t, "predicted": p, "count": int(matrix[i, j]),
                              "share": float(share[i, j])}
                             for i, t in enumerate(self.classes) for j, p in enumerate(self.classes)])


def resid_stage(layer: int, n_layers: int) -> str:
    """What residual-stream layer `layer` is, in words: "embeddings", "after block 2", ..."""
    if layer == 0:
        return "embeddings"
    if layer == n_layers:
        return f"after block {layer - 1} (last, before the final norm)"
    return f"after block {layer - 1}"


def run_probes(features: ProbeFeatures, dataset: ProbeDataset, config: ProbeConfig | None = None,
               progress: Progress | None = None) -> ProbeReport:
    """Train and cross-validate a probe at every layer (and the control task, and optionally an MLP probe).

    The folds come from `probe_folds` (grouped by sentence), fixed once and shared by every layer and every
    probe, so task, control and baseline are scored on exactly the same held-out sentences. Returns a
    ProbeReport; `progress(fraction, message)` is called after every layer and fold.
    """
    config = config or ProbeConfig()
    if features.fingerprint != dataset.fingerprint or features.resid.shape[1] != len(dataset):
        raise ValueError("the features were extracted from another dataset")
    dataset = with_token_types(dataset, features)
    labels, groups = dataset.labels, dataset.sentence_ids  # [example], [example]
    if len(dataset.classes) < 2:
        raise ProbeDataError("The data has a single class; a probe needs at least two.")
    folds = probe_folds(labels, groups, config.n_folds, config.seed)
    control = control_task_labels(dataset, config.seed) if config.control else None

    n_layers1 = features.resid.shape[0]
    test_fold = np.full(len(labels), -1, dtype=np.int64)
    for f, (_, test) in enumerate(folds):
        test_fold[test] = f
    baseline = np.array([_score(labels[test], DummyClassifier(strategy="most_frequent")
                                .fit(np.zeros((len(train), 1)), labels[train]).predict(np.zeros((len(test), 1))))
                         for train, test in folds])
    task = np.zeros((n_layers1, config.n_folds))
    ctrl = np.zeros((n_layers1, config.n_folds)) if control is not None else None
    mlp = np.zeros((n_layers1, config.n_folds)) if config.mlp else None
    predictions = np.zeros((n_layers1, len(labels)), dtype=np.int64)
    steps, step = n_layers1 * config.n_folds, 0
    for layer in range(n_layers1):
        x = features.resid[layer]  # [example, d_model]
        for f, (train, test) in enumerate(folds):
            pred = _fit_predict(lambda: _linear_probe(config), x[train], labels[train], x[test])
            predictions[layer, test] = pred
            task[layer, f] = _score(labels[test], pred)
            if ctrl is not None:
                pred_c = _fit_predict(lambda: _linear_probe(config), x[train], control[train], x[test])
                ctrl[layer, f] = _score(control[test], pred_c)
            if mlp is not None:
                pred_m = _fit_predict(lambda: _mlp_probe(config), x[train], labels[train], x[test])
                mlp[layer, f] = _score(labels[test], pred_m)
            step += 1
            if progress is not None:
                progress(step / steps, f"Training probes: layer {layer} of {n_layers1 - 1}, fold {f + 1} of "
                                       f"{config.n_folds}")
    return ProbeReport(dataset_name=dataset.name, token=features.token, classes=dataset.classes, labels=labels,
                       sentence_ids=groups, test_fold=test_fold, task_scores=task, predictions=predictions,
                       baseline_scores=baseline, control_scores=ctrl, control_labels=control, mlp_scores=mlp,
                       config=config)


# ---------------------------------------------------------------------------------------------------------
# Trained probe weights
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ProbeWeights:
    """A linear probe trained on ALL examples at one layer, as plain arrays (for download, no pickle).

    Score of class k for a residual vector x [d_model]: ((x - mean) / scale) @ coef[k] + intercept[k], or
    equivalently x @ coef_raw[k] + intercept_raw[k]. With two classes there is one row: positive favours
    classes[1] (sklearn's convention).
    """

    layer: int
    classes: tuple[str, ...]  # [class]
    coef: np.ndarray  # [class or 1, d_model] on standardised features
    intercept: np.ndarray  # [class or 1]
    mean: np.ndarray  # [d_model] the scaler's mean
    scale: np.ndarray  # [d_model] the scaler's standard deviation
    train_accuracy: float  # balanced accuracy on the examples it was trained on (optimistic by construction)

    def __post_init__(self) -> None:
        rows = 1 if len(self.classes) == 2 else len(self.classes)
        d_model = self.mean.shape[0]
        for name, shape in {"coef": (rows, d_model), "intercept": (rows,), "scale": (d_model,)}.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"ProbeWeights.{name} has shape {getattr(self, name).shape}, expected {shape}")

    @property
    def coef_raw(self) -> np.ndarray:
        """[class or 1, d_model] weights on the raw residual stream (the scaler folded in)."""
        return self.coef / self.scale

    @property
    def intercept_raw(self) -> np.ndarray:
        """[class or 1] intercept on the raw residual stream."""
        return self.intercept - (self.coef * self.mean / self.scale).sum(axis=1)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """[example, class or 1] probe scores of residual vectors x [example, d_model]."""
        return x @ self.coef_raw.T + self.intercept_raw

    def to_npz(self) -> bytes:
        """The arrays as an .npz file (numpy's zip of .npy files; load with np.load(f, allow_pickle=False))."""
        buffer = io.BytesIO()
        np.savez(buffer, coef=self.coef, intercept=self.intercept, mean=self.mean, scale=self.scale,
                 coef_raw=self.coef_raw, intercept_raw=self.intercept_raw,
                 classes=np.array(self.classes, dtype=np.str_), layer=np.array(self.layer))
        return buffer.getvalue()

    def to_frame(self) -> pd.DataFrame:
        """Tidy raw-space weights: one row per (row of coef, d_model index) with the class it favours."""
        names = [self.classes[1]] if len(self.classes) == 2 else list(self.classes)
        return pd.DataFrame([{"layer": self.layer, "class": names[k], "dim": d, "weight": float(w)}
                             for k in range(len(names)) for d, w in enumerate(self.coef_raw[k])])


def fit_probe(features: ProbeFeatures, dataset: ProbeDataset, layer: int,
              config: ProbeConfig | None = None) -> ProbeWeights:
    """The linear probe of `run_probes` trained on every example at `layer` (for download and reuse)."""
    config = config or ProbeConfig()
    if not 0 <= layer <= features.n_layers:
        raise UserInputError(f"Layer {layer} is out of range: choose 0 to {features.n_layers}.")
    x, y = features.resid[layer], dataset.labels  # [example, d_model], [example]
    model = _linear_probe(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    scaler, probe = model.named_steps["scale"], model.named_steps["probe"]
    return ProbeWeights(layer=layer, classes=dataset.classes, coef=probe.coef_.astype(np.float64),
                        intercept=probe.intercept_.astype(np.float64), mean=scaler.mean_.astype(np.float64),
                        scale=scaler.scale_.astype(np.float64), train_accuracy=_score(y, model.predict(x)))


def dataset_from_path(path: str | Path, n_folds: int = DEFAULT_FOLDS) -> ProbeDataset:
    """`parse_probe_csv` on a file on disk (for scripts and notebooks)."""
    data = Path(path).read_bytes()
    return parse_probe_csv(data, n_folds=n_folds, name=Path(path).name)
