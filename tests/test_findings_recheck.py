"""Re-checking findings without the app: a stored number that was altered is marked changed (old and new shown),
and a finding is not checkable, with the reason, when its model is missing, has other weights, came from an upload,
or its stored inputs no longer run."""

from __future__ import annotations

from dataclasses import replace

import pytest

from interp_core.errors import ModelLoadError
from interp_core.findings import Finding, recheck
from interp_core.findings.kinds import KINDS, weights_digest
from interp_core.trace import run_trace
from tests.helpers import make_tiny_bundle

PROMPT = "When Mary and John went to the store"


@pytest.fixture(scope="module")
def bundle():
    return make_tiny_bundle("gpt2")


@pytest.fixture(scope="module")
def finding(bundle) -> Finding:
    inputs = {"layer": 1, "head": 0, "mean": False}
    numbers = KINDS["attention"].recompute(bundle, run_trace(bundle, PROMPT), inputs)
    return Finding(id="abc123", kind="attention", page="pages/1_Attention.py", title="t", note="", model=bundle.ref,
                   weights=weights_digest(bundle), prompt=PROMPT, view={"layer": "1", "head": "0"}, inputs=inputs,
                   numbers=numbers)


def check(finding, bundle):
    return recheck(finding, lambda ref: bundle, run_trace)


def test_the_same_model_reproduces_every_number(finding, bundle):
    checked = check(finding, bundle)
    assert checked.status == "reproduced" and not checked.reason
    assert all(c.status == "reproduced" and c.new == pytest.approx(c.old) for c in checked.numbers)


def test_an_altered_number_is_changed_with_both_values(finding, bundle):
    name = next(iter(finding.numbers))
    altered = replace(finding, numbers={**finding.numbers, name: finding.numbers[name] + 1e-3})
    checked = check(altered, bundle)
    assert checked.status == "changed"
    row = next(c for c in checked.numbers if c.name == name)
    assert row.status == "changed" and row.old == altered.numbers[name] and row.new == pytest.approx(
        finding.numbers[name])
    assert sum(c.status == "changed" for c in checked.numbers) == 1


def test_a_change_within_the_tolerance_still_reproduces(finding, bundle):
    name = next(iter(finding.numbers))
    nudged = replace(finding, numbers={**finding.numbers, name: finding.numbers[name] + 5e-7})
    assert check(nudged, bundle).status == "reproduced"


def test_other_weights_are_not_checkable(finding):
    other = make_tiny_bundle("gpt2", ref="another")
    with_other_seed = replace(finding, weights="0" * 16)
    checked = check(with_other_seed, other)
    assert checked.status == "not checkable" and "other weights" in checked.reason
    assert all(c.status == "not checkable" and c.new is None for c in checked.numbers)


def test_a_missing_model_is_not_checkable(finding):
    def missing(ref):
        raise ModelLoadError(f"No model folder at {ref}.")

    checked = recheck(finding, missing, run_trace)
    assert checked.status == "not checkable" and "not available" in checked.reason


@pytest.mark.parametrize("change, words", [
    ({"checkable": "the probes ran on an uploaded CSV"}, "uploaded CSV"),
    ({"kind": "sparse_magic"}, "no page of kind"),
    ({"inputs": {"layer": "x"}}, "do not run here"),
])
def test_uploads_unknown_kinds_and_bad_inputs_are_not_checkable(finding, bundle, change, words):
    checked = check(replace(finding, **change), bundle)
    assert checked.status == "not checkable" and words in checked.reason
