"""A task as a dataset of prompt pairs: clean and corrupted prompts of equal token length, each with an answer and a
foil token; the metric is the logit difference logit(answer) - logit(foil) at the last position, averaged over the
pairs, and normalised so that the clean prompts give 1 and the corrupted ones 0.

    >>> data = PairData.from_tasks("IOI", [task_from_prompts(bundle, clean, corrupt, " Mary", " John"), ...])
    >>> for batch in data.batches(max_rows=32): ...   # rows of one token length each

Pairs may differ in length from each other (templates); a batch holds pairs of one length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from interp_core.patching.tasks import PatchingTask


@dataclass(frozen=True, eq=False)
class PairBatch:
    """Pairs of one token length, stacked: ids [pair, pos], answer and foil ids [pair]."""

    clean: torch.Tensor
    corrupt: torch.Tensor
    answer: torch.Tensor
    foil: torch.Tensor

    def logit_difference(self, logits: torch.Tensor) -> torch.Tensor:
        """[pair] logit(answer) - logit(foil) from last-position logits [pair, d_vocab], in float32."""
        rows = torch.arange(len(self.answer))
        return logits[rows, self.answer].float() - logits[rows, self.foil].float()


@dataclass(frozen=True, eq=False)
class PairData:
    """The task's pairs (see the module docstring)."""

    name: str
    tasks: tuple[PatchingTask, ...]

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("A pair dataset needs at least one pair")

    @classmethod
    def from_tasks(cls, name: str, tasks: Sequence[PatchingTask]) -> PairData:
        return cls(name, tuple(tasks))

    def __len__(self) -> int:
        return len(self.tasks)

    def subset(self, rows: Sequence[int], name: str | None = None) -> PairData:
        return PairData(name or self.name, tuple(self.tasks[i] for i in rows))

    def batches(self, max_rows: int = 64) -> Iterator[PairBatch]:
        """The pairs in batches of one token length, at most `max_rows` pairs each."""
        by_length: dict[int, list[PatchingTask]] = {}
        for task in self.tasks:
            by_length.setdefault(task.n_pos, []).append(task)
        for group in by_length.values():
            for start in range(0, len(group), max_rows):
                chunk = group[start:start + max_rows]
                yield PairBatch(clean=torch.stack([torch.as_tensor(t.clean_ids) for t in chunk]),
                                corrupt=torch.stack([torch.as_tensor(t.corrupt_ids) for t in chunk]),
                                answer=torch.tensor([t.answer_id for t in chunk]),
                                foil=torch.tensor([t.foil_id for t in chunk]))
