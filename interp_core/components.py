"""Model components applied to recorded activations: per-head outputs, the final norm, the unembedding.

Shared by the logit lens, direct logit attribution and patching.

    >>> heads = head_outputs(bundle, trace, layer=0)          # [pos, head, d_model]
    >>> logits = unembed(bundle, apply_final_norm(bundle, trace.resid[-1]))   # every position's logits
    >>> logits_at(bundle, trace, 3)                                             # == logits[3]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch
from torch import nn

from interp_core.errors import UnsupportedArchitectureError
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


@dataclass(frozen=True, eq=False)
class NormForm:
    """A norm as arithmetic on its weights: LayerNorm ((x - mean x) / s * g + b, s = sqrt(var x + eps)) or RMSNorm
    (x / s * g, s = sqrt(mean x^2 + eps)), float32 on CPU. Which one a model's final norm is, is measured, not
    read off its class name (`final_norm_form`)."""

    centre: bool  # LayerNorm subtracts the mean; RMSNorm does not
    weight: torch.Tensor  # [d_model] g
    bias: torch.Tensor  # [d_model] b (zeros for RMSNorm)
    eps: float

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """s for each vector of x [..., d_model] -> [..., 1] (float32)."""
        x = x.float()
        if self.centre:
            return torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + self.eps)
        return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The norm of x [..., d_model] with its statistics computed on x itself, in x's dtype and device."""
        weight, bias = self.weight.to(x.device), self.bias.to(x.device)
        if self.centre:
            return nn.functional.layer_norm(x.float(), weight.shape, weight, bias, self.eps).to(x.dtype)
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (weight * normed).to(x.dtype)


_forms: WeakKeyDictionary = WeakKeyDictionary()  # norm module -> its NormForm
_forms_lock = threading.Lock()


def final_norm_form(bundle: ModelBundle) -> NormForm:
    """The model's final norm as a `NormForm` (see `norm_form`)."""
    return norm_form(bundle, bundle.adapter.final_norm(bundle.model))


def norm_form(bundle: ModelBundle, norm: nn.Module) -> NormForm:
    """`norm` (a module of the bundle's model) as a `NormForm`: the form that reproduces the module's own output
    on probe vectors (within 1e-5), measured once per module. Raises UnsupportedArchitectureError when neither
    form does (another kind of norm)."""
    with _forms_lock:
        form = _forms.get(norm)
    if form is None:
        form = _measured_form(bundle, norm)
        with _forms_lock:
            _forms[norm] = form
    return form


def _measured_form(bundle: ModelBundle, norm: nn.Module) -> NormForm:
    d = bundle.d_model
    weight = getattr(norm, "weight", None)
    bias = getattr(norm, "bias", None)
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    weight = torch.ones(d) if weight is None else weight.detach().to("cpu", torch.float32)
    bias = torch.zeros(d) if bias is None else bias.detach().to("cpu", torch.float32)
    probe = torch.randn(3, d, generator=torch.Generator().manual_seed(0)) * 3 + 1  # a non-zero mean on purpose
    with bundle.lock, torch.no_grad():  # another request may have a hook on this module
        expected = norm(probe.to(bundle.device, weight.dtype)).to("cpu", torch.float32)
    for centre in (True, False):
        form = NormForm(centre=centre, weight=weight, bias=bias if centre else torch.zeros(d), eps=float(eps or 0.0))
        if eps is not None and torch.allclose(form(probe), expected, atol=1e-5, rtol=1e-5):
            return form
    raise UnsupportedArchitectureError(
        f"A norm of this model ({type(norm).__name__}) is neither a LayerNorm nor an RMSNorm on a probe vector, so "
        "the logit lens, direct logit attribution and patching metrics would be wrong. Pick a model of a "
        "supported kind.")


def apply_final_norm(bundle: ModelBundle, resid: torch.Tensor) -> torch.Tensor:
    """The model's final norm applied to `resid` [..., d_model], its statistics computed on `resid` itself; keeps
    gradients flowing into `resid`. Arithmetic on the norm's weights (no module call, so no lock)."""
    return final_norm_form(bundle)(resid)


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
