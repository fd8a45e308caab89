"""The attribution methods, per-dimension attribution a[pos, d_model] (a token's score aggregates it over d_model):

    integrated_gradients  a = (x - b) * sum_j w_j dF/dx (b + alpha_j (x - b))   quadrature nodes alpha_j, weights w_j
    saliency              a = |dF/dx (x)|                                         (unsigned)
    input_x_gradient      a = x * dF/dx (x)                      = IG with one right-Riemann step from b = 0
    occlusion             score_i = F(x) - F(x with row i replaced by b_i)        (no per-dimension values)

x is the OUTPUT of the token-embedding module [pos, d_model] (GPT-2 `transformer.wte`), fed to the model in place
of its token embeddings, so the model adds its position embeddings (or rotary positions) itself: positions are
never interpolated. (Captum's `LayerIntegratedGradients` on the embedding layer computes the same thing by hooking
the layer's output.) Special tokens keep their own embedding in every baseline b (see baselines.py), so IG and
occlusion give them exactly 0.

    >>> attr = integrated_gradients(bundle, "The capital of France is", target_from_text(bundle, " Paris"))
    >>> attr.relative_delta                          # IG completeness residual, |delta| / |F(x) - F(b)|
"""

from __future__ import annotations

import numpy as np
import torch

from interp_core.attribution.baselines import _as_baseline, _baseline_embeds, _baseline_label, special_positions
from interp_core.attribution.batches import _evaluate, _occlusion_masks, _replaced_values
from interp_core.attribution.options import (
    DEFAULTS,
    METHOD_NAMES,
    METHODS,
    QUADRATURES,
    AttributionSettingsError,
    Baseline,
    Progress,
)
from interp_core.attribution.result import Attribution, _aggregate, _check_aggregation, _result, _Setup, _setup
from interp_core.attribution.targets import Target
from interp_core.loading import ModelBundle
from interp_core.settings import limits

# -- quadrature ----------------------------------------------------------------------------------------------


def quadrature(n_steps: int, method: str = DEFAULTS.quadrature) -> tuple[np.ndarray, np.ndarray]:
    """Nodes alpha in [0, 1] and weights (summing to 1) for integrating over the straight path baseline -> input.

    gausslegendre: numpy's leggauss nodes x_i, weights w_i on [-1, 1] mapped to alpha = (1 + x_i) / 2, w_i / 2
    (exact for polynomials of degree 2n - 1; Captum's default). riemann_trapezoid: alpha = 0, 1/(n-1), ..., 1 with
    half weights at both ends (needs n >= 2). riemann_right / left / middle: n equal cells of width 1/n.
    """
    n = int(n_steps)
    if n < 1:
        raise AttributionSettingsError("The number of steps must be at least 1.")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1.0 + x), 0.5 * w
    if method == "riemann_trapezoid":
        if n < 2:
            raise AttributionSettingsError("The trapezoid rule needs at least 2 steps.")
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return np.linspace(0.0, 1.0, n), w
    cells = np.arange(n, dtype=float)
    offsets = {"riemann_right": 1.0, "riemann_left": 0.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise AttributionSettingsError(f"Unknown quadrature '{method}'; use one of {', '.join(QUADRATURES)}.")
    return (cells + offsets[method]) / n, np.full(n, 1.0 / n)


def _check_steps(n_steps: int) -> int:
    cap = limits().max_ig_steps
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool):
        raise AttributionSettingsError(f"The number of steps must be a whole number from 1 to {cap}.")
    if not 1 <= int(n_steps) <= cap:
        raise AttributionSettingsError(f"The number of integrated-gradients steps must be from 1 to {cap} "
                                       f"(max_ig_steps); got {n_steps}.")
    return int(n_steps)


# -- the methods ---------------------------------------------------------------------------------------------


def _gradient_attributions(
    bundle: ModelBundle,
    x: torch.Tensor,
    b: torch.Tensor | None,
    q: torch.Tensor,
    a: torch.Tensor,
    c: torch.Tensor,
    kind: str,
    method: str,
    n_steps: int = 1,
    quad: str = "gausslegendre",
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-dimension attributions of m targets on one input, all in one batched pass.

    x, b [pos, d_model] (input and baseline token embeddings; b only for IG); q, a, c [m] the kept position
    (keep = m: target t reads the (pos - m + t)-th next-token logits) and token ids of each target. Rows are
    (target, step) pairs; for IG each target gets its n_steps path points plus x and b themselves.
    Returns per_dim [m, pos, d_model], F(x) [m] and F(b) [m] (None unless IG).
    """
    m = q.shape[0]
    if method == "integrated_gradients":
        alphas, weights = quadrature(n_steps, quad)
        path = torch.tensor(np.concatenate([alphas, [1.0, 0.0]]), dtype=x.dtype, device=x.device)  # + x, b
    else:
        path = torch.ones(1, dtype=x.dtype, device=x.device)  # the input itself
    n_path = len(path)
    base = b if b is not None else torch.zeros_like(x)  # [pos, d_model]; zero: input x gradient = IG from 0
    diff = x - base

    def make_rows(start: int, stop: int) -> torch.Tensor:
        alpha = path[torch.arange(start, stop, device=x.device) % n_path]  # row r: target r // n_path
        return base[None] + alpha[:, None, None] * diff[None]  # [chunk, pos, d_model]

    per_row = torch.arange(m * n_path) // n_path  # [rows] the target of each row
    if method == "integrated_gradients":  # quadrature weight of each row; x and b themselves get 0
        row_weight = torch.tensor(np.concatenate([weights, [0.0, 0.0]]), dtype=torch.float64).repeat(m)
    else:
        row_weight = torch.ones(m, dtype=torch.float64)
    summed = torch.zeros(m, *x.shape, dtype=torch.float64)  # [m, pos, d_model] weighted gradient per target

    def accumulate(start: int, stop: int, grads: torch.Tensor) -> None:
        weighted = grads.cpu().double() * row_weight[start:stop, None, None]  # [chunk, pos, d_model]
        summed.index_add_(0, per_row[start:stop], weighted)

    values = _evaluate(bundle, m * n_path, make_rows, q[per_row, None], a[per_row, None], c[per_row, None], kind,
                       keep=m, on_grad=accumulate, progress=progress, what=METHOD_NAMES[method])
    values = values[:, 0].reshape(m, n_path)  # [m, path]
    if method == "integrated_gradients":
        per_dim = (diff.cpu().double()[None] * summed).float()  # (x - b) * path-averaged gradient
        return per_dim, values[:, n_steps], values[:, n_steps + 1]
    if method == "saliency":
        return summed.abs().float(), values[:, 0], None
    if method == "input_x_gradient":
        return (x.cpu().double()[None] * summed).float(), values[:, 0], None
    raise ValueError(f"not a gradient method: {method}")


def _one_target(s: _Setup) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.zeros(1, dtype=torch.long), torch.tensor([s.target.a]), torch.tensor([s.target.b]))


def integrated_gradients(
    bundle: ModelBundle,
    prompt_or_ids,
    target: Target | None = None,
    *,
    baseline: Baseline | str = DEFAULTS.baseline,
    n_steps: int = DEFAULTS.n_steps,
    method: str = DEFAULTS.quadrature,
    aggregation: str = DEFAULTS.aggregation,
    progress: Progress | None = None,
) -> Attribution:
    """Integrated gradients on the token-embedding output, one score per prompt token.

    per_dim = (x - b) * sum_j w_j dF/dx(b + alpha_j (x - b)) for the quadrature `method` with `n_steps` nodes
    (1..limits().max_ig_steps). All n_steps interpolated inputs, plus x and b themselves (for the completeness
    check), go through the model in memory-bounded batches. `prompt_or_ids`: a prompt, a Trace, a TokenizedPrompt
    or token ids; `target`: NextTokenTarget / ContrastTarget (None: log-prob of the top-1 token). Special tokens
    (BOS, ...) stay at the input along the whole path, so x - b and their attribution are exactly 0.
    """
    n_steps = _check_steps(n_steps)
    _check_aggregation(aggregation)
    quadrature(n_steps, method)  # checks the method name before any work
    baseline = _as_baseline(baseline)
    s = _setup(bundle, prompt_or_ids, target)
    b = _baseline_embeds(bundle, s.inputs.ids, baseline)  # [pos, d_model]
    per_dim, fx, fb = _gradient_attributions(bundle, s.x, b, *_one_target(s), s.target.kind,
                                             "integrated_gradients", n_steps, method, progress)
    return _result(s, "integrated_gradients", _aggregate(per_dim[0], aggregation), per_dim[0],
                   aggregation, fx[0], baseline=baseline, baseline_label=_baseline_label(bundle, baseline),
                   baseline_value=float(fb[0]), n_steps=n_steps, quadrature=method)


def _at_input(bundle: ModelBundle, prompt_or_ids, target: Target | None, method: str, aggregation: str,
              baseline: Baseline | str, progress: Progress | None) -> Attribution:
    """Saliency or input x gradient: one forward and one backward at the input itself."""
    _check_aggregation(aggregation)
    s = _setup(bundle, prompt_or_ids, target)
    per_dim, fx, _ = _gradient_attributions(bundle, s.x, None, *_one_target(s), s.target.kind, method,
                                            progress=progress)
    baseline = _as_baseline(baseline)
    return _result(s, method, _aggregate(per_dim[0], aggregation), per_dim[0], aggregation, fx[0],
                   baseline=baseline, baseline_label=_baseline_label(bundle, baseline))


def saliency(
    bundle: ModelBundle,
    prompt_or_ids,
    target: Target | None = None,
    *,
    aggregation: str = DEFAULTS.aggregation,
    baseline: Baseline | str = DEFAULTS.baseline,
    progress: Progress | None = None,
) -> Attribution:
    """Saliency: |dF/dx| at the input, per token its L1 norm ("sum", the default) or L2 norm ("l2"); always
    unsigned.

    One forward and one backward. `baseline` is not used by the method; it is kept for the deletion curve.
    """
    return _at_input(bundle, prompt_or_ids, target, "saliency", aggregation, baseline, progress)


def input_x_gradient(
    bundle: ModelBundle,
    prompt_or_ids,
    target: Target | None = None,
    *,
    aggregation: str = DEFAULTS.aggregation,
    baseline: Baseline | str = DEFAULTS.baseline,
    progress: Progress | None = None,
) -> Attribution:
    """Input x gradient: x * dF/dx at the input (x = token-embedding output), aggregated per token.

    The cheap token-importance score: one forward and one backward. Simplest call, used by the Overview page:
    `input_x_gradient(bundle, "The capital of France is")` scores each token for the model's top-1 next token
    (log-probability); `result.scores` is [pos], `result.to_frame()` has one row per token. Equals integrated
    gradients with one right-Riemann step from the zero baseline at every non-special position (IG keeps special
    tokens at the input; this method has no baseline, so they keep their x * gradient). `baseline` only feeds the
    deletion curve.
    """
    return _at_input(bundle, prompt_or_ids, target, "input_x_gradient", aggregation, baseline, progress)


def occlusion(
    bundle: ModelBundle,
    prompt_or_ids,
    target: Target | None = None,
    *,
    baseline: Baseline | str = DEFAULTS.baseline,
    progress: Progress | None = None,
) -> Attribution:
    """Occlusion: score_i = F(x) - F(x with token i's embedding replaced by the baseline's), in F's units.

    The unoccluded input and all pos occluded variants go through the model as memory-bounded batches. Positive:
    the token supports the target; negative: removing it raises F. Special tokens (BOS, ...) are never occluded:
    their score is exactly 0.
    """
    baseline = _as_baseline(baseline)
    s = _setup(bundle, prompt_or_ids, target)
    b = _baseline_embeds(bundle, s.inputs.ids, baseline)
    masks = _occlusion_masks(special_positions(bundle, s.inputs.ids))  # [1 + pos, pos]
    values = _replaced_values(bundle, s.x, b, masks, *_one_target(s), s.target.kind, progress, "Occlusion")[:, 0]
    return _result(s, "occlusion", values[0] - values[1:], None, "drop", values[0], baseline=baseline,
                   baseline_label=_baseline_label(bundle, baseline))


def attribute(bundle: ModelBundle, prompt_or_ids, target: Target | None = None, *, method: str = DEFAULTS.method,
              aggregation: str = DEFAULTS.aggregation, baseline: Baseline | str = DEFAULTS.baseline,
              n_steps: int = DEFAULTS.n_steps, quadrature_method: str = DEFAULTS.quadrature,
              progress: Progress | None = None) -> Attribution:
    """Dispatch to one of METHODS with the settings it uses (the page's single entry point:
    `attribute(bundle, trace, target, **settings.as_kwargs())`)."""
    if method == "integrated_gradients":
        return integrated_gradients(bundle, prompt_or_ids, target, baseline=baseline, n_steps=n_steps,
                                    method=quadrature_method, aggregation=aggregation, progress=progress)
    if method == "saliency":
        return saliency(bundle, prompt_or_ids, target, aggregation=aggregation, baseline=baseline, progress=progress)
    if method == "input_x_gradient":
        return input_x_gradient(bundle, prompt_or_ids, target, aggregation=aggregation, baseline=baseline,
                                progress=progress)
    if method == "occlusion":
        return occlusion(bundle, prompt_or_ids, target, baseline=baseline, progress=progress)
    raise AttributionSettingsError(f"Unknown method '{method}'; use one of {', '.join(METHODS)}.")
