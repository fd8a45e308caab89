"""Behaviour evaluations of the model organism, run through plain `transformers` on raw prompts.

The training script writes these numbers into the model card and `eval.json`; a test re-measures them on the
shipped weights. Prompts are tokenized as a user would type them: no BOS, no leading space.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from interp_core.organism.corpus import (
    CAPITAL_TEMPLATES_HELD_OUT,
    FACTS,
    held_out_name_pairs,
)

IOI_EVAL_TEMPLATE = "When {a} and {b} went to the {place}, {s} gave a {obj} to"
INDUCTION_SEQUENCES = 50
INDUCTION_LENGTH = 30  # tokens per copy: two copies fit the 128-token context with room to spare


def _next_token_logits(model, tokenizer, prompt: str) -> torch.Tensor:
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        return model(ids).logits[0, -1]


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens, expected one")
    return ids[0]


def top1_next_token(model, tokenizer, prompt: str) -> str:
    """The model's most likely next token (decoded text) after `prompt`."""
    return tokenizer.decode([int(_next_token_logits(model, tokenizer, prompt).argmax())])


def capital_recall(model, tokenizer, template: str) -> float:
    """Share of countries whose capital is the top-1 next token after the template's prefix."""
    hits = 0
    for country, capital, _ in FACTS:
        prefix = template.split("{capital}")[0].rstrip().format(country=country)
        logits = _next_token_logits(model, tokenizer, prefix)
        hits += int(logits.argmax()) == _single_token(tokenizer, " " + capital)
    return hits / len(FACTS)


def ioi_accuracy(model, tokenizer, seed: int = 0) -> float:
    """Share of held-out name pairs (both orders, either subject) where logit(IO) > logit(S)."""
    rng = random.Random(seed)
    wins = total = 0
    for pair in sorted(sorted(p) for p in held_out_name_pairs()):
        for a, b in (pair, pair[::-1]):
            for subject, indirect_object in ((a, b), (b, a)):
                prompt = IOI_EVAL_TEMPLATE.format(a=a, b=b, s=subject, place=rng.choice(("store", "park")),
                                                  obj=rng.choice(("drink", "book")))
                logits = _next_token_logits(model, tokenizer, prompt)
                io_id = _single_token(tokenizer, " " + indirect_object)
                s_id = _single_token(tokenizer, " " + subject)
                wins += int(logits[io_id] > logits[s_id])
                total += 1
    return wins / total


def repeated_random_tokens(tokenizer, n_sequences: int, length: int, seed: int) -> torch.Tensor:
    """[n_sequences, 2 * length] random non-special token ids, each row a sequence repeated twice."""
    generator = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids)
    vocab = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    first = vocab[torch.randint(len(vocab), (n_sequences, length), generator=generator)]
    return torch.cat([first, first], dim=1)


def induction_metrics(model, tokenizer, seed: int = 0) -> dict[str, float]:
    """Mean loss on each copy of repeated random tokens and the best prefix-matching score per layer."""
    L = INDUCTION_LENGTH
    tokens = repeated_random_tokens(tokenizer, INDUCTION_SEQUENCES, L, seed).to(model.device)
    with torch.no_grad():
        out = model(tokens, output_attentions=True)
    # loss[b, t] predicts token t + 1
    loss = F.cross_entropy(out.logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    first_copy = loss[:, : L - 1].mean().item()  # predicts tokens 1 .. L-1
    second_copy = loss[:, L - 1:].mean().item()  # predicts tokens L .. 2L-1 (the whole second copy)
    queries = torch.arange(L, 2 * L)
    scores = {}
    for layer, pattern in enumerate(out.attentions):  # [batch, head, query_pos, key_pos]
        per_head = pattern[:, :, queries, queries - L + 1].mean(dim=(0, 2))
        scores[f"induction_score_layer{layer}"] = per_head.max().item()
    return {"induction_loss_first_copy": first_copy, "induction_loss_second_copy": second_copy,
            "induction_loss_ratio": second_copy / first_copy, **scores}


def evaluate_all(model, tokenizer) -> dict[str, float | str]:
    """Every behaviour the model card reports, as a flat dict."""
    model.eval()
    metrics: dict[str, float | str] = {
        "france_top1": top1_next_token(model, tokenizer, "The capital of France is"),
        "capital_recall_trained_template": capital_recall(model, tokenizer, "The capital of {country} is {capital}."),
    }
    for i, template in enumerate(CAPITAL_TEMPLATES_HELD_OUT):
        metrics[f"capital_recall_held_out_{i}"] = capital_recall(model, tokenizer, template)
    metrics["ioi_accuracy_held_out_pairs"] = ioi_accuracy(model, tokenizer)
    metrics.update(induction_metrics(model, tokenizer))
    return metrics
