"""A continuation attributed step by step (teacher forcing): each continuation token's log-probability attributed
to every earlier token, the prompt and the continuation so far, in one batched pass.

    >>> cont = attribute_continuation(bundle, "The capital of France is", n_tokens=5)   # greedy, input x gradient
    >>> cont.scores                      # [step, in_pos]; NaN after each step's prediction
    >>> cont.to_frame()                  # one row per (step, input position) that can influence it
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from interp_core import activations
from interp_core.attribution.baselines import _as_baseline, _baseline_embeds, _embed, _inputs, special_positions
from interp_core.attribution.batches import _occlusion_masks, _replaced_values
from interp_core.attribution.methods import _check_steps, _gradient_attributions, quadrature
from interp_core.attribution.options import DEFAULTS, METHODS, AttributionSettingsError, Baseline, Progress
from interp_core.attribution.result import _aggregate, _check_aggregation
from interp_core.loading import ModelBundle
from interp_core.settings import limits
from interp_core.tokens import encode, readable_token, token_labels, token_texts


@dataclass(frozen=True, eq=False)
class ContinuationAttribution:
    """Attribution of each token of a continuation to every earlier token (prompt and continuation so far).

    Step t's target is log p(output t | prompt + outputs before t) [nats], with the continuation fed as given
    (teacher forcing), so all steps share one input sequence and run in one batched pass.

    Fields (step = continuation tokens, in_pos = n_prompt + step - 1 input tokens: the prompt and every
    continuation token but the last):
        method, aggregation   as in Attribution
        input_tokens          [in_pos] readable input tokens
        n_prompt              how many of input_tokens are the prompt
        output_tokens         [step] readable continuation tokens (the targets)
        output_ids            LongTensor [step]
        scores                [step, in_pos] score of input token i for output t; NaN where i > n_prompt - 1 + t
                              (tokens that come after the prediction and cannot influence it)
        target_values         [step] log p of each continuation token given everything before it
        generated             True when the continuation was produced greedily by the model, False when typed
    """

    method: str
    aggregation: str
    input_tokens: list[str]
    n_prompt: int
    output_tokens: list[str]
    output_ids: torch.Tensor
    scores: torch.Tensor
    target_values: torch.Tensor
    generated: bool = True

    def __post_init__(self) -> None:
        n_steps, n_in = len(self.output_tokens), len(self.input_tokens)
        if n_in != self.n_prompt + n_steps - 1:
            raise ValueError(f"ContinuationAttribution has {n_in} input tokens, expected n_prompt + step - 1 = "
                             f"{self.n_prompt + n_steps - 1}")
        if tuple(self.scores.shape) != (n_steps, n_in):
            raise ValueError(f"ContinuationAttribution.scores has shape {tuple(self.scores.shape)}, expected "
                             f"({n_steps}, {n_in})")
        for name in ("output_ids", "target_values"):
            if tuple(getattr(self, name).shape) != (n_steps,):
                raise ValueError(f"ContinuationAttribution.{name} must have shape ({n_steps},)")

    @property
    def signed(self) -> bool:
        """True when scores can be negative."""
        return self.method != "saliency" and self.aggregation != "l2"

    def output_labels(self) -> list[str]:
        """Unique labels of the outputs: "n_prompt + t token" (their position in the full sequence)."""
        return [f"{self.n_prompt + t} {tok}" for t, tok in enumerate(self.output_tokens)]

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per (step, input position) that can influence it: step, output, output_label,
        position, input_token, input_label, in_prompt, score, target_logprob."""
        labels = token_labels(self.input_tokens)
        out_labels = self.output_labels()
        rows = []
        for t in range(len(self.output_tokens)):
            for i in range(self.n_prompt + t):
                rows.append((t, self.output_tokens[t], out_labels[t], i, self.input_tokens[i], labels[i],
                             i < self.n_prompt, float(self.scores[t, i]), float(self.target_values[t])))
        return pd.DataFrame(rows, columns=["step", "output", "output_label", "position", "input_token",
                                           "input_label", "in_prompt", "score", "target_logprob"])


def _continuation_ids(bundle: ModelBundle, ids: torch.Tensor, n_tokens: int, continuation: str | None,
                      first_logits: torch.Tensor | None) -> tuple[list[int], bool]:
    """The continuation's token ids: `continuation` tokenized (no special tokens), else n_tokens greedy tokens."""
    cap = limits().max_generated_tokens
    if continuation is not None and continuation.strip():
        out = list(encode(bundle, continuation, add_special_tokens=False)["input_ids"])
        if not out:
            raise AttributionSettingsError("The continuation became no tokens. Type some text, or leave it empty "
                                           "to let the model generate.")
        if len(out) > cap:
            raise AttributionSettingsError(f"The continuation is {len(out)} tokens; at most {cap} "
                                           "(max_generated_tokens) can be attributed. Shorten it.")
        generated = False
    else:
        if not isinstance(n_tokens, (int, np.integer)) or not 1 <= int(n_tokens) <= cap:
            raise AttributionSettingsError(f"The number of tokens to generate must be from 1 to {cap} "
                                           f"(max_generated_tokens); got {n_tokens}.")
        out, seq = [], ids.tolist()
        with torch.no_grad():
            for step in range(int(n_tokens)):
                if step == 0 and first_logits is not None:
                    logits = first_logits  # the cached trace already holds the first prediction
                else:
                    logits = activations.run(bundle, torch.tensor([seq])).logits[0, -1]
                out.append(int(logits.argmax()))
                seq.append(out[-1])
        generated = True
    if ids.numel() + len(out) - 1 > bundle.n_ctx:
        raise AttributionSettingsError(f"The prompt and continuation are {ids.numel() + len(out) - 1} tokens; the "
                                       f"model reads at most {bundle.n_ctx}. Shorten one of them.")
    return out, generated


def attribute_continuation(
    bundle: ModelBundle,
    prompt_or_ids,
    *,
    method: str = "input_x_gradient",
    n_tokens: int = 8,
    continuation: str | None = None,
    aggregation: str = DEFAULTS.aggregation,
    baseline: Baseline | str = DEFAULTS.baseline,
    n_steps: int = DEFAULTS.n_steps,
    quadrature_method: str = DEFAULTS.quadrature,
    progress: Progress | None = None,
) -> ContinuationAttribution:
    """Attribute each token of a continuation (typed, or `n_tokens` greedy tokens, at most
    limits().max_generated_tokens) to every earlier token, with teacher forcing: step t's target is
    log p(continuation[t] | prompt + continuation[:t]).

    All steps share one input sequence (prompt + continuation[:-1]); a causal model's prediction at position p
    sees only positions <= p, so every step's target is read from that one sequence. Gradient methods push
    (step, path point) rows through the model in memory-bounded batches; occlusion evaluates every occluded
    variant once for all steps. Scores of positions after a step's prediction are NaN. Special tokens (BOS, ...)
    keep their own embedding in the baseline, as in `attribute`. Default method: input x gradient, the cheap one
    (integrated gradients costs n_steps path points per continuation token).
    """
    if method not in METHODS:
        raise AttributionSettingsError(f"Unknown method '{method}'; use one of {', '.join(METHODS)}.")
    if method != "occlusion":
        _check_aggregation(aggregation)
    if method == "integrated_gradients":
        n_steps = _check_steps(n_steps)
        quadrature(n_steps, quadrature_method)
    baseline = _as_baseline(baseline)
    inputs = _inputs(bundle, prompt_or_ids)
    n_prompt = inputs.ids.numel()
    if progress is not None:
        progress(0.0, "Generating the continuation")
    out, generated = _continuation_ids(bundle, inputs.ids, n_tokens, continuation, inputs.last_logits)
    m = len(out)
    seq = torch.cat([inputs.ids, torch.tensor(out[:-1], dtype=torch.long, device=inputs.ids.device)])  # [in_pos]
    x = _embed(bundle, seq)
    b = _baseline_embeds(bundle, seq, baseline) if method in ("integrated_gradients", "occlusion") else None
    q = torch.arange(m)  # step t reads kept position t = sequence position n_prompt - 1 + t
    a = torch.tensor(out, dtype=torch.long)
    if method == "occlusion":
        masks = _occlusion_masks(special_positions(bundle, seq))  # [1 + in_pos, in_pos]
        values = _replaced_values(bundle, x, b, masks, q, a, a, "logprob", progress, "Occlusion")  # [1+in, m]
        fx, scores = values[0], (values[0][None] - values[1:]).T  # [m], [m, in_pos]
        aggregation = "drop"
    else:
        per_dim, fx, _ = _gradient_attributions(bundle, x, b, q, a, a, "logprob", method, n_steps,
                                                quadrature_method, progress)
        scores = _aggregate(per_dim, aggregation)  # [m, in_pos]
    scores = scores.float().clone()
    for t in range(m):
        scores[t, n_prompt + t:] = float("nan")  # after the prediction: cannot influence it
    out_tokens = [readable_token(t) for t in token_texts(bundle, out)]
    return ContinuationAttribution(
        method=method,
        aggregation=aggregation,
        input_tokens=inputs.tokens + out_tokens[:-1],
        n_prompt=n_prompt,
        output_tokens=out_tokens,
        output_ids=torch.tensor(out, dtype=torch.long),
        scores=scores,
        target_values=fx.float(),
        generated=generated,
    )
