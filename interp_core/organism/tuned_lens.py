"""Train the shipped organism's tuned lens: `python -m interp_core.organism.tuned_lens` (seeded; ~2 minutes on 2
cores) writes models/organism/tuned_lens/ (lens.safetensors and config.json, with the training settings, the
loss curve and both lenses' KL to the model's output on held-out text).

Text: the organism's corpus mixture (grammar, facts, IOI; `corpus.sample_text`), rows of the organism's context
length; the held-out text is drawn with another seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from interp_core.lens.lens import resid_labels
from interp_core.lens.tuned import layer_divergence, save, text_batches, train
from interp_core.loading import load_model
from interp_core.organism.corpus import sample_text
from interp_core.settings import SHIPPED_MODEL, SHIPPED_MODEL_DIR

LENS_DIR = SHIPPED_MODEL_DIR / "tuned_lens"
TRAIN_SEED, HELD_OUT_SEED = 11, 12  # text seeds (the organism itself was trained on other draws)
HELD_OUT_TOKENS = 40_000


def held_out_batches(bundle, tokens: int = HELD_OUT_TOKENS, seq_len: int = 128, batch_size: int = 8):
    """Held-out organism text in batches: what the shipped lens is measured on (here and in its tests)."""
    return text_batches(bundle, sample_text(bundle.tokenizer, tokens, HELD_OUT_SEED), seq_len, batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--train-tokens", type=int, default=400_000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=LENS_DIR)
    args = parser.parse_args()
    bundle = load_model(SHIPPED_MODEL)
    seq_len = bundle.model.config.n_positions
    batches = text_batches(bundle, sample_text(bundle.tokenizer, args.train_tokens, TRAIN_SEED), seq_len,
                           args.batch_size)

    def report(done: float, text: str) -> None:
        if round(done * args.steps) % 250 == 0:
            print(text, flush=True)

    training = train(bundle, batches, args.steps, progress=report)
    held = layer_divergence(bundle, held_out_batches(bundle, seq_len=seq_len), training.lens, "held-out text",
                            resid_labels(bundle.n_layers))
    about = {
        "model": "models/organism", "trained_by": "python -m interp_core.organism.tuned_lens",
        "recipe": "SGD, Nesterov momentum 0.9, lr 1.0 x (1 - momentum) decayed linearly to 0, weight decay 1e-3, "
                  "gradient norm clipped to 1.0 (Belrose et al. 2023; tuned-lens scripts/train_loop.py)",
        "steps": args.steps, "batch": [args.batch_size, seq_len], "tokens_seen": training.tokens,
        "train_text": f"corpus.sample_text, {args.train_tokens} tokens, seed {TRAIN_SEED}",
        "seconds": round(training.seconds, 1), "tokens_per_second": round(training.tokens_per_second),
        "loss_curve": [round(x, 4) for x in training.losses[:: max(1, args.steps // 100)]],
        "held_out": {"text": f"corpus.sample_text, {HELD_OUT_TOKENS} tokens, seed {HELD_OUT_SEED}",
                     "rows": held.layer_labels, "logit_lens_kl": [round(float(x), 4) for x in held.logit_kl],
                     "tuned_lens_kl": [round(float(x), 4) for x in held.tuned_kl],
                     "logit_lens_top1_agreement": [round(float(x), 4) for x in held.logit_agreement],
                     "tuned_lens_top1_agreement": [round(float(x), 4) for x in held.tuned_agreement]},
    }
    save(training.lens, args.out, about)
    print(f"wrote {args.out}: {training.seconds:.0f} s, {training.tokens_per_second:.0f} tokens/s; held-out KL "
          f"logit {about['held_out']['logit_lens_kl']} tuned {about['held_out']['tuned_lens_kl']}")


if __name__ == "__main__":
    main()
