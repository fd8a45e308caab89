"""Eager attention that can write its probabilities straight into a caller's tensor.

Every model is loaded with this attention implementation (`IMPLEMENTATION`). Outside a recording it computes
what transformers' eager attention computes (scores * scaling + the additive causal mask, softmax in float32,
grouped-query key/value heads repeated), so `output_attentions=True` and gradients work as with "eager".
Without gradients it does that arithmetic in place in one [batch, head, pos, pos] tensor per layer instead of
four (exact patching's batches, the head detectors).

    >>> attention = torch.empty(n_layers, n_heads, n_pos, n_pos)
    >>> with recording_attention_into(attention) as layers_written, torch.no_grad():
    ...     model(ids)                                      # one sequence: ids is [1, pos]

Inside the block a forward pass over one sequence computes each layer's scores in attention[layer] and turns
them into probabilities there, in place: no per-layer temporaries, nothing left for transformers to collect
and no copy afterwards. For GPT-2 small at 1,024 tokens that is 576 MiB written once instead of about four
times (see bench/trace_bench.py).

Analyses that never read the probabilities (the gradient attributions, attribution patching, probing's feature
extraction) run inside `attention_weights_unused()`: there torch's fused scaled-dot-product kernel computes the
same output (up to float rounding, 1e-6) without materialising [head, pos, pos] probabilities, and a backward
pass keeps none of them; the returned weights are None. At 1,024 tokens on GPT-2 small a backward pass then
saves about 48 MiB less per layer, and on CPUs the fused kernel is also faster. Exact patching stays eager: the
fused kernel does not give bit-equal rows within a batch (tiny Llama: 4e-6 apart), which its exact 0 and 1
depend on.

Both modes are per thread of execution (ContextVars), so forward passes of other requests on the same shared
model are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

IMPLEMENTATION = "interp_eager"

_recording: ContextVar[tuple[torch.Tensor, set[int]] | None] = ContextVar("attention_recording", default=None)
_weights_unused: ContextVar[bool] = ContextVar("attention_weights_unused", default=False)


@contextmanager
def recording_attention_into(attention: torch.Tensor) -> Iterator[set[int]]:
    """Write the attention probabilities of the forward passes inside the block into `attention`
    [layer, head, query_pos, key_pos]; yields the set of layer indices written so far."""
    written: set[int] = set()
    token = _recording.set((attention, written))
    try:
        yield written
    finally:
        _recording.reset(token)


@contextmanager
def attention_weights_unused() -> Iterator[None]:
    """Forward passes inside the block compute attention with torch's fused kernel and return no weights."""
    token = _weights_unused.set(True)
    try:
        yield
    finally:
        _weights_unused.reset(token)


def recorded_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                       **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager attention on [batch, head, pos, d_head] inputs -> (output [batch, pos, head, d_head],
    probabilities [batch, head, query_pos, key_pos]); in place in the recording's slot when one is active, and
    None inside attention_weights_unused()."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: each key/value head serves `groups`
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    mask = None if attention_mask is None else attention_mask[..., : key.shape[-2]]
    slot = _recording_slot(module, query, key.shape[-2])
    if slot is None and _weights_unused.get():
        output = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                            dropout_p=dropout if module.training else 0.0)
        return output.transpose(1, 2).contiguous(), None
    if slot is None and not torch.is_grad_enabled() and query.dtype == torch.float32:
        slot = query.new_empty(*query.shape[:3], key.shape[-2])  # no backward pass: one tensor, updated in place
    if slot is not None:  # same arithmetic, written into the caller's tensor (or our own, without gradients)
        weights = torch.matmul(query, key.transpose(2, 3), out=slot).mul_(scaling)
        if mask is not None:
            weights.add_(mask)
        torch.softmax(weights, dim=-1, out=weights)
    else:
        weights = torch.matmul(query, key.transpose(2, 3)) * scaling
        if mask is not None:
            weights = weights + mask
        weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    dropped = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(dropped, value).transpose(1, 2).contiguous(), weights


def _recording_slot(module: nn.Module, query: torch.Tensor, key_len: int) -> torch.Tensor | None:
    """This layer's slot [1, head, query_pos, key_pos] of the active recording, when it can take this call."""
    recording = _recording.get()
    layer = getattr(module, "layer_idx", None)
    if recording is None or layer is None or query.shape[0] != 1 or torch.is_grad_enabled():
        return None
    attention, written = recording
    slot = attention[layer].unsqueeze(0)
    if slot.dtype != query.dtype or slot.device != query.device or slot.shape[1:] != (*query.shape[1:3], key_len):
        return None
    written.add(layer)
    return slot


AttentionInterface.register(IMPLEMENTATION, recorded_attention)
AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)
