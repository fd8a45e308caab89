"""The result of one attribution (`Attribution`: one score per prompt token for one target) and how a method's
per-dimension values [pos, d_model] become one score per token.

Aggregation: "sum" (signed sum over d_model; Captum and the IG authors; for saliency that is the L1 norm) or
"l2" (L2 norm, unsigned; Inseq).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from interp_core import activations
from interp_core.attribution.baselines import _embed, _Inputs, _inputs
from interp_core.attribution.options import AGGREGATIONS, METHODS, AttributionSettingsError, Baseline
from interp_core.attribution.targets import Target, _resolve, _Resolved
from interp_core.loading import ModelBundle
from interp_core.tokens import token_labels


@dataclass(frozen=True, eq=False)
class Attribution:
    """One score per prompt token for one target, with what is needed to judge it.

    Fields (pos = prompt tokens):
        method          one of METHODS
        tokens          [pos] readable token strings (data, not markup)
        token_ids       LongTensor [pos]
        scores          [pos] per-token score, aggregated over d_model (see `aggregation`); occlusion: F drop
        per_dim         [pos, d_model] per-dimension attribution (IG, input x gradient: signed; saliency: |grad|);
                        None for occlusion
        aggregation     "sum" (signed sum over d_model), "l2" (L2 norm, unsigned) or "drop" (occlusion)
        target_kind     "logprob" [nats] or "contrast" [logits]
        target_ids      (token,) or (token_a, token_b)
        target_label    e.g. "log p(␣Paris) (top-1)" or "logit(␣Paris) − logit(␣London)"
        target_value    F(input)
        baseline        the Baseline used (IG, occlusion, and by default the deletion curve)
        baseline_label  readable description of the baseline
        baseline_value  F(baseline) (IG only, else None)
        n_steps, quadrature   IG settings (None for other methods)
    """

    method: str
    tokens: list[str]
    token_ids: torch.Tensor
    scores: torch.Tensor
    per_dim: torch.Tensor | None
    aggregation: str
    target_kind: str
    target_ids: tuple[int, ...]
    target_label: str
    target_value: float
    baseline: Baseline = field(default_factory=Baseline)
    baseline_label: str = ""
    baseline_value: float | None = None
    n_steps: int | None = None
    quadrature: str | None = None

    def __post_init__(self) -> None:
        n_pos = len(self.tokens)
        if self.method not in METHODS:
            raise ValueError(f"Attribution.method {self.method!r} not in {METHODS}")
        if tuple(self.token_ids.shape) != (n_pos,):
            raise ValueError(f"Attribution.token_ids has shape {tuple(self.token_ids.shape)}, expected ({n_pos},)")
        if tuple(self.scores.shape) != (n_pos,):
            raise ValueError(f"Attribution.scores has shape {tuple(self.scores.shape)}, expected ({n_pos},)")
        if self.per_dim is not None and (self.per_dim.ndim != 2 or self.per_dim.shape[0] != n_pos):
            raise ValueError(f"Attribution.per_dim has shape {tuple(self.per_dim.shape)}, expected ({n_pos}, d_model)")
        if self.aggregation not in (*AGGREGATIONS, "drop"):
            raise ValueError(f"Attribution.aggregation {self.aggregation!r} unknown")
        if self.target_kind not in ("logprob", "contrast"):
            raise ValueError(f"Attribution.target_kind {self.target_kind!r} unknown")

    @property
    def units(self) -> str:
        """The units of F: "nats" (log-probability) or "logits" (contrast)."""
        return "nats" if self.target_kind == "logprob" else "logits"

    @property
    def signed_total(self) -> float | None:
        """sum over positions and d_model of the signed per-dimension attribution (None when unsigned/absent)."""
        if self.per_dim is None or self.method == "saliency":
            return None
        return float(self.per_dim.double().sum())

    @property
    def delta(self) -> float | None:
        """IG completeness residual: sum(attributions) - (F(input) - F(baseline)); None for other methods."""
        if self.method != "integrated_gradients" or self.baseline_value is None:
            return None
        return self.signed_total - (self.target_value - self.baseline_value)

    @property
    def relative_delta(self) -> float | None:
        """|delta| / |F(input) - F(baseline)| (inf when the difference is 0); None for other methods."""
        delta = self.delta
        if delta is None:
            return None
        gap = abs(self.target_value - self.baseline_value)
        return abs(delta) / gap if gap > 0 else (0.0 if delta == 0 else float("inf"))

    @property
    def signed(self) -> bool:
        """True when scores can be negative (signed sum of IG / input x gradient, occlusion drops)."""
        return self.method != "saliency" and self.aggregation != "l2"

    def order(self) -> list[int]:
        """Positions from most to least important (descending score; stable for ties)."""
        return [int(i) for i in np.argsort(-self.scores.numpy(), kind="stable")]

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per prompt token (position, token, label, token_id, score, method, aggregation, target)."""
        return pd.DataFrame({
            "position": range(len(self.tokens)),
            "token": self.tokens,
            "label": token_labels(self.tokens),
            "token_id": self.token_ids.tolist(),
            "score": self.scores.tolist(),
            "method": self.method,
            "aggregation": self.aggregation,
            "target": self.target_label,
        })


def _aggregate(per_dim: torch.Tensor, aggregation: str) -> torch.Tensor:
    """[pos, d_model] -> [pos]: signed sum over d_model ("sum") or L2 norm ("l2"; checked by _check_aggregation)."""
    return per_dim.sum(-1) if aggregation == "sum" else per_dim.norm(dim=-1)


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise AttributionSettingsError(f"Unknown aggregation '{aggregation}'; use 'sum' (signed) or 'l2'.")


@dataclass(frozen=True, eq=False)
class _Setup:
    inputs: _Inputs
    target: _Resolved
    x: torch.Tensor  # [pos, d_model]


def _setup(bundle: ModelBundle, prompt_or_ids, target: Target | None) -> _Setup:
    inputs = _inputs(bundle, prompt_or_ids)

    def last_logits() -> torch.Tensor:
        if inputs.last_logits is not None:
            return inputs.last_logits  # from the cached trace: no second forward
        with torch.no_grad():
            return activations.run(bundle, inputs.ids[None]).logits[0, -1]

    return _Setup(inputs, _resolve(bundle, target, last_logits), _embed(bundle, inputs.ids))


def _result(s: _Setup, method, scores, per_dim, aggregation, target_value, **extra) -> Attribution:
    return Attribution(
        method=method,
        tokens=s.inputs.tokens,
        token_ids=s.inputs.ids.cpu(),
        scores=scores.detach().cpu().float(),
        per_dim=None if per_dim is None else per_dim.detach().cpu().float(),
        aggregation=aggregation,
        target_kind=s.target.kind,
        target_ids=(s.target.a,) if s.target.kind == "logprob" else (s.target.a, s.target.b),
        target_label=s.target.label,
        target_value=float(target_value),
        **extra,
    )
