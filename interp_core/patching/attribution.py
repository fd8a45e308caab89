"""Attribution patching (Nanda 2023; Syed et al. 2023): every site of activation patching estimated at once,
to first order,
    effect(site) ~ (a_clean - a_corrupt) . dm/da  at the corrupted run,  normalised like the exact result,
from the clean activations (the cached trace), one corrupted forward and one backward pass; and the
correlation that says how far to trust it against exact patching.

    >>> approx = attribution_patching(bundle, task)     # {"resid": [layer + 1, pos], "head": [layer, head]}
    >>> patching_correlation(activation_patching(bundle, task, "head"), approx["head"])
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interp_core import activations
from interp_core.budget import recompute_blocks
from interp_core.loading import ModelBundle
from interp_core.patching.patch import (
    PatchingResult,
    _cached_record,
    _check_contrast,
    _resid_names,
    _result,
    _to_cpu,
    _z_names,
    logit_diff,
)
from interp_core.patching.tasks import PatchingTask


def attribution_patching(bundle: ModelBundle, task: PatchingTask) -> dict[str, PatchingResult]:
    """First-order estimates of both heatmaps: {"resid": [layer + 1, pos], "head": [layer, head]}.

    Each site's estimate is (clean - corrupt) . dM/d(activation) at the corrupted run (Nanda's attribution
    patching), over a position's residual vector or a head's z at every position. One forward pass with
    gradients enabled on the corrupted prompt's activations (the weights never require grad) and one backward
    pass. The clean activations come from the cached trace for text; otherwise the clean prompt rides in the same
    forward pass as a first row (the metric, and so the gradient, reads only the corrupted row), unless two rows
    would need recomputed blocks: then it gets a no-grad pass of its own that keeps only each layer's products
    with the gradient, never its activations.
    """
    clean = _cached_record(bundle, task.clean_ids, task.clean_prompt)
    own_clean_pass = clean is None and recompute_blocks(bundle, 2 * task.n_pos, keep=1)  # memory before speed
    rows = [task.corrupt_ids] if clean is not None or own_clean_pass else [task.clean_ids, task.corrupt_ids]
    resid_names, z_names = _resid_names(bundle), _z_names(bundle)

    def metric(logits, live):  # the corrupted row's logit difference, read from the final norm's input
        return logit_diff(bundle, live[resid_names[-1]][-1, -1], task.answer_id, task.foil_id)

    out = activations.run(bundle, torch.stack(rows), record={n: _to_cpu for n in resid_names + z_names},
                          grad=resid_names + z_names, metric=metric, fused_attention=True,
                          recompute=recompute_blocks(bundle, task.n_pos * len(rows), keep=1))
    grads = {n: _to_cpu(out.grads[n][-1]) for n in resid_names + z_names}  # the corrupted row's gradients

    def effect(name: str, act: torch.Tensor) -> torch.Tensor:  # act . grad: [pos] (residual) or [head] (z)
        product = act.to(torch.float64) * grads[name]  # float64: clean - corrupt cancels where they agree
        return product.sum(-1) if name in resid_names else product.sum(dim=(0, 2))

    corrupt_final = _to_cpu(out.acts[resid_names[-1]][-1, -1])
    corrupt_effects = {n: effect(n, _to_cpu(out.acts[n][-1])) for n in grads}
    if clean is not None:
        clean_effects = {**{n: effect(n, clean.resid[i]) for i, n in enumerate(resid_names)},
                         **{n: effect(n, clean.z[i].view(task.n_pos, bundle.n_heads, -1))
                            for i, n in enumerate(z_names)}}
        clean_final = clean.final
    elif not own_clean_pass:
        clean_effects = {n: effect(n, _to_cpu(out.acts[n][0])) for n in grads}
        clean_final = _to_cpu(out.acts[resid_names[-1]][0, -1])
    del out  # the activations; the clean pass below holds only the gradients
    if own_clean_pass:
        clean_effects, clean_final = _clean_effects(bundle, task, effect, resid_names[-1])
    m_clean, m_corrupt = (float(v) for v in logit_diff(bundle, torch.stack([clean_final, corrupt_final]),
                                                       task.answer_id, task.foil_id).double())
    _check_contrast(task, m_clean, m_corrupt)
    scale = m_clean - m_corrupt

    def estimates(names: list[str]) -> torch.Tensor:  # [layer (+ 1), pos or head]
        return (torch.stack([clean_effects[n] - corrupt_effects[n] for n in names]) / scale).float()

    return {
        "resid": _result(bundle, task, "resid", "attribution", estimates(resid_names), m_clean, m_corrupt),
        "head": _result(bundle, task, "head", "attribution", estimates(z_names), m_clean, m_corrupt),
    }


def _clean_effects(bundle: ModelBundle, task: PatchingTask, effect: Callable[[str, torch.Tensor], torch.Tensor],
                   final_name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One no-grad pass over the clean prompt keeping effect(name, activation) of every residual and z site
    instead of the activation, and the final residual at the last position (for the clean metric)."""
    names = _resid_names(bundle) + _z_names(bundle)
    record = {n: (lambda x, n=n: effect(n, _to_cpu(x[0]))) for n in names if n != final_name}
    record[final_name] = lambda x: _to_cpu(x[0])
    with torch.no_grad():
        acts = activations.run(bundle, task.clean_ids[None], record=record, fused_attention=True).acts
    final = acts.pop(final_name)  # [pos, d_model]
    return {**acts, final_name: effect(final_name, final)}, final[-1]


def patching_correlation(a: PatchingResult, b: PatchingResult) -> float:
    """Pearson correlation of two results over their sites (NaN when either is constant)."""
    if a.values.shape != b.values.shape:
        raise ValueError(f"Results of shapes {tuple(a.values.shape)} and {tuple(b.values.shape)} cannot be compared")
    x, y = a.values.flatten().double(), b.values.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    return float((x * y).sum()) / denominator if denominator > 0 else float("nan")
