"""Model components applied to recorded activations: per-head outputs, the final norm, the unembedding.

Shared by the logit lens, direct logit attribution and patching.

    >>> heads = head_outputs(bundle, trace, layer=0)          # [pos, head, d_model]
    >>> logits = unembed(bundle, apply_final_norm(bundle, trace.resid[-1]))   # every position's logits
    >>> logits_at(bundle, trace, 3)                                             # == logits[3]
"""

from __future__ import annotations

import torch

from interp_core.loading import ModelBundle
from interp_core.trace import Trace


def W_O(bundle: ModelBundle, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
    """The output projection of `layer` split by head, [head, d_head, d_model], float32 on CPU."""
    return bundle.adapter.W_O(bundle.model, layer).detach().to("cpu", torch.float32)


def b_O(bundle: ModelBundle, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
    """The output projection bias of `layer`, [d_model] (zeros when there is none), float32 on CPU."""
    return bundle.adapter.b_O(bundle.model, layer).detach().to("cpu", torch.float32)


def head_outputs(bundle: ModelBundle, trace: Trace, layer: int) -> torch.Tensor:
    """What each head of `layer` writes to the residual stream: z_h @ W_O[h], shape [pos, head, d_model].

    Summing over heads and adding b_O(bundle, layer) gives trace.attn_out[layer]. Float32 on CPU.
    """
    z = trace.head_z[layer]  # [pos, head, d_head]
    return torch.einsum("phd,hdm->phm", z, W_O(bundle, layer))  # [pos, head, d_model]


def apply_final_norm(bundle: ModelBundle, resid: torch.Tensor) -> torch.Tensor:
    """The model's final norm applied to `resid` [..., d_model], its statistics computed on `resid` itself.

    Runs on the model's device and returns on `resid`'s device; keeps gradients flowing into `resid`.
    Holds bundle.lock: a trace running in another thread has a hook on this same module.
    """
    norm = bundle.adapter.final_norm(bundle.model)
    param = next(norm.parameters(), None)
    dtype = param.dtype if param is not None else resid.dtype
    with bundle.lock:
        normed = norm(resid.to(bundle.device, dtype))
    return normed.to(resid.device, resid.dtype)


def unembed(bundle: ModelBundle, x: torch.Tensor) -> torch.Tensor:
    """Logits x @ W_U.T (+ bias) for x [..., d_model] (already normed), shape [..., d_vocab], on x's device."""
    weight = bundle.adapter.unembed_weight(bundle.model)  # [d_vocab, d_model]
    bias = bundle.adapter.unembed_bias(bundle.model)  # [d_vocab] or None
    logits = torch.nn.functional.linear(x.to(weight.device, weight.dtype), weight, bias)
    return logits.to(x.device, x.dtype)


def resid_to_logits(bundle: ModelBundle, resid: torch.Tensor) -> torch.Tensor:
    """unembed(apply_final_norm(resid)): the logit lens of a residual stream [..., d_model] -> [..., d_vocab]."""
    return unembed(bundle, apply_final_norm(bundle, resid))


def logits_at(bundle: ModelBundle, trace: Trace, pos: int) -> torch.Tensor:
    """The model's logits [d_vocab] after position `pos` of `trace` (negative counts from the end): the recorded
    output at the last position, else the final norm and unembedding of the last block's output there."""
    if pos in (-1, trace.n_pos - 1):
        return trace.last_logits
    return resid_to_logits(bundle, trace.resid[-1, pos])
