"""The adapters of the supported families: GPT-2 (fused c_attn), GPT-NeoX (fused, interleaved query_key_value) and
Llama-style models (separate q/k/v projections, grouped-query attention, gated MLP)."""

from __future__ import annotations

import torch

from interp_core.adapters.base import ArchitectureAdapter


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

    def attn_norm(self, block):
        return block.ln_1

    def mlp_norm(self, block):
        return block.ln_2

    def qkv_projections(self, block):
        return block.attn.c_attn

    def split_qkv(self, model, out):
        """c_attn's output [..., 3 * d_model] is q | k | v, each d_model wide and head-major."""
        n = self.n_heads(model)
        q, k, v = out.split(out.shape[-1] // 3, dim=-1)
        return q.unflatten(-1, (n, -1)), k.unflatten(-1, (n, -1)), v.unflatten(-1, (n, -1))

    def merge_qkv(self, q, k, v):
        return torch.cat([q.flatten(-2), k.flatten(-2), v.flatten(-2)], dim=-1)

    def mlp_in_proj(self, block):
        return block.mlp.c_fc

    def mlp_out_proj(self, block):
        return block.mlp.c_proj

    def neuron_activation(self, block):
        return block.mlp.act

    def final_norm(self, model):
        return model.transformer.ln_f


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

    def attn_norm(self, block):
        return block.input_layernorm

    def mlp_norm(self, block):
        return block.post_attention_layernorm

    def parallel_residual(self, model):
        return bool(model.config.use_parallel_residual)

    def qkv_projections(self, block):
        return block.attention.query_key_value

    def split_qkv(self, model, out):
        """query_key_value's output [..., head * 3 * d_head] is interleaved: per head q | k | v (as in
        GPTNeoXAttention.forward: view [..., head, 3 * d_head], then chunk in three)."""
        q, k, v = out.unflatten(-1, (self.n_heads(model), -1)).chunk(3, dim=-1)
        return q, k, v

    def merge_qkv(self, q, k, v):
        return torch.cat([q, k, v], dim=-1).flatten(-2)

    def mlp_in_proj(self, block):
        return block.mlp.dense_h_to_4h

    def mlp_out_proj(self, block):
        return block.mlp.dense_4h_to_h

    def neuron_activation(self, block):
        return block.mlp.act

    def rotary_embedding(self, model):
        return model.gpt_neox.rotary_emb

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

    def attn_norm(self, block):
        return block.input_layernorm

    def mlp_norm(self, block):
        return block.post_attention_layernorm

    def n_kv_heads(self, model):
        return int(getattr(model.config, "num_key_value_heads", None) or self.n_heads(model))

    def mlp_in_proj(self, block):
        return block.mlp.up_proj

    def mlp_gate_proj(self, block):
        return block.mlp.gate_proj

    def mlp_out_proj(self, block):
        return block.mlp.down_proj

    def neuron_activation(self, block):
        """act_fn (SiLU for Llama); the neuron value is act_fn(x @ W_gate + b_gate) * (x @ W_in + b_in)."""
        return block.mlp.act_fn

    def rotary_embedding(self, model):
        return model.model.rotary_emb

    def final_norm(self, model):
        return model.model.norm


# Model class name -> adapter class. Adding a family: write a subclass above and add its class names here.
