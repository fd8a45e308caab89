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
"l2" (L2 norm, unsigned; Inseq).

Completeness (IG only): sum(a) = F(x) - F(b) exactly for the exact integral; the quadrature residual
delta = sum(a) - (F(x) - F(b)) and its relative size |delta| / |F(x) - F(b)| say how far to trust the numbers.

Batching: every method pushes all its model evaluations (IG steps, occluded variants, deletion steps) through the
model as batches of rows, each chunk sized so its activations fit limits().ig_batch_memory_mb - never one forward
per step. Each chunk is one `activations.run` call, which holds the bundle's lock for that chunk only; the model is
never changed (gradients flow into a fresh copy of the input embeddings only; blocks recomputed for a long
prompt's backward pass are wrapped only while the lock is held).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from interp_core import activations
from interp_core.budget import recompute_blocks, rows_per_chunk
from interp_core.errors import PromptError, UserInputError
from interp_core.loading import ModelBundle
from interp_core.settings import limits
from interp_core.tokens import TokenizedPrompt, encode, readable_token, single_token_id, token_labels, token_texts
from interp_core.trace import Trace, cached_trace

Progress = Callable[[float, str], None]

METHODS = ("integrated_gradients", "saliency", "input_x_gradient", "occlusion")
METHOD_NAMES = {
    "integrated_gradients": "Integrated gradients",
    "saliency": "Saliency (gradient norm)",
    "input_x_gradient": "Input × gradient",
    "occlusion": "Occlusion",
}
AGGREGATIONS = ("sum", "l2")
QUADRATURES = ("gausslegendre", "riemann_trapezoid", "riemann_right", "riemann_left", "riemann_middle")
BASELINE_KINDS = ("zero", "token", "text")


class AttributionSettingsError(UserInputError):
    """An attribution setting is out of range (steps, baseline text, continuation length, ...)."""


# -- targets -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NextTokenTarget:
    """F = log-probability [nats] of `token_id` as the next token after the prompt; None = the model's top-1."""

    token_id: int | None = None


@dataclass(frozen=True)
class ContrastTarget:
    """F = logit(token_a) - logit(token_b) [logits] for the next token: "why a rather than b"."""

    token_a: int
    token_b: int


Target = NextTokenTarget | ContrastTarget


def target_from_text(bundle: ModelBundle, token_a: str = "", token_b: str = "") -> Target:
    """The target a user typed: nothing -> top-1 log-prob; `token_a` -> its log-prob; both -> logit contrast.

    Each text must be exactly one token (most words need their leading space, like " Paris"); raises
    TargetTokenError otherwise, naming how many tokens it became.
    """
    if not token_a and not token_b:
        return NextTokenTarget(None)
    if not token_b:
        return NextTokenTarget(single_token_id(bundle, token_a))
    if not token_a:
        raise AttributionSettingsError("A contrast needs token A as well as token B. Type both, like ' Paris' "
                                       "and ' London'.")
    return ContrastTarget(single_token_id(bundle, token_a), single_token_id(bundle, token_b))


@dataclass(frozen=True)
class _Resolved:
    """A target with concrete ids: kind "logprob" (a = the token, b unused) or "contrast" (a minus b)."""

    kind: str
    a: int
    b: int
    label: str


def _token_text(bundle: ModelBundle, token_id: int) -> str:
    return readable_token(token_texts(bundle, [token_id])[0])


def _resolve(bundle: ModelBundle, target: Target | None, last_logits: Callable[[], torch.Tensor]) -> _Resolved:
    target = NextTokenTarget(None) if target is None else target
    for token_id in (getattr(target, "token_id", None), getattr(target, "token_a", None),
                     getattr(target, "token_b", None)):
        if token_id is not None and not 0 <= int(token_id) < bundle.d_vocab:
            raise AttributionSettingsError(f"Token id {token_id} is outside the vocabulary (0 to "
                                           f"{bundle.d_vocab - 1}).")
    if isinstance(target, ContrastTarget):
        a, b = int(target.token_a), int(target.token_b)
        if a == b:
            raise AttributionSettingsError("Tokens A and B of a contrast are the same token; pick two different "
                                           "tokens.")
        return _Resolved("contrast", a, b, f"logit({_token_text(bundle, a)}) − logit({_token_text(bundle, b)})")
    if isinstance(target, NextTokenTarget):
        token_id = target.token_id
        top = token_id is None
        if top:
            token_id = int(last_logits().argmax())
        label = f"log p({_token_text(bundle, token_id)})" + (" (top-1)" if top else "")
        return _Resolved("logprob", int(token_id), int(token_id), label)
    raise TypeError(f"unknown target {target!r}; use NextTokenTarget or ContrastTarget")


def _target_values(logits: torch.Tensor, q: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   kind: str) -> torch.Tensor:
    """F for each row and target: logits [rows, keep, d_vocab]; q, a, b [rows, m] (kept position, token ids)
    -> [rows, m]. One row may carry several targets (m > 1, e.g. every step of a continuation)."""
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None]  # [rows, 1]
    picked = logits[rows, q]  # [rows, m, d_vocab] the next-token logits each target reads
    if kind == "logprob":
        return torch.log_softmax(picked, dim=-1).gather(-1, a[..., None])[..., 0]
    return picked.gather(-1, a[..., None])[..., 0] - picked.gather(-1, b[..., None])[..., 0]


# -- inputs and baselines ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """What "absent" means for a token: "zero" embedding, a neutral "token" (id None: EOS / pad / BOS of the
    tokenizer, as Inseq; GPT-2: <|endoftext|>), or a same-length baseline "text" (one baseline token per
    prompt token). Used by integrated gradients, occlusion and the deletion curves."""

    kind: str = "zero"
    token_id: int | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in BASELINE_KINDS:
            raise AttributionSettingsError(f"Unknown baseline '{self.kind}'; use one of {', '.join(BASELINE_KINDS)}.")


def neutral_token_id(bundle: ModelBundle) -> int:
    """The tokenizer's neutral token: EOS, else pad, else BOS, else 0 (GPT-2: <|endoftext|>)."""
    tok = bundle.tokenizer
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        value = getattr(tok, name, None)
        if isinstance(value, int) and 0 <= value < bundle.d_vocab:
            return value
    return 0


def _baseline_label(bundle: ModelBundle, baseline: Baseline) -> str:
    if baseline.kind == "zero":
        return "zero embedding"
    if baseline.kind == "token":
        token_id = neutral_token_id(bundle) if baseline.token_id is None else baseline.token_id
        return f"token {_token_text(bundle, token_id)} at every position"
    return f"text '{baseline.text}'"


@dataclass(frozen=True, eq=False)
class _Inputs:
    ids: torch.Tensor  # [pos] on the model's device
    tokens: list[str]  # [pos] readable
    last_logits: torch.Tensor | None  # [d_vocab] from the cached trace, when there is one


def _inputs(bundle: ModelBundle, prompt_or_ids) -> _Inputs:
    """Token ids from a prompt (through the cached trace), a Trace, a TokenizedPrompt or a sequence of ids.

    A prompt string or ids longer than limits().max_prompt_tokens (or the model's context) raise PromptError; a
    Trace or TokenizedPrompt is used as it is (it records its own truncation)."""
    logits = None
    if isinstance(prompt_or_ids, str):
        prompt_or_ids = cached_trace(bundle, prompt_or_ids)  # raises PromptError when empty
        if prompt_or_ids.truncated:  # a Trace passed in says so itself (the sidebar warns); a string: refuse
            raise PromptError(f"The prompt is {prompt_or_ids.n_prompt_tokens} tokens long; attribution accepts at "
                              f"most {prompt_or_ids.n_pos} (max_prompt_tokens / the model's context). Shorten it.")
    if isinstance(prompt_or_ids, Trace):
        ids, tokens, logits = prompt_or_ids.token_ids, list(prompt_or_ids.tokens), prompt_or_ids.last_logits
    elif isinstance(prompt_or_ids, TokenizedPrompt):
        ids, tokens = prompt_or_ids.ids, list(prompt_or_ids.tokens)
    else:
        ids = torch.as_tensor(list(prompt_or_ids) if not torch.is_tensor(prompt_or_ids) else prompt_or_ids,
                              dtype=torch.long).reshape(-1)
        tokens = [readable_token(t) for t in token_texts(bundle, ids.tolist())]
    if ids.numel() == 0:
        raise PromptError("The prompt is empty. Type some text to attribute.")
    cap = min(limits().max_prompt_tokens, bundle.n_ctx)
    if ids.numel() > cap:
        raise PromptError(f"The prompt is {ids.numel()} tokens long; attribution accepts at most {cap} "
                          "(max_prompt_tokens / the model's context). Shorten it.")
    if int(ids.min()) < 0 or int(ids.max()) >= bundle.d_vocab:
        raise PromptError("The prompt holds token ids outside the model's vocabulary.")
    return _Inputs(ids.to(bundle.device), tokens, logits)


def _embed(bundle: ModelBundle, ids: torch.Tensor) -> torch.Tensor:
    """Token-embedding output for ids [pos] -> [pos, d_model] (no position embedding), detached."""
    return activations.embed_tokens(bundle, ids)


def _baseline_embeds(bundle: ModelBundle, ids: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """The baseline b as token-embedding outputs [pos, d_model]."""
    n_pos = ids.numel()
    if baseline.kind == "zero":
        return torch.zeros_like(_embed(bundle, ids[:1])).expand(n_pos, -1).clone()
    if baseline.kind == "token":
        token_id = neutral_token_id(bundle) if baseline.token_id is None else int(baseline.token_id)
        if not 0 <= token_id < bundle.d_vocab:
            raise AttributionSettingsError(f"The baseline token id {token_id} is outside the vocabulary.")
        return _embed(bundle, torch.full_like(ids, token_id))
    if not baseline.text.strip():
        raise AttributionSettingsError("The baseline text is empty. Type a text with as many tokens as the prompt, "
                                       "or pick another baseline.")
    base_ids = list(encode(bundle, baseline.text)["input_ids"])
    if len(base_ids) != n_pos:
        raise AttributionSettingsError(f"The baseline text is {len(base_ids)} tokens and the prompt {n_pos}; they "
                                       "must have the same number of tokens (one baseline token per prompt token).")
    return _embed(bundle, torch.tensor(base_ids, dtype=torch.long, device=ids.device))


# -- batched evaluation under the memory budget (interp_core.budget) --------------------------------------


def _evaluate(
    bundle: ModelBundle,
    n_rows: int,
    make_rows: Callable[[int, int], torch.Tensor],
    q: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    kind: str,
    keep: int,
    on_grad: Callable[[int, int, torch.Tensor], None] | None = None,
    progress: Progress | None = None,
    what: str = "",
) -> torch.Tensor:
    """F for `n_rows` input rows, in memory-bounded chunks; with `on_grad`, also dF/d(row), handed over chunk by
    chunk as on_grad(start, stop, grads [stop - start, pos, d_model]) so that no [rows, pos, d_model] tensor of
    every row's gradient is ever held.

    make_rows(start, stop) -> embeddings [stop - start, pos, d_model] (token-embedding outputs); q, a, b [n_rows, m]:
    for each row and target the kept-logit position it reads (0..keep-1, counted within the last `keep`
    positions) and its token ids. Returns values [n_rows, m] on the CPU. Gradients need m = 1.
    """
    first = make_rows(0, min(1, n_rows))
    n_pos = first.shape[1]
    grad = on_grad is not None
    step = rows_per_chunk(bundle, n_pos, keep, grad)
    recompute = grad and recompute_blocks(bundle, n_pos, keep)
    values = []
    for start in range(0, n_rows, step):  # one activations.run per chunk: other requests get the model between
        stop = min(n_rows, start + step)
        rows = make_rows(start, stop)  # [chunk, pos, d_model]
        qa = [t[start:stop].to(bundle.device) for t in (q, a, b)]
        out = activations.run(
            bundle, torch.zeros(rows.shape[:2], dtype=torch.long),  # the token ids are replaced by `rows`
            edits={"hook_embed": activations.replace(rows)}, grad=["hook_embed"] if grad else (),
            metric=(lambda logits, acts, qa=qa: _target_values(logits, *qa, kind).sum()) if grad else None,
            logits_to_keep=keep, fused_attention=True, recompute=recompute)  # rows are independent: sum
        if grad:
            on_grad(start, stop, out.grads["hook_embed"])  # row r gets dF_r/d(row r)
        values.append(_target_values(out.logits, *qa, kind).cpu())
        if progress is not None:
            progress(stop / n_rows, f"{what}: {stop} of {n_rows} model inputs")
    return torch.cat(values)


# -- the result ----------------------------------------------------------------------------------------------


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
    """[pos, d_model] -> [pos]: signed sum over d_model ("sum") or L2 norm ("l2")."""
    if aggregation == "sum":
        return per_dim.sum(-1)
    if aggregation == "l2":
        return per_dim.norm(dim=-1)
    raise AttributionSettingsError(f"Unknown aggregation '{aggregation}'; use 'sum' or 'l2'.")


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise AttributionSettingsError(f"Unknown aggregation '{aggregation}'; use 'sum' (signed) or 'l2'.")


def _as_baseline(baseline: Baseline | str | None) -> Baseline:
    if baseline is None:
        return Baseline("zero")
    return baseline if isinstance(baseline, Baseline) else Baseline(str(baseline))


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


def _result(bundle, s: _Setup, method, scores, per_dim, aggregation, target_value, **extra) -> Attribution:
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


# -- quadrature ----------------------------------------------------------------------------------------------


def quadrature(n_steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
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
    baseline: Baseline | str = "zero",
    n_steps: int = 64,
    method: str = "gausslegendre",
    aggregation: str = "sum",
    progress: Progress | None = None,
) -> Attribution:
    """Integrated gradients on the token-embedding output, one score per prompt token.

    per_dim = (x - b) * sum_j w_j dF/dx(b + alpha_j (x - b)) for the quadrature `method` with `n_steps` nodes
    (1..limits().max_ig_steps). All n_steps interpolated inputs, plus x and b themselves (for the completeness
    check), go through the model in memory-bounded batches. `prompt_or_ids`: a prompt, a Trace, a TokenizedPrompt
    or token ids; `target`: NextTokenTarget / ContrastTarget (None: log-prob of the top-1 token).
    """
    n_steps = _check_steps(n_steps)
    _check_aggregation(aggregation)
    quadrature(n_steps, method)  # checks the method name before any work
    baseline = _as_baseline(baseline)
    s = _setup(bundle, prompt_or_ids, target)
    b = _baseline_embeds(bundle, s.inputs.ids, baseline)  # [pos, d_model]
    per_dim, fx, fb = _gradient_attributions(bundle, s.x, b, *_one_target(s), s.target.kind,
                                             "integrated_gradients", n_steps, method, progress)
    return _result(bundle, s, "integrated_gradients", _aggregate(per_dim[0], aggregation), per_dim[0],
                   aggregation, fx[0], baseline=baseline, baseline_label=_baseline_label(bundle, baseline),
                   baseline_value=float(fb[0]), n_steps=n_steps, quadrature=method)


def _gradient_at_input(bundle, s: _Setup, method: str, progress) -> tuple[float, torch.Tensor]:
    per_dim, fx, _ = _gradient_attributions(bundle, s.x, None, *_one_target(s), s.target.kind, method,
                                            progress=progress)
    return float(fx[0]), per_dim[0]


def saliency(
    bundle: ModelBundle,
    prompt_or_ids,
    target: Target | None = None,
    *,
    aggregation: str = "l2",
    baseline: Baseline | str = "token",
    progress: Progress | None = None,
) -> Attribution:
    """Saliency: |dF/dx| at the input, per token its L2 norm ("l2") or L1 norm ("sum"); always unsigned.

    One forward and one backward. `baseline` is not used by the method; it is kept for the deletion curve.
    """
    _check_aggregation(aggregation)
    s = _setup(bundle, prompt_or_ids, target)
    value, per_dim = _gradient_at_input(bundle, s, "saliency", progress)
    baseline = _as_baseline(baseline)
    return _result(bundle, s, "saliency", _aggregate(per_dim, aggregation), per_dim, aggregation, value,
                   baseline=baseline, baseline_label=_baseline_label(bundle, baseline))


def input_x_gradient(
    bundle: ModelBundle,
    prompt_or_ids,
    target: Target | None = None,
    *,
    aggregation: str = "sum",
    baseline: Baseline | str = "token",
    progress: Progress | None = None,
) -> Attribution:
    """Input x gradient: x * dF/dx at the input (x = token-embedding output), aggregated per token.

    The cheap token-importance score: one forward and one backward. Simplest call, used by the Overview page:
    `input_x_gradient(bundle, "The capital of France is")` scores each token for the model's top-1 next token
    (log-probability); `result.scores` is [pos], `result.to_frame()` has one row per token. Equals integrated
    gradients with one right-Riemann step from the zero baseline. `baseline` only feeds the deletion curve.
    """
    _check_aggregation(aggregation)
    s = _setup(bundle, prompt_or_ids, target)
    value, per_dim = _gradient_at_input(bundle, s, "input_x_gradient", progress)
    baseline = _as_baseline(baseline)
    return _result(bundle, s, "input_x_gradient", _aggregate(per_dim, aggregation), per_dim, aggregation, value,
                   baseline=baseline, baseline_label=_baseline_label(bundle, baseline))


def _replaced_values(
    bundle: ModelBundle,
    x: torch.Tensor,
    b: torch.Tensor,
    masks: torch.Tensor,
    q: torch.Tensor,
    a: torch.Tensor,
    c: torch.Tensor,
    kind: str,
    progress: Progress | None = None,
    what: str = "",
) -> torch.Tensor:
    """F of every target on variants of x: masks [rows, pos] bool (True: that position takes the baseline's
    embedding), targets q, a, c [m] -> [rows, m]. Identical variants are evaluated once; all in batches."""
    m = q.shape[0]
    unique, inverse = torch.unique(masks.bool(), dim=0, return_inverse=True)  # [variants, pos], [rows]
    n = unique.shape[0]

    def make_rows(start: int, stop: int) -> torch.Tensor:
        keep_b = unique[start:stop, :, None].to(x.device)  # [chunk, pos, 1]
        return torch.where(keep_b, b[None], x[None])  # [chunk, pos, d_model]

    values = _evaluate(bundle, n, make_rows, q[None].expand(n, m), a[None].expand(n, m), c[None].expand(n, m),
                       kind, keep=m, progress=progress, what=what)
    return values[inverse]  # [rows, m]


def occlusion(
    bundle: ModelBundle,
    prompt_or_ids,
    target: Target | None = None,
    *,
    baseline: Baseline | str = "token",
    progress: Progress | None = None,
) -> Attribution:
    """Occlusion: score_i = F(x) - F(x with token i's embedding replaced by the baseline's), in F's units.

    The unoccluded input and all pos occluded variants go through the model as memory-bounded batches. Positive:
    the token supports the target; negative: removing it raises F.
    """
    baseline = _as_baseline(baseline)
    s = _setup(bundle, prompt_or_ids, target)
    b = _baseline_embeds(bundle, s.inputs.ids, baseline)
    n_pos = s.x.shape[0]
    masks = torch.cat([torch.zeros(1, n_pos, dtype=torch.bool), torch.eye(n_pos, dtype=torch.bool)])  # [1+pos, pos]
    values = _replaced_values(bundle, s.x, b, masks, *_one_target(s), s.target.kind, progress, "Occlusion")[:, 0]
    return _result(bundle, s, "occlusion", values[0] - values[1:], None, "drop", values[0], baseline=baseline,
                   baseline_label=_baseline_label(bundle, baseline))


def attribute(bundle: ModelBundle, prompt_or_ids, target: Target | None = None, *, method: str,
              aggregation: str = "sum", baseline: Baseline | str = "zero", n_steps: int = 64,
              quadrature_method: str = "gausslegendre", progress: Progress | None = None) -> Attribution:
    """Dispatch to one of METHODS with the settings it uses (the page's single entry point)."""
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


# -- faithfulness: deletion curves ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DeletionCurve:
    """The target metric as the most important tokens are replaced by the baseline, k = 0..pos, against random
    orders of replacement. A faithful attribution makes its curve fall faster than random.

    Fields (pos = prompt tokens):
        method          the attribution method whose order is used
        tokens          [pos] readable prompt tokens
        order           [pos] positions in attribution order (most important first)
        metric_label    "p(␣Paris)" (probability, for log-prob targets) or "logit(a) − logit(b)" (contrast)
        values          [pos + 1] the metric after replacing the first k positions of `order`
        random_values   [n_random, pos + 1] the same for seeded random orders
        aopc            comprehensiveness: mean over k = 1..pos of values[0] - values[k] (higher: more faithful)
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
        n_pos = len(self.tokens)
        if sorted(self.order) != list(range(n_pos)):
            raise ValueError(f"DeletionCurve.order must be a permutation of 0..{n_pos - 1}")
        if tuple(self.values.shape) != (n_pos + 1,):
            raise ValueError(f"DeletionCurve.values has shape {tuple(self.values.shape)}, expected ({n_pos + 1},)")
        if self.random_values.ndim != 2 or self.random_values.shape[1] != n_pos + 1:
            raise ValueError(f"DeletionCurve.random_values has shape {tuple(self.random_values.shape)}, expected "
                             f"(n_random, {n_pos + 1})")

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per (order, k): order ("attribution order" / "random order (mean of n)"), k, value,
        removed (label of the token removed at step k in attribution order; "" for k = 0 and random)."""
        labels = token_labels(self.tokens)
        n = len(self.tokens)
        random_name = f"random order (mean of {self.random_values.shape[0]})"
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
    """Area over the perturbation curve (comprehensiveness): mean over k = 1..n of values[0] - values[k]."""
    if values.shape[-1] < 2:
        return 0.0
    return float((values[..., :1] - values[..., 1:]).mean())


def deletion_curve(
    bundle: ModelBundle,
    attribution: Attribution,
    *,
    baseline: Baseline | str | None = None,
    n_random: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
) -> DeletionCurve:
    """Replace the top-k tokens of `attribution` (descending score) by the baseline, k = 0..pos, and record the
    target probability (log-prob targets) or logit difference (contrast targets); the same for `n_random` random
    orders drawn with `seed`. Every variant goes through the model in memory-bounded batches (duplicates once).

    `baseline` defaults to the attribution's own (GPT-2 has no mask token; replacing keeps positions intact).
    """
    if not 1 <= n_random <= 32:
        raise AttributionSettingsError("The number of random orders must be from 1 to 32.")
    baseline = attribution.baseline if baseline is None else _as_baseline(baseline)
    ids = attribution.token_ids.to(bundle.device)
    x = _embed(bundle, ids)
    b = _baseline_embeds(bundle, ids, baseline)
    n_pos = len(attribution.tokens)
    generator = torch.Generator().manual_seed(int(seed))
    orders = [attribution.order()] + [torch.randperm(n_pos, generator=generator).tolist() for _ in range(n_random)]
    masks = torch.zeros(len(orders), n_pos + 1, n_pos, dtype=torch.bool)  # [order, k, pos]
    for o, order in enumerate(orders):
        for k in range(1, n_pos + 1):
            masks[o, k, order[:k]] = True
    a, c = attribution.target_ids[0], attribution.target_ids[-1]
    values = _replaced_values(bundle, x, b, masks.reshape(-1, n_pos), torch.zeros(1, dtype=torch.long),
                              torch.tensor([a]), torch.tensor([c]), attribution.target_kind, progress,
                              "Deletion curves")[:, 0].reshape(len(orders), n_pos + 1)
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


def faithfulness_frame(curves: Sequence[DeletionCurve]) -> pd.DataFrame:
    """One row per method: AOPC of its deletion order, of random orders, and their difference (higher: the
    attribution finds the tokens the target depends on better than chance)."""
    return pd.DataFrame({
        "method": [c.method for c in curves],
        "method_name": [METHOD_NAMES[c.method] for c in curves],
        "aopc": [c.aopc for c in curves],
        "random_aopc": [c.random_aopc for c in curves],
        "aopc_minus_random": [c.aopc - c.random_aopc for c in curves],
        "metric": [c.metric_label for c in curves],
        "baseline": [c.baseline_label for c in curves],
    })


# -- a continuation, step by step (teacher forcing) ----------------------------------------------------------


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
    aggregation: str = "sum",
    baseline: Baseline | str = "token",
    n_steps: int = 32,
    quadrature_method: str = "gausslegendre",
    progress: Progress | None = None,
) -> ContinuationAttribution:
    """Attribute each token of a continuation (typed, or `n_tokens` greedy tokens, at most
    limits().max_generated_tokens) to every earlier token, with teacher forcing: step t's target is
    log p(continuation[t] | prompt + continuation[:t]).

    All steps share one input sequence (prompt + continuation[:-1]); a causal model's prediction at position p
    sees only positions <= p, so every step's target is read from that one sequence. Gradient methods push
    (step, path point) rows through the model in memory-bounded batches; occlusion evaluates every occluded
    variant once for all steps. Scores of positions after a step's prediction are NaN.
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
        n_in = seq.numel()
        masks = torch.cat([torch.zeros(1, n_in, dtype=torch.bool), torch.eye(n_in, dtype=torch.bool)])
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
