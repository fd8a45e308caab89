"""Architecture adapters: one small class per model family mapping its modules to one set of names.

Every analysis reaches into a model only through an adapter, so adding a family means writing one subclass and
registering it in `ADAPTERS`.

    >>> adapter = adapter_for(model)            # GPT2LMHeadModel -> GPT2Adapter
    >>> adapter.W_O(model, 0).shape             # [head, d_head, d_model]
"""

from __future__ import annotations

import torch
from torch import nn

from interp_core.errors import UnsupportedArchitectureError


class ArchitectureAdapter:
    """Where each part of a decoder-only transformer lives. Stateless; every method takes the model or a block.

    Subclasses set `family` and the attribute names; the weight accessors below work for any `nn.Linear`
    output projection (weight [d_model, n_heads * d_head]). Override them for other layouts (GPT-2's Conv1D).
    """

    family: str = ""

    # -- modules -------------------------------------------------------------------------------------------
    def token_embedding(self, model: nn.Module) -> nn.Embedding:
        """The token embedding module (its output is what integrated gradients interpolates)."""
        raise NotImplementedError

    def position_embedding(self, model: nn.Module) -> nn.Embedding | None:
        """The learned absolute position embedding, or None for rotary models."""
        return None

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The transformer blocks in order, layer 0 first."""
        raise NotImplementedError

    def attention(self, block: nn.Module) -> nn.Module:
        """The attention module of a block; its output[0] is what attention adds to the residual stream."""
        raise NotImplementedError

    def attn_out_proj(self, block: nn.Module) -> nn.Module:
        """The attention output projection; its INPUT is the concatenated per-head z, [batch, pos, head*d_head]."""
        raise NotImplementedError

    def mlp(self, block: nn.Module) -> nn.Module:
        """The MLP of a block; its output is what the MLP adds to the residual stream."""
        raise NotImplementedError

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm applied to the last residual stream before unembedding."""
        raise NotImplementedError

    def unembed_module(self, model: nn.Module) -> nn.Linear:
        """The output head (d_model -> d_vocab): lm_head for every family in transformers 5."""
        return model.get_output_embeddings()

    # -- weights -------------------------------------------------------------------------------------------
    def unembed_weight(self, model: nn.Module) -> torch.Tensor:
        """W_U as [d_vocab, d_model] (nn.Linear layout)."""
        return self.unembed_module(model).weight

    def unembed_bias(self, model: nn.Module) -> torch.Tensor | None:
        """The output head bias [d_vocab], or None."""
        return self.unembed_module(model).bias

    def n_heads(self, model: nn.Module) -> int:
        """Number of query heads per layer."""
        return int(model.config.num_attention_heads)

    def W_O(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Output projection of `layer` split by head: [head, d_head, d_model]; head h adds z_h @ W_O[h]."""
        proj = self.attn_out_proj(self.blocks(model)[layer])
        weight = proj.weight.T  # nn.Linear stores [d_model, head*d_head] -> [head*d_head, d_model]
        return weight.reshape(self.n_heads(model), -1, weight.shape[-1])  # [head, d_head, d_model]

    def b_O(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Output projection bias of `layer`, [d_model] (zeros when the projection has none)."""
        proj = self.attn_out_proj(self.blocks(model)[layer])
        if proj.bias is not None:
            return proj.bias
        weight = self.W_O(model, layer)
        return torch.zeros(weight.shape[-1], dtype=weight.dtype, device=weight.device)


class GPT2Adapter(ArchitectureAdapter):
    """GPT2LMHeadModel (gpt2, distilgpt2, gpt2-medium, the shipped organism). Conv1D weights are [in, out]."""

    family = "gpt2"

    def token_embedding(self, model):
        return model.transformer.wte

    def position_embedding(self, model):
        return model.transformer.wpe

    def blocks(self, model):
        return list(model.transformer.h)

    def attention(self, block):
        return block.attn

    def attn_out_proj(self, block):
        return block.attn.c_proj

    def mlp(self, block):
        return block.mlp

    def final_norm(self, model):
        return model.transformer.ln_f

    def W_O(self, model, layer):  # noqa: N802
        weight = self.attn_out_proj(self.blocks(model)[layer]).weight  # Conv1D: [head*d_head, d_model]
        return weight.reshape(self.n_heads(model), -1, weight.shape[-1])  # [head, d_head, d_model]


class GPTNeoXAdapter(ArchitectureAdapter):
    """GPTNeoXForCausalLM (Pythia). Parallel residual: attention and MLP both read the block input."""

    family = "gpt_neox"

    def token_embedding(self, model):
        return model.gpt_neox.embed_in

    def blocks(self, model):
        return list(model.gpt_neox.layers)

    def attention(self, block):
        return block.attention

    def attn_out_proj(self, block):
        return block.attention.dense

    def mlp(self, block):
        return block.mlp

    def final_norm(self, model):
        return model.gpt_neox.final_layer_norm


class LlamaAdapter(ArchitectureAdapter):
    """LlamaForCausalLM and the same-shaped Qwen2ForCausalLM, MistralForCausalLM (RMSNorm, rotary, GQA)."""

    family = "llama"

    def token_embedding(self, model):
        return model.model.embed_tokens

    def blocks(self, model):
        return list(model.model.layers)

    def attention(self, block):
        return block.self_attn

    def attn_out_proj(self, block):
        return block.self_attn.o_proj

    def mlp(self, block):
        return block.mlp

    def final_norm(self, model):
        return model.model.norm


# Model class name -> adapter class. Adding a family: write a subclass above and add its class names here.
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
