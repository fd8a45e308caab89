"""Steering by one SAE feature through the activation API (an `activations.add` edit at the SAE's hook), beside the
unsteered run: the next-token distribution, its KL divergence and a greedy continuation of each.

    add:    x <- x + amount * W_dec[latent]                      (SAELens' and Neuronpedia's steering vector)
    clamp:  x <- x + (amount - f_latent(x)) * d_latent           (set the feature's activation to `amount`)

at the chosen prompt positions, where f = sae.encode on the clean activation there and d_latent what one unit of
the latent adds to the SAE's reconstruction, decode(e_latent) - decode(0) (W_dec[latent], or that over its norm
for a TopK SAE with rescale_acts_by_decoder_norm). The continuation is generated one token at a time, each step
one `activations.run` over the whole sequence (prompts are short, so no KV cache), capped at the model's context.

    >>> steering = steer(bundle, sae, ids, latent=7, mode="add", amount=8.0, positions=[3, 4])
    >>> steering.kl, steering.steered_continuation
    >>> steering.to_frame()      # token, unsteered and steered probability
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core import activations
from interp_core.features.card import FeatureError, check_latent
from interp_core.features.sae import SAE
from interp_core.lens.lens import decode_ids
from interp_core.loading import ModelBundle

MODES = ("add", "clamp")


class SteeringError(FeatureError):
    """Steering settings that cannot be run: a mode, position, amount or prompt the user must change."""


@dataclass(frozen=True, eq=False)
class Steering:
    """The unsteered and steered next-token distributions after a prompt, and a greedy continuation of each."""

    latent: int
    mode: str  # one of MODES
    amount: float  # add: alpha; clamp: the value the feature is set to
    positions: tuple[int, ...]  # prompt positions steered
    steer_generated: bool  # whether generated positions were steered too (add mode only)
    token_ids: torch.LongTensor  # [token] the union of both distributions' top tokens
    tokens: tuple[str, ...]  # [token] readable
    unsteered_probs: torch.Tensor  # [token]
    steered_probs: torch.Tensor  # [token]
    kl: float  # KL(unsteered || steered) over the whole vocabulary at the last prompt position, nats
    unsteered_continuation: tuple[str, ...]  # [new token] readable
    steered_continuation: tuple[str, ...]  # [new token] readable

    def __post_init__(self) -> None:
        n = self.token_ids.shape[0]
        if len(self.tokens) != n or self.unsteered_probs.shape != (n,) or self.steered_probs.shape != (n,):
            raise ValueError(f"Steering: {n} token ids, {len(self.tokens)} tokens, probabilities "
                             f"{tuple(self.unsteered_probs.shape)} and {tuple(self.steered_probs.shape)}")

    def to_frame(self) -> pd.DataFrame:
        """One row per token: token, token_id, unsteered, steered (probabilities), change (steered - unsteered)."""
        return pd.DataFrame({"token": list(self.tokens), "token_id": self.token_ids.tolist(),
                             "unsteered": self.unsteered_probs.tolist(), "steered": self.steered_probs.tolist(),
                             "change": (self.steered_probs - self.unsteered_probs).tolist()})


def _check(bundle: ModelBundle, ids: torch.Tensor, mode: str, amount: float, positions: Sequence[int],
           n_new_tokens: int) -> list[int]:
    """The checked positions, sorted and without repeats; raises SteeringError with a sentence."""
    if mode not in MODES:
        raise SteeringError(f"Unknown steering mode {mode!r}; choose one of {', '.join(MODES)}.")
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not math.isfinite(amount):
        raise SteeringError(f"The steering amount must be a finite number, not {amount!r}.")
    if ids.dim() != 1 or not 1 <= ids.shape[0] <= bundle.n_ctx:
        raise SteeringError(f"The prompt must be 1 to {bundle.n_ctx} tokens long (got {ids.shape[0]}).")
    positions = [int(p) for p in positions]
    if not positions:
        raise SteeringError("Choose at least one prompt position to steer at.")
    bad = [p for p in positions if not 0 <= p < ids.shape[0]]
    if bad:
        raise SteeringError(f"Position {bad[0]} is not in the prompt; its positions are 0 to {ids.shape[0] - 1}.")
    if n_new_tokens < 0:
        raise SteeringError(f"The number of tokens to generate cannot be negative (got {n_new_tokens}).")
    return sorted(set(positions))


def steering_vectors(bundle: ModelBundle, sae: SAE, ids: torch.Tensor, latent: int, mode: str, amount: float,
                     positions: list[int]) -> torch.Tensor:
    """[len(positions), d_in] float32: what steering adds to the activation at each chosen position (module
    docstring); clamp reads f_latent from one clean pass over the prompt ids [pos]."""
    if mode == "add":
        return (amount * sae.W_dec[latent].float()).expand(len(positions), -1)
    with torch.no_grad():
        clean = activations.run(bundle, ids.reshape(1, -1), record=[sae.hook_name],
                                fused_attention=True).acts[sae.hook_name][0, positions]  # [n, d_in]
    f = sae.encode(clean.float().cpu())[:, latent]  # [n]
    unit = torch.zeros(sae.d_sae)
    unit[latent] = 1.0
    direction = sae.decode(unit) - sae.decode(torch.zeros(sae.d_sae))  # [d_in]
    return (amount - f)[:, None] * direction


def steering_edit(vectors: torch.Tensor, positions: list[int], generated: range | None = None):
    """The `activations.add` edit for the SAE's hook: vectors [len(positions), d_in] at `positions`, and the first
    row (add mode's one vector) also at every position in `generated`."""
    if not generated:
        return activations.add(vectors, pos=positions)
    extra = vectors[:1].expand(len(generated), -1)
    return activations.add(torch.cat([vectors, extra]), pos=positions + list(generated))


def _greedy(bundle: ModelBundle, ids: torch.Tensor, n_new: int, edit_at) -> tuple[torch.Tensor, list[int]]:
    """(next-token logits [d_vocab] after ids [pos], float32 on CPU; `n_new` greedily generated ids), each step
    one run over the sequence so far with the edits `edit_at(length)`."""
    sequence, first, new = ids.tolist(), None, []
    for _ in range(max(n_new, 1)):
        with torch.no_grad():
            logits = activations.run(bundle, torch.tensor([sequence]), edits=edit_at(len(sequence)),
                                     fused_attention=True).logits[0, -1].float().cpu()  # [d_vocab]
        first = logits if first is None else first
        if len(new) < n_new:
            new.append(int(logits.argmax()))
            sequence.append(new[-1])
    return first, new


def steer(bundle: ModelBundle, sae: SAE, ids: torch.Tensor, latent: int, mode: str, amount: float,
          positions: Sequence[int], n_new_tokens: int = 10, top: int = 10, steer_generated: bool = True) -> Steering:
    """Steer prompt ids [pos] by `latent` (module docstring) at `positions` and compare with the unsteered run:
    the union of both runs' `top` next tokens with their probabilities, KL(unsteered || steered) at the last
    position, and `n_new_tokens` greedy tokens each (fewer when the model's context ends). The steered
    continuation keeps the edit at the chosen prompt positions; with `steer_generated` (add mode only: a clamp
    needs the feature's clean value, which a generated position does not have) also at every generated position.

    Raises SteeringError (a UserInputError) for an unknown mode, no positions, a position outside the prompt, an
    amount that is not a finite number, or a prompt longer than the model's context; FeatureError for a latent
    the SAE does not have."""
    ids, latent = ids.detach().cpu().long(), check_latent(sae, latent)
    positions = _check(bundle, ids, mode, amount, positions, n_new_tokens)
    vectors = steering_vectors(bundle, sae, ids, latent, mode, amount, positions)
    n_new, n_prompt = min(n_new_tokens, bundle.n_ctx - ids.shape[0]), ids.shape[0]
    generated = steer_generated and mode == "add"

    def edit_at(length: int) -> dict:
        return {sae.hook_name: steering_edit(vectors, positions, range(n_prompt, length) if generated else None)}

    clean_logits, clean_new = _greedy(bundle, ids, n_new, lambda length: None)
    steered_logits, steered_new = _greedy(bundle, ids, n_new, edit_at)
    p_log, q_log = clean_logits.double().log_softmax(-1), steered_logits.double().log_softmax(-1)
    kl = float((p_log.exp() * (p_log - q_log)).sum())
    p, q = p_log.exp().float(), q_log.exp().float()
    k = min(top, p.shape[0])
    union = torch.cat([p.topk(k).indices, q.topk(k).indices]).unique()
    token_ids = union[torch.maximum(p[union], q[union]).argsort(descending=True, stable=True)]
    names = decode_ids(bundle, torch.cat([token_ids, torch.tensor(clean_new + steered_new, dtype=torch.long)]))
    return Steering(latent=latent, mode=mode, amount=float(amount), positions=tuple(positions),
                    steer_generated=generated, token_ids=token_ids, tokens=tuple(names[i] for i in token_ids.tolist()),
                    unsteered_probs=p[token_ids], steered_probs=q[token_ids], kl=kl,
                    unsteered_continuation=tuple(names[i] for i in clean_new),
                    steered_continuation=tuple(names[i] for i in steered_new))
