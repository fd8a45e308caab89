"""What the Circuits page's patching tab shows, from one call: exact and attribution patching of every
residual-stream site and every head of a task, how well the two agree, and whether the contrast is too weak.

    >>> report = patching_report(bundle, preset_task(bundle, "IOI: subject swapped"), progress=print)
    >>> report.clean_metric, report.corrupt_metric    # logit(answer) - logit(foil) on each prompt
    >>> report.warning                                # None, or why the normalised values are noisy
    >>> [(s.title, s.correlation) for s in report.sections]     # residual stream, then heads
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from interp_core.figures import Metric
from interp_core.loading import ModelBundle
from interp_core.patching.attribution import attribution_patching, patching_correlation
from interp_core.patching.patch import KINDS, PatchingResult, Progress, activation_patching, sites_for
from interp_core.patching.tasks import PatchingTask

TITLES = {"resid": "Residual stream (layer x position)", "head": "Heads (layer x head)"}
READING = ("Logit difference = logit(answer) - logit(foil) at the last position. Heatmaps show "
           "(patched - corrupted) / (clean - corrupted): blue 1 = that one activation brings the clean answer back, "
           "white 0 = no effect, red = pushes the wrong way.")


@dataclass(frozen=True, eq=False)
class PatchingSection:
    """One kind of site: exact patching, its attribution-patching estimate, and their Pearson correlation."""

    exact: PatchingResult
    estimate: PatchingResult
    correlation: float  # Pearson r over the sites (NaN when either is constant)

    def __post_init__(self) -> None:
        if self.exact.kind != self.estimate.kind or self.exact.values.shape != self.estimate.values.shape:
            raise ValueError("PatchingSection: the exact result and the estimate cover different sites")

    @property
    def kind(self) -> str:
        """"resid" or "head"."""
        return self.exact.kind

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    @property
    def caption(self) -> str:
        """What each method cost, and how well the estimate tracks the exact values."""
        return (f"Exact patching ran {self.exact.values.numel()} patched forward passes in batches; attribution "
                f"patching needed one backward pass. Correlation between them: r = {self.correlation:.3f}.")

    def to_frame(self) -> pd.DataFrame:
        """Both results' tidy rows (PatchingResult.to_frame), exact first; the column `method` tells them apart."""
        return pd.concat([self.exact.to_frame(), self.estimate.to_frame()], ignore_index=True)


@dataclass(frozen=True, eq=False)
class PatchingReport:
    """Exact and attribution patching of every site of one task, residual stream first, then heads."""

    sections: tuple[PatchingSection, ...]  # one per KINDS entry, in that order

    def __post_init__(self) -> None:
        if tuple(s.kind for s in self.sections) != KINDS:
            raise ValueError(f"PatchingReport needs one section per kind {KINDS}")

    @property
    def clean_metric(self) -> float:
        """logit(answer) - logit(foil) at the last position of the clean prompt."""
        return self.sections[0].exact.clean_metric

    @property
    def corrupt_metric(self) -> float:
        """The same on the corrupted prompt."""
        return self.sections[0].exact.corrupt_metric

    @property
    def metrics(self) -> tuple[Metric, Metric]:
        """The logit difference on the clean and on the corrupted prompt."""
        return (Metric("Logit difference, clean prompt", f"{self.clean_metric:+.3f}"),
                Metric("Logit difference, corrupted prompt", f"{self.corrupt_metric:+.3f}"))

    @property
    def warning(self) -> str | None:
        """Why the normalised values are noisy (the contrast is under WEAK_CONTRAST logits), or None."""
        if not self.sections[0].exact.weak_contrast:
            return None
        gap = abs(self.clean_metric - self.corrupt_metric)
        return (f"The clean and corrupted logit differences are only {gap:.3f} apart. The normalised values divide "
                "by that gap, so they are large and noisy: pick prompts (or an answer and a foil) the model tells "
                "apart more clearly.")


def patching_report(bundle: ModelBundle, task: PatchingTask, progress: Progress | None = None) -> PatchingReport:
    """Exact patching of every residual-stream site, then of every head (`progress` runs from 0 to 1 across both,
    by site count), and attribution patching of both (one backward pass). Raises PatchingInputError as
    activation_patching does (more sites than max_patch_sites, prompts the model does not tell apart)."""
    sizes = {kind: len(sites_for(bundle, task, kind)) for kind in KINDS}
    total, done, exact = sum(sizes.values()), 0, {}
    for kind in KINDS:
        part = None if progress is None else (
            lambda f, text, done=done, size=sizes[kind]: progress((done + f * size) / total, text))
        exact[kind] = activation_patching(bundle, task, kind, progress=part)
        done += sizes[kind]
    estimates = attribution_patching(bundle, task)
    return PatchingReport(sections=tuple(
        PatchingSection(exact[kind], estimates[kind], patching_correlation(exact[kind], estimates[kind]))
        for kind in KINDS))
