"""How far to trust an attribution: IG completeness, deletion curves against random orders, AOPC, and the same
check for every method side by side.

Completeness (IG only): sum(a) = F(x) - F(b) exactly for the exact integral; the quadrature residual
delta = sum(a) - (F(x) - F(b)) and its relative size |delta| / |F(x) - F(b)| say how far to trust the numbers.

Deletion (comprehensiveness): replace the k top-ranked tokens by the baseline, k = 0..n (n = the prompt's tokens
that are not special: BOS & co. are never deleted), and follow the target. AOPC after Samek et al. 2017,
"Evaluating the visualization of what a deep neural network has learned" (IEEE TNNLS 28(11), eq. 12):

    AOPC = 1 / (n + 1) * sum_{k=0..n} (f(x_0) - f(x_k))        (k = 0 adds 0; averaged over random orders too)

    >>> curve = deletion_curve(bundle, attr)           # attr from integrated_gradients(...) etc.
    >>> curve.aopc > curve.random_aopc                 # the ranking beats chance
    >>> completeness_verdict(attr).message             # a sentence for the page
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.attribution.baselines import (
    _as_baseline,
    _baseline_embeds,
    _baseline_label,
    _embed,
    special_positions,
)
from interp_core.attribution.batches import _replaced_values
from interp_core.attribution.methods import attribute
from interp_core.attribution.options import (
    DEFAULTS,
    METHOD_NAMES,
    METHODS,
    AttributionSettings,
    AttributionSettingsError,
    Baseline,
    Progress,
)
from interp_core.attribution.result import Attribution
from interp_core.attribution.targets import Target, _token_text
from interp_core.figures import Metric
from interp_core.loading import ModelBundle
from interp_core.tokens import token_labels

WARN_RELATIVE_DELTA = 0.05  # IG completeness residual above 5% of F(input) - F(baseline): do not trust the numbers
DEFAULT_RANDOM_ORDERS = 3  # random deletion orders averaged: enough to show chance, cheap on a long prompt
AOPC_DEFINITION = ("AOPC (area over the perturbation curve; Samek et al. 2017, 'Evaluating the visualization of "
                   "what a deep neural network has learned'): the mean over k = 0..n of the target's fall after "
                   "replacing the k top-ranked tokens by the baseline (the sum divided by n + 1; special tokens such "
                   "as BOS are never replaced). Higher: the ranking found what the target depends on.")


@dataclass(frozen=True)
class Verdict:
    """A check's outcome: `ok` (nothing to warn about), the sentence to show (no token text, so it is safe as
    Markdown) and the figures behind it."""

    ok: bool
    message: str
    figures: tuple[Metric, ...] = ()


def completeness_verdict(result: Attribution) -> Verdict:
    """IG's completeness: the attributions should add up to F(input) - F(baseline); not ok when the residual is
    more than WARN_RELATIVE_DELTA of that gap. Other methods: ok, with a note that the check is IG's only."""
    if result.method != "integrated_gradients":
        return Verdict(True, "The completeness check applies to integrated gradients only; the deletion curve "
                             "below works for every method.")
    rel = result.relative_delta
    figures = (
        Metric("F(input)", f"{result.target_value:.4f}"),
        Metric("F(baseline)", f"{result.baseline_value:.4f}"),
        Metric("sum of attributions", f"{result.signed_total:.4f}", help="Over all tokens and dimensions."),
        Metric("residual δ", f"{result.delta:+.2e}",
               help="δ = sum of attributions − (F(input) − F(baseline)); 0 for the exact integral."),
        Metric("relative residual", f"{100 * rel:.2f} %", help="|δ| / |F(input) − F(baseline)|"),
    )
    if rel > WARN_RELATIVE_DELTA:
        return Verdict(False, f"The completeness residual is {100 * rel:.1f} % of F(input) − F(baseline) (more than "
                              f"{100 * WARN_RELATIVE_DELTA:.0f} %): the integral is not converged, so these scores do "
                              "not add up to the change they claim to explain. Use more steps or Gauss-Legendre.",
                       figures)
    gap = result.target_value - result.baseline_value
    return Verdict(True, f"The attributions add up to F(input) − F(baseline) = {gap:.4f} within {100 * rel:.2f} % "
                         "(completeness).", figures)


@dataclass(frozen=True, eq=False)
class DeletionCurve:
    """The target metric as the most important tokens are replaced by the baseline, k = 0..n, against random
    orders of replacement. A faithful attribution makes its curve fall faster than random.

    Fields (pos = prompt tokens, n = those that are not special tokens: only they are ever replaced):
        method          the attribution method whose order is used
        tokens          [pos] readable prompt tokens
        order           [n] positions in attribution order (most important first), special positions left out
        metric_label    "p(␣Paris)" (probability, for log-prob targets) or "logit(a) − logit(b)" (contrast)
        values          [n + 1] the metric after replacing the first k positions of `order`
        random_values   [n_random, n + 1] the same for seeded random orders of the same positions
        aopc            comprehensiveness (Samek et al. 2017): mean over k = 0..n of values[0] - values[k]
        random_aopc     the same, averaged over the random orders
        baseline_label  what replaced the tokens
    """

    method: str
    tokens: list[str]
    order: list[int]
    metric_label: str
    values: torch.Tensor
    random_values: torch.Tensor
    aopc: float
    random_aopc: float
    baseline_label: str = ""

    def __post_init__(self) -> None:
        n_pos, n = len(self.tokens), len(self.order)
        if len(set(self.order)) != n or not all(0 <= p < n_pos for p in self.order):
            raise ValueError(f"DeletionCurve.order must hold distinct positions of 0..{n_pos - 1}")
        if tuple(self.values.shape) != (n + 1,):
            raise ValueError(f"DeletionCurve.values has shape {tuple(self.values.shape)}, expected ({n + 1},)")
        if self.random_values.ndim != 2 or self.random_values.shape[1] != n + 1:
            raise ValueError(f"DeletionCurve.random_values has shape {tuple(self.random_values.shape)}, expected "
                             f"(n_random, {n + 1})")

    @property
    def n_random(self) -> int:
        """How many random orders `random_values` holds."""
        return self.random_values.shape[0]

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per (order, k): order ("attribution order" / "random order (mean of n)"), k, value,
        removed (label of the token removed at step k in attribution order; "" for k = 0 and random)."""
        labels = token_labels(self.tokens)
        n = len(self.order)
        random_name = f"random order (mean of {self.n_random})"
        mean_random = self.random_values.mean(0)
        return pd.DataFrame({
            "method": self.method,
            "order": ["attribution order"] * (n + 1) + [random_name] * (n + 1),
            "k": list(range(n + 1)) * 2,
            "value": self.values.tolist() + mean_random.tolist(),
            "removed": [""] + [labels[p] for p in self.order] + [""] * (n + 1),
            "metric": self.metric_label,
        })


def aopc(values: torch.Tensor) -> float:
    """Area over the perturbation curve of values [..., n + 1] (k = 0..n), Samek et al. 2017 (eq. 12): the mean
    over k = 0..n of values[0] - values[k], i.e. the sum divided by n + 1; over leading dimensions (random orders)
    the mean of each curve's AOPC. 0 for a curve of one point."""
    return float((values[..., :1] - values).mean())


def deletion_curve(
    bundle: ModelBundle,
    attribution: Attribution,
    *,
    baseline: Baseline | str | None = None,
    n_random: int = DEFAULT_RANDOM_ORDERS,
    seed: int = 0,
    progress: Progress | None = None,
) -> DeletionCurve:
    """Replace the top-k tokens of `attribution` (descending score) by the baseline, k = 0..n, and record the
    target probability (log-prob targets) or logit difference (contrast targets); the same for `n_random` random
    orders drawn with `seed`. Special tokens (BOS, ...) are never replaced, so n counts the others. Every variant
    goes through the model in memory-bounded batches (duplicates once).

    `baseline` defaults to the attribution's own (GPT-2 has no mask token; replacing keeps positions intact).
    """
    if not 1 <= n_random <= 32:
        raise AttributionSettingsError("The number of random orders must be from 1 to 32.")
    baseline = attribution.baseline if baseline is None else _as_baseline(baseline)
    ids = attribution.token_ids.to(bundle.device)
    x = _embed(bundle, ids)
    b = _baseline_embeds(bundle, ids, baseline)
    n_pos = len(attribution.tokens)
    special = special_positions(bundle, ids).tolist()
    deletable = [p for p in range(n_pos) if not special[p]]
    n = len(deletable)
    generator = torch.Generator().manual_seed(int(seed))
    orders = [[p for p in attribution.order() if not special[p]]]
    orders += [[deletable[i] for i in torch.randperm(n, generator=generator).tolist()] for _ in range(n_random)]
    masks = torch.zeros(len(orders), n + 1, n_pos, dtype=torch.bool)  # [order, k, pos]
    for o, order in enumerate(orders):
        for k in range(1, n + 1):
            masks[o, k, order[:k]] = True
    a, c = attribution.target_ids[0], attribution.target_ids[-1]
    values = _replaced_values(bundle, x, b, masks.reshape(-1, n_pos), torch.zeros(1, dtype=torch.long),
                              torch.tensor([a]), torch.tensor([c]), attribution.target_kind, progress,
                              "Deletion curves")[:, 0].reshape(len(orders), n + 1)
    if attribution.target_kind == "logprob":
        values = values.exp()  # probability of the target token
        metric = f"p({_token_text(bundle, a)})"
    else:
        metric = f"logit({_token_text(bundle, a)}) − logit({_token_text(bundle, c)})"
    return DeletionCurve(
        method=attribution.method,
        tokens=attribution.tokens,
        order=orders[0],
        metric_label=metric,
        values=values[0],
        random_values=values[1:],
        aopc=aopc(values[0]),
        random_aopc=aopc(values[1:]),
        baseline_label=_baseline_label(bundle, baseline),
    )


def deletion_verdict(curve: DeletionCurve) -> Verdict:
    """Ok when the attribution order's AOPC beats the random orders'; figures: both AOPCs and their difference."""
    gain = curve.aopc - curve.random_aopc
    figures = (
        Metric(f"AOPC, {METHOD_NAMES[curve.method]}", f"{curve.aopc:.4f}", help=AOPC_DEFINITION),
        Metric(f"AOPC, random orders (mean of {curve.n_random})", f"{curve.random_aopc:.4f}"),
        Metric("difference", f"{gain:+.4f}"),
    )
    if gain <= 0:
        return Verdict(False, "Removing tokens in this method's order hurts the target no more than a random order: "
                              "its ranking is not faithful for this prompt and target.", figures)
    return Verdict(True, "Removing tokens in this method's order hurts the target more than random orders do (AOPC "
                         "after Samek et al. 2017: mean over k = 0..n).", figures)


@dataclass(frozen=True, eq=False)
class MethodComparison:
    """Attributions of one prompt and target by one or more methods with the same settings, and each one's
    deletion curve against the same seeded random orders.

    Fields (method = the methods compared, in order):
        attributions    [method] Attribution (integrated gradients with the settings' steps and quadrature)
        curves          [method] DeletionCurve of each attribution
    """

    attributions: tuple[Attribution, ...]
    curves: tuple[DeletionCurve, ...]

    def __post_init__(self) -> None:
        if [a.method for a in self.attributions] != [c.method for c in self.curves] or not self.curves:
            raise ValueError("MethodComparison needs one deletion curve per attribution, in the same order")

    def curve(self, method: str) -> DeletionCurve:
        """The deletion curve of `method` (KeyError when it was not compared)."""
        for curve in self.curves:
            if curve.method == method:
                return curve
        raise KeyError(method)

    def to_frame(self) -> pd.DataFrame:
        """One row per method: AOPC of its deletion order, of random orders, their difference (higher: the
        attribution finds the tokens the target depends on better than chance), and the IG settings used."""
        return pd.DataFrame({
            "method": [c.method for c in self.curves],
            "method_name": [METHOD_NAMES[c.method] for c in self.curves],
            "aopc": [c.aopc for c in self.curves],
            "random_aopc": [c.random_aopc for c in self.curves],
            "aopc_minus_random": [c.aopc - c.random_aopc for c in self.curves],
            "n_steps": pd.array([a.n_steps for a in self.attributions], dtype="Int64"),
            "quadrature": [a.quadrature for a in self.attributions],
            "metric": [c.metric_label for c in self.curves],
            "baseline": [c.baseline_label for c in self.curves],
        })


def compare_methods(
    bundle: ModelBundle,
    prompt_or_ids,
    target: Target | None = None,
    settings: AttributionSettings = DEFAULTS,
    *,
    methods: Sequence[str] = METHODS,
    reuse: Attribution | None = None,
    n_random: int = DEFAULT_RANDOM_ORDERS,
    seed: int = 0,
    progress: Progress | None = None,
) -> MethodComparison:
    """Each of `methods` on one prompt and target with `settings` (whichever method `settings` names, integrated
    gradients runs with its n_steps and quadrature), and each one's deletion curve (same baseline, same seeded
    random orders). `reuse`: an attribution already made with these settings, used for its method instead of a
    second run."""
    n_parts = 2 * len(methods)  # an attribution and a deletion curve per method

    def part(i: int) -> Progress | None:
        return None if progress is None else (lambda f, text: progress((i + f) / n_parts, text))

    attributions, curves = [], []
    for i, method in enumerate(methods):
        if reuse is not None and reuse.method == method:
            attributions.append(reuse)
        else:
            attributions.append(attribute(bundle, prompt_or_ids, target, **settings.for_method(method).as_kwargs(),
                                          progress=part(2 * i)))
        curves.append(deletion_curve(bundle, attributions[-1], n_random=n_random, seed=seed,
                                     progress=part(2 * i + 1)))
    return MethodComparison(tuple(attributions), tuple(curves))
