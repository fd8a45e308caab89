"""Loading models: folders, the GPT-2-small shape, hub ids offline, and plain errors for bad references."""

from __future__ import annotations

import math
import time

import pytest
import torch
from helpers import make_tiny_bundle, make_tiny_tokenizer
from transformers import BertConfig, GPT2Config, GPT2LMHeadModel

from interp_core.adapters import ADAPTERS, GPT2Adapter, adapter_for, supported_architectures
from interp_core.errors import ModelLoadError, UnsupportedArchitectureError, UserInputError
from interp_core.loading import bundle_from_model, load_model
from interp_core.recorded_attention import IMPLEMENTATION as ATTENTION
from interp_core.trace import layer_pattern, run_trace

PROMPT = "The capital of France is"


def test_saved_folder_loads_read_only_and_traces_like_the_in_memory_model(saved_tiny_gpt2):
    bundle = load_model(str(saved_tiny_gpt2))
    assert bundle.ref == str(saved_tiny_gpt2) and bundle.family == "gpt2"
    assert (bundle.n_layers, bundle.n_heads, bundle.d_model, bundle.d_head, bundle.n_ctx) == (2, 4, 32, 8, 64)
    assert not bundle.model.training
    assert not any(p.requires_grad for p in bundle.model.parameters())
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())
    assert bundle.model.config._attn_implementation == ATTENTION  # eager arithmetic, recordable
    assert bundle.tokenizer.pad_token == bundle.tokenizer.eos_token
    loaded, in_memory = run_trace(bundle, PROMPT), run_trace(make_tiny_bundle("gpt2"), PROMPT)
    assert torch.allclose(loaded.last_logits, in_memory.last_logits, atol=1e-5)
    assert torch.allclose(loaded.resid, in_memory.resid, atol=1e-5)


@pytest.mark.slow  # writes and reads a 500 MB checkpoint; over 20 s on a busy 2-core machine
def test_gpt2_small_shaped_model_loads_and_traces_from_a_safetensors_folder(tmp_path):
    config = GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024)
    with torch.device("meta"):  # skip the slow random init of 124 M weights; fill them cheaply below
        model = GPT2LMHeadModel(config)
    model = model.to_empty(device="cpu")
    model.tie_weights()
    torch.manual_seed(0)
    pattern = 0.02 * torch.randn(1 << 20)
    with torch.no_grad():
        for param in model.parameters():
            n = param.numel()
            param.view(-1).copy_(pattern.repeat(math.ceil(n / pattern.numel()))[:n])
    model.save_pretrained(tmp_path)
    del model
    make_tiny_tokenizer().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    bundle = load_model(str(tmp_path))
    assert (bundle.n_layers, bundle.n_heads, bundle.d_model, bundle.d_head, bundle.d_vocab, bundle.n_ctx) == (
        12,
        12,
        768,
        64,
        50257,
        1024,
    )
    trace = run_trace(bundle, PROMPT)
    n_pos = len(trace.tokens)
    assert layer_pattern(bundle, trace, 11).shape == (12, n_pos, n_pos)
    assert trace.resid.shape == (13, n_pos, 768) and trace.last_logits.shape == (50257,)


def test_unknown_hub_id_offline_fails_fast_with_model_load_error():
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model("nobody-here-xyz/no-such-model-123")
    assert time.monotonic() - start < 6
    assert "shipped model" in str(info.value)


@pytest.mark.parametrize("ref", ["", "   ", "not a valid id!", "/definitely/not/a/folder", "./missing-folder"])
def test_bad_reference_raises_model_load_error(ref):
    with pytest.raises(ModelLoadError):
        load_model(ref)


def test_model_load_error_is_a_user_input_error_and_a_value_error():
    assert issubclass(ModelLoadError, UserInputError) and issubclass(UserInputError, ValueError)
    assert issubclass(UnsupportedArchitectureError, ModelLoadError)


def test_folder_without_weights_raises_model_load_error(tmp_path, saved_tiny_gpt2):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((saved_tiny_gpt2 / name).read_bytes())
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(str(tmp_path))


def test_folder_without_config_or_tokenizer_raises_model_load_error(tmp_path, saved_tiny_gpt2):
    (tmp_path / "model.safetensors").write_bytes((saved_tiny_gpt2 / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_bytes((saved_tiny_gpt2 / "config.json").read_bytes())
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        load_model(str(tmp_path))


def test_file_instead_of_folder_raises_model_load_error(saved_tiny_gpt2):
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(str(saved_tiny_gpt2 / "config.json"))


def test_pickle_only_folder_is_refused(tmp_path, saved_tiny_gpt2):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((saved_tiny_gpt2 / name).read_bytes())
    torch.save(make_tiny_bundle("gpt2").model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle") as info:
        load_model(str(tmp_path))
    assert "pytorch_model.bin" in str(info.value)


def test_unsupported_architecture_in_folder_lists_supported_ones(tmp_path):
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path
    )
    (tmp_path / "model.safetensors").write_bytes(b"")  # never read: the architecture is checked first
    make_tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError) as info:
        load_model(str(tmp_path))
    for name in supported_architectures():
        assert name in str(info.value)


def test_adapter_for_unknown_model_lists_supported_architectures():
    class FancyNewModel(torch.nn.Module):
        pass

    with pytest.raises(UnsupportedArchitectureError) as info:
        adapter_for(FancyNewModel())
    message = str(info.value)
    assert "FancyNewModel" in message
    for name in ("GPT2LMHeadModel", "GPTNeoXForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM"):
        assert name in message


def test_adapters_cover_each_family_with_w_o_as_head_d_head_d_model(tiny_bundles):
    assert isinstance(ADAPTERS["GPT2LMHeadModel"](), GPT2Adapter)
    for bundle in tiny_bundles.values():
        model, adapter = bundle.model, bundle.adapter
        assert len(adapter.blocks(model)) == bundle.n_layers
        for layer in range(bundle.n_layers):
            assert adapter.W_O(model, layer).shape == (bundle.n_heads, bundle.d_head, bundle.d_model)
            assert adapter.b_O(model, layer).shape == (bundle.d_model,)
        assert adapter.unembed_weight(model).shape == (bundle.d_vocab, bundle.d_model)


def test_gpt2_w_o_undoes_the_conv1d_transpose(gpt2_bundle):
    model, adapter = gpt2_bundle.model, gpt2_bundle.adapter
    proj = adapter.attn_out_proj(adapter.blocks(model)[0])
    z = torch.randn(3, gpt2_bundle.n_heads * gpt2_bundle.d_head)  # [pos, head*d_head]
    by_head = torch.einsum("phd,hdm->pm", z.view(3, gpt2_bundle.n_heads, -1), adapter.W_O(model, 0))
    assert torch.allclose(by_head + adapter.b_O(model, 0), proj(z), atol=1e-5)


def test_bundle_from_model_switches_sdpa_to_eager_and_sets_pad_token():
    tokenizer = make_tiny_tokenizer()
    assert tokenizer.pad_token is None
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2))
    model.set_attn_implementation("sdpa")
    bundle = bundle_from_model(model, tokenizer, "sdpa-model")
    assert bundle.model.config._attn_implementation == ATTENTION  # eager arithmetic, recordable
    assert tokenizer.pad_token == tokenizer.eos_token
    trace = run_trace(bundle, PROMPT)
    assert layer_pattern(bundle, trace, 0).shape[0] == 2  # heads: the eager attention returns its weights
