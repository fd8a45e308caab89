"""Batched evaluation of F under the memory budget (interp_core.budget): every method pushes all its model
evaluations (IG steps, occluded variants, deletion steps) through the model as batches of rows, each chunk sized so
its activations fit limits().ig_batch_memory_mb - never one forward per step.

Each chunk is one `activations.run` call, which holds the bundle's lock for that chunk only; the model is never
changed (gradients flow into a fresh copy of the input embeddings only; blocks recomputed for a long prompt's
backward pass are wrapped only while the lock is held).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interp_core import activations
from interp_core.attribution.options import Progress
from interp_core.attribution.targets import _target_values
from interp_core.budget import recompute_blocks, rows_per_chunk
from interp_core.loading import ModelBundle


def _evaluate(
    bundle: ModelBundle,
    n_rows: int,
    make_rows: Callable[[int, int], torch.Tensor],
    q: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    kind: str,
    keep: int,
    on_grad: Callable[[int, int, torch.Tensor], None] | None = None,
    progress: Progress | None = None,
    what: str = "",
) -> torch.Tensor:
    """F for `n_rows` input rows, in memory-bounded chunks; with `on_grad`, also dF/d(row), handed over chunk by
    chunk as on_grad(start, stop, grads [stop - start, pos, d_model]) so that no [rows, pos, d_model] tensor of
    every row's gradient is ever held.

    make_rows(start, stop) -> embeddings [stop - start, pos, d_model] (token-embedding outputs); q, a, b [n_rows, m]:
    for each row and target the kept-logit position it reads (0..keep-1, counted within the last `keep`
    positions) and its token ids. Returns values [n_rows, m] on the CPU. Gradients need m = 1.
    """
    first = make_rows(0, min(1, n_rows))
    n_pos = first.shape[1]
    grad = on_grad is not None
    step = rows_per_chunk(bundle, n_pos, keep, grad)
    recompute = grad and recompute_blocks(bundle, n_pos, keep)
    values = []
    for start in range(0, n_rows, step):  # one activations.run per chunk: other requests get the model between
        stop = min(n_rows, start + step)
        rows = make_rows(start, stop)  # [chunk, pos, d_model]
        qa = [t[start:stop].to(bundle.device) for t in (q, a, b)]
        out = activations.run(
            bundle, torch.zeros(rows.shape[:2], dtype=torch.long),  # the token ids are replaced by `rows`
            edits={"hook_embed": activations.replace(rows)}, grad=["hook_embed"] if grad else (),
            metric=(lambda logits, acts, qa=qa: _target_values(logits, *qa, kind).sum()) if grad else None,
            logits_to_keep=keep, fused_attention=True, recompute=recompute)  # rows are independent: sum
        if grad:
            on_grad(start, stop, out.grads["hook_embed"])  # row r gets dF_r/d(row r)
        values.append(_target_values(out.logits, *qa, kind).cpu())
        if progress is not None:
            progress(stop / n_rows, f"{what}: {stop} of {n_rows} model inputs")
    return torch.cat(values)


def _occlusion_masks(special: torch.Tensor) -> torch.Tensor:
    """The unoccluded input, then each position occluded alone: [1 + pos, pos] bool. A special position's row
    occludes nothing (it equals row 0, so it is evaluated once with it and its drop is exactly 0)."""
    n_pos = special.numel()
    occluded = torch.eye(n_pos, dtype=torch.bool) & ~special.cpu()[None]  # [pos, pos]
    return torch.cat([torch.zeros(1, n_pos, dtype=torch.bool), occluded])


def _replaced_values(
    bundle: ModelBundle,
    x: torch.Tensor,
    b: torch.Tensor,
    masks: torch.Tensor,
    q: torch.Tensor,
    a: torch.Tensor,
    c: torch.Tensor,
    kind: str,
    progress: Progress | None = None,
    what: str = "",
) -> torch.Tensor:
    """F of every target on variants of x: masks [rows, pos] bool (True: that position takes the baseline's
    embedding), targets q, a, c [m] -> [rows, m]. Identical variants are evaluated once; all in batches."""
    m = q.shape[0]
    unique, inverse = torch.unique(masks.bool(), dim=0, return_inverse=True)  # [variants, pos], [rows]
    n = unique.shape[0]

    def make_rows(start: int, stop: int) -> torch.Tensor:
        keep_b = unique[start:stop, :, None].to(x.device)  # [chunk, pos, 1]
        return torch.where(keep_b, b[None], x[None])  # [chunk, pos, d_model]

    values = _evaluate(bundle, n, make_rows, q[None].expand(n, m), a[None].expand(n, m), c[None].expand(n, m),
                       kind, keep=m, progress=progress, what=what)
    return values[inverse]  # [rows, m]
