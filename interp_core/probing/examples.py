"""Probing data types: one labelled example, an immutable dataset of them, and the error for unusable data.

Dimension names: `example` is one labelled item (a sentence, or one word of a sentence); `class` one label.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from interp_core.errors import UserInputError

Progress = Callable[[float, str], None]

LEVELS = ("sentence", "token")
# How the feature vector of an example is read from its tokens (see `features.extract_features`).
TOKEN_CHOICES = {
    "last": "last token",
    "mean": "mean over tokens",
    "labelled": "labelled word (its last sub-token)",
}


class ProbeDataError(UserInputError):
    """A probing dataset (usually an uploaded CSV) cannot be used; the message says what to fix."""


def quote(text: str, n: int = 60) -> str:
    """`text` on one line, cut to n characters, in quotation marks, for messages that quote user text (the glue
    escapes the whole message for Markdown: no **bold**, :red[colour] or $maths$ from inside a sentence)."""
    text = " ".join(text.split())
    return "“" + (text if len(text) <= n else text[: n - 1] + "…") + "”"


@dataclass(frozen=True)
class ProbeExample:
    """One labelled item: a whole sentence, or one word (or token) of it."""

    text: str  # the sentence the model reads, exactly as typed
    label: str  # the class, as text
    sentence_id: int  # examples sharing an id are one sentence: never split between train and test
    # Control-task key: every example of a type gets the same random control label (Hewitt & Liang 2019).
    # None: not known. A sentence-level upload without a word_type column has none, so it gets no control
    # task; a token-level upload without one gets the text of the token read (`features.with_token_types`).
    word_type: str | None
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

    def class_frame(self) -> pd.DataFrame:
        """One row per class: class, examples (in `classes` order)."""
        counts = self.class_counts()
        return pd.DataFrame({"class": list(counts), "examples": list(counts.values())})

    def summary(self) -> str:
        """One line: examples, sentences and the examples per class ("1500 examples in 1500 sentences; ...")."""
        return (f"{len(self)} examples in {self.n_sentences} sentences; classes: "
                + ", ".join(f"{name} ({n})" for name, n in self.class_counts().items()))

    def to_frame(self) -> pd.DataFrame:
        """One row per example: text, label, sentence_id, word_type ("" when not known), the labelled word (when
        known), token_index (-1 when not given)."""
        return pd.DataFrame({
            "sentence_id": [e.sentence_id for e in self.examples],
            "text": [e.text for e in self.examples],
            "word": [e.text[e.span[0]:e.span[1]] if e.span else "" for e in self.examples],
            "token_index": [e.token_index if e.token_index is not None else -1 for e in self.examples],
            "label": [e.label for e in self.examples],
            "word_type": [e.word_type or "" for e in self.examples],
        })
