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
    # Caches count their tensors' bytes (interp_core.caches); together 512 MiB. A GPT-2 small trace is ~37 MiB at
    # 256 tokens (154 MiB at 1,024), one of the organism a few MiB: six long GPT-2 prompts stay warm.
    trace_cache_bytes: int = 256 * 2**20
    # Most results are KBs to a few MB (lens, DLA, patching grids); the largest, GPT-2 probing features of a
    # 5,000-row upload, are ~190 MiB and must fit, or every widget change would re-run the whole dataset.
    result_cache_bytes: int = 256 * 2**20
    max_lens_steps: int = 2000  # tuned-lens training steps in the app (the shipped organism's lens took 3,000)
    max_lens_batches: int = 400  # batches of training text kept (4 x 64 tokens each: ~100 k tokens)
    max_findings: int = 100  # a finding with three charts is ~50-300 kB of JSON; 100 stay well inside memory
    max_findings_import_bytes: int = 10_000_000  # a findings JSON (10 findings of 3 charts: 0.74 MB); the server's
    # maxUploadSize (.streamlit/config.toml) is 10 MB too
    # User-started SAE training (interp_core.features.train): the organism trains at ~10 k tokens/s on 2 cores,
    # so 5 M tokens is ~8 minutes; its shipped SAE reached 0.95 explained variance by ~2 M.
    max_sae_train_tokens: int = 5_000_000
    max_sae_latents: int = 16_384  # d_sae: 16 x GPT-2 small's 768 is 12,288; W_enc, W_dec and Adam's state ~400 MB
    max_feature_corpus_tokens: int = 262_144  # an uploaded text a feature card reads: one encode of it (GPT-2 small,
    # 12,288 latents: ~10 s on 2 cores) and its non-zero activations (~32 per token: ~100 MB)
    ig_batch_memory_mb: int = 384  # one batched pass's activations (IG steps, patching sites); GPT-2 small's
    # libraries, weights and a 1,024-token trace are ~1.1 GB already, and the 1.5 GB goal leaves ~300 MiB: at
    # 1,024 tokens this runs exact patching one site per pass (about 170 MiB; two at 512 took 323 MiB)


# Hosted (shared, small container): every cap tighter so one user cannot starve the others.
HOSTED_LIMITS = Limits(
    max_prompt_tokens=128,  # shared CPU: keep one trace well under a second
    max_generated_tokens=16,  # shared CPU
    max_ig_steps=64,  # shared CPU: still enough for a small completeness delta
    max_patch_sites=1024,  # shared CPU: a full head sweep of GPT-2 small is 144 sites
    max_probe_rows=1000,  # shared CPU
    max_upload_bytes=2_000_000,  # shared memory and bandwidth
    max_models_loaded=1,  # hosted containers have ~1-3 GB of memory
    max_lens_steps=300,  # shared CPU: a few minutes on GPT-2 small
    max_lens_batches=100,  # shared memory
    max_findings=30,  # session memory on a shared server
    max_findings_import_bytes=5_000_000,  # shared memory and bandwidth
    trace_cache_bytes=64 * 2**20,  # shared memory; a GPT-2 small trace of 128 tokens is ~19 MiB: three stay warm
    result_cache_bytes=64 * 2**20,  # shared memory; GPT-2 features of 1,000 probe rows (~38 MiB) still fit
    ig_batch_memory_mb=256,  # shared memory
    max_sae_train_tokens=1_000_000,  # shared CPU: a couple of minutes on the organism
    max_sae_latents=4096,  # shared memory: ~100 MB of weights and Adam state at GPT-2 small's width
    max_feature_corpus_tokens=65_536,  # shared CPU and memory
)
LOCAL_LIMITS = Limits()


def is_hosted() -> bool:
    """True when the environment variable INTERP_HOSTED is "1" or "true" (any case)."""
    return os.environ.get("INTERP_HOSTED", "").strip().lower() in ("1", "true")


def limits() -> Limits:
    """The caps in force: `HOSTED_LIMITS` when hosted (see `is_hosted`), else `LOCAL_LIMITS`."""
    return HOSTED_LIMITS if is_hosted() else LOCAL_LIMITS


def max_memory() -> dict[int | str, int | str] | None:
    """The memory cap per device from INTERP_MAX_MEMORY, e.g. "0=20GiB,1=20GiB,cpu=60GiB" (GPUs by index, then
    "cpu"): when set, every model is spread over those devices with accelerate's device_map="auto" and what fits
    on none is offloaded to disk (loading.load_model). None when unset: each model is loaded whole on one device.
    Raises ValueError naming a malformed entry."""
    text = os.environ.get("INTERP_MAX_MEMORY", "").strip()
    if not text:
        return None
    caps: dict[int | str, int | str] = {}
    for entry in text.split(","):
        device, _, cap = (part.strip() for part in entry.partition("="))
        if not cap or not (device.isdigit() or device == "cpu"):
            raise ValueError(f"INTERP_MAX_MEMORY: {entry.strip()!r} is not DEVICE=SIZE with DEVICE a GPU index or "
                             "cpu (for example 0=20GiB,cpu=60GiB)")
        caps[int(device) if device.isdigit() else device] = int(cap) if cap.isdigit() else cap  # bytes, or "20GiB"
    return caps
