"""Run the benchmarks side by side with TransformerLens and Captum and write BENCHMARKS.md.

    python bench/run.py                    # the full run behind the committed BENCHMARKS.md (`make bench`)
    python bench/run.py --device cuda      # on the GPU when there is one (the report says which device ran)
    python bench/run.py --quick            # tiny sizes, one or two repeats: a smoke test (artifacts/)
    python bench/run.py --only 1,2         # some workloads only

Workloads (issues 9, 16, 18 and 21): 1 trace, 2 integrated gradients, 3 exact patching, 4 attribution patching,
5 probing, 6 app in a browser, 7 peak memory, 8 scaling (prompt length and model shape; writes bench/scaling.png
beside the report, artifacts/BENCHMARKS.quick.scaling.png with --quick), 9 circuit discovery (EAP against
TransformerLens, EAP-IG with a faithfulness sweep against TransformerLens and the bare passes, ACDC, routes),
10 tuned-lens training throughput, 11 findings export, 12 SAE training against SAELens (issue 20), 13 our
activation API against nnsight used directly, 14 every page of the app on a Llama-1B-shaped model in bfloat16
(issue 22).
Models: the shipped organism (models/organism) and a GPT-2-small-shaped model with random weights saved to a
temporary folder; both tools load both from their folders; workload 8 builds GPT-2-medium- and Llama-1B-shaped
ones too. No network is used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

WORKLOADS = {
    "1": "trace", "2": "integrated gradients", "3": "exact patching", "4": "attribution patching", "5": "probing",
    "6": "app", "7": "memory", "8": "scaling", "9": "circuit discovery", "10": "tuned lens",
    "11": "findings export", "12": "SAE training", "13": "nnsight",
    "14": "bigger models",
}
NOTES = [
    "Anchors: TransformerLens 4 (`TransformerBridge.boot_transformers(folder)`, raw Hugging Face weights, eager "
    "attention) for the trace, the patching hook loop and the probing features; Captum's "
    "`LayerIntegratedGradients` for integrated gradients; plain scikit-learn for the probes. Every row's check "
    "column compares the two tools' outputs on the same inputs.",
    "TransformerLens 4.3.0 is installed with `--no-deps` (requirements-bench.txt): its declared requirements do not "
    "conflict with torch 2.13.0 / transformers 5.24.0, but they pull in wandb, its OpenTelemetry stack and "
    "transformers-stream-generator, which are never imported here. Only the modules that `import "
    "transformer_lens` loads are installed (accelerate, datasets, einops, fancy-einsum, jaxtyping).",
    "`TransformerBridge.boot_transformers(path)` loads a local folder offline (config, tokenizer and safetensors "
    "weights from the path; no Hub call was needed), so no other entry point was used.",
    "The GPT-2-small-shaped model (12 layers, 12 heads, d_model 768, 50,257-entry vocabulary, 1,024 positions, "
    "random GPT-2 initialisation) uses the shipped organism's tokenizer: every workload feeds token ids (or text "
    "that both tools tokenise identically), so the vocabulary of the tokenizer does not matter.",
    "Our trace includes tokenisation and readable token strings; the TransformerLens anchors get token ids. On a "
    "GPU our Trace is copied to the CPU (the contract); TransformerLens' cache stays on the device.",
    "Limits: a 1,024-token prompt is above the local max_prompt_tokens (256); the trace workload passes "
    "max_tokens explicitly and the memory run raises the cap for its own process, as a local user would.",
    "Noise: the machine is shared; interleaving ours and the anchor repeat by repeat makes drift hit both, but "
    "single calls still vary (most at 1,024 tokens, where each call allocates and frees GBs, and for the "
    "organism's millisecond calls, where two OpenMP threads wait on each other whenever another process holds a "
    "core). Medians are what the ratios use; a ratio within a few percent of 1.0 is parity, not a result.",
    "Changes made because of these measurements (same results, tests unchanged): `runner.postScriptGC = false` in "
    ".streamlit/config.toml (Streamlit's forced full garbage collection after every script run scanned ~500,000 "
    "objects holding the GIL, 0.1-0.2 s, before the browser heard that the run ended: a third of each page switch); "
    "`interp_core.attention.head_summaries` computes the entropy one layer at a time (the whole-tensor version "
    "held several copies of every attention pattern: about 1 GB more at 1,024 tokens).",
    "Changes made after the 2026-11-25 run's misses: the trace's attention is written in place into its tensor by "
    "the attention implementation every model is loaded with (`interp_core/recorded_attention.py`: transformers' "
    "eager arithmetic; before, each layer allocated its scores several times, transformers kept every layer's "
    "probabilities and the trace stacked them into a copy: 576 MiB moved about four times at 1,024 tokens on GPT-2 "
    "small); the Circuits page runs and draws only its open tab (`st.tabs(on_change='rerun')`; before, all three "
    "tabs drew on every run, and Altair's schema validation of their charts was most of a page switch). The shipped "
    "organism was retrained with an induction head at 128 wide (1.0 M parameters; it was 256 wide, 3.6 M): its rows "
    "are not comparable with earlier runs'.",
    "Changes made after the 2026-12-01 14:08 run's misses: the Trace keeps the last position's logits only "
    "(`last_logits`; `components.logits_at` gives any other position's from the residual stream): every "
    "position's were 196 MiB at 1,024 tokens and their unembedding a quarter of the trace's time. The stricter "
    "TransformerLens anchor was changed to match (`logits_to_keep=1`, which the bridge hands to the model), so it "
    "still does exactly a Trace's work; the plain `run_with_cache(ids)` anchor computes every position's, as a "
    "notebook does. Gradient passes (integrated gradients and the other gradient attributions, attribution "
    "patching) and probing's feature extraction compute attention with torch's fused kernel "
    "(`recorded_attention.attention_weights_unused`), which keeps no [head, pos, pos] probabilities for the "
    "backward pass; a gradient pass whose one row would not fit limits().ig_batch_memory_mb recomputes each block "
    "in the backward pass (`hooks.recomputed_blocks`), and forward passes without gradients compute attention in "
    "place in one tensor per layer. Attribution patching of token ids runs the clean prompt as a first row of its "
    "one gradient pass instead of a forward of its own.",
    "Measurement changes for issue 16: the Trace keeps no attention patterns (a view computes one layer's [head, "
    "pos, pos] pattern from the trace when it needs it), so the stricter TransformerLens anchor caches no "
    "hook_pattern either and still does exactly a Trace's work; the trace rows' check compares every layer's "
    "computed pattern with TransformerLens' hook_pattern from one more, untimed, call. The trace target is one row: "
    "the worst ratio to that anchor over every length the workload runs. The Trace's size is the sum of its "
    "tensors' bytes. The app's targets are ratios to floors measured by the same browser method in the same run, "
    "interleaved with ours (bench/app_bench.py): a switch between two trivial pages, and the cold start of a page "
    "that only imports our dependencies and loads the model.",
    "Changes made after the 2026-12-01 run's memory miss (3.26 GB): from the first pass with an activation of 1 MiB "
    "or more, glibc's malloc maps every allocation that large on its own (`budget.map_tensors_if_large`), so freed "
    "tensors go back to the system (the default threshold grows, and long prompts' activations then fragmented a "
    "heap that never shrank); the head detectors score one layer's pattern at a time; attribution patching keeps "
    "only its gradients and each site's product with them; a prompt's record keeps only the kinds it patches; the "
    "local batch budget is 384 MiB. Chart specs carry their datasets as Arrow IPC bytes, built once per result "
    "(`charts.arrow_datasets`), so a warm page switch no longer turns every chart's records into a DataFrame.",
    "Measurement changes of 2026-12-02 (second session): the Circuits page became three pages (Circuits, Patching, "
    "Ablation), so workload 6 switches through eight pages; switch rounds 2 -> 3. A second floor for the warm "
    "switch replays each of our pages' recorded messages from a page with none of our code (bench/replay.py): "
    "replay / trivial is what Streamlit and the browser need for our pages' elements, the least the warm-switch "
    "target row can reach, and ours / replay is what our own code adds.",
    "Workload 9 (issue 18, added 2026-12-02, third session): circuit discovery against TransformerLens 4.3's "
    "`attribution_patch(granularity='edge')` and `faithfulness` (bench/discovery_bench.py says how our graph maps "
    "onto its per-position one and why the EAP check swaps clean and corrupted). It has no EAP-IG, so that anchor "
    "is written from its own pieces; its faithfulness takes ~13 s per (pair, circuit) call on GPT-2 small's graph, "
    "so its sweep is timed on a sample of calls spread over the sweep and scaled (each row's note gives both "
    "figures). Changes made for these rows: the contribution graph skips sources after the target and writes the "
    "parts' distances in place (0.62 s -> 0.15 s at 60 tokens on GPT-2 small); the graph run edits an MLP's input "
    "(`hook_mlp_in`) instead of recomputing the MLP, shares one input computation among a layer's q, k and v "
    "receivers, leaves uncut receivers alone and sums a mostly-cut group's kept edges from the total.",
    "Changes of 2026-12-03 (issues 21 and 22): glibc's large-tensor mapping starts at the first pass with an "
    "activation of 16 MiB (was 1 MiB: every tensor over 1 MiB then cost fresh page faults, and the organism's "
    "tuned-lens training spent half its time in the kernel); the tuned lens trains on the organism's own training "
    "rows and records only the residual rows; attention without gradients is computed in float32 in place in any "
    "precision, and the copying detectors no longer copy the whole unembedding to float32. Workload 13 (nnsight "
    "0.8 used directly, on the same model object) and workload 14 (every page of the app on a Llama-1B-shaped "
    "model in bfloat16, under AppTest in a process of its own) are new.",
    "Workload 11 (issue 19, added 2026-12-02, fourth session): exporting findings of three real charts each (data "
    "inline). No other tool exports such a report, so there is no anchor; the targets are the HTML's size for 10 "
    "findings and time linear in the number of findings. The Markdown zip's time is vl-convert rendering each chart "
    "to PNG (about 0.15 s a chart here; rendering in threads was no faster, measured with 2 and 4).",
]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmarks against TransformerLens and Captum (issue 9).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repeats (a smoke test)")
    parser.add_argument("--only", default="", help="comma-separated workload numbers, e.g. 1,2 (default: all)")
    parser.add_argument("--out", default="", help="report path (default BENCHMARKS.md; artifacts/ with --quick)")
    return parser.parse_args()


def main() -> int:
    args = _parse()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # load_model moves models to a GPU whenever it sees one
    import torch

    from bench import common, report

    device, device_note = args.device, ""
    if device == "cuda" and not torch.cuda.is_available():
        device, device_note = "cpu", "--device cuda was asked for, but this machine has no usable GPU: ran on CPU"
        print(device_note, flush=True)
    plan = common.QUICK if args.quick else common.FULL
    chosen = [w.strip() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    out = Path(args.out) if args.out else (ROOT / "artifacts" / "BENCHMARKS.quick.md" if args.quick
                                           else ROOT / "BENCHMARKS.md")
    # The scaling plot: bench/scaling.png beside the committed BENCHMARKS.md, else next to the report.
    committed = out.resolve() == ROOT / "BENCHMARKS.md"
    plot = ROOT / "bench" / "scaling.png" if committed else out.with_suffix(".scaling.png")
    machine = common.machine_info(args.device, device, device_note)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="interp_bench_"))

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    rows = []
    try:
        say(f"plan {plan.name}, device {device}: saving the GPT-2-small-shaped model and loading both tools")
        models = common.load_models(plan, device, workdir)
        rows += models.load_rows
        from bench import (
            app_bench,
            big_model_bench,
            discovery_bench,
            findings_bench,
            ig_bench,
            lens_bench,
            memory_bench,
            nnsight_bench,
            patching_bench,
            probing_bench,
            sae_bench,
            scaling_bench,
            trace_bench,
        )

        steps = {  # workload numbers -> what runs them
            ("1",): lambda: trace_bench.run(plan, models),
            ("2",): lambda: ig_bench.run(plan, models),
            ("3", "4"): lambda: patching_bench.run(plan, models),
            ("5",): lambda: probing_bench.run(plan, models),
            ("7",): lambda: memory_bench.run(plan, models),
            ("8",): lambda: scaling_bench.run(plan, models, workdir, plot, os.path.relpath(plot, out.parent)),
            ("9",): lambda: discovery_bench.run(plan, models),
            ("10",): lambda: lens_bench.run(plan, models),
            ("11",): lambda: findings_bench.run(plan, models),
            ("12",): lambda: sae_bench.run(plan, models),
            ("13",): lambda: nnsight_bench.run(plan, models),
            ("14",): lambda: big_model_bench.run(plan, models, workdir),
            ("6",): lambda: app_bench.run(plan, models, workdir),
        }
        for key, step in steps.items():
            if not any(k in chosen for k in key):
                continue
            say(f"workload {' and '.join(WORKLOADS[k] for k in key)}")
            try:
                new = step()
            except Exception as error:  # one broken workload must not hide the others' numbers
                traceback.print_exc()
                new = [common.Row(f"{key[0]}. {WORKLOADS[key[0]]}", "FAILED", "-",
                                  note=f"{type(error).__name__}: {str(error)[:400]}")]
            for row in new:
                say(f"  {row.workload} | {row.case} | {row.model} | "
                    f"{row.ours.fmt() if row.ours else row.value} | {row.anchor_name} "
                    f"{row.anchor.fmt() if row.anchor else ''} | ratio "
                    f"{f'{row.ratio:.2f}' if row.ratio is not None else '-'} | met {row.met} | {row.check}")
            rows += new
        notes = NOTES + [f"Tokenizer of the GPT-2-small-shaped model: {models.tokenizer_source}."]
        if models.organism is None:
            notes.append("The shipped organism was not in models/organism: its rows are missing, probing ran on the "
                         "GPT-2-small-shaped model and the app on that model's folder.")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    machine["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    command = ("python bench/run.py " + " ".join(sys.argv[1:])).strip()
    text = report.render(plan, machine, rows, notes, elapsed, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print("\n" + report.results_table(rows) + f"\n\nwrote {out} in {elapsed / 60:.1f} minutes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
