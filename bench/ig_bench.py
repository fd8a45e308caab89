"""Workload 2: integrated gradients on the token embeddings vs Captum's LayerIntegratedGradients on the embedding
layer, with the same baseline (the neutral token at every position), target (log-probability of one next token),
quadrature (Gauss-Legendre), number of steps and internal batch size (ours: rows_per_chunk under the memory budget).

Captum's forward function keeps only the last position's logits (`logits_to_keep=1`), as ours does: the anchor
is the fastest way to call Captum on this model, not the most common one (`.logits[:, -1]` computes every
position's logits). Both return the convergence delta, so both run F(input) and F(baseline) as well.
"""

from __future__ import annotations

import torch

from bench.common import Models, Plan, Row, corpus_text, time_pair, torch_profile
from interp_core.attribution import NextTokenTarget, integrated_gradients, neutral_token_id
from interp_core.budget import rows_per_chunk

WORKLOAD = "2. Integrated gradients"
MAX_RELATIVE_DIFF = 1e-4  # the target: attributions equal within 1e-4 relative


def captum_ig(bundle, ids: torch.Tensor, target_id: int, n_steps: int, batch: int):
    """Captum LayerIntegratedGradients on the token-embedding layer -> (attributions [pos, d_model], delta)."""
    from captum.attr import LayerIntegratedGradients

    model = bundle.model

    def forward(input_ids):  # [batch, pos] -> log p(target) at the last position, [batch]
        logits = model(input_ids=input_ids, use_cache=False, logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits, -1)[:, target_id]

    lig = LayerIntegratedGradients(forward, bundle.adapter.token_embedding(model))
    inputs = ids[None].to(bundle.device)  # [batch=1, pos]
    baselines = torch.full_like(inputs, neutral_token_id(bundle))
    attributions, delta = lig.attribute(inputs, baselines=baselines, n_steps=n_steps, method="gausslegendre",
                                        internal_batch_size=batch, return_convergence_delta=True)
    return attributions[0].detach().float().cpu(), float(delta)


def _row(model_name: str, bundle, plan: Plan) -> Row:
    text = corpus_text(bundle.tokenizer, plan.ig_tokens)
    ids = torch.tensor(bundle.tokenizer(text)["input_ids"][: plan.ig_tokens])  # [pos]
    with torch.no_grad():
        logits = bundle.model(input_ids=ids[None].to(bundle.device), use_cache=False, logits_to_keep=1).logits
    target_id = int(logits[0, -1].argmax())  # the model's top-1 next token
    batch = rows_per_chunk(bundle, len(ids), keep=1, grad=True)

    def ours():
        return integrated_gradients(bundle, ids, NextTokenTarget(target_id), baseline="token",
                                    n_steps=plan.ig_steps, method="gausslegendre")

    def anchor():
        return captum_ig(bundle, ids, target_id, plan.ig_steps, batch)

    mine, (theirs, delta) = ours(), anchor()  # also the warm-up of both
    t_ours, t_captum = time_pair(ours, anchor, plan.ig_repeats, warmup=0)
    relative = float((mine.per_dim - theirs).norm() / theirs.norm())
    row = Row(WORKLOAD, f"{len(ids)} tokens, {plan.ig_steps} steps, {batch} rows per batch", model_name, t_ours,
              "Captum LayerIntegratedGradients (embedding layer)", t_captum,
              target=f"<= 1.0x, relative difference <= {MAX_RELATIVE_DIFF:g}",
              check=f"relative difference {relative:.1e} (Frobenius, per-dimension attributions); completeness "
                    f"delta ours {mine.delta:.2e}, Captum {delta:.2e}")
    row.met = row.ratio <= 1.0 and relative <= MAX_RELATIVE_DIFF
    if not row.met:
        row.profile = (f"Both push the same {plan.ig_steps} path points through the same model in batches of "
                       f"{batch} rows, forward and backward (ours with the fused attention kernel, Captum through "
                       "the model's eager attention), plus the input and the baseline for the completeness check, "
                       f"so the ratio can only sit near 1.0; here ours took {t_ours.fmt()} and Captum "
                       f"{t_captum.fmt()}.\n\n"
                       "torch.profiler, one integrated_gradients call:\n" + torch_profile(ours))
    return row


def run(plan: Plan, models: Models) -> list[Row]:
    rows = [_row("GPT-2-small-shaped", models.big, plan)]
    if models.organism is not None:
        rows.append(_row("shipped organism", models.organism, plan))
    return rows
