"""Uploaded probing CSVs: parsing, and the row-by-row checks that say what to fix.

    >>> parse_probe_csv(b"text,label\\nThe dogs ran.,plural\\n...")   # ProbeDataset, or ProbeDataError
"""

from __future__ import annotations

from interp_core.csv_upload import csv_rows, rows_list
from interp_core.probing.examples import ProbeDataError, ProbeDataset, ProbeExample, quote
from interp_core.probing.probes import DEFAULT_FOLDS
from interp_core.settings import limits

COLUMNS = ("text", "label", "token_index", "word_type")  # the columns read; any other column is ignored
# The format as the page's upload help shows it (Markdown) and an example file for each layout.
UPLOAD_HELP = (
    "Either one label per sentence (`text,label`), or one label per token (`text,token_index,label`, the index "
    "counting this model's tokens from 0 as the Attention page shows them). Rows with the same text are one "
    "sentence. Each class needs examples in at least as many sentences as there are folds. An optional "
    "`word_type` column names each row's word type for the control task (Hewitt & Liang 2019: one random label "
    "per type), for example the word that carries the label. Without it a token-level row's type is the text of "
    "its token, and a sentence-level file gets no control task: with folds grouped by sentence, random labels "
    "per text could never be learned."
)
CSV_EXAMPLE = ("text,label,word_type\n"
               "The dogs chase the cat.,plural,dogs\n"
               "A cat sees the bird.,singular,cat\n\n"
               "text,token_index,label\n"
               "The dogs chase the cat.,1,noun\n"
               "The dogs chase the cat.,2,verb")


def _word_types(body: list[list[str]], column: int | None) -> list[str | None]:
    """Each row's control-task word type from the `word_type` column (trimmed), or None for every row without
    that column. Raises ProbeDataError naming the rows whose word_type is empty."""
    if column is None:
        return [None] * len(body)
    word_types = [row[column].strip() for row in body]
    empty = [i for i, word_type in enumerate(word_types, 1) if not word_type]
    if empty:
        raise ProbeDataError(f"Row(s) {rows_list(empty)} have an empty word_type. Give every row one (for "
                             "example the word that carries the label), or leave the column out.")
    return word_types


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
    Either may add a `word_type` column: the control-task key of the row (Hewitt & Liang 2019: every word type
    gets one random label), for example the word that carries the label, compared after trimming spaces.

    Checks, each with its own message: size <= limits().max_upload_bytes, UTF-8 (a BOM is fine), a header with
    the columns, 1..limits().max_probe_rows rows, no empty text, label or word_type, token_index a whole number
    >= 0, at least two classes, and every class in at least `n_folds` sentences (so each fold can test every
    class). Labels are text, compared after trimming spaces: "1" and "1.0" are two classes. Nothing is written
    to disk and nothing is unpickled.

    Control-task word types without a `word_type` column: a token-level row's type is the text of its token,
    which cannot be known before the model is chosen, so it is None here and `features.with_token_types` fills
    it in; a sentence-level row's type stays None, and such a file gets no control task. (Its only candidate,
    the text itself, is what the folds group by, so the control's test types would never occur in training
    and its accuracy would sit at chance by construction: "selectivity" would read as task minus chance.)
    """
    cap = limits()
    rows = csv_rows(data, ProbeDataError, "text,label", cap.max_upload_bytes)
    header = [cell.strip().lower() for cell in rows[0]]
    if "text" not in header or "label" not in header:
        raise ProbeDataError(f"The header row must name the columns 'text' and 'label' (and optionally "
                             f"'token_index' and 'word_type'); this file's header is: {quote(','.join(rows[0]))}.")
    duplicated = sorted({c for c in header if c and header.count(c) > 1} & set(COLUMNS))
    if duplicated:
        raise ProbeDataError(f"The header names the column(s) {', '.join(duplicated)} twice. Keep one of each.")
    body = rows[1:]
    if not body:
        raise ProbeDataError("The file has a header but no rows. Add one row per labelled example.")
    if len(body) > cap.max_probe_rows:
        raise ProbeDataError(f"The file has {len(body)} rows; the limit (max_probe_rows) is "
                             f"{cap.max_probe_rows}. Upload a sample of at most {cap.max_probe_rows} rows.")
    col = {name: header.index(name) for name in COLUMNS if name in header}
    short = [i for i, row in enumerate(body, 1) if len(row) <= max(col.values())]
    if short:
        raise ProbeDataError(f"Row(s) {rows_list(short)} have fewer cells than the header. Check for "
                             "missing commas, or quote texts that contain commas.")
    texts = [row[col["text"]] for row in body]
    labels = [row[col["label"]].strip() for row in body]
    empty_text = [i for i, t in enumerate(texts, 1) if not t.strip()]
    if empty_text:
        raise ProbeDataError(f"Row(s) {rows_list(empty_text)} have an empty text. Every row needs a sentence.")
    empty_label = [i for i, label in enumerate(labels, 1) if not label]
    if empty_label:
        raise ProbeDataError(f"Row(s) {rows_list(empty_label)} have an empty label. Every row needs a label.")
    word_types = _word_types(body, col.get("word_type"))
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
            raise ProbeDataError(f"Row(s) {rows_list(bad)} have a token_index that is not a whole number "
                                 "from 0 up (the position of the token in the model's tokens, counting from 0).")

    # One sentence per distinct text, numbered in order of first appearance.
    sentence_of = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    sentences_per_class: dict[str, set[int]] = {}
    for t, label in zip(texts, labels, strict=True):
        sentences_per_class.setdefault(label, set()).add(sentence_of[t])
    if len(sentences_per_class) < 2:
        only = next(iter(sentences_per_class))
        raise ProbeDataError(f"Every row has the label {quote(only)}. A probe needs at least two classes.")
    thin = sorted((c for c, s in sentences_per_class.items() if len(s) < n_folds),
                  key=lambda c: (len(sentences_per_class[c]), c))
    if thin:
        listed = ", ".join(f"{quote(c, 30)} ({len(sentences_per_class[c])})" for c in thin[:5])
        more = f" and {len(thin) - 5} more" if len(thin) > 5 else ""
        raise ProbeDataError(f"Each class needs examples in at least {n_folds} different sentences, so that "
                             f"every one of the {n_folds} cross-validation folds can test it. Too few: {listed}"
                             f"{more}. Add examples or merge rare classes.")

    examples = tuple(
        ProbeExample(text=t, label=label, sentence_id=sentence_of[t], word_type=word_type, token_index=index)
        for t, label, word_type, index in zip(texts, labels, word_types, indexes, strict=True)
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
    if "word_type" in col and len({(e.word_type, e.sentence_id) for e in examples}) == len(set(word_types)):
        notes.append("No word_type occurs in more than one sentence, so the control task cannot be learned: with "
                     "folds grouped by sentence a type's random label is never seen in training, and the control "
                     "accuracy sits at chance by construction.")
    ignored = [c for c in rows[0] if c.strip().lower() not in col]
    if ignored:
        notes.append(f"Ignored column(s): {', '.join(quote(c, 30) for c in ignored)}.")
    level = "token" if token_level else "sentence"
    if "word_type" in col:
        control = "Control task: one random label per word_type (Hewitt & Liang)."
    elif token_level:
        control = "Control task: one random label per token type (the text of the token read)."
    else:
        control = "No control task: the file has no word_type column."
    description = (f"{len(examples)} rows, {len(sentence_of)} distinct texts, {len(sentences_per_class)} "
                   f"classes, one label per {'token' if token_level else 'sentence'}. {control}")
    return ProbeDataset(name=name, level=level, examples=examples, description=description, notes=tuple(notes))
