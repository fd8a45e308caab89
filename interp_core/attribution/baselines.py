"""Inputs and baselines: the prompt's token embeddings x [pos, d_model] and what "absent" means for each token.

Special positions (the tokenizer's special tokens: BOS, EOS, pad, ...; `all_special_ids`) are never replaced:
every baseline keeps their own embedding, so integrated gradients and occlusion give them exactly 0 and the
deletion curves never delete them. On Llama-style models BOS is an attention sink (Xiao et al. 2023, "Efficient
streaming language models with attention sinks"): replacing it moves every later position's attention, which
says nothing about what the prompt's words contribute, yet it took 8-24 % of |attribution| on the tiny test
Llama (integrated gradients and occlusion, neutral-token baseline).

    >>> x = _embed(bundle, ids)                             # [pos, d_model]
    >>> b = _baseline_embeds(bundle, ids, Baseline("token"))  # [pos, d_model], b[special] == x[special]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp_core import activations
from interp_core.attribution.options import DEFAULTS, AttributionSettingsError, Baseline
from interp_core.attribution.targets import _token_text
from interp_core.caches import cached_trace
from interp_core.errors import PromptError
from interp_core.loading import ModelBundle
from interp_core.settings import limits
from interp_core.tokens import TokenizedPrompt, encode, readable_token, special_token_ids, token_texts
from interp_core.trace import Trace


def neutral_token_id(bundle: ModelBundle) -> int:
    """The tokenizer's neutral token: EOS, else pad, else BOS, else 0 (GPT-2: <|endoftext|>)."""
    tok = bundle.tokenizer
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        value = getattr(tok, name, None)
        if isinstance(value, int) and 0 <= value < bundle.d_vocab:
            return value
    return 0


def neutral_token_note(bundle: ModelBundle) -> str:
    """Plain text naming the neutral token of the "token" baseline, e.g. "Neutral token: <|endoftext|> (id 50256)"."""
    token_id = neutral_token_id(bundle)
    return f"Neutral token: {_token_text(bundle, token_id)} (id {token_id})"


def special_positions(bundle: ModelBundle, ids: torch.Tensor) -> torch.Tensor:
    """BoolTensor [pos]: True where ids [pos] holds one of the tokenizer's special tokens (all_special_ids)."""
    special = torch.tensor(special_token_ids(bundle), dtype=ids.dtype, device=ids.device)
    return torch.isin(ids, special)


def _baseline_label(bundle: ModelBundle, baseline: Baseline) -> str:
    if baseline.kind == "zero":
        return "zero embedding"
    if baseline.kind == "token":
        token_id = neutral_token_id(bundle) if baseline.token_id is None else baseline.token_id
        return f"token {_token_text(bundle, token_id)} at every position"
    return f"text '{baseline.text}'"


def _as_baseline(baseline: Baseline | str | None) -> Baseline:
    if baseline is None:
        return DEFAULTS.baseline
    return baseline if isinstance(baseline, Baseline) else Baseline(str(baseline))


@dataclass(frozen=True, eq=False)
class _Inputs:
    ids: torch.Tensor  # [pos] on the model's device
    tokens: list[str]  # [pos] readable
    last_logits: torch.Tensor | None  # [d_vocab] from the cached trace, when there is one


def _inputs(bundle: ModelBundle, prompt_or_ids) -> _Inputs:
    """Token ids from a prompt (through the cached trace), a Trace, a TokenizedPrompt or a sequence of ids.

    A prompt string or ids longer than limits().max_prompt_tokens (or the model's context) raise PromptError; a
    Trace or TokenizedPrompt is used as it is (it records its own truncation)."""
    logits = None
    if isinstance(prompt_or_ids, str):
        prompt_or_ids = cached_trace(bundle, prompt_or_ids)  # raises PromptError when empty
        if prompt_or_ids.truncated:  # a Trace passed in says so itself (the sidebar warns); a string: refuse
            raise PromptError(f"The prompt is {prompt_or_ids.n_prompt_tokens} tokens long; attribution accepts at "
                              f"most {prompt_or_ids.n_pos} (max_prompt_tokens / the model's context). Shorten it.")
    if isinstance(prompt_or_ids, Trace):
        ids, tokens, logits = prompt_or_ids.token_ids, list(prompt_or_ids.tokens), prompt_or_ids.last_logits
    elif isinstance(prompt_or_ids, TokenizedPrompt):
        ids, tokens = prompt_or_ids.ids, list(prompt_or_ids.tokens)
    else:
        ids = torch.as_tensor(list(prompt_or_ids) if not torch.is_tensor(prompt_or_ids) else prompt_or_ids,
                              dtype=torch.long).reshape(-1)
        tokens = [readable_token(t) for t in token_texts(bundle, ids.tolist())]
    if ids.numel() == 0:
        raise PromptError("The prompt is empty. Type some text to attribute.")
    cap = min(limits().max_prompt_tokens, bundle.n_ctx)
    if ids.numel() > cap:
        raise PromptError(f"The prompt is {ids.numel()} tokens long; attribution accepts at most {cap} "
                          "(max_prompt_tokens / the model's context). Shorten it.")
    if int(ids.min()) < 0 or int(ids.max()) >= bundle.d_vocab:
        raise PromptError("The prompt holds token ids outside the model's vocabulary.")
    return _Inputs(ids.to(bundle.device), tokens, logits)


def _embed(bundle: ModelBundle, ids: torch.Tensor) -> torch.Tensor:
    """Token-embedding output for ids [pos] -> [pos, d_model] (no position embedding), detached, in float32 whatever
    the model's dtype: paths, differences and sums are built in float32, rounded only where the model reads them."""
    return activations.embed_tokens(bundle, ids).float()


def _baseline_embeds(bundle: ModelBundle, ids: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """The baseline b as token-embedding outputs [pos, d_model]; at special positions b is the input itself."""
    b = _absent_embeds(bundle, ids, baseline)  # [pos, d_model]
    special = special_positions(bundle, ids)  # [pos]
    if special.any():
        b[special] = _embed(bundle, ids[special])  # BOS & co. stay as they are: their x - b is exactly 0
    return b


def _absent_embeds(bundle: ModelBundle, ids: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """The baseline's own embedding at every position [pos, d_model] (special positions not yet restored)."""
    n_pos = ids.numel()
    if baseline.kind == "zero":
        return torch.zeros_like(_embed(bundle, ids[:1])).expand(n_pos, -1).clone()
    if baseline.kind == "token":
        token_id = neutral_token_id(bundle) if baseline.token_id is None else int(baseline.token_id)
        if not 0 <= token_id < bundle.d_vocab:
            raise AttributionSettingsError(f"The baseline token id {token_id} is outside the vocabulary.")
        return _embed(bundle, torch.full_like(ids, token_id))
    if not baseline.text.strip():
        raise AttributionSettingsError("The baseline text is empty. Type a text with as many tokens as the prompt, "
                                       "or pick another baseline.")
    base_ids = list(encode(bundle, baseline.text)["input_ids"])
    if len(base_ids) != n_pos:
        raise AttributionSettingsError(f"The baseline text is {len(base_ids)} tokens and the prompt {n_pos}; they "
                                       "must have the same number of tokens (one baseline token per prompt token).")
    return _embed(bundle, torch.tensor(base_ids, dtype=torch.long, device=ids.device))
