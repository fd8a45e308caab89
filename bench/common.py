"""What every workload shares: the plan (sizes and repeats), timing, result rows, the models and the machine.

Timing: every workload times our function and its anchor (TransformerLens or Captum) in the same process, on the
same model and inputs, alternating the order from one repeat to the next (ours first, then the anchor first, ...)
after one untimed warm-up call each, so that drift on a shared machine hits both alike. We report the median of
the repeats with their min and max, and the ratio of the medians (ours / anchor; below 1 means we are faster).
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

# The "GPT-2-small-shaped" model: GPT-2 small's sizes, random weights (no network, so no real checkpoint).
GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 1024}
GPT2_QUICK = {"n_layer": 2, "n_head": 4, "n_embd": 64, "vocab_size": 50257, "n_positions": 256}
# The scaling workload's bigger shapes (random weights): GPT-2 medium's sizes, and Llama-3.2-1B's (grouped-query
# attention, RMSNorm, rotary positions, SwiGLU MLP, tied embeddings): 1.24 B parameters, ~4.6 GiB in float32.
GPT2_MEDIUM = {**GPT2_SMALL, "n_layer": 24, "n_head": 16, "n_embd": 1024}
LLAMA_1B = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 64, "intermediate_size": 8192, "vocab_size": 128256, "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True}
GPT2_MEDIUM_QUICK = {**GPT2_QUICK, "n_layer": 4, "n_head": 4, "n_embd": 128}
LLAMA_QUICK = {**LLAMA_1B, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 512, "vocab_size": 4096}


@dataclass(frozen=True)
class Shape:
    """One model of the scaling workload's shape comparison: what it is built from and how often it is timed."""

    name: str  # as the report calls it
    kind: str  # "organism" (models/organism), "gpt2-small" (the bench's saved GPT-2-small-shaped model), "gpt2",
    #            "llama" (built with random weights from `sizes` into the bench's temporary folder)
    sizes: dict = field(default_factory=dict)
    repeats: int = 2  # timed traces (after a short untimed one that reads every weight into memory)


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one run. FULL keeps `make bench` under ~12 minutes on 2 cores; QUICK is a smoke test."""

    name: str
    big: dict  # GPT2Config sizes of the GPT-2-small-shaped model
    trace_repeats: dict[int, int]  # prompt length -> repeats (a 1024-token forward of GPT-2 small is seconds)
    ig_tokens: int = 64  # the IG workload: 64 tokens, 64 steps
    ig_steps: int = 64
    ig_repeats: int = 3  # each IG run is 66 forward+backward rows of GPT-2 small: the costliest workload
    patch_repeats: int = 3  # the hook loop is one forward per site (144 heads, 13 x pos residual sites)
    attr_patch_repeats: int = 15  # attribution patching is cheap
    small_patch_repeats: int = 11  # the organism's sweeps take milliseconds: more repeats, steadier medians
    probe_sentences: int = 2000  # the probing workload
    probe_repeats: int = 3
    app_cold_repeats: int = 3  # each is a fresh `streamlit run` (model load, first trace, first chart)
    app_switch_rounds: int = 3  # rounds through every page after a first visit of each (odd: orders balance)
    memory_tokens: int = 1024  # the memory workload
    memory_ig_steps: int = 2  # at 1024 tokens IG runs one row per chunk: the peak does not grow with the steps
    memory_probe_sentences: int = 500  # probing features are per sentence, not per prompt token
    # Scaling (workload 8): prompt length on the GPT-2-small-shaped model, one fresh process per point (its peak
    # RSS is the point's own); fewer timed traces where one costs seconds.
    scaling_repeats: dict[int, int] = field(default_factory=lambda: {64: 5, 128: 5, 256: 3, 512: 3, 1024: 2})
    shapes: tuple[Shape, ...] = ()  # model shapes compared at shape_tokens (the organism at its context length)
    shape_tokens: int = 1024
    # Circuit discovery (workload 9), (organism, GPT-2-small shape) each: the pairs; the pairs
    # TransformerLens' EAP and EAP-IG run on; the (pair, circuit) calls its faithfulness is timed on (one call of
    # GPT-2 small's per-position graph takes ~13 s here, so its sweep's time is the sampled calls' mean x calls).
    discovery_pairs: tuple[int, int] = (64, 16)
    tl_score_pairs: tuple[int, int] = (64, 2)
    tl_sweep_calls: tuple[int, int] = (40, 4)
    routes_tokens: int = 60
    lens_steps: tuple[int, int] = (200, 10)  # tuned-lens training steps timed (organism, GPT-2-small shape)
    sae_tokens: int = 1_048_576  # SAE training (workload 12): stored activations each trainer fits (256 steps)
    sae_held_out_tokens: int = 262_144
    nnsight_tokens: tuple[int, int] = (128, 256)  # workload 13's trace (organism, GPT-2-small shape)
    nnsight_repeats: tuple[int, int] = (21, 7)

    @property
    def trace_lengths(self) -> tuple[int, ...]:
        return tuple(self.trace_repeats)


FULL = Plan(name="full", big=GPT2_SMALL, trace_repeats={64: 9, 128: 5, 256: 7, 512: 3, 1024: 5},
            shapes=(Shape("shipped organism", "organism", repeats=5),
                    Shape("GPT-2-small-shaped", "gpt2-small", GPT2_SMALL),
                    Shape("GPT-2-medium-shaped", "gpt2", GPT2_MEDIUM, repeats=2),
                    Shape("Llama-1B-shaped", "llama", LLAMA_1B, repeats=1)))
QUICK = Plan(name="quick", big=GPT2_QUICK, trace_repeats={16: 2, 32: 2, 64: 2}, ig_tokens=16, ig_steps=8,
             ig_repeats=2, patch_repeats=2, attr_patch_repeats=2, probe_sentences=200, probe_repeats=2,
             app_cold_repeats=1, app_switch_rounds=1, memory_tokens=128, memory_probe_sentences=100,
             small_patch_repeats=2, scaling_repeats={16: 2, 32: 2, 64: 1},
             shapes=(Shape("shipped organism", "organism"), Shape("GPT-2-small-shaped (quick sizes)", "gpt2-small"),
                     Shape("GPT-2-medium-shaped (quick sizes)", "gpt2", GPT2_MEDIUM_QUICK),
                     Shape("Llama-1B-shaped (quick sizes)", "llama", LLAMA_QUICK, repeats=1)),
             shape_tokens=64, discovery_pairs=(8, 4), tl_score_pairs=(4, 2), tl_sweep_calls=(4, 2),
             routes_tokens=24, lens_steps=(5, 2), sae_tokens=65_536, sae_held_out_tokens=16_384,
             nnsight_tokens=(32, 32), nnsight_repeats=(2, 2))


# -- timing --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def fmt(self) -> str:
        """'1.234 s (1.200-1.300, n=5)' with a unit that fits the size."""
        return f"{seconds(self.median)} ({seconds(self.min)}-{seconds(self.max)}, n={len(self.samples)})"


def seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call with the garbage collector paused (a collection costs seconds on a big heap
    and would land in whichever call happens to trigger it), the GPU synchronised on both ends."""
    _sync()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        _sync()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def time_one(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Timing of `repeats` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        gc.collect()
        samples.append(timed(fn)[0])
    return Timing(tuple(samples))


def time_pair(ours: Callable[[], object], anchor: Callable[[], object], repeats: int,
              warmup: int = 1) -> tuple[Timing, Timing]:
    """Timings of ours and the anchor, interleaved: ours first on even repeats, the anchor first on odd ones."""
    first, second = time_many([ours, anchor], repeats, warmup)
    return first, second


def time_many(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[Timing]:
    """Timings of several functions, interleaved: repeat i starts with function i mod len(fns) and goes round."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for i in range(repeats):
        gc.collect()  # between rounds, outside the timed calls
        for j in range(len(fns)):
            k = (i + j) % len(fns)
            samples[k].append(timed(fns[k])[0])
    return [Timing(tuple(s)) for s in samples]


# -- results -------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: our timing next to the anchor's, the target and a correctness check."""

    workload: str  # "1. Trace", ...
    case: str  # what exactly ran, e.g. "1024 tokens"
    model: str  # "GPT-2-small-shaped" or "shipped organism"
    ours: Timing | None = None
    anchor_name: str = ""
    anchor: Timing | None = None
    target: str = ""  # in words, e.g. "<= 1.0x"
    met: bool | None = None  # None: no target for this row
    check: str = ""  # correctness figure measured on the same outputs, e.g. "max |diff| 2e-7"
    note: str = ""
    profile: str = ""  # filled when the target is missed: why (torch.profiler / per-step breakdown)
    value: str = ""  # for rows whose result is not a time (memory, correlation)
    section: str = ""  # a heading of the report's own for this row's profile (instead of "Breakdowns")

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.anchor is None or self.anchor.median == 0:
            return None
        return self.ours.median / self.anchor.median


def torch_profile(fn: Callable[[], object], rows: int = 15) -> str:
    """torch.profiler's table of the most expensive operators (self CPU time) in one call of `fn`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


# -- models --------------------------------------------------------------------------------------------------


def shipped_ready() -> bool:
    from interp_core.settings import SHIPPED_MODEL_DIR

    return (SHIPPED_MODEL_DIR / "model.safetensors").is_file() and (SHIPPED_MODEL_DIR / "config.json").is_file()


def organism_tokenizer():
    """The shipped organism's tokenizer; while the organism is not trained, the same kind of byte-level BPE
    trained on 2,000 generated documents. Returns (tokenizer, where it came from)."""
    from interp_core.settings import SHIPPED_MODEL_DIR

    if (SHIPPED_MODEL_DIR / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(SHIPPED_MODEL_DIR)), "the shipped organism's tokenizer"
    from interp_core.organism import corpus
    from interp_core.organism.train import TrainConfig, train_tokenizer

    tokenizer = train_tokenizer(TrainConfig(tokenizer_docs=2000), corpus.CorpusMix(), corpus.held_out_name_pairs())
    return tokenizer, "a byte-level BPE trained like the organism's (the organism was not there)"


def save_gpt2_shaped(folder: Path, tokenizer, sizes: dict, seed: int = 0) -> Path:
    """A randomly initialised GPT-2 of `sizes` with `tokenizer`, saved as safetensors to `folder`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    config = GPT2Config(**sizes, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)  # GPT-2's own initialisation (normal, std 0.02)
    model.save_pretrained(folder)  # safetensors is the default
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    return Path(folder)


def save_llama_shaped(folder: Path, tokenizer, sizes: dict, seed: int = 0) -> Path:
    """A randomly initialised LlamaForCausalLM of `sizes` with `tokenizer`, saved as safetensors to `folder`.

    Llama's own initialisation draws normal(0, 0.02) weights (norms at 1); here the same standard deviation comes
    from a uniform draw, about twice as fast (1.24 B parameters: ~30 s for transformers' init on 2 cores, which
    also runs torch's default init first). A random model's speed and memory do not depend on the distribution.
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.initialization import no_init_weights

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    config = LlamaConfig(**sizes, bos_token_id=eos, eos_token_id=eos)
    with no_init_weights():  # parameters are allocated, not drawn
        model = LlamaForCausalLM(config)
    generator, bound = torch.Generator().manual_seed(seed), 0.02 * 3**0.5  # uniform(-b, b) has std b / sqrt(3)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.fill_(1.0)  # RMSNorm weights (Llama has no biases)
            else:
                parameter.uniform_(-bound, bound, generator=generator)
    model.tie_weights()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    return Path(folder)


# -- the trace contract, in one place ----------------------------------------------------------------------------


def layer_pattern(bundle, trace, layer: int) -> torch.Tensor:
    """Layer `layer`'s attention pattern [head, query_pos, key_pos], computed on demand from the trace (the Trace
    keeps no patterns). The only place the bench names the function that does it: rename it here."""
    from interp_core.trace import layer_pattern as pattern

    return pattern(bundle, trace, layer)


def trace_nbytes(trace) -> int:
    """Bytes held by every tensor field of a Trace (whatever fields the contract has)."""
    return int(sum(size for size in _tensor_bytes(trace).values()))


def trace_tensor_sizes(trace) -> dict[str, float]:
    """MiB of each tensor field of a Trace, by field name."""
    return {name: size / 2**20 for name, size in _tensor_bytes(trace).items()}


def _tensor_bytes(trace) -> dict[str, int]:
    values = {f.name: getattr(trace, f.name) for f in fields(trace)}
    return {name: v.numel() * v.element_size() for name, v in values.items() if isinstance(v, torch.Tensor)}


def boot_tl(folder: Path | str, device: str):
    """TransformerLens 4: TransformerBridge.boot_transformers on a local folder (raw HF weights, eager attention)."""
    from transformer_lens import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(folder), device=device)
    bridge.eval()
    return bridge


def corpus_text(tokenizer, min_tokens: int, seed: int = 0) -> str:
    """Organism-style text (grammar, facts, IOI sentences) of at least `min_tokens` tokens."""
    from interp_core.organism.corpus import sample_text

    return sample_text(tokenizer, min_tokens, seed)


@dataclass
class Models:
    """Both tools' copies of each model (ours: a ModelBundle from load_model; TransformerLens: a bridge)."""

    device: str
    big_folder: Path
    tokenizer_source: str
    big: object = None  # ModelBundle
    big_tl: object = None  # TransformerBridge
    organism: object = None  # ModelBundle or None when the organism is not trained
    organism_tl: object = None
    load_rows: list = field(default_factory=list)


def load_models(plan: Plan, device: str, workdir: Path) -> Models:
    """Save the GPT-2-small-shaped model to `workdir` and load it (and the organism) with both tools."""
    from interp_core.loading import load_model
    from interp_core.settings import SHIPPED_MODEL, SHIPPED_MODEL_DIR

    tokenizer, source = organism_tokenizer()
    folder = save_gpt2_shaped(workdir / "gpt2_small_shaped", tokenizer, plan.big)
    models = Models(device=device, big_folder=folder, tokenizer_source=source)
    t_ours, models.big = timed(lambda: load_model(str(folder)))
    t_tl, models.big_tl = timed(lambda: boot_tl(folder, device))
    models.load_rows.append(Row("0. Load", "load the saved folder", "GPT-2-small-shaped", Timing((t_ours,)),
                                "TL TransformerBridge.boot_transformers(path)", Timing((t_tl,)),
                                check=logits_check(models.big, models.big_tl),
                                note="one cold load each (the folder is in the page cache for both)"))
    if shipped_ready():
        t_ours, models.organism = timed(lambda: load_model(SHIPPED_MODEL))
        t_tl, models.organism_tl = timed(lambda: boot_tl(SHIPPED_MODEL_DIR, device))
        models.load_rows.append(Row("0. Load", "load the saved folder", "shipped organism", Timing((t_ours,)),
                                    "TL TransformerBridge.boot_transformers(path)", Timing((t_tl,)),
                                    check=logits_check(models.organism, models.organism_tl)))
    return models


def logits_check(bundle, bridge) -> str:
    """Max |difference| of the two tools' logits on 16 token ids: both must run the same model."""
    ids = torch.arange(3, 19, device=bundle.device)[None] % bundle.d_vocab  # [batch=1, pos=16]
    with torch.no_grad():
        ours = bundle.model(input_ids=ids, use_cache=False).logits
        theirs = bridge(ids)
    return f"logits max |diff| {float((ours - theirs).abs().max()):.1e}"


# -- the machine ---------------------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def machine_info(requested: str, device: str, note: str) -> dict[str, str]:
    """The facts a reader needs to compare these numbers with theirs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "CPU": _cpu_model(),
        "cores available": f"{cores} (torch threads: {torch.get_num_threads()})",
        "memory": _memory_gib(),
        "device requested": requested,
        "device used": device if device == "cpu" else f"{device} ({torch.cuda.get_device_name(0)})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "TransformerLens": _version("transformer-lens"),
        "Captum": _version("captum"),
        "scikit-learn": _version("scikit-learn"),
        "streamlit": _version("streamlit"),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if note:
        info["device note"] = note
    return info
