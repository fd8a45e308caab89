"""The adapter contract: where each part of a decoder-only transformer lives, in TransformerLens weight layouts,
and the defaults most families share. One subclass per family lives in `families.py`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


def stored(module: nn.Module, name: str) -> torch.Tensor | None:
    """`module.<name>` (a parameter, or None when it has none). A module whose weights accelerate offloaded
    (device_map with disk offload) holds them on the meta device between forward passes; they are read from its
    hook's store instead (on the CPU), without touching the module, so reading needs no lock."""
    value = getattr(module, name, None)
    if value is None or value.device.type != "meta":
        return value
    weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights is None:
        raise RuntimeError(f"{type(module).__name__}.{name} is on the meta device and not offloaded by accelerate")
    return weights[name]


def in_out_weight(module: nn.Module) -> torch.Tensor:
    """A projection's weight as [in, out] (x @ W): GPT-2's Conv1D stores it so, nn.Linear as [out, in]."""
    weight = stored(module, "weight")
    return weight if isinstance(module, Conv1D) else weight.T


def _bias_or_zeros(module: nn.Module, size: int) -> torch.Tensor:
    """The module's bias, or zeros [size] of its weight's dtype and device when it has none."""
    bias = stored(module, "bias")
    if bias is not None:
        return bias
    weight = stored(module, "weight")
    return torch.zeros(size, dtype=weight.dtype, device=weight.device)


class ArchitectureAdapter:
    """Where each part of a decoder-only transformer lives. Stateless; every method takes the model or a block.

    Subclasses set `family` and the module accessors; the weight accessors below read any projection through
    `in_out_weight` (nn.Linear or GPT-2's Conv1D). q, k and v default to three separate projections
    (Llama-style); families with one fused projection override `split_qkv`, which every q/k/v weight and bias
    accessor goes through, so the weights and the split of a recorded projection output cannot disagree.
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

    def attn_norm(self, block: nn.Module) -> nn.Module:
        """The norm whose output the attention reads (GPT-2 ln_1, GPT-NeoX and Llama input_layernorm)."""
        raise NotImplementedError

    def mlp_norm(self, block: nn.Module) -> nn.Module:
        """The norm whose output the MLP reads (GPT-2 ln_2, GPT-NeoX and Llama post_attention_layernorm).

        Its input is the block input plus the attention output, except in a parallel-residual block
        (`parallel_residual`), where it is the block input itself.
        """
        raise NotImplementedError

    def parallel_residual(self, model: nn.Module) -> bool:
        """True when attention and MLP both read the block input (GPT-NeoX's use_parallel_residual)."""
        return False

    def qkv_projections(self, block: nn.Module) -> nn.Module | tuple[nn.Module, nn.Module, nn.Module]:
        """The module(s) whose outputs hold q, k and v (before rotary): one fused projection (GPT-2, GPT-NeoX)
        or the tuple (q_proj, k_proj, v_proj). `split_qkv` turns their outputs into per-head q, k, v."""
        attn = self.attention(block)
        return attn.q_proj, attn.k_proj, attn.v_proj

    def split_qkv(
        self, model: nn.Module, out: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head (q, k, v) from the output(s) of `qkv_projections`, each [..., n, d_head] with n = n_heads
        for q and n_kv_heads for k and v (views where possible). Separate projections: each output is
        [..., n * d_head], head-major."""
        q, k, v = out
        n_kv = self.n_kv_heads(model)
        return (q.unflatten(-1, (self.n_heads(model), -1)), k.unflatten(-1, (n_kv, -1)),
                v.unflatten(-1, (n_kv, -1)))

    def merge_qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """The inverse of `split_qkv`: per-head q, k, v [..., n, d_head] back into the projections' output(s)."""
        return q.flatten(-2), k.flatten(-2), v.flatten(-2)

    def mlp_in_proj(self, block: nn.Module) -> nn.Module:
        """The MLP's input projection (W_in): GPT-2 mlp.c_fc, GPT-NeoX mlp.dense_h_to_4h, Llama mlp.up_proj."""
        raise NotImplementedError

    def mlp_gate_proj(self, block: nn.Module) -> nn.Module | None:
        """The gate projection of a gated MLP (Llama mlp.gate_proj), or None."""
        return None

    def mlp_out_proj(self, block: nn.Module) -> nn.Module:
        """The MLP's output projection (W_out); its INPUT is the neuron activations [batch, pos, d_mlp]
        (TransformerLens mlp.hook_post): GPT-2 mlp.c_proj, GPT-NeoX mlp.dense_4h_to_h, Llama mlp.down_proj."""
        raise NotImplementedError

    def neuron_activation(self, block: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """The MLP's activation function (a callable module). The neuron value (TransformerLens mlp.hook_post,
        the input of `mlp_out_proj`) is act(x @ W_in + b_in); in a gated MLP (Llama) it is
        act(x @ W_gate + b_gate) * (x @ W_in + b_in)."""
        raise NotImplementedError

    def rotary_embedding(self, model: nn.Module) -> nn.Module | None:
        """The model's rotary embedding module (called as rotary(x, position_ids) -> (cos, sin)), or None."""
        return None

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm applied to the last residual stream before unembedding."""
        raise NotImplementedError

    def unembed_module(self, model: nn.Module) -> nn.Linear:
        """The output head (d_model -> d_vocab): lm_head for every family in transformers 5."""
        return model.get_output_embeddings()

    # -- weights -------------------------------------------------------------------------------------------
    def unembed_weight(self, model: nn.Module) -> torch.Tensor:
        """W_U as [d_vocab, d_model] (nn.Linear layout)."""
        return stored(self.unembed_module(model), "weight")

    def unembed_bias(self, model: nn.Module) -> torch.Tensor | None:
        """The output head bias [d_vocab], or None."""
        return stored(self.unembed_module(model), "bias")

    def n_heads(self, model: nn.Module) -> int:
        """Number of query heads per layer."""
        return int(model.config.num_attention_heads)

    def n_kv_heads(self, model: nn.Module) -> int:
        """Number of key/value heads per layer: num_key_value_heads under grouped-query attention, else
        n_heads. Query head h reads key/value head h // (n_heads // n_kv_heads)."""
        return self.n_heads(model)

    def _qkv_part(self, model: nn.Module, layer: int, which: int, bias: bool) -> torch.Tensor:
        """q (0), k (1) or v (2) weight [n, d_model, d_head] or bias [n, d_head] of `layer`: the projection
        weights [in, out] (or biases [out]) pushed through `split_qkv` like a projection output."""
        projections = self.qkv_projections(self.blocks(model)[layer])
        fused = isinstance(projections, nn.Module)
        modules = (projections,) if fused else projections
        if bias:
            parts = tuple(_bias_or_zeros(m, in_out_weight(m).shape[1]) for m in modules)  # each [out]
        else:
            parts = tuple(in_out_weight(m) for m in modules)  # each [d_model, out]
        split = self.split_qkv(model, parts[0] if fused else parts)[which]  # [(d_model,) n, d_head]
        return split if bias else split.transpose(0, 1)  # [n, d_model, d_head]

    def W_Q(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Query weights of `layer`, [head, d_model, d_head]: q_h = x @ W_Q[h] + b_Q[h] (before rotary)."""
        return self._qkv_part(model, layer, 0, bias=False)

    def W_K(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Key weights of `layer`, [kv_head, d_model, d_head] (kv_head = n_kv_heads)."""
        return self._qkv_part(model, layer, 1, bias=False)

    def W_V(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Value weights of `layer`, [kv_head, d_model, d_head]: v = x @ W_V[kv] + b_V[kv]."""
        return self._qkv_part(model, layer, 2, bias=False)

    def b_Q(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Query bias of `layer`, [head, d_head] (zeros when the projection has none)."""
        return self._qkv_part(model, layer, 0, bias=True)

    def b_K(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Key bias of `layer`, [kv_head, d_head] (zeros when the projection has none)."""
        return self._qkv_part(model, layer, 1, bias=True)

    def b_V(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Value bias of `layer`, [kv_head, d_head] (zeros when the projection has none)."""
        return self._qkv_part(model, layer, 2, bias=True)

    def W_O(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Output projection of `layer` split by head: [head, d_head, d_model]; head h adds z_h @ W_O[h]."""
        weight = in_out_weight(self.attn_out_proj(self.blocks(model)[layer]))  # [head*d_head, d_model]
        return weight.reshape(self.n_heads(model), -1, weight.shape[-1])  # [head, d_head, d_model]

    def b_O(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """Output projection bias of `layer`, [d_model] (zeros when the projection has none)."""
        proj = self.attn_out_proj(self.blocks(model)[layer])
        return _bias_or_zeros(proj, in_out_weight(proj).shape[1])

    def W_in(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """MLP input weights of `layer`, [d_model, d_mlp] (Llama: up_proj; the gate is W_gate)."""
        return in_out_weight(self.mlp_in_proj(self.blocks(model)[layer]))

    def b_in(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """MLP input bias of `layer`, [d_mlp] (zeros when absent)."""
        proj = self.mlp_in_proj(self.blocks(model)[layer])
        return _bias_or_zeros(proj, in_out_weight(proj).shape[1])

    def W_gate(self, model: nn.Module, layer: int) -> torch.Tensor | None:  # noqa: N802 (TransformerLens name)
        """Gate weights of a gated MLP, [d_model, d_mlp], or None (GPT-2, GPT-NeoX)."""
        proj = self.mlp_gate_proj(self.blocks(model)[layer])
        return None if proj is None else in_out_weight(proj)

    def b_gate(self, model: nn.Module, layer: int) -> torch.Tensor | None:
        """Gate bias of a gated MLP, [d_mlp] (zeros when absent), or None without a gate."""
        proj = self.mlp_gate_proj(self.blocks(model)[layer])
        return None if proj is None else _bias_or_zeros(proj, in_out_weight(proj).shape[1])

    def W_out(self, model: nn.Module, layer: int) -> torch.Tensor:  # noqa: N802 (TransformerLens name)
        """MLP output weights of `layer`, [d_mlp, d_model]: the MLP adds post @ W_out + b_out."""
        return in_out_weight(self.mlp_out_proj(self.blocks(model)[layer]))

    def b_out(self, model: nn.Module, layer: int) -> torch.Tensor:
        """MLP output bias of `layer`, [d_model] (zeros when absent)."""
        proj = self.mlp_out_proj(self.blocks(model)[layer])
        return _bias_or_zeros(proj, in_out_weight(proj).shape[1])
