"""Tokens, activation names and limits."""

from __future__ import annotations

import pytest
import torch

from interp_core.errors import PromptError, TargetTokenError
from interp_core.names import act_name
from interp_core.settings import HOSTED_LIMITS, LOCAL_LIMITS, SHIPPED_MODEL_DIR, Limits, is_hosted, limits
from interp_core.tokens import readable_token, single_token_id, token_labels, token_texts, tokenize_prompt
from interp_core.trace import run_trace


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t \n"])
def test_empty_or_whitespace_prompt_raises_prompt_error(tiny_bundle, prompt):
    with pytest.raises(PromptError):
        tokenize_prompt(tiny_bundle, prompt)
    with pytest.raises(PromptError):
        run_trace(tiny_bundle, prompt)


def test_long_prompt_is_truncated_keeping_its_start(gpt2_bundle):
    prompt = "The cat sat on the mat and the dog sat on the rug."
    full = tokenize_prompt(gpt2_bundle, prompt)
    assert not full.truncated and full.n_prompt_tokens == len(full.ids)
    cut = tokenize_prompt(gpt2_bundle, prompt, max_tokens=4)
    assert cut.truncated and cut.n_prompt_tokens == len(full.ids)
    assert cut.tokens == full.tokens[:4] and torch.equal(cut.ids, full.ids[:4])
    trace = run_trace(gpt2_bundle, prompt, max_tokens=4)
    assert trace.truncated and trace.n_prompt_tokens == len(full.ids) and trace.n_pos == 4


def test_prompt_longer_than_context_is_cut_to_n_ctx(gpt2_bundle):
    tp = tokenize_prompt(gpt2_bundle, "the cat " * 100)  # far more than n_ctx = 64 tokens
    assert tp.truncated and len(tp.ids) == gpt2_bundle.n_ctx


def test_llama_style_tokenizer_adds_bos_and_gpt2_style_does_not(tiny_bundles):
    llama, gpt2 = tiny_bundles["llama"], tiny_bundles["gpt2"]
    assert tokenize_prompt(llama, "The cat").ids[0] == llama.tokenizer.bos_token_id
    assert tokenize_prompt(gpt2, "The cat").tokens[0] == "The"


def test_tokens_show_spaces_newlines_and_tabs(gpt2_bundle):
    tp = tokenize_prompt(gpt2_bundle, "The capital\nof\tit")
    assert "".join(tp.tokens) == "The␣capital↵of⇥it"
    assert "".join(token_texts(gpt2_bundle, tp.ids)) == "The capital\nof\tit"


def test_readable_token_marks_every_whitespace_kind():
    assert readable_token(" Paris") == "␣Paris"
    assert readable_token("a b\n\t") == "a␣b↵⇥"
    assert readable_token("é!") == "é!"
    assert readable_token(readable_token(" x")) == "␣x"  # idempotent


def test_token_labels_are_unique_and_indexed():
    labels = token_labels(["The", " cat", " cat", "\n"])
    assert labels == ["0 The", "1 ␣cat", "2 ␣cat", "3 ↵"]
    assert len(set(labels)) == len(labels)


def test_single_token_id_accepts_one_token_with_its_space(gpt2_bundle):
    token_id = single_token_id(gpt2_bundle, " capital")
    assert gpt2_bundle.tokenizer.decode([token_id]) == " capital"


@pytest.mark.parametrize("text", ["", " Czechoslovakia"])
def test_single_token_id_refuses_empty_or_multi_token_text(gpt2_bundle, text):
    with pytest.raises(TargetTokenError) as info:
        single_token_id(gpt2_bundle, text)
    if text:
        n = len(gpt2_bundle.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert f"is {n} tokens" in str(info.value)


def test_act_name_follows_transformer_lens():
    assert act_name("embed") == "hook_embed"
    assert act_name("pos_embed") == "hook_pos_embed"
    assert act_name("resid_pre", 0) == "blocks.0.hook_resid_pre"
    assert act_name("pattern", 3) == "blocks.3.attn.hook_pattern"
    assert act_name("z", 1) == "blocks.1.attn.hook_z"
    assert act_name("attn_out", 2) == "blocks.2.hook_attn_out"
    assert act_name("mlp_out", 2) == "blocks.2.hook_mlp_out"
    assert act_name("resid_post", 11) == "blocks.11.hook_resid_post"
    assert act_name("ln_final") == "ln_final.hook_normalized"
    with pytest.raises(ValueError):
        act_name("pattern")
    with pytest.raises(ValueError):
        act_name("nonsense", 0)


def test_hosted_limits_are_never_looser_than_local(monkeypatch):
    monkeypatch.delenv("INTERP_HOSTED", raising=False)
    assert not is_hosted() and limits() == LOCAL_LIMITS
    for value in ("1", "true", "TRUE"):
        monkeypatch.setenv("INTERP_HOSTED", value)
        assert is_hosted() and limits() == HOSTED_LIMITS
    monkeypatch.setenv("INTERP_HOSTED", "0")
    assert not is_hosted()
    for name in Limits.__dataclass_fields__:
        assert getattr(HOSTED_LIMITS, name) <= getattr(LOCAL_LIMITS, name), name


def test_shipped_model_dir_is_models_organism_in_the_repo():
    assert SHIPPED_MODEL_DIR.parts[-2:] == ("models", "organism")
