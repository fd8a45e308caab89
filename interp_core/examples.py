"""Example prompts that show each page's known truth, and whether a prompt lies inside what a model knows.

    >>> example_prompts(bundle)["A capital"]                     # "The capital of France is"
    >>> familiarity(bundle, trace, reference_loss=corpus_loss(bundle)).unfamiliar

The shipped organism knows only its generated world (capitals, IOI sentences, a small grammar, repeated random
sequences): typed as a newcomer would, "My favourite food is pizza because" splits into letters and gets a flat
distribution over junk. `familiarity` measures two things a reader can check: the share of the prompt's words the
tokenizer splits into pieces, and the prompt's mean next-token loss against the model's loss on its own corpus.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from interp_core.components import resid_to_logits
from interp_core.loading import ModelBundle
from interp_core.organism import corpus
from interp_core.tokens import encode
from interp_core.trace import Trace, run_trace

SPLIT_SHARE = 0.5  # most words in pieces: the tokenizer has never seen them whole
EXTRA_LOSS = 5.0  # nats per token above the corpus: about 150 times less likely than the model's own text
CORPUS_DOCUMENTS = 40  # generated documents the reference loss averages over (about 0.5 s on the organism)

EXAMPLES = {  # label -> prompt (the induction example is built from the model's own vocabulary)
    "A capital": "The capital of France is",
    "Indirect object (IOI)": "When Mary and John went to the store, John gave a drink to",
    "Subject-verb agreement": "The dogs near the river saw the cat. They",
}
REPEATED = "A repeated random sequence (induction)"


def example_prompts(bundle: ModelBundle, length: int = 16, seed: int = 0) -> dict[str, str]:
    """label -> prompt: a capital, an IOI sentence, subject-verb agreement and `length` random whole-word tokens of
    the model's vocabulary repeated twice (the second copy is predictable only by induction)."""
    vocab = sorted(piece for piece in bundle.tokenizer.get_vocab()
                   if piece.startswith("Ġ") and piece[1:].isalpha() and len(piece) > 3)  # " word" as one token
    words = [piece[1:] for piece in random.Random(seed).sample(vocab, min(length, len(vocab)))]
    return {**EXAMPLES, REPEATED: " ".join(words + words)}


@dataclass(frozen=True)
class Familiarity:
    """How far a prompt lies from what the model knows."""

    split_share: float  # share of the prompt's words the tokenizer splits into two or more tokens
    loss: float  # the prompt's mean next-token loss, nats per token
    reference_loss: float | None  # the model's mean loss on its own corpus (None: not known for this model)

    @property
    def unfamiliar(self) -> bool:
        """Most words split into pieces, or a loss far (EXTRA_LOSS nats per token) above the corpus's."""
        far = self.reference_loss is not None and self.loss > self.reference_loss + EXTRA_LOSS
        return self.split_share >= SPLIT_SHARE or far

    @property
    def message(self) -> str:
        """One sentence for the user saying what was measured."""
        reference = "" if self.reference_loss is None else f" (on its own training text: {self.reference_loss:.1f})"
        return (f"This prompt lies outside what the model knows: {self.split_share:.0%} of its words split into "
                f"pieces, and its loss is {self.loss:.1f} nats per token{reference}.")


def familiarity(bundle: ModelBundle, trace: Trace, text: str, reference_loss: float | None = None) -> Familiarity:
    """The Familiarity of `text`, whose cached trace is `trace` (its loss from the trace's residual stream)."""
    words = re.findall(r"[^\W\d_]+", text)
    pieces = [len(encode(bundle, (" " if i else "") + w, add_special_tokens=False)["input_ids"])
              for i, w in enumerate(words)]
    split = sum(n > 1 for n in pieces) / len(words) if words else 0.0
    return Familiarity(split_share=split, loss=_mean_loss(bundle, trace), reference_loss=reference_loss)


def corpus_loss(bundle: ModelBundle, n_documents: int = CORPUS_DOCUMENTS, seed: int = 1) -> float:
    """The model's mean next-token loss on documents of the organism's corpus generator (nats per token): the
    reference for the shipped organism, which was trained on that generator."""
    rng, held_out = random.Random(seed), corpus.held_out_name_pairs()
    documents = [corpus.text_document(rng, corpus.CorpusMix(), held_out) for _ in range(n_documents)]
    return float(sum(_mean_loss(bundle, run_trace(bundle, doc)) for doc in documents) / n_documents)


def _mean_loss(bundle: ModelBundle, trace: Trace) -> float:
    if trace.n_pos < 2:
        return 0.0
    with torch.no_grad():
        logp = resid_to_logits(bundle, trace.resid[-1, :-1]).log_softmax(-1)  # [pos - 1, d_vocab]
    return float(-logp.gather(-1, trace.token_ids[1:, None]).mean())
