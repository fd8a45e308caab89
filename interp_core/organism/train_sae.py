"""Train the shipped organism's SAE: `python -m interp_core.organism.train_sae` (seeded) writes
models/organism/saes/blocks.2.hook_resid_pre/: cfg.json and sae_weights.safetensors in SAELens' format, and
card.json (explained variance, loss recovered, L0 and dead fraction over 1,000,000 held-out tokens, the training
curve, the settings, tokens per second, and the same metrics for a few k from shorter runs, for a chart).

The activation is the residual stream between blocks 1 and 2 of the 4 (the middle). Text: the organism's own
training rows (`organism.train.RowSampler`: packed corpus documents with 30% rows of repeated random tokens,
32 x 128 tokens), streamed; the held-out rows are drawn with another seed. `--threads 1` leaves a core free.
The k sweep trains on one stored set of activations (the same for every k) and is measured on fewer tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import torch

from interp_core.features.metrics import measure
from interp_core.features.sae import save
from interp_core.features.train import Training, TrainSettings, activation_batches, fit, train
from interp_core.loading import ModelBundle, load_model
from interp_core.organism.train import row_batches
from interp_core.settings import SHIPPED_MODEL, SHIPPED_MODEL_DIR

HOOK = "blocks.2.hook_resid_pre"
SAE_DIR = SHIPPED_MODEL_DIR / "saes" / HOOK
TRAIN_SEED, HELD_OUT_SEED, SWEEP_SEED = 21, 22, 23  # row seeds (the organism itself was trained on seed 0's)
HELD_OUT_TOKENS = 1_000_000
SWEEP_KS = (8, 12, 16, 32)
CURVE_POINTS = 200  # training-curve points kept in the card


def held_out_batches(bundle: ModelBundle, tokens: int = HELD_OUT_TOKENS, seed: int = HELD_OUT_SEED):
    """Held-out rows, at least `tokens` tokens of them: what the shipped SAE is measured on."""
    first = next(row_batches(bundle.tokenizer, seed))
    return list(islice(row_batches(bundle.tokenizer, seed), -(-tokens // first.numel())))


def _curve(training: Training) -> dict:
    every = max(1, len(training.fvu) // CURVE_POINTS)
    return {"every_steps": every, "tokens_per_step": training.settings.batch_tokens,
            "explained_variance": [round(1 - x, 4) for x in training.fvu[::every]],
            "dead_fraction": [round(x, 4) for x in training.dead_fraction[::every]],
            "aux_loss": [round(x, 4) for x in training.aux_loss[::every]]}


def k_sweep(bundle: ModelBundle, settings: TrainSettings, tokens: int, held_out_tokens: int) -> list[dict]:
    """Explained variance, loss recovered, L0 and dead fraction for each k of SWEEP_KS, every SAE trained on the
    same stored `tokens` activations (SWEEP_SEED's rows) and measured on `held_out_tokens` held-out tokens."""
    generator = torch.Generator().manual_seed(SWEEP_SEED)
    stream = activation_batches(bundle, HOOK, row_batches(bundle.tokenizer, SWEEP_SEED), settings.batch_tokens,
                                settings.buffer_tokens, generator)
    stored = list(islice(stream, tokens // settings.batch_tokens))
    held = held_out_batches(bundle, held_out_tokens)
    points = []
    for k in SWEEP_KS:
        short = TrainSettings(HOOK, d_sae=settings.d_sae, k=k, tokens=tokens, lr=settings.lr,
                              dead_tokens=settings.dead_tokens, seed=settings.seed)
        training = fit(stored, short, started=time.perf_counter())
        metrics = measure(bundle, training.sae, held)
        points.append({"k": k, **metrics.to_dict(), "train_seconds": round(training.seconds, 1)})
        print(f"k {k}: {points[-1]}", flush=True)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=24_000_000)
    parser.add_argument("--lr", type=float, default=TrainSettings.lr)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--held-out-tokens", type=int, default=HELD_OUT_TOKENS)
    parser.add_argument("--sweep-tokens", type=int, default=2_000_000, help="each k's run in the sweep; 0: none")
    parser.add_argument("--sweep-held-out-tokens", type=int, default=250_000)
    parser.add_argument("--out", type=Path, default=SAE_DIR)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_model(SHIPPED_MODEL)
    settings = TrainSettings(HOOK, d_sae=2048, k=12, tokens=args.tokens, lr=args.lr)

    def report(done: float, text: str) -> None:
        if round(done * settings.steps) % 250 == 0:
            print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    training = train(bundle, row_batches(bundle.tokenizer, TRAIN_SEED), settings, progress=report)
    print(f"trained: {training.tokens:,} tokens in {training.seconds:.0f} s", flush=True)
    started = time.perf_counter()
    held = measure(bundle, training.sae, held_out_batches(bundle, args.held_out_tokens))
    print(f"held out: {held.to_dict()} ({time.perf_counter() - started:.0f} s)", flush=True)
    sweep = k_sweep(bundle, settings, args.sweep_tokens, args.sweep_held_out_tokens) if args.sweep_tokens else []
    about = {"model_name": SHIPPED_MODEL, "trained_by": "python -m interp_core.organism.train_sae"}
    save(training.sae, args.out, about)
    card = {
        **about, "hook_name": HOOK, "architecture": training.sae.architecture, "d_in": training.sae.d_in,
        "d_sae": training.sae.d_sae, "k": training.sae.k,
        "recipe": "TopK SAE with the AuxK loss on dead latents (Gao et al. 2024), Adam, unit-norm decoder rows, "
                  "b_dec from the geometric median (interp_core.features.train)",
        "settings": asdict(settings), "threads": torch.get_num_threads(),
        "train_text": f"organism.train.RowSampler rows, seed {TRAIN_SEED}",
        "tokens_seen": training.tokens, "seconds": round(training.seconds, 1),
        "tokens_per_second": round(training.tokens_per_second),
        "held_out": {"text": f"RowSampler rows, seed {HELD_OUT_SEED}", **held.to_dict()},
        "training_curve": _curve(training),
        "k_sweep": {"train_tokens": args.sweep_tokens, "train_text": f"RowSampler rows, seed {SWEEP_SEED}",
                    "held_out_tokens": args.sweep_held_out_tokens, "points": sweep},
    }
    (args.out / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {training.tokens_per_second:.0f} tokens/s; held out {held.to_dict()}")


if __name__ == "__main__":
    main()
