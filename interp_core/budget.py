"""How big one batched forward (or forward and backward) pass may be: the memory budget every long job shares.

Integrated-gradient steps, occluded variants, deletion steps, patching sites and probing texts all go through
the model in batches sized so that one batch's activations stay within limits().ig_batch_memory_mb. One batch
is one `activations.run` call, which holds the model's lock: a bounded batch also bounds how long any other
request waits.

    >>> rows_per_chunk(bundle, n_pos=64, keep=1, grad=True)      # IG steps per batch
    >>> recompute_blocks(bundle, n_pos=1024, keep=1)              # recompute blocks in the backward pass?
    >>> tokens_per_batch(bundle, kept_layers=bundle.n_layers + 1)  # probing: tokens whose residuals are kept
"""

from __future__ import annotations

import ctypes
import functools
from typing import TYPE_CHECKING

from interp_core.settings import limits

if TYPE_CHECKING:  # loading imports this module
    from interp_core.loading import ModelBundle

MMAP_THRESHOLD_BYTES = 1 << 20  # allocations this big or bigger get their own mapping (map_large_tensors) ...
LONG_PASS_BYTES = 16 << 20  # ... from the first pass with an activation this big (map_tensors_if_large)
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def rows_per_chunk(bundle: ModelBundle, n_pos: int, keep: int, grad: bool) -> int:
    """How many input rows one batched forward may hold so that its activations stay within the budget. An
    estimate: float32 activations per token and layer (MLP, norms and attention inputs saved for the backward
    pass; far fewer without gradients) plus the kept logits. Gradient passes run with fused attention, so they
    keep no [head, pos, pos] probabilities, and recompute their blocks when one row's activations would not fit
    (recompute_blocks)."""
    if grad:
        floats = _gradient_floats(bundle, n_pos, keep, recomputed=recompute_blocks(bundle, n_pos, keep))
    else:  # one layer's working set at a time, eager attention's [head, pos, pos] scores included
        floats = (n_pos * (11 * bundle.d_model + 3 * d_mlp(bundle) + 3 * bundle.n_heads * n_pos)
                  + 2 * keep * bundle.d_vocab)
    return max(1, int(budget_bytes() // (4 * floats)))


def recompute_blocks(bundle: ModelBundle, n_pos: int, keep: int) -> bool:
    """Whether a gradient pass over `n_pos` tokens should recompute each block in the backward pass
    (activations.run(..., recompute=True)): one row's activations, kept for every layer, exceed the budget. It
    then holds every block's input and one block's activations at a time, for one more forward pass."""
    return 4 * _gradient_floats(bundle, n_pos, keep, recomputed=False) > budget_bytes()


def tokens_per_batch(bundle: ModelBundle, kept_layers: int) -> int:
    """Tokens one no-grad batch may hold when it keeps `kept_layers` residual streams of every token (probing's
    features), counting twice for the model's own intermediate activations."""
    return max(1, budget_bytes() // (2 * 4 * kept_layers * bundle.d_model))


def _gradient_floats(bundle: ModelBundle, n_pos: int, keep: int, recomputed: bool) -> int:
    """Float32 numbers one row of a gradient pass holds: every layer's saved activations, or with recomputed
    blocks every block's input plus the recomputed block's activations, their gradients and the backward pass's
    working memory; and the kept logits. The factors are measured (peak RSS of one pass on the GPT-2-small shape
    at 256 and 1,024 tokens: 280 MiB kept, 203 and 665 MiB recomputed, no-grad batches within 10%)."""
    per_token_layer = 16 * bundle.d_model + 4 * d_mlp(bundle)
    if recomputed:
        per_token = bundle.n_layers * bundle.d_model + 6 * per_token_layer
    else:
        per_token = bundle.n_layers * per_token_layer
    return n_pos * per_token + 3 * keep * bundle.d_vocab


def d_mlp(bundle: ModelBundle) -> int:
    """The MLP's hidden width (intermediate_size or n_inner; 4 * d_model when the config leaves it out)."""
    config = bundle.model.config
    return int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * bundle.d_model)


def budget_bytes() -> int:
    """limits().ig_batch_memory_mb in bytes."""
    return limits().ig_batch_memory_mb * 1024 * 1024


def map_tensors_if_large(bundle: ModelBundle, n_rows: int, n_pos: int) -> None:
    """Before a pass over [n_rows, n_pos] token ids: map large tensors (map_large_tensors) from the first pass
    whose largest activation (the MLP's hidden layer or one layer's attention scores) reaches LONG_PASS_BYTES
    (GPT-2 small: one row of about 600 tokens). Smaller passes are left to glibc's defaults; a process that never
    runs a long one keeps its allocator as it was. Mapping costs a page fault per page of every tensor over 1 MiB:
    many small passes pay it over and over (tuned-lens training of the organism, 8 x 128 tokens a step, mapped
    from its first pass: 125 ms a step, of which half in the kernel, against 54 ms unmapped)."""
    if 4 * n_rows * n_pos * max(d_mlp(bundle), bundle.n_heads * n_pos) >= LONG_PASS_BYTES:
        map_large_tensors()


@functools.cache
def map_large_tensors() -> bool:
    """Have glibc's malloc give every allocation of MMAP_THRESHOLD_BYTES or more its own mapping, returned to the
    system when the tensor is freed; True when set (Linux with glibc), False elsewhere. Once per process, from
    map_tensors_if_large.

    By default glibc raises its mmap threshold to the size of the largest block freed so far (up to 32 MiB), so
    after the first pass the 1-32 MiB activations of long prompts come from the heap, which fragments and keeps
    what it grew to. Measured on the GPT-2-small shape at 1,024 tokens: one recomputed gradient pass peaked at
    604 MiB above its start and kept 538 MiB afterwards; with the fixed threshold 166 MiB and 24 MiB. The cost
    is the page faults of fresh mappings: within noise at 1,024 tokens, up to about 20% on a 256-token trace.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.gnu_get_libc_version and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return False
