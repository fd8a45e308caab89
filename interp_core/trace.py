"""One forward pass, recorded: logits, attention patterns, residual stream and every block's contributions.

    >>> trace = run_trace(bundle, "The capital of France is")
    >>> trace.attention.shape                     # [layer, head, query_pos, key_pos]
    >>> trace.resid[-1]                           # [pos, d_model], the last block's output before the final norm
    >>> trace.last_logits                         # [d_vocab], the model's next-token logits

The decomposition it records (checked by the tests, for every family, GPT-NeoX's parallel residual included):
    resid[l + 1] = resid[l] + attn_out[l] + mlp_out[l]
    attn_out[l]  = sum_h head_z[l, :, h] @ W_O[l, h] + b_O[l]
    logits       = unembed(final_norm(resid[n_layers]))

Only the last position's logits are kept (`last_logits`); `components.logits_at` gives any other position's
from the residual stream. Every position's logits would be [pos, d_vocab] floats (196 MiB for GPT-2 small at
1,024 tokens) and their unembedding a quarter of the forward pass, for views that read one position.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from interp_core.hooks import hooked
from interp_core.loading import ModelBundle
from interp_core.recorded_attention import recording_attention_into
from interp_core.settings import limits
from interp_core.tokens import tokenize_prompt


@dataclass(frozen=True, eq=False)
class Trace:
    """Activations of one forward pass over one prompt. All tensors float32, on CPU, detached."""

    token_ids: torch.LongTensor  # [pos]
    tokens: list[str]  # [pos] readable: leading space as ␣, newline as ↵, tab as ⇥
    last_logits: torch.Tensor  # [d_vocab] the model's own output at the last position (its next-token logits)
    attention: torch.Tensor  # [layer, head, query_pos, key_pos] rows sum to 1, upper triangle 0
    resid: torch.Tensor  # [layer + 1, pos, d_model] resid[l] = input of block l, resid[-1] = last output pre-norm
    head_z: torch.Tensor  # [layer, pos, head, d_head] input of each attention output projection, split by head
    attn_out: torch.Tensor  # [layer, pos, d_model] what each block's attention adds to the residual stream
    mlp_out: torch.Tensor  # [layer, pos, d_model] what each block's MLP adds to the residual stream
    truncated: bool  # the prompt was cut to fit the token limit
    n_prompt_tokens: int  # tokens in the prompt before truncation
    ref: str = ""  # the model reference (ModelBundle.ref)
    prompt: str = ""  # the prompt as typed

    def __post_init__(self) -> None:
        n_layers, n_heads, n_pos, _ = self.attention.shape
        d_model = self.resid.shape[-1]
        d_head = self.head_z.shape[-1]
        expected = {
            "token_ids": (n_pos,),
            "last_logits": (self.last_logits.shape[-1],),
            "attention": (n_layers, n_heads, n_pos, n_pos),
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
        return self.attention.shape[0]

    @property
    def n_heads(self) -> int:
        return self.attention.shape[1]

    @property
    def n_pos(self) -> int:
        return self.attention.shape[2]

    @property
    def d_model(self) -> int:
        return self.resid.shape[-1]

    @property
    def d_vocab(self) -> int:
        return self.last_logits.shape[-1]


def _cpu(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(device="cpu", dtype=torch.float32)


def run_trace(bundle: ModelBundle, prompt: str, max_tokens: int | None = None) -> Trace:
    """Run `prompt` through the model once and record a `Trace`.

    `max_tokens` caps the prompt length (default limits().max_prompt_tokens; see tokens.tokenize_prompt).
    Raises PromptError for an empty prompt.
    """
    tp = tokenize_prompt(bundle, prompt, max_tokens)
    adapter, model = bundle.adapter, bundle.model
    blocks = adapter.blocks(model)
    n_pos = len(tp.ids)

    z: list[torch.Tensor | None] = [None] * bundle.n_layers  # each [pos, head*d_head]
    attn_out: list[torch.Tensor | None] = [None] * bundle.n_layers  # each [pos, d_model]
    mlp_out: list[torch.Tensor | None] = [None] * bundle.n_layers  # each [pos, d_model]
    final_in: list[torch.Tensor] = []  # [pos, d_model] the input of the final norm

    def store(slots, layer, value):
        slots[layer] = _cpu(value[0])  # batch of one

    pre, forward = [], []
    for layer, block in enumerate(blocks):
        pre.append((adapter.attn_out_proj(block), lambda m, args, i=layer: store(z, i, args[0])))
        forward.append((adapter.attention(block), lambda m, args, out, i=layer: store(attn_out, i, out[0])))
        forward.append((adapter.mlp(block), lambda m, args, out, i=layer: store(mlp_out, i, out)))
    pre.append((adapter.final_norm(model), lambda m, args: final_in.append(_cpu(args[0][0]))))

    input_ids = tp.ids[None].to(bundle.device)  # [batch=1, pos]
    attention = torch.empty(bundle.n_layers, bundle.n_heads, n_pos, n_pos, device=bundle.device)
    with hooked(bundle, forward=forward, pre=pre), torch.no_grad(), recording_attention_into(attention) as written:
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True,
                    use_cache=False, logits_to_keep=1)
    if len(written) != bundle.n_layers:
        raise RuntimeError("The attention weights were not recorded; the model must be loaded by interp_core.loading")
    if any(x is None for x in z + attn_out + mlp_out) or len(final_in) != 1:
        raise RuntimeError("A hook did not fire during the trace; the adapter does not match the model")

    # hidden_states[l] is the input of block l for l < n_layers; the last one is already normed, so the
    # pre-norm residual after the last block comes from the final norm's input instead.
    resid = [_cpu(h[0]) for h in out.hidden_states[: bundle.n_layers]] + final_in
    return Trace(
        token_ids=tp.ids,
        tokens=tp.tokens,
        last_logits=_cpu(out.logits[0, -1]),
        attention=_cpu(attention),  # [layer, head, query_pos, key_pos], written in place by the forward pass
        resid=torch.stack(resid),  # [layer + 1, pos, d_model]
        head_z=torch.stack(z).reshape(bundle.n_layers, n_pos, bundle.n_heads, bundle.d_head),
        attn_out=torch.stack(attn_out),  # [layer, pos, d_model]
        mlp_out=torch.stack(mlp_out),  # [layer, pos, d_model]
        truncated=tp.truncated,
        n_prompt_tokens=tp.n_prompt_tokens,
        ref=bundle.ref,
        prompt=prompt,
    )


class TraceCache:
    """A bounded, thread-safe LRU of traces keyed on (bundle.ref, prompt, max_tokens).

    Concurrent requests for the same key wait for one forward pass instead of running their own. `hits` and
    `misses` count lookups (a miss is one forward pass).
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("TraceCache needs maxsize >= 1")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, Trace] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[tuple]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()

    def _lookup(self, key: tuple) -> Trace | None:
        with self._lock:
            trace = self._entries.get(key)
            if trace is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return trace

    def get(self, bundle: ModelBundle, prompt: str, max_tokens: int | None = None) -> Trace:
        """The cached trace for (bundle.ref, prompt, max_tokens), running `run_trace` on a miss."""
        key = (bundle.ref, prompt, max_tokens)
        trace = self._lookup(key)
        if trace is not None:
            return trace
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one forward pass per key, even when several threads miss at once
            trace = self._lookup(key)
            if trace is not None:
                return trace
            try:
                trace = run_trace(bundle, prompt, max_tokens)
                with self._lock:
                    self.misses += 1
                    self._entries[key] = trace
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.maxsize:
                        self._entries.popitem(last=False)  # evict the least recently used
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
        return trace


_default_cache: TraceCache | None = None
_default_cache_lock = threading.Lock()


def default_trace_cache() -> TraceCache:
    """The process-wide cache used by `cached_trace`, sized by limits().trace_cache_size on first use."""
    global _default_cache
    with _default_cache_lock:
        if _default_cache is None:
            _default_cache = TraceCache(limits().trace_cache_size)
        return _default_cache


def cached_trace(bundle: ModelBundle, prompt: str, max_tokens: int | None = None) -> Trace:
    """`run_trace` through the process-wide LRU cache (see TraceCache)."""
    return default_trace_cache().get(bundle, prompt, max_tokens)
