"""Workload 10: tuned-lens training throughput (issue 21), in tokens per second, on the organism and the
GPT-2-small shape: the paper's optimiser on organism-style text, the model's forward included. There is no anchor:
the tuned-lens library's training script runs on CUDA only."""

from __future__ import annotations

from bench.common import Models, Plan, Row, Timing, corpus_text
from interp_core.lens.tuned import text_batches, train

WORKLOAD = "10. Tuned lens"


def _row(name: str, bundle, steps: int, seq_len: int, batch_size: int) -> Row:
    text = corpus_text(bundle.tokenizer, steps * seq_len * batch_size + seq_len)
    batches = text_batches(bundle, text, seq_len, batch_size)
    train(bundle, batches[:1], steps=1)  # warm-up
    training = train(bundle, batches, steps=steps)
    return Row(WORKLOAD, f"training, {steps} steps of {batch_size} x {seq_len} tokens", name,
               Timing((training.seconds,)), value=f"{training.tokens_per_second:,.0f} tokens/s",
               check=f"loss (KL summed over rows) {training.losses[0]:.3f} -> {training.losses[-1]:.3f}")


def run(plan: Plan, models: Models) -> list[Row]:
    rows = []
    if models.organism is not None:
        rows.append(_row("shipped organism", models.organism, plan.lens_steps[0], 128, 8))
    rows.append(_row("GPT-2-small-shaped", models.big, plan.lens_steps[1], 64, 4))
    return rows
