"""Architecture adapters: one small class per model family mapping its modules to one set of names.

Every analysis reaches into a model only through an adapter, so adding a family means writing one subclass and
registering it in `ADAPTERS`.

    >>> adapter = adapter_for(model)            # GPT2LMHeadModel -> GPT2Adapter
    >>> adapter.W_O(model, 0).shape             # [head, d_head, d_model]
    >>> adapter.W_V(model, 0).shape             # [kv_head, d_model, d_head] (kv_head < head under GQA)

Weights come in TransformerLens layouts (row vectors: q = x @ W_Q[h] + b_Q[h], the head adds z_h @ W_O[h], the
MLP computes act(x @ W_in + b_in) @ W_out + b_out), read from the model's own parameters (views where the layout
allows, so never write into them). x is the output of the block's norm (`attn_norm`, `mlp_norm`); nothing is
folded in. Every family's recomputation is checked against its forward in tests/test_adapter_weights.py.
"""

from __future__ import annotations

from torch import nn

from interp_core.adapters.base import ArchitectureAdapter, in_out_weight
from interp_core.adapters.families import GPT2Adapter, GPTNeoXAdapter, LlamaAdapter
from interp_core.errors import UnsupportedArchitectureError

__all__ = ["ADAPTERS", "ArchitectureAdapter", "GPT2Adapter", "GPTNeoXAdapter", "LlamaAdapter", "adapter_for",
           "adapter_for_class_name", "in_out_weight", "supported_architectures", "unsupported_message"]

ADAPTERS: dict[str, type[ArchitectureAdapter]] = {
    "GPT2LMHeadModel": GPT2Adapter,
    "GPTNeoXForCausalLM": GPTNeoXAdapter,
    "LlamaForCausalLM": LlamaAdapter,
    "Qwen2ForCausalLM": LlamaAdapter,
    "MistralForCausalLM": LlamaAdapter,
}


def supported_architectures() -> list[str]:
    """The model class names that have an adapter, sorted."""
    return sorted(ADAPTERS)


def unsupported_message(name: str) -> str:
    """The user-facing sentence for an architecture without an adapter."""
    return (
        f"The architecture {name} is not supported. Supported architectures: "
        f"{', '.join(supported_architectures())}. Pick a model of one of these kinds."
    )


def adapter_for_class_name(name: str) -> ArchitectureAdapter:
    """The adapter for a model class name such as "GPT2LMHeadModel"; raises UnsupportedArchitectureError."""
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise UnsupportedArchitectureError(unsupported_message(name)) from None


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for a loaded model (by its class name); raises UnsupportedArchitectureError."""
    return adapter_for_class_name(type(model).__name__)
