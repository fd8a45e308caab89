"""Workload 12: SAE training (issue 20) against SAELens' trainer, on the shipped organism's blocks.2.hook_resid_pre.

Both trainers get the same stored activations (the organism's training rows, recorded once through the activation
API), the same dictionary size, k, batch, learning rate and schedule (1% warm-up, linear decay over the last 20%),
and the same torch threads; each keeps its own recipe otherwise (SAELens: its TopK defaults, AuxK coefficient 1,
decoder norm 0.1 at the start, activations rescaled by the decoder norm; ours: interp_core.features.train). The
model's forwards are left out of both timings: they are the same work whoever trains. SAELens runs in a
subprocess with .venv/sae-lens first on its path (it needs transformer-lens 3, this venv has 4); its trained SAE is
saved with its own `save_inference_model`, read by our loader and measured by the same code as ours
(interp_core.features.metrics: explained variance and loss recovered on held-out rows)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from safetensors.torch import save_file

from bench.common import Models, Plan, Row, Timing
from interp_core.features import sae as sae_files
from interp_core.features.metrics import measure
from interp_core.features.train import TrainSettings, activation_batches, fit
from interp_core.organism.train import row_batches
from interp_core.organism.train_sae import HOOK, held_out_batches

WORKLOAD = "12. SAE training"
SAE_LENS_SITE = Path(__file__).resolve().parent.parent / ".venv" / "sae-lens"

SAE_LENS_TRAIN = r'''
import sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from safetensors.torch import load_file
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import LoggingConfig
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig

acts_path, out, hook, d_sae, k, batch, lr, dead_steps, threads = sys.argv[1:10]
torch.set_num_threads(int(threads))
torch.manual_seed(0)
acts = load_file(acts_path)["acts"]
batch, steps = int(batch), len(acts) // int(batch)

def provider():
    while True:
        yield from acts[: steps * batch].split(batch)

sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=int(d_sae), k=int(k),
                                            normalize_activations="expected_average_only_in",
                                            metadata=SAEMetadata(hook_name=hook, model_name="organism")))
config = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=float(lr),
                          lr_end=0.0, lr_scheduler_name="constant", lr_warm_up_steps=max(1, steps // 100),
                          lr_decay_steps=steps // 5, dead_feature_window=int(dead_steps),
                          feature_sampling_window=int(dead_steps), n_batches_for_norm_estimate=1,
                          logger=LoggingConfig(log_to_wandb=False))
trainer = SAETrainer(config, sae, provider())
started = time.perf_counter()
trained = trainer.fit()
print(f"SECONDS {time.perf_counter() - started}")
trained.save_inference_model(out)
'''


def _stored(bundle, settings: TrainSettings) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(settings.seed + 1)
    stream = activation_batches(bundle, HOOK, row_batches(bundle.tokenizer, 31), settings.batch_tokens,
                                settings.buffer_tokens, generator)
    return list(islice(stream, settings.steps))


def _sae_lens(stored: list[torch.Tensor], settings: TrainSettings, folder: Path) -> tuple[float, Path]:
    """(SAELens' training seconds, the folder of its trained SAE)."""
    save_file({"acts": torch.cat(stored).contiguous()}, str(folder / "acts.safetensors"))
    env = {**os.environ, "PYTHONPATH": str(SAE_LENS_SITE), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    dead_steps = max(1, settings.dead_tokens // settings.batch_tokens)
    args = [str(folder / "acts.safetensors"), str(folder / "sae_lens"), HOOK, settings.d_sae, settings.k,
            settings.batch_tokens, settings.lr, dead_steps, torch.get_num_threads()]
    done = subprocess.run([sys.executable, "-c", SAE_LENS_TRAIN, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"SAELens' trainer failed: {done.stderr[-800:]}")
    seconds = float(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("SECONDS")))
    return seconds, folder / "sae_lens"


def _quality(metrics) -> str:
    return f"explained variance {metrics.explained_variance:.4f}, loss recovered {metrics.loss_recovered:.4f}, " \
           f"dead {metrics.dead_fraction:.2%}"


def run(plan: Plan, models: Models) -> list[Row]:
    bundle = models.organism
    if bundle is None or not (SAE_LENS_SITE / "sae_lens").is_dir():
        return [Row(WORKLOAD, "skipped", "shipped organism", note="needs the shipped organism and SAELens "
                                                                  "(make .venv/.stamp-bench)")]
    settings = TrainSettings(HOOK, d_sae=2048, k=12, tokens=plan.sae_tokens)
    stored = _stored(bundle, settings)
    held = held_out_batches(bundle, plan.sae_held_out_tokens)
    started = time.perf_counter()
    ours = fit(stored, settings)
    ours_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="sae_bench_") as tmp:
        theirs_seconds, folder = _sae_lens(stored, settings, Path(tmp))
        theirs = sae_files.load(bundle, folder)
    ours_quality, theirs_quality = measure(bundle, ours.sae, held), measure(bundle, theirs, held)
    tokens = settings.steps * settings.batch_tokens
    at_least_as_good = (ours_quality.explained_variance >= theirs_quality.explained_variance
                        and ours_quality.loss_recovered >= theirs_quality.loss_recovered)
    case = f"TopK, {settings.d_sae} latents, k {settings.k}, {tokens:,} stored activations, batch " \
           f"{settings.batch_tokens}, {torch.get_num_threads()} threads"
    return [
        Row(WORKLOAD, f"training ({case})", "shipped organism", Timing((ours_seconds,)), "SAELens 6.54 SAETrainer",
            Timing((theirs_seconds,)), target="<= 1.0x (>= its tokens/s)", met=ours_seconds <= theirs_seconds,
            value=f"{tokens / ours_seconds:,.0f} vs {tokens / theirs_seconds:,.0f} tokens/s",
            check="model forwards not timed (the same for both)"),
        Row(WORKLOAD, f"quality at equal tokens, {held[0].numel() * len(held):,} held-out tokens", "shipped organism",
            target="ours >= SAELens' on both", met=at_least_as_good,
            value=f"ours: {_quality(ours_quality)}; SAELens: {_quality(theirs_quality)}"),
    ]
