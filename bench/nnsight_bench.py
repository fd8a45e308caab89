"""Workload 13 (issue 22, part 3): our activation API against nnsight 0.8 used directly, as its tutorials do, on
the same model object (nnsight.NNsight wraps the bundle's model: the same weights and attention implementation).

- The trace: every activation a Trace records (each block's hook_resid_pre, attn.hook_z, hook_attn_out,
  hook_mlp_out and the last block's hook_resid_post) and the last position's logits. nnsight saves each module's
  input or output in one `model.trace(ids)`; ours is `activations.run(record=trace_names(n))`.
- The patching sweep: exact patching of the residual stream (every layer x position) on the IOI preset. nnsight's
  tutorial idiom: one trace, a `tracer.invoke` for the clean prompt that saves every block's input, one for the
  corrupted prompt, and one per site that writes the clean row into the corrupted run's block input (the invokes
  are one batched forward). Ours is `patching.activation_patching(kind="resid")` (batched by our byte budget).

Each row's check compares the two tools' outputs (max |difference|).
"""

from __future__ import annotations

import torch

from bench.common import Models, Plan, Row, time_pair
from bench.patching_bench import ioi_task
from interp_core import activations
from interp_core.patching import activation_patching
from interp_core.trace import trace_names

WORKLOAD = "13. nnsight"
_served: dict[int, object] = {}


def served(bundle):
    """nnsight's TransformersModel around the bundle's already loaded model and tokenizer (made once)."""
    from nnsight import TransformersModel

    if id(bundle.model) not in _served:
        _served[id(bundle.model)] = TransformersModel(bundle.model, tokenizer=bundle.tokenizer)
    return _served[id(bundle.model)]


def nnsight_trace(bundle, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """What an nnsight user writes to record a Trace's activations of a GPT-2 model (TransformerLens names)."""
    model, n, heads = served(bundle), bundle.n_layers, bundle.n_heads
    saved = {}  # filled inside the trace body (which runs in a frame of its own; the dict is shared)
    with torch.no_grad(), model.trace(input_ids=ids, use_cache=False, logits_to_keep=1):
        for layer in range(n):
            block = model.transformer.h[layer]
            saved[f"blocks.{layer}.hook_resid_pre"] = block.input.save()
            saved[f"blocks.{layer}.attn.hook_z"] = block.attn.c_proj.input.save()
            saved[f"blocks.{layer}.hook_attn_out"] = block.attn.output[0].save()
            saved[f"blocks.{layer}.hook_mlp_out"] = block.mlp.output.save()
        saved[f"blocks.{n - 1}.hook_resid_post"] = model.transformer.ln_f.input.save()
        saved["logits"] = model.output.logits.save()
    z_shape = (*ids.shape, heads, bundle.d_model // heads)
    return {name: (value.view(z_shape) if name.endswith("hook_z") else value) for name, value in saved.items()}


def nnsight_resid_sweep(bundle, task) -> torch.Tensor:
    """logit(answer) - logit(foil) [layer + 1, pos] after patching each block's input (and the final norm's input:
    the last block's hook_resid_post) at each position from the clean run into the corrupted one, nnsight's way;
    then normalised (1 = clean, 0 = corrupted) as activation_patching does."""
    model, n, n_pos = served(bundle), bundle.n_layers, task.n_pos
    clean, corrupt = task.clean_ids[None], task.corrupt_ids[None]

    def rows(m):  # the residual stream's points: each block's input, then the final norm's
        return [m.transformer.h[layer] for layer in range(n)] + [m.transformer.ln_f]

    kept, diffs = [], []  # shared with the invokes' bodies (each runs in a frame of its own)
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(clean):
            kept.extend(point.input for point in rows(model))
            logits = model.output.logits[0, -1]
            clean_diff = (logits[task.answer_id] - logits[task.foil_id]).save()
        with tracer.invoke(corrupt):
            logits = model.output.logits[0, -1]
            corrupt_diff = (logits[task.answer_id] - logits[task.foil_id]).save()
        for row in range(n + 1):
            for pos in range(n_pos):
                with tracer.invoke(corrupt):
                    resid = rows(model)[row].input  # first wait for the run to reach the point ...
                    resid[:, pos] = kept[row][:, pos]  # ... where the clean invoke, run first, has kept its row
                    logits = model.output.logits[0, -1]
                    diffs.append(logits[task.answer_id] - logits[task.foil_id])
    values = torch.stack(list(diffs)).reshape(n + 1, n_pos)
    return (values - corrupt_diff) / (clean_diff - corrupt_diff)


def _logit_diffs(normalised: torch.Tensor, clean: float, corrupt: float) -> torch.Tensor:
    """The patched runs' logit differences back from the normalised metric (a random model's clean and corrupted
    metrics are close, so the normalised scale magnifies float rounding: the check compares these)."""
    return normalised.double() * (clean - corrupt) + corrupt


def _trace_row(name: str, bundle, tokens: int, repeats: int) -> Row:
    ids = torch.randint(0, bundle.tokenizer.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    names = trace_names(bundle.n_layers)

    def ours():
        return activations.run(bundle, ids, record=names, logits_to_keep=1)

    mine, theirs = ours(), nnsight_trace(bundle, ids)
    diff = max(float((mine.acts[n] - theirs[n]).abs().max()) for n in names)
    diff = max(diff, float((mine.logits - theirs["logits"][:, -1:]).abs().max()))
    t_ours, t_nn = time_pair(ours, lambda: nnsight_trace(bundle, ids), repeats)
    row = Row(WORKLOAD, f"trace: {len(names)} activations + last logits, {tokens} tokens", name, t_ours,
              "nnsight 0.8 trace saving the same modules' inputs and outputs", t_nn, target="<= 1.0x",
              check=f"max |diff| {diff:.1e} over every activation and the logits")
    row.met = row.ratio <= 1.0 and diff <= 1e-5
    return row


def _sweep_row(name: str, bundle, repeats: int) -> Row:
    task = ioi_task(bundle)
    mine, theirs = activation_patching(bundle, task, "resid"), nnsight_resid_sweep(bundle, task)
    scale = mine.clean_metric, mine.corrupt_metric
    ours_raw, theirs_raw = _logit_diffs(mine.values, *scale), _logit_diffs(theirs, *scale)
    diff = float((ours_raw - theirs_raw).abs().max() / ours_raw.abs().max())  # relative: batches of other sizes
    t_ours, t_nn = time_pair(lambda: activation_patching(bundle, task, "resid"),
                             lambda: nnsight_resid_sweep(bundle, task), repeats)
    row = Row(WORKLOAD, f"patching sweep: residual stream, {mine.values.numel()} sites, {task.n_pos} tokens", name,
              t_ours, "nnsight 0.8: one trace, one invoke per site (its tutorial's batching)", t_nn,
              target="<= 1.0x", check=f"patched logit differences max |diff| {diff:.1e} of the largest")
    row.met = row.ratio <= 1.0 and diff <= 1e-5
    return row


def run(plan: Plan, models: Models) -> list[Row]:
    chosen = [("shipped organism", models.organism, 0), ("GPT-2-small-shaped", models.big, 1)]
    rows = []
    for name, bundle, i in chosen:
        if bundle is None:
            continue
        rows.append(_trace_row(name, bundle, plan.nnsight_tokens[i], plan.nnsight_repeats[i]))
        rows.append(_sweep_row(name, bundle, plan.nnsight_repeats[i]))
    return rows
