"""Workload 8: how the trace's time and memory grow with prompt length and with model shape.

- Prompt length: 64 to 1,024 tokens on the GPT-2-small-shaped model.
- Model shape, at plan.shape_tokens (1,024; the organism at its context length): the shipped organism, GPT-2-small-,
  GPT-2-medium- and Llama-1B-shaped models (random weights, built and saved to the bench's temporary folder in a
  process of their own, deleted after their point).

Every point runs in a fresh interpreter (`python -m bench.scaling_bench --model REF --tokens N --repeats R
--text-file F`), so its peak resident memory (VmHWM, as in bench/memory_bench.py) is that point's own: imports,
`load_model`, one short untimed trace that reads every weight into memory, then R timed `run_trace` calls (no
untimed one at full length: at 1,024 tokens one trace of the Llama-shaped model takes half a minute on 2 cores). It
prints one JSON object: the trace's time, the bytes of the Trace's tensors, the RSS with the model loaded and the
peak RSS. A point is the trace alone (what the sidebar computes on every page); workload 7 measures every page's
analyses at 1,024 tokens.

    python -m bench.scaling_bench --model organism --tokens 128 --repeats 3 --text-file prompt.txt
    python -m bench.scaling_bench --build llama --sizes '{"hidden_size": 128, ...}' --out FOLDER
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, Timing, corpus_text, shipped_ready, timed, trace_nbytes

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = "8. Scaling"
WARMUP_TOKENS = 16  # the untimed first trace: reads every (memory-mapped) weight once, costs little at any shape


# -- one point, in its own process ----------------------------------------------------------------------------


def measure(ref: str, n_tokens: int, repeats: int, text: str) -> dict:
    """Load `ref`, trace `text` cut to `n_tokens` tokens `repeats` times; the point's figures."""
    from bench.memory_bench import current_mib, peak_mib
    from interp_core.loading import load_model
    from interp_core.trace import run_trace

    imports_mib = current_mib()
    bundle = load_model(ref)
    n_tokens = min(n_tokens, bundle.n_ctx)
    run_trace(bundle, text, max_tokens=min(WARMUP_TOKENS, n_tokens))
    loaded_mib, loaded_peak_mib = current_mib(), peak_mib()
    samples, nbytes = [], 0
    for _ in range(repeats):  # one trace alive at a time, as the app holds one per prompt
        gc.collect()
        seconds, trace = timed(lambda: run_trace(bundle, text, max_tokens=n_tokens))
        if trace.n_pos != n_tokens:
            raise RuntimeError(f"the benchmark text gave {trace.n_pos} tokens, not {n_tokens}")
        samples.append(seconds)
        nbytes = trace_nbytes(trace)
        del trace
    timing = Timing(tuple(samples))
    n_params = sum(p.numel() for p in bundle.model.parameters())
    return {"tokens": n_tokens, "seconds": list(timing.samples), "trace_bytes": nbytes, "params": n_params,
            "weights_mib": n_params * 4 / 2**20, "imports_mib": imports_mib, "loaded_mib": loaded_mib,
            "loaded_peak_mib": loaded_peak_mib, "peak_mib": peak_mib(), "n_layers": bundle.n_layers,
            "n_heads": bundle.n_heads, "d_model": bundle.d_model, "n_ctx": bundle.n_ctx}


def build(kind: str, sizes: dict, out: Path) -> None:
    """Save a random model of `kind` ("gpt2" or "llama") and `sizes` with the organism's tokenizer to `out`."""
    from bench.common import organism_tokenizer, save_gpt2_shaped, save_llama_shaped

    tokenizer, _ = organism_tokenizer()
    (save_gpt2_shaped if kind == "gpt2" else save_llama_shaped)(out, tokenizer, sizes)


def _subprocess(args: list[str], device: str) -> str:
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-m", "bench.scaling_bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.scaling_bench {' '.join(args[:4])} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return done.stdout


def point(ref: str, n_tokens: int, repeats: int, text_file: Path, device: str) -> dict:
    out = _subprocess(["--model", ref, "--tokens", str(n_tokens), "--repeats", str(repeats), "--text-file",
                       str(text_file)], device)
    return json.loads(out.strip().splitlines()[-1])


# -- the workload ---------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _time(p: dict) -> str:
    return Timing(tuple(p["seconds"])).fmt()


def _exponent(a: dict, b: dict, key) -> float:
    """k in value ~ tokens^k between two points."""
    return math.log(key(b) / key(a)) / math.log(b["tokens"] / a["tokens"])


def run(plan, models, workdir: Path, plot_path: Path | None = None, plot_link: str = "") -> list[Row]:
    """The workload's one summary row; its section holds the tables and links the plot (written to plot_path,
    `plot_link` being that file as the report refers to it)."""
    device = models.device
    lengths = plan.scaling_repeats
    text_file = workdir / "scaling_prompt.txt"
    tokens_needed = max(max(lengths), plan.shape_tokens)
    text_file.write_text(corpus_text(models.big.tokenizer, tokens_needed), encoding="utf-8")
    big = str(models.big_folder)

    by_length = {n: point(big, n, repeats, text_file, device) for n, repeats in lengths.items()}
    shapes: list[tuple[str, dict, float | None]] = []  # (name, point, seconds to build and save)
    for shape in plan.shapes:
        if shape.kind == "organism":
            if not shipped_ready():
                continue
            shapes.append((shape.name, point("organism", plan.shape_tokens, shape.repeats, text_file, device), None))
        elif shape.kind == "gpt2-small":
            p = by_length.get(plan.shape_tokens) or point(big, plan.shape_tokens, shape.repeats, text_file, device)
            shapes.append((shape.name, p, None))
        else:
            folder = workdir / f"scaling_{shape.kind}"
            start = time.perf_counter()
            _subprocess(["--build", shape.kind, "--sizes", json.dumps(shape.sizes), "--out", str(folder)], device)
            built = time.perf_counter() - start
            try:
                shapes.append((shape.name, point(str(folder), plan.shape_tokens, shape.repeats, text_file, device),
                               built))
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    first, last = by_length[min(by_length)], by_length[max(by_length)]
    t = lambda p: _median(p["seconds"])  # noqa: E731
    growth = last["tokens"] / first["tokens"]
    row = Row(WORKLOAD, f"prompt length {first['tokens']}-{last['tokens']} tokens; {len(shapes)} model shapes",
              "GPT-2-small-shaped; shapes below",
              value=f"{growth:.0f}x the tokens: trace time x{t(last) / t(first):.1f}, Trace tensors "
                    f"x{last['trace_bytes'] / first['trace_bytes']:.1f}, "
                    f"peak RSS x{last['peak_mib'] / first['peak_mib']:.2f}",
              note="one fresh process per point; tables and plot in the section Scaling")
    row.section = "Scaling: time and memory by prompt length and model shape"
    row.profile = _section(plan, by_length, shapes, plot_link if plot_path is not None else "", device)
    if plot_path is not None:
        _plot(by_length, shapes, plot_path)
    return [row]


def _section(plan, by_length: dict[int, dict], shapes: list, plot_link: str, device: str) -> str:
    t = lambda p: _median(p["seconds"])  # noqa: E731
    mib = lambda p: p["trace_bytes"] / 2**20  # noqa: E731
    above = lambda p: p["peak_mib"] - p["loaded_mib"]  # noqa: E731
    base = by_length[min(by_length)]
    lines = [
        f"Each point is one fresh process: imports, `load_model`, a {WARMUP_TOKENS}-token untimed trace (every "
        "weight read once), "
        "then the timed `run_trace` calls at the point's length (median, min-max, n). "
        "**Trace tensors**: the bytes of every tensor the Trace holds. **Peak RSS**: the process' VmHWM at the end; "
        "**above the loaded model**: peak RSS minus the RSS after loading and the short trace (imports and resident "
        "weights), i.e. what one trace at that length costs at its peak, its working memory included. "
        f"Device: {device}.",
        "",
        "### By prompt length (GPT-2-small-shaped model)",
        "",
        "| tokens | trace time | time / shortest | Trace tensors | peak RSS | above the loaded model |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n, p in by_length.items():
        lines.append(f"| {n} | {_time(p)} | {t(p) / t(base):.1f}x | {mib(p):.1f} MiB | {p['peak_mib']:.0f} MiB | "
                     f"{above(p):.0f} MiB |")
    points = list(by_length.values())
    if len(points) >= 2:
        a, b = points[-2], points[-1]
        lines += ["", f"From {a['tokens']} to {b['tokens']} tokens, time grows as tokens^{_exponent(a, b, t):.2f}, "
                      f"the Trace's tensors as tokens^{_exponent(a, b, mib):.2f} and the memory above the loaded "
                      f"model as tokens^{_exponent(a, b, above):.2f} (1.00 is linear: the projections and the MLP "
                      "grow linearly with the tokens, the attention scores quadratically)."]
    lines += [
        "",
        f"### By model shape ({plan.shape_tokens} tokens; a model with a shorter context at its context length)",
        "",
        "| model | layers x heads x d_model | parameters | tokens | trace time | Trace tensors | peak RSS "
        "| RSS with the model loaded | above the loaded model | built and saved in |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, p, built in shapes:
        lines.append(f"| {name} | {p['n_layers']} x {p['n_heads']} x {p['d_model']} | {p['params'] / 1e6:.1f} M | "
                     f"{p['tokens']} | {_time(p)} | {mib(p):.1f} MiB | {p['peak_mib']:.0f} MiB | "
                     f"{p['loaded_mib']:.0f} MiB | {above(p):.0f} MiB | "
                     f"{'-' if built is None else f'{built:.0f} s'} |")
    lines += ["", "The built shapes have random weights and the organism's tokenizer: the GPT-2 shapes GPT-2's own "
                  "initialisation, the Llama-shaped model (Llama-3.2-1B's sizes: 16 layers, 32 query and 8 key-value "
                  "heads of 64, d_model 2048, MLP 8192, 128,256-entry vocabulary, tied embeddings) uniform weights "
                  "with Llama's standard deviation, 0.02, and norms at 1; speed and memory do not depend on the "
                  "weights' values. 'built and saved in' is not part of any point: the bench builds those models in "
                  "a process of their own, before their point."]
    if plot_link:
        lines += ["", f"![Trace time and memory by prompt length and model shape]({plot_link})"]
    return "\n".join(lines)


def _plot(by_length: dict[int, dict], shapes: list, path: Path) -> None:
    """Four log-log panels: time and memory against prompt length, then against the number of parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    t = lambda p: _median(p["seconds"])  # noqa: E731
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))

    def style(ax, xlabel: str, ylabel: str, title: str, xticks=None) -> None:
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
        if xticks is not None:
            ax.set_xticks(xticks)
            ax.xaxis.set_minor_locator(NullLocator())
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.grid(True, which="both", alpha=0.3)

    n, pts = list(by_length), list(by_length.values())
    ax = axes[0][0]
    ax.plot(n, [t(p) for p in pts], "o-")
    style(ax, "prompt tokens", "trace time, seconds (median)", "Trace time by prompt length (GPT-2-small shape)", n)
    ax = axes[0][1]
    ax.plot(n, [p["peak_mib"] for p in pts], "^-", label="peak RSS (process)")
    ax.plot(n, [p["peak_mib"] - p["loaded_mib"] for p in pts], "s-", label="peak RSS above the loaded model")
    ax.plot(n, [p["trace_bytes"] / 2**20 for p in pts], "o-", label="the Trace's tensors")
    style(ax, "prompt tokens", "MiB", "Memory by prompt length (GPT-2-small shape)", n)
    ax.legend(fontsize=8)

    params = [p["params"] / 1e6 for _, p, _ in shapes]
    labels = [f"{name.split(' (')[0]}, {p['tokens']} tokens" for name, p, _ in shapes]
    ax = axes[1][0]
    ax.plot(params, [t(p) for _, p, _ in shapes], "o")
    style(ax, "parameters (millions)", "trace time, seconds (median)", "Trace time by model shape")
    ax = axes[1][1]
    ax.plot(params, [p["peak_mib"] for _, p, _ in shapes], "^", label="peak RSS (process)")
    ax.plot(params, [p["trace_bytes"] / 2**20 for _, p, _ in shapes], "o", label="the Trace's tensors")
    style(ax, "parameters (millions)", "MiB", "Memory by model shape")
    ax.legend(fontsize=8)
    for ax, key in ((axes[1][0], t), (axes[1][1], lambda p: p["peak_mib"])):
        for x, (_, p, _), label in zip(params, shapes, labels, strict=True):
            ax.annotate(label, (x, key(p)), textcoords="offset points", xytext=(4, 6), fontsize=7)
        ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no matplotlib version in the file: fewer diffs
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model reference for load_model: 'organism' or a folder")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--text-file", help="the prompt (at least --tokens tokens)")
    parser.add_argument("--build", choices=("gpt2", "llama"), help="save a random model instead of measuring")
    parser.add_argument("--sizes", default="{}", help="the model's config sizes, JSON (with --build)")
    parser.add_argument("--out", help="the folder to save the model to (with --build)")
    args = parser.parse_args()
    if args.build:
        build(args.build, json.loads(args.sizes), Path(args.out))
        return
    text = Path(args.text_file).read_text(encoding="utf-8")
    print(json.dumps(measure(args.model, args.tokens, args.repeats, text)))


if __name__ == "__main__":
    main()
