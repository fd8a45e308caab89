"""Model components applied to recorded activations: per-head outputs, the final norm, the unembedding.

Shared by the logit lens, direct logit attribution, patching and the circuit detectors; each chore is written
once here: a head's output z_h @ W_O[h] (`head_outputs`), a norm as arithmetic on its weights (`NormForm`), and
a norm's linear part with its scale frozen (`NormForm.linear`, `final_norm_linear`).

    >>> heads = head_outputs(bundle, trace, layer=0)          # [pos, head, d_model]
    >>> logits = unembed(bundle, apply_final_norm(bundle, trace.resid[-1]))   # every position's logits
    >>> logits_at(bundle, trace, 3)                                             # == logits[3]
    >>> lin = final_norm_linear(bundle, trace.resid[-1, 3])     # the final norm frozen at that vector's scale
    >>> lin(trace.resid[-1, 3]) + lin.bias                      # == apply_final_norm(bundle, trace.resid[-1, 3])
    >>> lin(heads[3])                                           # [head, d_model] each head's share of it
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch
from torch import nn

from interp_core.adapters.base import stored
from interp_core.errors import UnsupportedArchitectureError
from interp_core.loading import ModelBundle
from interp_core.trace import Trace


def W_O(bundle: ModelBundle, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
    """The output projection of `layer` split by head, [head, d_head, d_model], float32 on CPU."""
    return bundle.adapter.W_O(bundle.model, layer).detach().to("cpu", torch.float32)


def b_O(bundle: ModelBundle, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
    """The output projection bias of `layer`, [d_model] (zeros when there is none), float32 on CPU."""
    return bundle.adapter.b_O(bundle.model, layer).detach().to("cpu", torch.float32)


def head_outputs(bundle: ModelBundle, z: Trace | torch.Tensor, layer: int) -> torch.Tensor:
    """What each head of `layer` writes to the residual stream: z_h @ W_O[h], float32 on CPU.

    `z` is the layer's z [..., head, d_head] (any leading dimensions: [pos, ...], [batch, pos, ...], or one
    position's [head, d_head]), or a Trace, whose head_z[layer] [pos, head, d_head] is used. Returns
    [..., head, d_model]; for a trace, summing over heads and adding b_O(bundle, layer) gives trace.attn_out[layer].
    """
    if isinstance(z, Trace):
        z = z.head_z[layer]  # [pos, head, d_head]
    return torch.einsum("...hd,hdm->...hm", z.float(), W_O(bundle, layer))  # [..., head, d_model]


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

    def linear(self, x: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The norm's linear part with its scale s frozen, x [..., d_model] -> (x - mean x) / s * g for LayerNorm,
        x / s * g for RMSNorm, in x's dtype and device; the bias b is left out.

        With s measured on a sum of components (`scale`), the components' images plus b add up to the norm of the
        sum exactly (direct logit attribution). With s = 1 it is the map up to a positive factor, which changes
        no ranking and no sign (the copying scores); applied to the identity matrix it is that map as a
        [d_model, d_model] matrix acting on row vectors (the OV circuit).
        """
        if self.centre:
            x = x - x.mean(-1, keepdim=True)
        return x / scale * self.weight.to(x.device, x.dtype)

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
    weight, bias = stored(norm, "weight"), stored(norm, "bias")
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    weight = torch.ones(d) if weight is None else weight.detach().to("cpu", torch.float32)
    bias = torch.zeros(d) if bias is None else bias.detach().to("cpu", torch.float32)
    probe = torch.randn(3, d, generator=torch.Generator().manual_seed(0)) * 3 + 1  # a non-zero mean on purpose
    probe = probe.to(bundle.dtype).float()  # exact in the module's precision
    with bundle.lock, torch.no_grad():  # another request may have a hook on this module
        expected = norm(probe.to(bundle.device, bundle.dtype)).to("cpu", torch.float32)
    tolerance = max(1e-5, 4 * torch.finfo(bundle.dtype).eps)  # a half-precision module rounds its output
    for centre in (True, False):
        form = NormForm(centre=centre, weight=weight, bias=bias if centre else torch.zeros(d), eps=float(eps or 0.0))
        if eps is not None and torch.allclose(form(probe), expected, atol=tolerance, rtol=tolerance):
            return form
    raise UnsupportedArchitectureError(
        f"A norm of this model ({type(norm).__name__}) is neither a LayerNorm nor an RMSNorm on a probe vector, so "
        "the logit lens, direct logit attribution and patching metrics would be wrong. Pick a model of a "
        "supported kind.")


@dataclass(frozen=True, eq=False)
class FinalNormLinear:
    """The final norm frozen at the scale of one actual residual vector: x -> form.linear(x, scale).

    Applying it to each component and adding `bias` reproduces final_norm(sum of components) exactly.
    """

    form: NormForm  # the final norm's kind and weights
    scale: float  # s: sqrt(var + eps) or sqrt(mean square + eps) of the actual final residual

    @property
    def bias(self) -> torch.Tensor:
        """b [d_model] (zeros for RMSNorm)."""
        return self.form.bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_model] -> its share of the normed vector, [..., d_model]."""
        return self.form.linear(x, self.scale)


def final_norm_linear(bundle: ModelBundle, resid: torch.Tensor) -> FinalNormLinear:
    """Freeze the model's final norm at the scale of `resid` [d_model] (the actual last residual vector).

    The norm's kind (LayerNorm or RMSNorm) is measured on probe vectors (`final_norm_form`), which raises
    UnsupportedArchitectureError for any other final norm.
    """
    form = final_norm_form(bundle)
    return FinalNormLinear(form=form, scale=float(form.scale(resid.detach().to("cpu", torch.float32))))


def apply_final_norm(bundle: ModelBundle, resid: torch.Tensor) -> torch.Tensor:
    """The model's final norm applied to `resid` [..., d_model], its statistics computed on `resid` itself; keeps
    gradients flowing into `resid`. Arithmetic on the norm's weights (no module call, so no lock)."""
    return final_norm_form(bundle)(resid)


UNEMBED_ROWS_PER_CHUNK = 8192  # half-precision unembedding rows upcast at a time (GPT-2 small: 24 MiB in float32)


def unembed(bundle: ModelBundle, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
    """Logits x @ W_U.T (+ b_U with `with_bias`) for x [..., d_model] (already normed), [..., d_vocab] in
    float32 on x's device.

    Half-precision weights are upcast a block of vocabulary rows at a time, so the logits are never rounded to
    the weights' precision (bfloat16 keeps 3 significant digits: a logit of 20 would move in steps of 0.125)."""
    weight = bundle.adapter.unembed_weight(bundle.model)  # [d_vocab, d_model]
    bias = bundle.adapter.unembed_bias(bundle.model) if with_bias else None  # [d_vocab] or None
    device, x = x.device, x.to(weight.device, torch.float32)
    if weight.dtype == torch.float32:
        return torch.nn.functional.linear(x, weight, bias).to(device)
    step = UNEMBED_ROWS_PER_CHUNK
    return torch.cat([torch.nn.functional.linear(x, weight[i:i + step].float(),
                                                 None if bias is None else bias[i:i + step].float())
                      for i in range(0, weight.shape[0], step)], dim=-1).to(device)


def resid_to_logits(bundle: ModelBundle, resid: torch.Tensor) -> torch.Tensor:
    """unembed(apply_final_norm(resid)): the logit lens of a residual stream [..., d_model] -> [..., d_vocab]."""
    return unembed(bundle, apply_final_norm(bundle, resid))


def logits_at(bundle: ModelBundle, trace: Trace, pos: int) -> torch.Tensor:
    """The model's logits [d_vocab] after position `pos` of `trace` (negative counts from the end): the recorded
    output at the last position, else the final norm and unembedding of the last block's output there."""
    if pos in (-1, trace.n_pos - 1):
        return trace.last_logits
    return resid_to_logits(bundle, trace.resid[-1, pos])
