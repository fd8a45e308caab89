"""Workloads 3 and 4: exact activation patching of every head (all positions) and of the residual stream
(layer x position), vs a TransformerLens hook loop that patches one site per forward pass; and attribution
patching vs exact patching (time, and the correlation of the two heatmaps).

Task: the IOI preset (clean "When Mary and John went to the store, John gave a drink to", corrupted with the
subject swapped; metric logit(" Mary") - logit(" John"), normalised so 1 = clean, 0 = corrupted). Our task is
built from token ids with no prompt text, so our functions run their own clean and corrupted forwards instead of
reusing the app's cached trace: both tools start from nothing.
"""

from __future__ import annotations

import dataclasses

import torch

from bench.common import Models, Plan, Row, Timing, seconds, time_many, time_one, time_pair, torch_profile
from interp_core.patching import activation_patching, attribution_patching, patching_correlation, preset_task
from interp_core.recorded_attention import attention_weights_unused

IOI = "IOI: subject swapped"
MIN_SPEEDUP = 10.0  # attribution patching must be at least 10x faster than exact patching
MIN_CORRELATION = 0.9  # ... and agree with it at r >= 0.9 on the shipped model's IOI task


def ioi_task(bundle):
    """The IOI preset as token ids only (no prompt text: no trace-cache reuse)."""
    return dataclasses.replace(preset_task(bundle, IOI), clean_prompt=None, corrupt_prompt=None)


def tl_hook_loop(bridge, task, kind: str, n_layers: int, n_heads: int) -> torch.Tensor:
    """What a TransformerLens notebook does: cache the clean run, then one `run_with_hooks` forward of the corrupted
    prompt per site with that site overwritten by the clean activation. Returns the normalised metric, [layer, head]
    for "head" (hook_z, every position) or [layer + 1, pos] for "resid" (hook_resid_pre of each block, then the last
    block's hook_resid_post)."""
    device = next(bridge.parameters()).device
    clean, corrupt = task.clean_ids[None].to(device), task.corrupt_ids[None].to(device)  # [batch=1, pos]

    def metric(logits):  # logit(answer) - logit(foil) at the last position
        return float(logits[0, -1, task.answer_id] - logits[0, -1, task.foil_id])

    if kind == "head":
        names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
        sites = [(names[layer], head) for layer in range(n_layers) for head in range(n_heads)]
        shape = (n_layers, n_heads)

        def setter(index):
            def hook(z, hook):  # z [batch, pos, head, d_head]
                z[:, :, index] = cache[hook.name][:, :, index]
                return z
            return hook
    else:
        names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
        names.append(f"blocks.{n_layers - 1}.hook_resid_post")
        n_pos = task.n_pos
        sites = [(names[layer], pos) for layer in range(n_layers + 1) for pos in range(n_pos)]
        shape = (n_layers + 1, n_pos)

        def setter(index):
            def hook(resid, hook):  # resid [batch, pos, d_model]
                resid[:, index] = cache[hook.name][:, index]
                return resid
            return hook

    with torch.no_grad():
        clean_logits, cache = bridge.run_with_cache(clean, names_filter=names)
        m_clean, m_corrupt = metric(clean_logits), metric(bridge(corrupt))
        values = [metric(bridge.run_with_hooks(corrupt, fwd_hooks=[(name, setter(index))])) for name, index in sites]
    return ((torch.tensor(values, dtype=torch.float64) - m_corrupt) / (m_clean - m_corrupt)).float().reshape(shape)


def _exact_rows(model_name: str, bundle, bridge, plan: Plan) -> tuple[list[Row], dict]:
    task = ioi_task(bundle)
    rows, exact = [], {}
    for kind, case, target in (("head", "every head (all positions)", 0.5),
                               ("resid", "residual stream (layer x position)", None)):
        mine = activation_patching(bundle, task, kind)  # also the warm-up
        theirs = tl_hook_loop(bridge, task, kind, bundle.n_layers, bundle.n_heads)
        exact[kind] = mine
        n_sites = mine.values.numel()

        def ours(kind=kind):
            return activation_patching(bundle, task, kind)

        def anchor(kind=kind):
            return tl_hook_loop(bridge, task, kind, bundle.n_layers, bundle.n_heads)

        repeats = plan.small_patch_repeats if bundle.n_layers * bundle.n_heads <= 16 else plan.patch_repeats
        t_ours, t_tl = time_pair(ours, anchor, repeats, warmup=0)
        row = Row("3. Exact activation patching", f"{case}: {n_sites} sites, {task.n_pos} tokens", model_name, t_ours,
                  "TL hook loop (one run_with_hooks per site)", t_tl,
                  target=f"<= {target}x" if target else "",
                  check=f"normalised metric max |diff| {float((mine.values - theirs).abs().max()):.1e}")
        if target is not None:
            row.met = row.ratio <= target
            if not row.met:
                row.profile = f"torch.profiler, one activation_patching(kind={kind!r}) call:\n" + torch_profile(ours)
        rows.append(row)
    times = {kind: r.ours for kind, r in zip(("head", "resid"), rows, strict=True)}
    loop_times = {kind: r.anchor for kind, r in zip(("head", "resid"), rows, strict=True)}
    return rows, {"task": task, "exact": exact, "times": times, "loop_times": loop_times}


def _attribution_row(model_name: str, bundle, plan: Plan, found: dict, shipped: bool) -> Row:
    task, exact, times = found["task"], found["exact"], found["times"]
    approx = attribution_patching(bundle, task)
    r_head = patching_correlation(exact["head"], approx["head"])
    r_resid = patching_correlation(exact["resid"], approx["resid"])
    both = Timing(tuple(h + r for h, r in zip(times["head"].samples, times["resid"].samples, strict=True)))
    t_attr = time_one(lambda: attribution_patching(bundle, task), max(plan.attr_patch_repeats, len(both.samples)),
                      warmup=0)
    row = Row("4. Attribution patching", "both heatmaps (heads + residual stream)", model_name, t_attr,
              "our exact patching of both (times from workload 3)", both,
              check=f"correlation with exact: heads r = {r_head:.3f}, residual stream r = {r_resid:.3f}")
    speedup = both.median / t_attr.median
    row.value = f"{speedup:.1f}x faster than exact"
    if shipped:
        row.target = f">= {MIN_SPEEDUP:g}x faster, r >= {MIN_CORRELATION} (both heatmaps)"
        row.met = speedup >= MIN_SPEEDUP and min(r_head, r_resid) >= MIN_CORRELATION
        if not row.met:  # its floor, timed right after it (before the profiler runs), then where its time goes
            found["least"] = _least_passes(bundle, task, len(t_attr.samples))
            row.profile = ("torch.profiler, one attribution_patching call:\n"
                           + torch_profile(lambda: attribution_patching(bundle, task))
                           + "\n\ntorch.profiler, one activation_patching(kind='head') call:\n"
                           + torch_profile(lambda: activation_patching(bundle, task, "head")))
    else:
        row.note = "random weights: the correlation says little here; the target is on the shipped model"
    return row


def _gradient_pass(bundle, ids: torch.Tensor) -> None:
    """One forward pass with gradients over the rows `ids` [row, pos] and one backward pass, with the fused
    attention kernel attribution patching uses: the least attribution patching of token ids can cost."""
    embeds = bundle.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with torch.enable_grad(), attention_weights_unused():
        logits = bundle.model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits
        torch.autograd.grad(logits[-1, -1, 0], embeds)


def _least_passes(bundle, task, repeats: int) -> tuple[float, float]:
    """(seconds of the one pass attribution patching cannot do without - the clean and corrupted prompts as a
    batch of two, forward with gradients and backward -, seconds of attribution patching itself), medians timed
    interleaved in one loop."""
    ids = torch.stack([task.clean_ids, task.corrupt_ids]).to(bundle.device)
    t_attr, t_pass = time_many([lambda: attribution_patching(bundle, task), lambda: _gradient_pass(bundle, ids)],
                               repeats)
    return t_pass.median, t_attr.median


def _why_attribution_is_not_10x(bundle, found: dict, row: Row, big_row: Row) -> str:
    """What bounds the ratio here, measured: exact patching's whole cost over the least attribution patching can
    cost; then the per-site loop and the profile."""
    task, (least, attr) = found["task"], found["least"]
    bound = row.anchor.median / least
    verdict = ("so even at that floor >= 10x cannot be reached against batched exact patching at this size"
               if bound < 10 else f"so the target needs attribution patching at its floor: the {seconds(attr - least)} "
               "above it are Python around the pass (hooks, stacking the activations, building the results)")
    loop = sum(t.median for t in found["loop_times"].values())
    return (f"Exact patching of both heatmaps here is {seconds(row.anchor.median)} in all: one clean forward and "
            f"one batched forward per heatmap (the organism has {bundle.n_layers * bundle.n_heads} heads and the IOI "
            f"prompt {task.n_pos} tokens, so every site of a heatmap fits one batch). Attribution patching runs the "
            f"clean and corrupted prompts as one batch of two, forward with gradients and backward: that pass alone "
            f"takes {seconds(least)} on this model (timed interleaved with attribution patching, {seconds(attr)} in "
            f"that loop), {bound:.1f}x less than exact, {verdict}. Attribution patching is "
            f"{loop / row.ours.median:.0f}x faster than exact patching done one site per forward pass "
            f"(TransformerLens' hook loop, workload 3: {seconds(loop)} for both heatmaps), and on the "
            f"GPT-2-small-shaped model {big_row.value}. Where its time goes:\n\n" + row.profile)


def run(plan: Plan, models: Models) -> list[Row]:
    rows: list[Row] = []
    exact_rows, found = _exact_rows("GPT-2-small-shaped", models.big, models.big_tl, plan)
    rows += exact_rows
    attribution = [_attribution_row("GPT-2-small-shaped", models.big, plan, found, shipped=False)]
    if models.organism is not None:
        exact_rows, found = _exact_rows("shipped organism", models.organism, models.organism_tl, plan)
        rows += exact_rows
        shipped = _attribution_row("shipped organism", models.organism, plan, found, shipped=True)
        if shipped.met is False:
            shipped.profile = _why_attribution_is_not_10x(models.organism, found, shipped, attribution[0])
        attribution.append(shipped)
    return rows + attribution
