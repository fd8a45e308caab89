"""Patching tasks: a clean and a corrupted prompt of the same token length, and the answer and foil whose
logit difference patching restores; the presets, and the pair the Circuits page picks.

    >>> task = preset_task(bundle, "IOI: subject swapped")
    >>> task = task_from_prompts(bundle, "The capital of France is", "The capital of Italy is", " Paris", " Rome")
    >>> task.to_frame()                                   # clean and corrupted token per position, and which differ
    >>> choose_task(bundle, OWN_PAIR, (clean, corrupt, answer, foil)).problem   # None, or the UserInputError
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.circuits import repeated_tokens
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
from interp_core.settings import limits
from interp_core.tokens import readable_token, single_token_id, token_labels, token_texts, tokenize_prompt


class PatchingInputError(UserInputError):
    """A prompt pair, answer or foil that patching cannot use (different token counts, too many sites, ...)."""


# -- tasks -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PatchingTask:
    """A clean and a corrupted prompt of the same token length, and the answer and foil tokens to compare."""

    name: str
    clean_ids: torch.LongTensor  # [pos]
    corrupt_ids: torch.LongTensor  # [pos]
    answer_id: int  # the token the clean prompt should predict
    foil_id: int  # the token the corrupted prompt pushes towards
    clean_tokens: list[str]  # [pos] readable
    corrupt_tokens: list[str]  # [pos] readable
    answer: str  # readable answer token
    foil: str  # readable foil token
    clean_prompt: str | None = None  # the text, when the task came from text (its cached trace is reused)
    corrupt_prompt: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        n = self.clean_ids.shape
        if self.clean_ids.dim() != 1 or self.corrupt_ids.shape != n or n[0] < 1:
            raise ValueError(f"PatchingTask ids have shapes {tuple(n)} and {tuple(self.corrupt_ids.shape)}, "
                             "expected two equal [pos]")
        if len(self.clean_tokens) != n[0] or len(self.corrupt_tokens) != n[0]:
            raise ValueError("PatchingTask tokens do not match the ids")

    @property
    def n_pos(self) -> int:
        return int(self.clean_ids.shape[0])

    def _identity(self) -> tuple:
        return (self.name, tuple(self.clean_ids.tolist()), tuple(self.corrupt_ids.tolist()), self.answer_id,
                self.foil_id, self.clean_prompt, self.corrupt_prompt, self.description)

    def __eq__(self, other: object) -> bool:
        """Equal when built from the same prompts or ids, answer and foil (the readable tokens follow from them)."""
        return isinstance(other, PatchingTask) and self._identity() == other._identity()

    def __hash__(self) -> int:
        """By value, like __eq__: a task identifies a cached patching result by what it is, not by where it lives."""
        return hash(self._identity())

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows per position: position, label, clean, corrupted, differs."""
        return pd.DataFrame({
            "position": list(range(self.n_pos)),
            "label": token_labels(self.clean_tokens),
            "clean": self.clean_tokens,
            "corrupted": self.corrupt_tokens,
            "differs": (self.clean_ids != self.corrupt_ids).tolist(),
        })


@dataclass(frozen=True)
class PromptPreset:
    """A text prompt pair with its answer and foil, and why it is a good patching experiment."""

    clean: str
    corrupt: str
    answer: str
    foil: str
    why: str


PRESETS: dict[str, PromptPreset] = {
    "IOI: subject swapped": PromptPreset(
        clean="When Mary and John went to the store, John gave a drink to",
        corrupt="When Mary and John went to the store, Mary gave a drink to",
        answer=" Mary",
        foil=" John",
        why=("Indirect object identification (Wang et al. 2022). Only the second mention of the subject changes "
             "(John -> Mary), so the token counts match and every other position is identical, and the correct "
             "answer flips: the clean run should say Mary, the corrupted one John. Corrupting with a third name "
             "(ABC) leaves the model with no preferred name, a weaker contrast; the swap is what Nanda's "
             "exploratory IOI analysis patches. Heads that restore the answer carry the name information."),
    ),
    "Capital: France -> Italy": PromptPreset(
        clean="The capital of France is",
        corrupt="The capital of Italy is",
        answer=" Paris",
        foil=" Rome",
        why=("Factual recall. One token (the country) changes and the correct capital changes with it, so the "
             "foil is the corrupted prompt's own answer; patching shows where the country is read and where "
             "the capital is looked up (the residual stream at the country's position, then at the last)."),
    ),
}
REPEATED_PRESET = "Induction: first copy scrambled"
REPEATED_WHY = ("Induction on random tokens [BOS] A A[:cut]. The clean run can predict the next token of the second "
                "copy by finding its earlier occurrence; the corrupted run has the first copy scrambled, so "
                "induction points at another token (the foil: what follows the last token in the scrambled "
                "copy). Only first-copy positions differ; patching shows the previous-token and induction heads.")
PRESET_NAMES = (*PRESETS, REPEATED_PRESET)


def _readable(bundle: ModelBundle, ids) -> list[str]:
    return [readable_token(t) for t in token_texts(bundle, ids)]


def task_from_prompts(
    bundle: ModelBundle, clean: str, corrupt: str, answer: str, foil: str, name: str = "Your pair",
    description: str = "",
) -> PatchingTask:
    """A task from text. Raises PromptError for an empty prompt, TargetTokenError when the answer or foil is
    not one token, and PatchingInputError when the prompts differ in token count, are longer than
    limits().max_prompt_tokens, or the answer equals the foil."""
    cap = min(limits().max_prompt_tokens, bundle.n_ctx)
    clean_tp = tokenize_prompt(bundle, clean, cap)
    corrupt_tp = tokenize_prompt(bundle, corrupt, cap)
    for label, tp in (("clean", clean_tp), ("corrupted", corrupt_tp)):
        if tp.truncated:
            raise PatchingInputError(
                f"The {label} prompt is {tp.n_prompt_tokens} tokens, more than max_prompt_tokens = "
                f"{limits().max_prompt_tokens} (or the model's context of {bundle.n_ctx}). Shorten it.")
    if clean_tp.n_prompt_tokens != corrupt_tp.n_prompt_tokens:
        raise PatchingInputError(
            f"The clean prompt is {clean_tp.n_prompt_tokens} tokens and the corrupted prompt is "
            f"{corrupt_tp.n_prompt_tokens} tokens. Patching copies activations position by position, so both "
            "prompts need the same number of tokens: change words for words that are one token each, such as "
            "one name for another.")
    answer_id, foil_id = single_token_id(bundle, answer), single_token_id(bundle, foil)
    if answer_id == foil_id:
        raise PatchingInputError("The answer and the foil are the same token; pick two different tokens.")
    return PatchingTask(
        name=name, clean_ids=clean_tp.ids, corrupt_ids=corrupt_tp.ids, answer_id=answer_id, foil_id=foil_id,
        clean_tokens=clean_tp.tokens, corrupt_tokens=corrupt_tp.tokens, answer=readable_token(answer),
        foil=readable_token(foil), clean_prompt=clean, corrupt_prompt=corrupt, description=description,
    )


def repeated_task(bundle: ModelBundle, length: int = 8, cut: int = 5, seed: int = 0) -> PatchingTask:
    """The induction preset on token ids: clean [BOS] A A[:cut], answer A[cut]; corrupted [BOS] P A[:cut] with
    P a scrambled A in which A[cut-1] is followed by another token, the foil."""
    if not 1 <= cut < length:
        raise PatchingInputError(f"The cut must be from 1 to {length - 1} (got {cut}).")
    seq = repeated_tokens(bundle, length, seed, n_sequences=1)
    a = seq.ids[0, seq.prefix: seq.prefix + length]  # [length]
    generator = torch.Generator().manual_seed(int(seed) + 1)
    while True:  # a scramble where the query's earlier occurrence is followed by a different, in-copy token
        perm = a[torch.randperm(length, generator=generator)]
        where = int((perm == a[cut - 1]).nonzero()[0, 0])
        if where < length - 1 and perm[where + 1] != a[cut]:
            break
    prefix = seq.ids[0, : seq.prefix]
    clean = torch.cat([prefix, a, a[:cut]])
    corrupt = torch.cat([prefix, perm, a[:cut]])
    answer_id, foil_id = int(a[cut]), int(perm[where + 1])
    return PatchingTask(
        name=REPEATED_PRESET, clean_ids=clean, corrupt_ids=corrupt, answer_id=answer_id, foil_id=foil_id,
        clean_tokens=_readable(bundle, clean), corrupt_tokens=_readable(bundle, corrupt),
        answer=_readable(bundle, [answer_id])[0], foil=_readable(bundle, [foil_id])[0], description=REPEATED_WHY,
    )


def preset_task(bundle: ModelBundle, name: str, seed: int = 0) -> PatchingTask:
    """One of PRESET_NAMES as a task (`seed` only matters for the induction preset)."""
    if name == REPEATED_PRESET:
        return repeated_task(bundle, seed=seed)
    if name not in PRESETS:
        raise PatchingInputError(f"Unknown preset {name!r}; pick one of {', '.join(PRESET_NAMES)}.")
    p = PRESETS[name]
    return task_from_prompts(bundle, p.clean, p.corrupt, p.answer, p.foil, name=name, description=p.why)


# -- the pair picked on the Circuits page -----------------------------------------------------------------

OWN_PAIR = "Your own pair"
PAIR_CHOICES = (*PRESET_NAMES, OWN_PAIR)


@dataclass(frozen=True, eq=False)
class TaskChoice:
    """The prompt pair picked on the Circuits page: its task, or the user-facing problem that stops it."""

    task: PatchingTask | None  # None when `problem` says why there is no task
    problem: UserInputError | None = None


def choose_task(bundle: ModelBundle, name: str, own: Sequence[str] = ()) -> TaskChoice:
    """The task of `name`, one of PAIR_CHOICES: a preset, or for OWN_PAIR the user's (clean, corrupt, answer,
    foil). A UserInputError (prompts of different token counts, an answer of two tokens, ...) becomes the
    choice's problem, for the page to show in place of the patching results."""
    try:
        task = task_from_prompts(bundle, *own) if name == OWN_PAIR else preset_task(bundle, name)
    except UserInputError as exc:
        return TaskChoice(task=None, problem=exc)
    return TaskChoice(task=task)
