"""Prompts to token ids, and token strings shown so that spaces and line breaks are visible.

>>> tp = tokenize_prompt(bundle, "The capital of France is")
>>> tp.tokens
['The', '␣capital', '␣of', '␣France', '␣is']
>>> token_labels(tp.tokens)[:2]
['0 The', '1 ␣capital']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp_core.errors import PromptError, TargetTokenError
from interp_core.loading import ModelBundle
from interp_core.settings import limits

_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥"})


@dataclass(frozen=True, eq=False)
class TokenizedPrompt:
    """A prompt as the model sees it (special tokens included, as the tokenizer adds them)."""

    ids: torch.LongTensor  # [pos]
    tokens: list[str]  # [pos] readable strings (see readable_token)
    truncated: bool  # True when the prompt had more tokens than allowed and its end was cut off
    n_prompt_tokens: int  # tokens before truncation (>= len(ids))


def readable_token(text: str) -> str:
    """`text` with every space shown as ␣, newline as ↵ and tab as ⇥ (other characters unchanged)."""
    return text.translate(_VISIBLE)


def token_labels(tokens: list[str]) -> list[str]:
    """Unique axis labels "index token", e.g. ["0 The", "1 ␣capital"] (tokens made readable)."""
    return [f"{i} {readable_token(token)}" for i, token in enumerate(tokens)]


def encode(bundle: ModelBundle, text: str, **kwargs):
    """`bundle.tokenizer(text, **kwargs)` under the bundle's tokenizer lock (see tokenize_prompt): the one way
    to call the shared tokenizer outside this module."""
    with bundle.tokenizer_lock:
        return bundle.tokenizer(text, **kwargs)


def decode(bundle: ModelBundle, ids, **kwargs) -> str:
    """`bundle.tokenizer.decode(ids, **kwargs)` under the bundle's tokenizer lock (see tokenize_prompt)."""
    with bundle.tokenizer_lock:
        return bundle.tokenizer.decode(ids, **kwargs)


def special_token_ids(bundle: ModelBundle) -> list[int]:
    """The ids of the tokenizer's special tokens (BOS, EOS, pad, ...: all_special_ids)."""
    with bundle.tokenizer_lock:
        return list(bundle.tokenizer.all_special_ids)


def token_texts(bundle: ModelBundle, ids) -> list[str]:
    """The raw text of each token id, keeping a leading space also for SentencePiece ("▁") vocabularies."""
    with bundle.tokenizer_lock:  # see tokenize_prompt
        return _token_texts(bundle, ids)


def _token_texts(bundle: ModelBundle, ids) -> list[str]:
    """token_texts for a caller that holds bundle.tokenizer_lock (a plain Lock: taking it twice would hang)."""
    tokenizer = bundle.tokenizer
    ids = [int(i) for i in ids]
    texts = []
    pieces = tokenizer.convert_ids_to_tokens(ids)
    for token_id, piece in zip(ids, pieces, strict=True):
        text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if isinstance(piece, str) and piece.startswith("▁") and not text.startswith(" "):
            text = " " + text  # SentencePiece decoders drop the space of a sequence's first token
        texts.append(text)
    return texts


def tokenize_prompt(bundle: ModelBundle, prompt: str, max_tokens: int | None = None) -> TokenizedPrompt:
    """Tokenize `prompt` as the model's tokenizer normally does (Llama adds BOS, GPT-2 does not).

    Keeps the first min(max_tokens, n_ctx) tokens (max_tokens defaults to limits().max_prompt_tokens) and sets
    `truncated` when tokens were cut. Raises PromptError for an empty or whitespace-only prompt.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("The prompt is empty. Type some text to run the model on.")
    cap = limits().max_prompt_tokens if max_tokens is None else int(max_tokens)
    if cap < 1:
        raise PromptError(f"The token limit must be at least 1 (got {cap}).")
    cap = min(cap, bundle.n_ctx)
    # A Rust tokenizer shared between threads can fail with "Already borrowed", so tokenizer calls hold the
    # bundle's tokenizer lock - not the model's lock: tokenising never waits for another request's forward pass.
    with bundle.tokenizer_lock:
        ids = list(bundle.tokenizer(prompt)["input_ids"])
        if not ids:
            raise PromptError("The prompt became no tokens at all. Type some text to run the model on.")
        n_prompt_tokens = len(ids)
        ids = ids[:cap]  # keep the START of the prompt
        texts = _token_texts(bundle, ids)
    return TokenizedPrompt(
        ids=torch.tensor(ids, dtype=torch.long),
        tokens=[readable_token(t) for t in texts],
        truncated=n_prompt_tokens > len(ids),
        n_prompt_tokens=n_prompt_tokens,
    )


def single_token_id(bundle: ModelBundle, text: str) -> int:
    """The id of `text` when it is exactly one token (no special tokens added), e.g. " Paris" for GPT-2.

    Raises TargetTokenError when `text` is empty or becomes several tokens; the message says how many.
    """
    if not text:
        raise TargetTokenError("The target token is empty. Type one token, for example ' Paris' with its space.")
    with bundle.tokenizer_lock:  # see tokenize_prompt
        ids = list(bundle.tokenizer(text, add_special_tokens=False)["input_ids"])
        shown = " | ".join(readable_token(t) for t in _token_texts(bundle, ids))
    if len(ids) != 1:
        raise TargetTokenError(
            f"'{readable_token(text)}' is {len(ids)} tokens ({shown}), not one. Pick a target that is a single "
            "token; most words need their leading space, like ' Paris'."
        )
    return int(ids[0])
