"""Activation patching between a clean and a corrupted prompt of equal token length, its result, the metric
every patching method shares, and ablation on a task (attribution patching: patching/attribution.py).

    >>> task = preset_task(bundle, "IOI: subject swapped")
    >>> heads = activation_patching(bundle, task, "head", progress=print)   # one forward per head, batched
    >>> heads.values                                    # [layer, head]; 1 = restores the clean answer, 0 = none
    >>> approx = attribution_patching(bundle, task)     # {"resid": ..., "head": ...} from 2 forwards + 1 backward
    >>> patching_correlation(heads, approx["head"])     # how far to trust the cheap estimate

Metric: m = logit(answer) - logit(foil) at the last position, reported normalised,
    patched = (m_patched - m_corrupt) / (m_clean - m_corrupt)     (1 = the clean run, 0 = the corrupted run).
m is computed from the input of the final norm at the last position, by one function for every run (clean,
corrupted and every patched row), so a row whose final residual equals the clean one scores exactly 1.

Sites (the corrupted prompt runs with ONE site's activation taken from the clean run):
- "resid": the residual stream at (layer, position). Layer l < n_layers is the input of block l
  (blocks.{l}.hook_resid_pre); layer n_layers is the output of the last block before the final norm
  (blocks.{L-1}.hook_resid_post). Heatmap [layer + 1, pos].
- "head": one head's z (the input of the attention output projection, split by head) at every position
  (blocks.{l}.attn.hook_z). Heatmap [layer, head].
Exact patching stacks the corrupted prompt B times and patches a different site in each batch row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp_core import activations
from interp_core.budget import rows_per_chunk
from interp_core.caches import cached_trace
from interp_core.circuits import Head, HeadAblation, ablate_heads, head_label
from interp_core.circuits import z_names as _z_names  # the local lists below are called z_names
from interp_core.components import apply_final_norm
from interp_core.loading import ModelBundle
from interp_core.names import act_name
from interp_core.patching.tasks import PatchingInputError, PatchingTask
from interp_core.settings import limits
from interp_core.tokens import token_labels

Progress = Callable[[float, str], None]
Site = tuple[str, int, int] | None  # ("resid", layer, pos), ("head", layer, head), or None (patch nothing)
KINDS = ("resid", "head")
WEAK_CONTRAST = 0.5  # logits; below this clean-corrupted gap the normalised values divide by little and get noisy


# -- activations of one prompt and the metric ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Record:
    """One prompt's activations (float32, CPU); a pass of its own keeps only what the caller patches."""

    final: torch.Tensor  # [d_model] the final residual (the final norm's input) at the last position
    resid: torch.Tensor | None = None  # [layer + 1, pos, d_model]
    z: torch.Tensor | None = None  # [layer, pos, head * d_head]


def _cached_record(bundle: ModelBundle, ids: torch.Tensor, prompt: str | None) -> _Record | None:
    """The activations of `prompt` from the cached trace, when it has these token ids; else None."""
    if prompt is not None:
        trace = cached_trace(bundle, prompt)  # the sidebar's cache key: same tokens when within the caps
        if torch.equal(trace.token_ids, ids):
            return _Record(final=trace.resid[-1, -1], resid=trace.resid, z=trace.head_z.flatten(2))
    return None


def _resid_names(bundle: ModelBundle) -> list[str]:
    """The residual stream sites: the input of every block, then the last block's output (before the final norm)."""
    return [act_name("resid_pre", layer) for layer in range(bundle.n_layers)] + [act_name("resid_post",
                                                                                        bundle.n_layers - 1)]


def _to_cpu(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to("cpu", torch.float32)


def _record(bundle: ModelBundle, ids: torch.Tensor, prompt: str | None, keep: Sequence[str] = KINDS) -> _Record:
    """The clean or corrupted activations: from the cached trace for text, else from one forward pass (fused
    attention, as the trace's) that keeps the final residual and the kinds in `keep` ("resid", "head")."""
    cached = _cached_record(bundle, ids, prompt)
    if cached is not None:
        return cached
    resid_names, z_names = _resid_names(bundle), _z_names(bundle)
    kept_names = (resid_names if "resid" in keep else []) + (z_names if "head" in keep else [])
    record = {n: _to_cpu for n in kept_names}
    record.setdefault(resid_names[-1], lambda x: _to_cpu(x[:, -1:]))  # at least the last position's
    with torch.no_grad():
        acts = activations.run(bundle, ids[None], record=record, fused_attention=True).acts
    return _Record(final=acts[resid_names[-1]][0, -1],
                   resid=torch.stack([acts[n][0] for n in resid_names]) if "resid" in keep else None,
                   z=torch.stack([acts[n][0].flatten(-2) for n in z_names]) if "head" in keep else None)


def logit_diff(bundle: ModelBundle, final_resid: torch.Tensor, answer_id: int, foil_id: int) -> torch.Tensor:
    """logit(answer) - logit(foil) from final-norm inputs [..., d_model] -> [...], on final_resid's device.

    Row by row the same arithmetic whatever the batch, so equal inputs give bit-equal outputs.
    """
    w_u = bundle.adapter.unembed_weight(bundle.model)  # [d_vocab, d_model]
    bias = bundle.adapter.unembed_bias(bundle.model)  # [d_vocab] or None
    x = apply_final_norm(bundle, final_resid.to(bundle.device, torch.float32))  # [..., d_model] in float32
    direction = w_u[answer_id].to(x.dtype) - w_u[foil_id].to(x.dtype)  # [d_model]
    m = (x * direction).sum(-1)
    if bias is not None:
        m = m + (bias[answer_id].to(x.dtype) - bias[foil_id].to(x.dtype))
    return m.to(final_resid.device)


def _check_contrast(task: PatchingTask, m_clean: float, m_corrupt: float) -> None:
    if not abs(m_clean - m_corrupt) > 1e-6:
        raise PatchingInputError(
            f"logit({task.answer}) - logit({task.foil}) is {m_clean:.4f} on the clean prompt and {m_corrupt:.4f} on "
            "the corrupted one: with no difference there is nothing to restore. Pick prompts (or an answer and "
            "a foil) that the model treats differently.")


# -- exact patching -------------------------------------------------------------------------------------------


def sites_for(bundle: ModelBundle, task: PatchingTask, kind: str) -> list[Site]:
    """Every site of `kind`: ("resid", layer, pos) for layer 0..n_layers, or ("head", layer, head)."""
    if kind == "resid":
        return [("resid", layer, pos) for layer in range(bundle.n_layers + 1) for pos in range(task.n_pos)]
    if kind == "head":
        return [("head", layer, head) for layer in range(bundle.n_layers) for head in range(bundle.n_heads)]
    raise ValueError(f"Unknown site kind {kind!r}; known: {KINDS}")


def _patch_edits(bundle: ModelBundle, clean: _Record, chunk: Sequence[Site]) -> dict[str, activations.Edit]:
    """Edits that patch each row's site with the clean activation (rows without a site stay corrupted)."""
    resid_rows: dict[int, tuple[list[int], list[int]]] = {}
    head_rows: dict[int, tuple[list[int], list[int]]] = {}
    for row, site in enumerate(chunk):
        if site is None:
            continue
        kind, layer, index = site
        rows, indices = (resid_rows if kind == "resid" else head_rows).setdefault(layer, ([], []))
        rows.append(row)
        indices.append(index)

    def patch_resid(layer: int):
        def edit(x: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model]
            rows, pos = (torch.tensor(v, device=x.device) for v in resid_rows[layer])
            x = x.clone()
            x[rows, pos] = clean.resid[layer].to(x.device, x.dtype)[pos]  # [n, d_model]
            return x
        return edit

    def patch_z(layer: int):
        def edit(z: torch.Tensor) -> torch.Tensor:  # [batch, pos, head, d_head]
            rows, heads = (torch.tensor(v, device=z.device) for v in head_rows[layer])
            clean_z = clean.z[layer].to(z.device, z.dtype).view(z.shape[1], bundle.n_heads, bundle.d_head)
            z = z.clone()
            z[rows, :, heads] = clean_z[:, heads].transpose(0, 1)  # [n, pos, d_head]
            return z
        return edit

    names = _resid_names(bundle)
    edits = {names[layer]: patch_resid(layer) for layer in resid_rows}
    edits.update({act_name("z", layer): patch_z(layer) for layer in head_rows})
    return edits


def _patched_finals(
    bundle: ModelBundle, task: PatchingTask, clean: _Record, sites: Sequence[Site], progress: Progress | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final residual at the last position of the corrupted prompt: (unpatched [d_model], each site patched
    [n_sites, d_model]).

    Every batch has the same number of rows and starts with one unpatched row, the reference. Matrix kernels may
    sum in another order for another batch size (seen on AMD EPYC: 1e-7 apart), but rows of one batch shape
    agree bit for bit, so patching nothing gives exactly 0 and restoring the final residual exactly 1."""
    n = len(sites)
    most = max(2, rows_per_chunk(bundle, task.n_pos, keep=1, grad=False))
    n_batches = max(1, math.ceil(n / (most - 1)))
    per_batch = math.ceil(n / n_batches)  # sites per batch; the last batch is padded with unpatched rows
    ids = task.corrupt_ids.to(bundle.device)
    reference, patched = None, []
    for start in range(0, max(n, 1), per_batch):
        chunk = list(sites[start: start + per_batch])
        rows = [None, *chunk, *[None] * (per_batch - len(chunk))]
        final = _resid_names(bundle)[-1]
        with torch.no_grad():  # one call per batch: other requests get the model in between
            finals = activations.run(bundle, ids[None].repeat(len(rows), 1), edits=_patch_edits(bundle, clean, rows),
                                     record={final: lambda x: _to_cpu(x[:, -1])}).acts[final]  # [batch, d_model]
        reference = finals[0]
        patched.append(finals[1: 1 + len(chunk)])
        if progress:
            done = start + len(chunk)
            progress(done / max(n, 1), f"Patched {done} of {n} sites")
    return reference, torch.cat(patched)


def _check_site_count(kind: str, n_sites: int) -> None:
    cap = limits().max_patch_sites
    if n_sites > cap:
        what = "residual-stream (layer x position)" if kind == "resid" else "head"
        raise PatchingInputError(
            f"Exact patching of every {what} site needs {n_sites} patched forward passes, more than "
            f"max_patch_sites = {cap} allows here. Use shorter prompts, or rely on attribution patching, "
            "which costs one forward and one backward pass whatever the size.")


@dataclass(frozen=True)
class _Metrics:
    clean: float
    corrupt: float
    patched: torch.Tensor  # [n_sites] normalised


def _run_sites(bundle, task, sites, progress) -> _Metrics:
    clean = _record(bundle, task.clean_ids, task.clean_prompt, keep={site[0] for site in sites if site})
    corrupt, finals = _patched_finals(bundle, task, clean, sites, progress)  # [d_model], [n, d_model]
    # one metric call for every row, clean and corrupted first: equal rows give bit-equal metrics
    rows = torch.cat([clean.final[None], corrupt[None], finals])  # [2 + n, d_model]
    m = logit_diff(bundle, rows, task.answer_id, task.foil_id).double()
    m_clean, m_corrupt = float(m[0]), float(m[1])
    _check_contrast(task, m_clean, m_corrupt)
    return _Metrics(m_clean, m_corrupt, ((m[2:] - m_corrupt) / (m_clean - m_corrupt) + 0.0).float())


def patch_sites(
    bundle: ModelBundle, task: PatchingTask, sites: Sequence[Site], progress: Progress | None = None
) -> torch.Tensor:
    """Normalised metric [n_sites] with each site patched on its own (None patches nothing: 0)."""
    return _run_sites(bundle, task, list(sites), progress).patched


@dataclass(frozen=True, eq=False)
class PatchingResult:
    """Normalised metric per patching site, exact or estimated by attribution patching."""

    kind: str  # "resid" or "head"
    method: str  # "exact" or "attribution"
    values: torch.Tensor  # resid: [layer + 1, pos]; head: [layer, head]; 1 = clean answer restored, 0 = corrupted
    clean_metric: float  # logit(answer) - logit(foil) on the clean prompt
    corrupt_metric: float  # the same on the corrupted prompt
    clean_tokens: list[str]  # [pos]
    corrupt_tokens: list[str]  # [pos]
    answer: str
    foil: str
    task_name: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.method not in ("exact", "attribution"):
            raise ValueError(f"PatchingResult: unknown kind {self.kind!r} or method {self.method!r}")
        if self.values.dim() != 2:
            raise ValueError(f"PatchingResult.values has shape {tuple(self.values.shape)}, expected 2 dimensions")
        if self.kind == "resid" and self.values.shape[1] != len(self.clean_tokens):
            raise ValueError(f"PatchingResult.values has shape {tuple(self.values.shape)}, expected "
                             f"[layer + 1, {len(self.clean_tokens)}]")

    @property
    def n_layers(self) -> int:
        return int(self.values.shape[0]) - (1 if self.kind == "resid" else 0)

    @property
    def weak_contrast(self) -> bool:
        """True when the clean and corrupted metrics are less than WEAK_CONTRAST logits apart."""
        return abs(self.clean_metric - self.corrupt_metric) < WEAK_CONTRAST

    def site_name(self, layer: int, index: int) -> str:
        """The TransformerLens name of a site, e.g. "blocks.2.hook_resid_pre" or "blocks.1.attn.hook_z[3]"."""
        if self.kind == "head":
            return f"{act_name('z', layer)}[{index}]"
        if layer < self.n_layers:
            return act_name("resid_pre", layer)
        return act_name("resid_post", layer - 1)

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows, one per site: method, layer, site, value, and pos/label/clean/corrupted (resid) or
        head/head_label (head)."""
        rows = []
        labels = token_labels(self.clean_tokens)
        for layer in range(self.values.shape[0]):
            for index in range(self.values.shape[1]):
                row = {"method": self.method, "layer": layer, "site": self.site_name(layer, index),
                       "value": float(self.values[layer, index])}
                if self.kind == "resid":
                    row.update(pos=index, label=labels[index], clean=self.clean_tokens[index],
                               corrupted=self.corrupt_tokens[index],
                               layer_label="final" if layer == self.n_layers else str(layer))
                else:
                    row.update(head=index, head_label=head_label(layer, index))
                rows.append(row)
        return pd.DataFrame(rows)


def _result(bundle, task, kind, method, values, m_clean, m_corrupt) -> PatchingResult:
    return PatchingResult(kind=kind, method=method, values=values, clean_metric=m_clean, corrupt_metric=m_corrupt,
                          clean_tokens=task.clean_tokens, corrupt_tokens=task.corrupt_tokens, answer=task.answer,
                          foil=task.foil, task_name=task.name)


def activation_patching(
    bundle: ModelBundle, task: PatchingTask, kind: str, progress: Progress | None = None
) -> PatchingResult:
    """Exact patching of every site of `kind` ("resid" or "head"), batched; raises PatchingInputError when
    the number of sites exceeds limits().max_patch_sites or the prompts do not change the metric."""
    sites = sites_for(bundle, task, kind)
    _check_site_count(kind, len(sites))
    metrics = _run_sites(bundle, task, sites, progress)
    shape = (bundle.n_layers + 1, task.n_pos) if kind == "resid" else (bundle.n_layers, bundle.n_heads)
    return _result(bundle, task, kind, "exact", metrics.patched.reshape(shape), metrics.clean, metrics.corrupt)


# -- ablation on the task ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TaskAblation:
    """Heads ablated on the clean prompt: the metric and the next-token prediction before and after."""

    ablation: HeadAblation
    clean_metric: float  # logit(answer) - logit(foil), clean prompt, intact model
    corrupt_metric: float  # the same on the corrupted prompt
    answer: str
    foil: str

    @property
    def normalised_after(self) -> float:
        """The ablated clean run on the patching scale: 1 = clean, 0 = corrupted."""
        return (self.ablation.logit_diff_after - self.corrupt_metric) / (self.clean_metric - self.corrupt_metric)

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows: run, logit_diff, normalised (clean intact, clean ablated, corrupted)."""
        scale = self.clean_metric - self.corrupt_metric
        runs = [("clean prompt", self.clean_metric), (f"clean, {self.ablation.label}",
                self.ablation.logit_diff_after), ("corrupted prompt", self.corrupt_metric)]
        return pd.DataFrame([{"run": run, "logit_diff": value,
                              "normalised": (value - self.corrupt_metric) / scale + 0.0} for run, value in runs])


def ablate_on_task(bundle: ModelBundle, task: PatchingTask, heads: Sequence[Head], mode: str = "zero") -> TaskAblation:
    """Ablate `heads` on the clean prompt (mean ablation: each head's mean z over both prompts' positions 1
    onwards; position 0, the attention sink, is left out as in circuits.ablation)."""
    clean = _record(bundle, task.clean_ids, task.clean_prompt, keep=())
    corrupt = _record(bundle, task.corrupt_ids, task.corrupt_prompt, keep=())
    finals = torch.stack([clean.final, corrupt.final])
    m_clean, m_corrupt = (float(v) for v in logit_diff(bundle, finals, task.answer_id, task.foil_id).double())
    _check_contrast(task, m_clean, m_corrupt)
    ablation = ablate_heads(bundle, task.clean_ids, heads, mode, reference_ids=(task.clean_ids, task.corrupt_ids),
                            answer_id=task.answer_id, foil_id=task.foil_id)
    return TaskAblation(ablation=ablation, clean_metric=m_clean, corrupt_metric=m_corrupt, answer=task.answer,
                        foil=task.foil)
