"""Built-in circuit-discovery tasks, as datasets of pairs (pairs.py), on the shipped organism's own world (its names,
places, templates and facts; any model whose tokenizer keeps the two prompts of a pair the same length works too).

    >>> ioi_pairs(bundle, n=64)                       # IOI, the subject's second mention swapped (Wang et al. 2022)
    >>> ioi_pairs(bundle, n=64, names="held_out")     # the same on name pairs the scoring set never uses
    >>> capital_pairs(bundle, n=32)                   # "The capital of France is" -> " Paris", country swapped
    >>> induction_pairs(bundle, n=32)                 # repeated random tokens, the first copy scrambled

IOI splits its name pairs once, by a fixed seed, into a scoring set and a held-out set (a sixth of them), so that a
circuit found on one can be evaluated on the other. A pair whose prompts tokenise to different lengths is skipped.
"""

from __future__ import annotations

import random

from interp_core.csv_upload import csv_rows
from interp_core.discovery.pairs import PairData
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
from interp_core.organism.corpus import CAPITAL_TEMPLATES_TRAIN, FACTS, IOI_TEMPLATES, NAMES, OBJECTS, PLACES
from interp_core.patching.tasks import repeated_task, task_from_prompts
from interp_core.settings import limits

TASKS = {"ioi": "IOI: the subject swapped", "capitals": "Capital recall: the country swapped",
         "induction": "Induction: the first copy scrambled"}
HELD_OUT_SHARE = 6  # one name pair in six is held out of scoring


def _name_pairs(names: str) -> list[tuple[str, str]]:
    """Ordered name pairs (a, b) of the scoring or the held-out set."""
    people = [name for name, _ in NAMES]
    unordered = [(a, b) for i, a in enumerate(people) for b in people[i + 1:]]
    held = set(random.Random(2024).sample(unordered, len(unordered) // HELD_OUT_SHARE))
    chosen = [p for p in unordered if (p in held) == (names == "held_out")]
    return chosen + [(b, a) for a, b in chosen]


def _collect(make, n: int, seed: int, what: str):
    """`n` tasks from make(rng), skipping pairs of different token lengths; an error if too few come out."""
    rng, tasks = random.Random(seed), []
    for _ in range(20 * n):
        try:
            tasks.append(make(rng))
        except UserInputError:
            continue
        if len(tasks) == n:
            return tasks
    raise UserInputError(f"Only {len(tasks)} of {n} {what} pairs keep the clean and corrupted prompts the same "
                         "number of tokens with this tokenizer.")


def ioi_pairs(bundle: ModelBundle, n: int = 64, seed: int = 0, names: str = "scoring") -> PairData:
    """IOI pairs: clean "When A and B went to the P, S gave a O to" -> IO, corrupted with the second mention of
    the subject replaced by the indirect object (the answer flips to S); answer IO, foil S."""
    if names not in ("scoring", "held_out"):
        raise ValueError(f"names is 'scoring' or 'held_out', not {names!r}")
    pairs = _name_pairs(names)

    def make(rng: random.Random):
        a, b = rng.choice(pairs)
        subject, io = rng.choice(((a, b), (b, a)))
        template = rng.choice(IOI_TEMPLATES).split(" {io}")[0]
        fill = {"a": a, "b": b, "place": rng.choice(PLACES), "obj": rng.choice(OBJECTS)}
        return task_from_prompts(bundle, template.format(s=subject, **fill), template.format(s=io, **fill),
                                 f" {io}", f" {subject}", name="IOI")

    return PairData.from_tasks(f"IOI ({names} names)", _collect(make, n, seed, "IOI"))


def capital_pairs(bundle: ModelBundle, n: int = 32, seed: int = 0) -> PairData:
    """Capital recall: "The capital of C is" -> its capital, corrupted with another country (its capital the foil),
    in the organism's training phrasings that end with the capital."""
    templates = [t.split(" {capital}")[0] for t in CAPITAL_TEMPLATES_TRAIN if t.endswith("{capital}.")]

    def make(rng: random.Random):
        (country, capital, _), (other, other_capital, _) = rng.sample(FACTS, 2)
        template = rng.choice(templates)
        return task_from_prompts(bundle, template.format(country=country), template.format(country=other),
                                 f" {capital}", f" {other_capital}", name="Capitals")

    return PairData.from_tasks("Capital recall", _collect(make, n, seed, "capital"))


def induction_pairs(bundle: ModelBundle, n: int = 32, seed: int = 0) -> PairData:
    """Repeated random tokens [BOS] A A[:cut] -> A[cut], corrupted with the first copy scrambled (the preset's
    construction, one seed per pair)."""
    return PairData.from_tasks("Induction", [repeated_task(bundle, seed=seed + i) for i in range(n)])


def builtin_task(bundle: ModelBundle, name: str, n: int = 64, seed: int = 0) -> PairData:
    """One of TASKS by its key."""
    makers = {"ioi": ioi_pairs, "capitals": capital_pairs, "induction": induction_pairs}
    if name not in makers:
        raise UserInputError(f"Unknown task {name!r}; pick one of {', '.join(TASKS)}.")
    return makers[name](bundle, n=n, seed=seed)


PAIRS_HEADER = "clean,corrupted,answer,foil"
PAIRS_HELP = ("A CSV with a header row `clean,corrupted,answer,foil` and one pair per row: two prompts of the same "
              "number of tokens, the token the clean prompt should predict and the one the corrupted prompt pushes "
              "towards (most need their leading space, like ' Paris'). Other columns are ignored.")
MAX_PAIR_ROWS = 512  # every scorer runs each pair; exact patching once per edge


class PairsFileError(UserInputError):
    """An uploaded pairs CSV that cannot be used; the message says which rows and why."""


def pairs_from_csv(bundle: ModelBundle, data: bytes, name: str = "Uploaded pairs") -> PairData:
    """The pairs of an uploaded CSV (PAIRS_HELP), each row checked as the Patching page checks a pair; raises
    PairsFileError naming the first bad rows and what is wrong with each."""
    rows = csv_rows(data, PairsFileError, PAIRS_HEADER, limits().max_upload_bytes)
    header = [cell.strip().lower() for cell in rows[0]]
    columns = PAIRS_HEADER.split(",")
    missing = [c for c in columns if c not in header]
    if missing:
        raise PairsFileError(f"The header row must name the columns {PAIRS_HEADER}; it lacks {', '.join(missing)}.")
    body = rows[1:]
    if not 1 <= len(body) <= MAX_PAIR_ROWS:
        raise PairsFileError(f"The file has {len(body)} pairs; upload 1 to {MAX_PAIR_ROWS}.")
    index = [header.index(c) for c in columns]
    tasks, problems = [], []
    for number, row in enumerate(body, start=2):  # the header is line 1
        cells = [row[i] if i < len(row) else "" for i in index]
        try:
            tasks.append(task_from_prompts(bundle, *cells, name=name))
        except UserInputError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        more = f" (and {len(problems) - 3} more bad rows)" if len(problems) > 3 else ""
        raise PairsFileError("Some pairs cannot be used. " + " ".join(problems[:3]) + more)
    return PairData.from_tasks(name, tasks)


def split_pairs(data: PairData, part: str) -> PairData:
    """The scoring ("scoring": rows 0, 2, 4, ...) or the held-out ("held_out": rows 1, 3, ...) half of uploaded
    pairs; a file of fewer than 4 pairs is both (its faithfulness is then measured on the pairs it was scored on)."""
    if len(data) < 4:
        return data
    rows = range(0 if part == "scoring" else 1, len(data), 2)
    return data.subset(list(rows), f"{data.name} ({part} half)")


def task_pairs(bundle: ModelBundle, task: str, n_pairs: int, split: str, upload: bytes | None = None) -> PairData:
    """The "scoring" or "held_out" pairs of a built-in task (IOI: other names held out; capital and induction:
    another seed), or of an uploaded CSV (`task` "upload": even rows score, odd rows are held out)."""
    if task == "upload":
        return split_pairs(pairs_from_csv(bundle, upload), split)
    if task == "ioi":
        return ioi_pairs(bundle, n=n_pairs, names=split)
    return builtin_task(bundle, task, n=n_pairs, seed=0 if split == "scoring" else 1)
