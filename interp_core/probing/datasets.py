"""Built-in probing datasets, made from the organism's corpus: subject number, tense, part of speech, country/city.

    >>> builtin_dataset("number")   # 1,500 grammar sentences labelled sg / pl, located at the subject's head
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Sequence
from functools import lru_cache

from interp_core.organism import corpus
from interp_core.probing.examples import ProbeDataset, ProbeExample
from interp_core.settings import SHIPPED_MODEL_DIR, limits

GRAMMAR_FILE = SHIPPED_MODEL_DIR / "probe_grammar.jsonl"
GRAMMAR_SEED = 20_19  # seeds the fallback grammar sentences when the organism's file is not there
GRAMMAR_FALLBACK_SENTENCES = 3000  # as many as the organism writes
SENTENCE_EXAMPLES = 1500  # sentence-level built-ins: enough for a tight 5-fold estimate, CV stays ~seconds
TOKEN_EXAMPLES = 2000  # token-level built-ins: same budget in words
FACT_TEMPLATES_PER_COUNTRY = 8  # 79 countries x 8 sentences x 2 names = 1,264 examples


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
