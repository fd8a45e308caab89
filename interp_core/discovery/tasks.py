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

from interp_core.discovery.pairs import PairData
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
from interp_core.organism.corpus import CAPITAL_TEMPLATES_TRAIN, FACTS, IOI_TEMPLATES, NAMES, OBJECTS, PLACES
from interp_core.patching.tasks import repeated_task, task_from_prompts

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
