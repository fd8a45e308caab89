"""Every cap and default in one place: `Limits` (local and stricter hosted values) and the model choices."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SHIPPED_MODEL = "organism"  # the model organism trained by interp_core/organism, shipped in the repo
SHIPPED_MODEL_DIR = REPO_ROOT / "models" / SHIPPED_MODEL  # may not exist until the organism is trained

# Hub models offered in the model picker (each needs one download with network access; cached afterwards).
HUB_MODELS = (
    "gpt2",
    "distilgpt2",
    "gpt2-medium",
    "EleutherAI/pythia-70m",
    "HuggingFaceTB/SmolLM2-135M",
)


@dataclass(frozen=True)
class Limits:
    """Caps on user-controlled sizes. Every analysis reads its cap from here, never from a literal."""

    max_prompt_tokens: int = 256  # attention maps are pos x pos per head; beyond ~256 they are unreadable and slow
    max_generated_tokens: int = 32  # one forward per generated token; enough to show a continuation
    max_ig_steps: int = 256  # IG converges by ~50-100 Gauss-Legendre steps; more only costs time
    max_patch_sites: int = 4096  # exact patching is one forward per site (GPT-2 small: 12 layers x 256 pos + heads)
    max_probe_rows: int = 5000  # one forward per sentence; logistic regression on more rows adds little
    max_upload_bytes: int = 10_000_000  # a probing CSV of 5000 labelled sentences fits well under 10 MB
    max_models_loaded: int = 3  # float32 GPT-2 medium is 1.4 GB; three models fit a laptop's memory
    trace_cache_size: int = 64  # a GPT-2 small trace of 256 tokens is ~20 MB; 64 of them bound memory to ~1 GB
    ig_batch_memory_mb: int = 1024  # activation memory for one batched forward (IG steps, patching sites)


# Hosted (shared, small container): every cap tighter so one user cannot starve the others.
HOSTED_LIMITS = Limits(
    max_prompt_tokens=128,  # shared CPU: keep one trace well under a second
    max_generated_tokens=16,  # shared CPU
    max_ig_steps=64,  # shared CPU: still enough for a small completeness delta
    max_patch_sites=1024,  # shared CPU: a full head sweep of GPT-2 small is 144 sites
    max_probe_rows=1000,  # shared CPU
    max_upload_bytes=2_000_000,  # shared memory and bandwidth
    max_models_loaded=1,  # hosted containers have ~1-3 GB of memory
    trace_cache_size=16,  # shared memory
    ig_batch_memory_mb=256,  # shared memory
)
LOCAL_LIMITS = Limits()


def is_hosted() -> bool:
    """True when the environment variable INTERP_HOSTED is "1" or "true" (any case)."""
    return os.environ.get("INTERP_HOSTED", "").strip().lower() in ("1", "true")


def limits() -> Limits:
    """The caps in force: `HOSTED_LIMITS` when hosted (see `is_hosted`), else `LOCAL_LIMITS`."""
    return HOSTED_LIMITS if is_hosted() else LOCAL_LIMITS
