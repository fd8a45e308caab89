"""Input attribution: one score per prompt token for a chosen next-token target, and how far to trust it.

    >>> attr = integrated_gradients(bundle, "The capital of France is", target_from_text(bundle, " Paris"))
    >>> attr.to_frame()[["label", "score"]]          # one row per prompt token
    >>> attr.relative_delta                          # IG completeness residual, |delta| / |F(x) - F(b)|
    >>> quick = input_x_gradient(bundle, "The capital of France is")   # target: the model's top-1 token

Everything works on the OUTPUT of the token-embedding module, x: [pos, d_model] (GPT-2 `transformer.wte`). We feed
x (or an interpolated / occluded version of it) to the model as `inputs_embeds`, so the model adds its position
embeddings (or rotary positions) itself: positions are never interpolated. (Captum's `LayerIntegratedGradients`
on the embedding layer computes the same thing by hooking the layer's output.) Casting interpolated token ids to
integers, as our seed code did, computes nothing meaningful.

Target functions F (units in brackets), evaluated on the next-token logits at the last position:
    NextTokenTarget(t)    F = log p(t | prompt)            [nats]   (t = None: the model's top-1 prediction)
    ContrastTarget(a, b)  F = logit(a) - logit(b)          [logits] ("why a rather than b")

Methods (per-dimension attribution a[pos, d_model]; a token's score aggregates it over d_model):
    integrated_gradients  a = (x - b) * sum_j w_j dF/dx (b + alpha_j (x - b))   quadrature nodes alpha_j, weights w_j
    saliency              a = |dF/dx (x)|                                         (unsigned)
    input_x_gradient      a = x * dF/dx (x)                      = IG with one right-Riemann step from b = 0
    occlusion             score_i = F(x) - F(x with row i replaced by b_i)        (no per-dimension values)
Aggregation: "sum" (signed sum over d_model; Captum and the IG authors; for saliency that is the L1 norm) or
"l2" (L2 norm, unsigned; Inseq). Special tokens (BOS, EOS, ...) keep their own embedding in every baseline b,
so IG and occlusion give them exactly 0 and the deletion curves never delete them.

Completeness (IG only): sum(a) = F(x) - F(b) exactly for the exact integral; the quadrature residual
delta = sum(a) - (F(x) - F(b)) and its relative size |delta| / |F(x) - F(b)| say how far to trust the numbers.
Deletion curves and AOPC (Samek et al. 2017, mean over k = 0..n) compare each method's ranking with chance.

Modules, by topic: options (names, defaults, AttributionSettings), targets, baselines (inputs, special tokens),
batches (memory-bounded evaluation), result (Attribution), methods, faithfulness, continuation.
"""

from interp_core.attribution.baselines import neutral_token_id, neutral_token_note, special_positions
from interp_core.attribution.continuation import ContinuationAttribution, attribute_continuation
from interp_core.attribution.faithfulness import (
    AOPC_DEFINITION,
    DEFAULT_RANDOM_ORDERS,
    WARN_RELATIVE_DELTA,
    DeletionCurve,
    MethodComparison,
    Verdict,
    aopc,
    compare_methods,
    completeness_verdict,
    deletion_curve,
    deletion_verdict,
)
from interp_core.attribution.methods import (
    attribute,
    input_x_gradient,
    integrated_gradients,
    occlusion,
    quadrature,
    saliency,
)
from interp_core.attribution.options import (
    AGGREGATION_NAMES,
    AGGREGATIONS,
    BASELINE_KINDS,
    BASELINE_NAMES,
    DEFAULTS,
    METHOD_NAMES,
    METHODS,
    QUADRATURE_NAMES,
    QUADRATURES,
    AttributionSettings,
    AttributionSettingsError,
    Baseline,
    Progress,
)
from interp_core.attribution.result import Attribution
from interp_core.attribution.targets import (
    TARGET_MODES,
    ContrastTarget,
    NextTokenTarget,
    Target,
    as_typed,
    contrast_suggestion,
    missing_target_text,
    target_from_text,
)

__all__ = [
    "AGGREGATIONS", "AGGREGATION_NAMES", "AOPC_DEFINITION", "BASELINE_KINDS", "BASELINE_NAMES", "DEFAULTS",
    "DEFAULT_RANDOM_ORDERS", "METHODS", "METHOD_NAMES", "QUADRATURES", "QUADRATURE_NAMES", "TARGET_MODES",
    "WARN_RELATIVE_DELTA",
    "Attribution", "AttributionSettings", "AttributionSettingsError", "Baseline", "ContinuationAttribution",
    "ContrastTarget", "DeletionCurve", "MethodComparison", "NextTokenTarget", "Progress", "Target", "Verdict",
    "aopc", "as_typed", "attribute", "attribute_continuation", "compare_methods", "completeness_verdict",
    "contrast_suggestion", "deletion_curve", "deletion_verdict", "input_x_gradient", "integrated_gradients",
    "missing_target_text", "neutral_token_id", "neutral_token_note", "occlusion", "quadrature", "saliency",
    "special_positions", "target_from_text",
]
