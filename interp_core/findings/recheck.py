"""Re-checking findings: recompute every stored number on the models at hand and say, number by number, whether it
reproduced (within TOLERANCE), changed (old and new value), or cannot be checked (and why).

    >>> checked = recheck(finding, load_model=cached_bundle, trace_of=cached_trace)
    >>> checked.status, [(c.name, c.status, c.old, c.new) for c in checked.numbers]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from interp_core.errors import UserInputError
from interp_core.findings.kinds import KINDS, weights_digest
from interp_core.findings.record import Finding
from interp_core.loading import ModelBundle
from interp_core.trace import Trace

TOLERANCE = 1e-6  # |new - old| <= TOLERANCE * max(1, |old|): absolute for probabilities, relative for large values
REPRODUCED, CHANGED, NOT_CHECKABLE = "reproduced", "changed", "not checkable"


@dataclass(frozen=True)
class NumberCheck:
    name: str
    old: float
    new: float | None  # None when it was not recomputed (or the recomputation no longer gives this number)
    status: str  # REPRODUCED, CHANGED or NOT_CHECKABLE


@dataclass(frozen=True)
class Recheck:
    """One finding re-checked: its overall status (changed when any number changed), why it could not be
    checked (reason, "" otherwise), and each number's check."""

    finding_id: str
    status: str
    reason: str
    numbers: tuple[NumberCheck, ...]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"number": c.name, "stored": c.old, "recomputed": c.new, "status": c.status}
                             for c in self.numbers], columns=["number", "stored", "recomputed", "status"])


def agrees(old: float, new: float) -> bool:
    return abs(new - old) <= TOLERANCE * max(1.0, abs(old))


def _not_checkable(finding: Finding, reason: str) -> Recheck:
    checks = tuple(NumberCheck(name, value, None, NOT_CHECKABLE) for name, value in finding.numbers.items())
    return Recheck(finding.id, NOT_CHECKABLE, reason, checks)


def recheck(finding: Finding, load_model: Callable[[str], ModelBundle],
            trace_of: Callable[[ModelBundle, str], Trace]) -> Recheck:
    """Recompute `finding`'s numbers with its kind's `recompute` on the model `load_model(finding.model)` (a
    UserInputError there: the model is missing) and the trace `trace_of(bundle, finding.prompt)`."""
    if finding.checkable:
        return _not_checkable(finding, finding.checkable)
    if finding.kind not in KINDS:
        return _not_checkable(finding, f"this app has no page of kind {finding.kind!r}")
    try:
        bundle = load_model(finding.model)
    except UserInputError as exc:
        return _not_checkable(finding, f"the model is not available here: {exc}")
    if weights_digest(bundle) != finding.weights:
        return _not_checkable(finding, f"the model {finding.model} here has other weights than the finding's "
                                       f"(digest {weights_digest(bundle)}, the finding's {finding.weights})")
    try:
        new = KINDS[finding.kind].recompute(bundle, trace_of(bundle, finding.prompt), finding.inputs)
    except (UserInputError, KeyError, TypeError, ValueError, IndexError) as exc:
        return _not_checkable(finding, f"its stored inputs do not run here ({type(exc).__name__}: {exc})")
    checks = tuple(NumberCheck(name, old, new.get(name), REPRODUCED if name in new and agrees(old, new[name])
                               else CHANGED) for name, old in finding.numbers.items())
    status = CHANGED if any(c.status == CHANGED for c in checks) else REPRODUCED
    return Recheck(finding.id, status, "", checks)
