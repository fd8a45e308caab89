"""Circuits: head detectors, per-token loss on repeated random tokens, and head ablation.

    >>> run = run_repeated(bundle, length=20, seed=0)          # 8 random sequences [BOS] A A, one forward
    >>> run.scores.score("induction")                          # [layer, head] in [0, 1]
    >>> run.copy_loss(1), run.copy_loss(2)                     # mean loss (nats) on the first and second copy
    >>> heads = run.scores.top_heads("induction", k=2)
    >>> run_repeated(bundle, length=20, seed=0, ablate=heads).copy_loss(2)      # induction gone: loss rises
    >>> prompt_head_scores(bundle, trace)                      # the same detectors on the user's prompt (no forward)

Modules: `detectors` (the detectors' maths, their normalisation next to TransformerLens', HeadScores),
`repeated` ([BOS] A A, RepeatedRun, run_repeated) and `ablation` (zero and mean ablation of heads' z).
"""

from interp_core.circuits.ablation import (
    ABLATIONS,
    HeadAblation,
    ablate_heads,
    ablation_edits,
    check_heads,
    head_z_means,
    z_names,
)
from interp_core.circuits.detectors import (
    DETECTORS,
    TRANSFORMER_LENS_NAMES,
    CircuitInputError,
    Head,
    HeadScores,
    attention_scores,
    copying_scores,
    head_label,
    ov_copying_scores,
    prompt_head_scores,
    query_rows,
    score_heads,
)
from interp_core.circuits.repeated import (
    DEFAULT_LENGTH,
    N_SEQUENCES,
    RepeatedRun,
    RepeatedTokens,
    max_repeat_length,
    random_token_pool,
    repeated_tokens,
    run_repeated,
)

__all__ = [
    "ABLATIONS", "DEFAULT_LENGTH", "DETECTORS", "N_SEQUENCES", "TRANSFORMER_LENS_NAMES", "CircuitInputError", "Head",
    "HeadAblation", "HeadScores", "RepeatedRun", "RepeatedTokens", "ablate_heads", "ablation_edits",
    "attention_scores", "check_heads", "copying_scores", "head_label", "head_z_means", "max_repeat_length",
    "ov_copying_scores", "prompt_head_scores", "query_rows", "random_token_pool", "repeated_tokens", "run_repeated",
    "score_heads", "z_names",
]
