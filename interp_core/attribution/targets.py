"""What is attributed: the target function F on the next-token logits (a log-probability or a logit contrast).

    NextTokenTarget(t)    F = log p(t | prompt)            [nats]   (t = None: the model's top-1 prediction)
    ContrastTarget(a, b)  F = logit(a) - logit(b)          [logits] ("why a rather than b")

    >>> target_from_text(bundle, " Paris", " London")     # ContrastTarget(id of " Paris", id of " London")
    >>> contrast_suggestion(bundle, trace.last_logits)    # ("␣Paris", "␣London"): the model's top two
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp_core.attribution.options import AttributionSettingsError
from interp_core.loading import ModelBundle
from interp_core.tokens import readable_token, single_token_id, token_texts


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
TARGET_MODES = {"top1": "The model's top-1 prediction", "token": "A token I pick",
                "contrast": "Contrast: why A rather than B"}  # how a target is asked for: top-1, one token, A vs B


def as_typed(text: str) -> str:
    """Text as the user meant it: the visible-space marks of the token display (␣ space, ↵ newline, ⇥ tab) count
    as the characters they show, so a token copied from a chart can be typed back as a target."""
    return text.replace("␣", " ").replace("↵", "\n").replace("⇥", "\t")


def missing_target_text(mode: str, token_a: str, token_b: str) -> str | None:
    """What to ask for before a target of TARGET_MODES `mode` can be made from the typed texts, or None."""
    if mode in ("token", "contrast") and not token_a:
        return "Type the target token (one token, usually with a leading space, e.g. ' Paris')."
    if mode == "contrast" and not token_b:
        return "Type token B, the alternative the model could have predicted instead of A."
    return None


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


def contrast_suggestion(bundle: ModelBundle, last_logits: torch.Tensor) -> tuple[str, str]:
    """The question a contrast usually asks, why the model's first choice rather than its second: the readable
    texts of the two highest of `last_logits` [d_vocab], in that order."""
    first, second = token_texts(bundle, last_logits.topk(2).indices.tolist())
    return readable_token(first), readable_token(second)


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
    picked = logits[rows, q].float()  # [rows, m, d_vocab] the next-token logits each target reads, in float32
    if kind == "logprob":
        return torch.log_softmax(picked, dim=-1).gather(-1, a[..., None])[..., 0]
    return picked.gather(-1, a[..., None])[..., 0] - picked.gather(-1, b[..., None])[..., 0]
