"""What an attribution can be asked for: method, aggregation, quadrature and baseline names, the defaults (one
source for the library's signatures and the page's widgets) and the settings error.

    >>> DEFAULTS                                   # AttributionSettings(method="integrated_gradients", ...)
    >>> DEFAULTS.for_method("saliency").as_kwargs() # the keyword arguments of attribute / attribute_continuation
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from interp_core.errors import UserInputError

Progress = Callable[[float, str], None]

METHODS = ("integrated_gradients", "saliency", "input_x_gradient", "occlusion")
METHOD_NAMES = {
    "integrated_gradients": "Integrated gradients",
    "saliency": "Saliency (gradient norm)",
    "input_x_gradient": "Input × gradient",
    "occlusion": "Occlusion",
}
AGGREGATIONS = ("sum", "l2")
AGGREGATION_NAMES = {"sum": "Signed sum over the embedding dimensions", "l2": "L2 norm (unsigned)"}
QUADRATURES = ("gausslegendre", "riemann_trapezoid", "riemann_right", "riemann_left", "riemann_middle")
QUADRATURE_NAMES = {"gausslegendre": "Gauss-Legendre", "riemann_trapezoid": "Trapezoid (Riemann)",
                    "riemann_right": "Right Riemann", "riemann_left": "Left Riemann", "riemann_middle": "Midpoint"}
BASELINE_KINDS = ("zero", "token", "text")
BASELINE_NAMES = {"token": "Neutral token (EOS / pad)", "zero": "Zero embedding", "text": "A baseline text"}


class AttributionSettingsError(UserInputError):
    """An attribution setting is out of range (steps, baseline text, continuation length, ...)."""


@dataclass(frozen=True)
class Baseline:
    """What "absent" means for a token: "zero" embedding, a neutral "token" (id None: EOS / pad / BOS of the
    tokenizer, as Inseq; GPT-2: <|endoftext|>), or a same-length baseline "text" (one baseline token per
    prompt token). Used by integrated gradients, occlusion and the deletion curves. Special tokens of the prompt
    (BOS, EOS, ...: the tokenizer's all_special_ids) keep their own embedding in every baseline.

    Default "token": a real input the model has seen (the page's default too; the all-zero embedding is far from
    any real input, and from it every token of a prompt tends to get a similar large score)."""

    kind: str = "token"
    token_id: int | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in BASELINE_KINDS:
            raise AttributionSettingsError(f"Unknown baseline '{self.kind}'; use one of {', '.join(BASELINE_KINDS)}.")


@dataclass(frozen=True)
class AttributionSettings:
    """Every setting of one attribution, hashable (a cache key); the defaults are the library's and the page's.

    Fields (each default with its reason):
        method       "integrated_gradients": the one method with a completeness check
        aggregation  "sum": signed sum over d_model (Captum and the IG authors; for saliency the L1 norm of the
                     gradient), so IG's per-token scores add up to F(input) - F(baseline)
        baseline     Baseline("token"): see Baseline
        n_steps      64: Gauss-Legendre converges by ~50 steps on small models (IG only)
        quadrature   "gausslegendre": exact for polynomials of degree 2n - 1; Captum's default (IG only)
    """

    method: str = "integrated_gradients"
    aggregation: str = "sum"
    baseline: Baseline = field(default_factory=Baseline)
    n_steps: int = 64
    quadrature: str = "gausslegendre"

    def __post_init__(self) -> None:
        for name, value, known in (("method", self.method, METHODS), ("aggregation", self.aggregation, AGGREGATIONS),
                                   ("quadrature", self.quadrature, QUADRATURES)):
            if value not in known:
                raise AttributionSettingsError(f"Unknown {name} '{value}'; use one of {', '.join(known)}.")

    def for_method(self, method: str) -> AttributionSettings:
        """The same settings for another method (integrated gradients keeps these steps and quadrature)."""
        return replace(self, method=method)

    def as_kwargs(self) -> dict:
        """The keyword arguments of `attribute` and `attribute_continuation` for these settings."""
        return {"method": self.method, "aggregation": self.aggregation, "baseline": self.baseline,
                "n_steps": self.n_steps, "quadrature_method": self.quadrature}


DEFAULTS = AttributionSettings()
