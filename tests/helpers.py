"""Tiny in-memory models and tokenizers of every supported family, for fast tests (no downloads).

    >>> bundle = make_tiny_bundle("gpt2")       # 2 layers, 4 heads, d_model 32, ~300-token byte-level BPE
    >>> save_tiny_model("llama", tmp_path)      # a folder load_model() accepts

Models are built from a fixed seed, so two calls give identical weights.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from interp_core.loading import ModelBundle, bundle_from_model

FAMILIES = ("gpt2", "gpt_neox", "llama")
EOS, BOS = "<|endoftext|>", "<s>"
TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4, "d_mlp": 64, "n_ctx": 64}

_CORPUS = [
    "The capital of France is Paris.",
    "The capital of Italy is Rome.",
    "The capital of Spain is Madrid.",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "When Tom and Anna went to the park, Anna gave a ball to Tom.",
    "The cat sat on the mat and the dog sat on the rug.",
    "In the beginning the model reads the prompt one token at a time.",
    "Attention heads move information between positions.\nNew lines\tand tabs too.",
]


@lru_cache(maxsize=1)
def _trained_bpe_json() -> str:
    """A byte-level BPE (~300 tokens) trained on a tiny corpus, serialised (fast: a few milliseconds)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOS, BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    return tok.to_str()


def make_tiny_tokenizer(add_bos: bool = False) -> PreTrainedTokenizerFast:
    """A fresh tiny tokenizer; with `add_bos` it prepends <s> like a Llama tokenizer (GPT-2 style without)."""
    tok = Tokenizer.from_str(_trained_bpe_json())
    kwargs = {"eos_token": EOS}
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))]
        )
        kwargs["bos_token"] = BOS
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def make_tiny_model(family: str, vocab_size: int | None = None, seed: int = 0, **overrides):
    """A randomly initialised tiny causal LM of `family` with eager attention and random (non-zero) biases."""
    vocab_size = vocab_size or len(make_tiny_tokenizer())
    d, n_layers, n_heads, d_mlp, n_ctx = (TINY[k] for k in ("d_model", "n_layers", "n_heads", "d_mlp", "n_ctx"))
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=n_ctx,
            n_embd=d,
            n_layer=n_layers,
            n_head=n_heads,
            n_inner=d_mlp,
            bos_token_id=0,
            eos_token_id=0,
        )
        cls = GPT2LMHeadModel
    elif family == "gpt_neox":
        config = GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=d,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            intermediate_size=d_mlp,
            max_position_embeddings=n_ctx,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=0,
        )
        cls = GPTNeoXForCausalLM
    elif family == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=d,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_heads // 2,  # grouped-query attention, as in SmolLM2
            intermediate_size=d_mlp,
            max_position_embeddings=n_ctx,
            attention_bias=True,  # so that b_O is not trivially zero
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=0,
            pad_token_id=None,
        )
        cls = LlamaForCausalLM
    else:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    for key, value in overrides.items():
        setattr(config, key, value)
    config.initializer_range = 0.1  # larger than the default so attention patterns are not uniform
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)  # biases start at zero; make them matter in the identities
    return model.eval()


def make_tiny_bundle(family: str, ref: str | None = None) -> ModelBundle:
    """A ModelBundle around a tiny in-memory model of `family` (ref defaults to "tiny-<family>")."""
    tokenizer = make_tiny_tokenizer(add_bos=family == "llama")
    model = make_tiny_model(family, vocab_size=len(tokenizer))
    return bundle_from_model(model, tokenizer, ref or f"tiny-{family}")


def save_tiny_model(family: str, folder: Path) -> Path:
    """Save a tiny model and its tokenizer to `folder` (safetensors) and return the folder."""
    tokenizer = make_tiny_tokenizer(add_bos=family == "llama")
    make_tiny_model(family, vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def hook_count(model: torch.nn.Module) -> int:
    """Number of forward and forward-pre hooks registered on any module of `model`."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def all_patterns(bundle: ModelBundle, trace) -> torch.Tensor:
    """Every layer's attention pattern of a trace, stacked: [layer, head, query_pos, key_pos] (tests only; the
    app computes one layer at a time)."""
    from interp_core.trace import layer_pattern

    return torch.stack([layer_pattern(bundle, trace, layer) for layer in range(trace.n_layers)])


def chart_titles(at) -> list[str]:
    """The title text of every Vega-Lite chart an AppTest run drew, in page order ("" for an untitled one)."""
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")]
    return [str((spec.get("title") or {}).get("text", "")) for spec in specs]
