"""One forward pass, recorded: the residual stream, every block's contributions and the next-token logits.

    >>> trace = run_trace(bundle, "The capital of France is")
    >>> trace.resid[-1]                           # [pos, d_model], the last block's output before the final norm
    >>> trace.last_logits                         # [d_vocab], the model's next-token logits
    >>> layer_pattern(bundle, trace, 3)           # [head, query_pos, key_pos], layer 3's attention, on demand

The decomposition it records (checked by the tests, for every family, GPT-NeoX's parallel residual included):
    resid[l + 1] = resid[l] + attn_out[l] + mlp_out[l]
    attn_out[l]  = sum_h head_z[l, :, h] @ W_O[l, h] + b_O[l]
    logits       = unembed(final_norm(resid[n_layers]))

A trace keeps only what grows with pos x d_model (about 154 MiB for GPT-2 small at 1,024 tokens). What is
quadratic in the prompt, a layer's attention pattern [head, pos, pos] (48 MiB a layer there, 576 MiB for all
twelve), is computed from that layer's input by `layer_pattern` when a view asks, equal to the model's own. The
forward pass itself runs attention through torch's fused kernel (no [head, pos, pos] tensor at all; the
residual stream agrees with eager attention within float rounding, 1e-6).
Only the last position's logits are kept (`last_logits`); `components.logits_at` gives any other position's
from the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp_core import activations
from interp_core.loading import ModelBundle
from interp_core.tokens import tokenize_prompt


@dataclass(frozen=True, eq=False)
class Trace:
    """Activations of one forward pass over one prompt. All tensors float32, on CPU, detached."""

    token_ids: torch.LongTensor  # [pos]
    tokens: list[str]  # [pos] readable: leading space as ␣, newline as ↵, tab as ⇥
    last_logits: torch.Tensor  # [d_vocab] the model's own output at the last position (its next-token logits)
    resid: torch.Tensor  # [layer + 1, pos, d_model] resid[l] = input of block l, resid[-1] = last output pre-norm
    head_z: torch.Tensor  # [layer, pos, head, d_head] input of each attention output projection, split by head
    attn_out: torch.Tensor  # [layer, pos, d_model] what each block's attention adds to the residual stream
    mlp_out: torch.Tensor  # [layer, pos, d_model] what each block's MLP adds to the residual stream
    truncated: bool  # the prompt was cut to fit the token limit
    n_prompt_tokens: int  # tokens in the prompt before truncation

    def __post_init__(self) -> None:
        n_layers, n_pos, n_heads, d_head = self.head_z.shape
        d_model = self.resid.shape[-1]
        expected = {
            "token_ids": (n_pos,),
            "last_logits": (self.last_logits.shape[-1],),
            "resid": (n_layers + 1, n_pos, d_model),
            "head_z": (n_layers, n_pos, n_heads, d_head),
            "attn_out": (n_layers, n_pos, d_model),
            "mlp_out": (n_layers, n_pos, d_model),
        }
        for name, shape in expected.items():
            actual = tuple(getattr(self, name).shape)
            if actual != shape:
                raise ValueError(f"Trace.{name} has shape {actual}, expected {shape}")
        if len(self.tokens) != n_pos:
            raise ValueError(f"Trace.tokens has {len(self.tokens)} entries, expected {n_pos}")
        if self.n_prompt_tokens < n_pos:
            raise ValueError(f"Trace.n_prompt_tokens {self.n_prompt_tokens} < {n_pos} positions")

    @property
    def n_layers(self) -> int:
        return self.head_z.shape[0]

    @property
    def n_heads(self) -> int:
        return self.head_z.shape[2]

    @property
    def n_pos(self) -> int:
        return self.head_z.shape[1]

    @property
    def d_model(self) -> int:
        return self.resid.shape[-1]

    @property
    def d_vocab(self) -> int:
        return self.last_logits.shape[-1]

    @property
    def nbytes(self) -> int:
        """Bytes held by the trace's tensors."""
        return sum(t.numel() * t.element_size() for t in
                   (self.token_ids, self.last_logits, self.resid, self.head_z, self.attn_out, self.mlp_out))


def _cpu(x: torch.Tensor) -> torch.Tensor:
    return x[0].detach().to(device="cpu", dtype=torch.float32)  # batch of one


def trace_names(n_layers: int) -> list[str]:
    """The activations a trace records, in TransformerLens names."""
    names = [f"blocks.{layer}.{hook}" for layer in range(n_layers)
             for hook in ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_mlp_out")]
    return [*names, f"blocks.{n_layers - 1}.hook_resid_post"]


def run_trace(bundle: ModelBundle, prompt: str, max_tokens: int | None = None) -> Trace:
    """Run `prompt` through the model once and record a `Trace`.

    `max_tokens` caps the prompt length (default limits().max_prompt_tokens; see tokens.tokenize_prompt).
    Raises PromptError for an empty prompt.
    """
    tp = tokenize_prompt(bundle, prompt, max_tokens)
    n = bundle.n_layers
    with torch.no_grad():
        out = activations.run(bundle, tp.ids[None], record={name: _cpu for name in trace_names(n)},
                              fused_attention=True)  # the patterns are computed on demand (layer_pattern)
    acts = out.acts

    def stack(hook: str) -> torch.Tensor:
        return torch.stack([acts[f"blocks.{layer}.{hook}"] for layer in range(n)])

    return Trace(
        token_ids=tp.ids,
        tokens=tp.tokens,
        last_logits=out.logits[0, -1].to("cpu", torch.float32),
        resid=torch.cat([stack("hook_resid_pre"), acts[f"blocks.{n - 1}.hook_resid_post"][None]]),
        head_z=stack("attn.hook_z"),  # [layer, pos, head, d_head]
        attn_out=stack("hook_attn_out"),  # [layer, pos, d_model]
        mlp_out=stack("hook_mlp_out"),  # [layer, pos, d_model]
        truncated=tp.truncated,
        n_prompt_tokens=tp.n_prompt_tokens,
    )


def layer_pattern(bundle: ModelBundle, trace: Trace, layer: int) -> torch.Tensor:
    """Layer `layer`'s attention probabilities [head, query_pos, key_pos] (rows sum to 1, upper triangle 0),
    computed from that layer's input trace.resid[layer] by the layer's own norm and attention module, with the
    causal mask and rotary positions the model's forward pass uses (rotary from the model's own rotary embedding):
    the model's own pattern."""
    if not 0 <= layer < trace.n_layers:
        raise ValueError(f"There is no layer {layer}: this trace has layers 0 to {trace.n_layers - 1}")
    model, block = bundle.model, bundle.adapter.blocks(bundle.model)[layer]
    dtype = next(model.parameters()).dtype
    x = trace.resid[layer][None].to(bundle.device, dtype)  # [batch=1, pos, d_model]
    n_pos = x.shape[1]
    kwargs = {"attention_mask": causal_mask(n_pos, dtype, bundle.device)}
    rotary = getattr(model.base_model, "rotary_emb", None)
    name = f"blocks.{layer}.attn.hook_pattern"
    with activations.hooks_on(bundle, record={name: lambda p: p[0].to("cpu", torch.float32)}) as state, \
            torch.no_grad():
        if rotary is not None:
            position_ids = torch.arange(n_pos, device=bundle.device)[None]
            kwargs["position_embeddings"] = rotary(x, position_ids=position_ids)
        bundle.adapter.attention(block)(bundle.adapter.attn_norm(block)(x), **kwargs)
    return state.kept[name]


def causal_mask(n_pos: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The additive causal mask [1, 1, pos, pos] the model's eager attention gets: 0 on and below the diagonal,
    the dtype's minimum above (what transformers' masking_utils builds for an unpadded sequence)."""
    full = torch.full((n_pos, n_pos), torch.finfo(dtype).min, dtype=dtype, device=device)
    return full.triu(1)[None, None]
