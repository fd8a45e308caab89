"""Logit lens, direct logit attribution and residual-stream statistics, all from a cached trace.

    >>> lens = logit_lens(bundle, trace)                          # target: the model's top-1 next token
    >>> lens.target_rank[:, -1]                                   # [layer + 1] rank at the last position
    >>> dla = direct_logit_attribution(bundle, trace, pos=-1, target_id=lens.target_id)
    >>> float(dla.values.sum()) == float(trace.last_logits[lens.target_id])   # up to float error

Modules: `lens` (the logit lens, residual evolution, the model's next-token predictions, the page's target) and
`dla` (direct logit attribution, component vectors, a component's token effects). The frozen final norm DLA
uses is components.final_norm_linear; the lens' chunk size, LENS_POSITIONS_PER_CHUNK, lives in (and is read from)
interp_core.lens.lens.
"""

from interp_core.lens.dla import (
    ComponentVectors,
    LogitAttribution,
    TokenEffects,
    component_token_effects,
    component_vectors,
    direct_logit_attribution,
)
from interp_core.lens.lens import (
    LENS_METRICS,
    LensResult,
    LensTarget,
    NextTokenPredictions,
    ResidualEvolution,
    lens_target,
    logit_lens,
    next_token_predictions,
    resid_labels,
    residual_evolution,
)

__all__ = [
    "LENS_METRICS", "ComponentVectors", "LensResult", "LensTarget", "LogitAttribution", "NextTokenPredictions",
    "ResidualEvolution", "TokenEffects", "component_token_effects", "component_vectors", "direct_logit_attribution",
    "lens_target", "logit_lens", "next_token_predictions", "resid_labels", "residual_evolution",
]
