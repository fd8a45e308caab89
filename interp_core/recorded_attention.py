"""The attention implementation every model is loaded with (`IMPLEMENTATION`): transformers' eager arithmetic.

Outside any hook it computes what transformers' eager attention computes (scores * scaling + the additive causal
mask, softmax in float32, grouped-query key/value heads repeated), so `output_attentions=True` and gradients work
as with "eager". Without gradients it does that arithmetic in place in one [batch, head, pos, pos] tensor per
layer instead of four (exact patching's batches, the head detectors, a layer's pattern on demand), in float32
whatever the model's precision: a half-precision model's scores, probabilities and their product with the values
are float32 (the output is rounded to the model's dtype), so the patterns hooks see are not rounded to bfloat16
and no half-precision copy of them is made (transformers' eager attention keeps bfloat16 scores, float32
probabilities and a bfloat16 copy: about twice the memory of one float32 tensor). With gradients the arithmetic is
transformers' own: scores in the model's dtype, probabilities in float32, their product in the model's dtype.

`pattern_hooks({layer: fn})` hands each listed layer's probabilities [batch, head, query_pos, key_pos] to
`fn(weights) -> weights` (TransformerLens' hook_pattern: record or replace them); `interp_core.activations` is
its one user. Inside `attention_weights_unused()` (gradient passes, probing features) torch's fused
scaled-dot-product kernel computes the same output (up to float rounding, 1e-6) without materialising the
probabilities, so a backward pass keeps none of them (about 48 MiB a layer less for GPT-2 small at 1,024 tokens);
the returned weights are None. Exact patching stays eager: the fused kernel does not give bit-equal rows within a
batch (tiny Llama: 4e-6 apart), which its exact 0 and 1 depend on.

Any argument this implementation does not honour (logit soft-capping, attention sinks, a sliding window shorter
than the sequence, or anything else it does not know) raises UnsupportedArchitectureError instead of being
dropped. Both modes are per thread of execution (ContextVars): other requests' forward passes are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from interp_core.errors import UnsupportedArchitectureError

IMPLEMENTATION = "interp_eager"
HONOURED = {"use_cache", "position_ids", "cache_position", "output_attentions", "output_hidden_states",
            "is_causal", "return_dict"}  # arguments that do not change the arithmetic here

PatternHook = Callable[[torch.Tensor], torch.Tensor]
_pattern_hooks: ContextVar[dict[int, PatternHook] | None] = ContextVar("attention_pattern_hooks", default=None)
_weights_unused: ContextVar[bool] = ContextVar("attention_weights_unused", default=False)


@contextmanager
def pattern_hooks(hooks: dict[int, PatternHook]) -> Iterator[None]:
    """Inside the block, layer l's probabilities [batch, head, query_pos, key_pos] go through hooks[l]."""
    token = _pattern_hooks.set({**(_pattern_hooks.get() or {}), **hooks})
    try:
        yield
    finally:
        _pattern_hooks.reset(token)


@contextmanager
def attention_weights_unused() -> Iterator[None]:
    """Forward passes inside the block compute attention with torch's fused kernel and return no weights."""
    token = _weights_unused.set(True)
    try:
        yield
    finally:
        _weights_unused.reset(token)


def _check_arguments(module: nn.Module, key_len: int, kwargs: dict) -> None:
    for name, value in kwargs.items():
        if name in HONOURED or value is None:
            continue
        if name == "sliding_window" and isinstance(value, int) and key_len <= value:
            continue  # a window longer than the sequence changes nothing
        raise UnsupportedArchitectureError(
            f"This model's attention ({type(module).__name__}) uses '{name}' = {value!r}, which the workbench's "
            "attention does not implement, so its patterns and outputs would be wrong. Pick a model of a "
            "supported kind (GPT-2, GPT-NeoX, Llama-style without soft-capping, sinks or short sliding windows).")


def recorded_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                       **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' eager attention on [batch, head, pos, d_head] inputs -> (output [batch, pos, head, d_head],
    probabilities [batch, head, query_pos, key_pos], or None inside attention_weights_unused())."""
    _check_arguments(module, key.shape[-2], kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: each key/value head serves `groups`
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    mask = None if attention_mask is None else attention_mask[..., : key.shape[-2]]
    hook = (_pattern_hooks.get() or {}).get(getattr(module, "layer_idx", None))
    if hook is None and _weights_unused.get():
        output = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                            dropout_p=dropout if module.training else 0.0)
        return output.transpose(1, 2).contiguous(), None
    in_place = not torch.is_grad_enabled()  # no backward: one float32 tensor, in place, in any precision
    if in_place:
        weights = torch.matmul(query.float(), key.float().transpose(2, 3)).mul_(scaling)
        if mask is not None:
            weights.add_(mask)
        torch.softmax(weights, dim=-1, out=weights)
    else:
        weights = torch.matmul(query, key.transpose(2, 3)) * scaling
        if mask is not None:
            weights = weights + mask
        weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32)  # float32 in any precision
    if hook is not None:
        weights = hook(weights)  # float32 for hook_pattern (rounded to bfloat16 a row's sum drifts by 4e-3)
    probs, values = (weights, value.float()) if in_place else (weights.to(value.dtype), value)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(dropped, values).to(value.dtype).transpose(1, 2).contiguous(), weights


AttentionInterface.register(IMPLEMENTATION, recorded_attention)
AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)
