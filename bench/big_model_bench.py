"""Workload 14 (issue 22): a Llama-1B-shaped model (Llama-3.2-1B's sizes, random weights, bench/common.py) in
bfloat16 opens every page of the app under the local caps. One fresh process runs the app under Streamlit's
AppTest with the folder as its default model and `?dtype=bfloat16`, then switches to each page in turn (each
page's first run, with its default prompt and settings, is what is timed); its peak RSS is the process's.

    python -m bench.big_model_bench --folder F      # prints each page's time, charts and peak as a JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import LLAMA_1B, LLAMA_QUICK, Models, Plan, Row, Timing, organism_tokenizer, save_llama_shaped

WORKLOAD = "14. Bigger models"
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900  # the whole process; a page still running then is reported as not finished
PAGES = ["pages/1_Attention.py", "pages/2_Attribution.py", "pages/3_Probing.py", "pages/4_Logit_Lens.py",
         "pages/5_Circuits.py", "pages/6_Patching.py", "pages/7_Ablation.py", "pages/9_Findings.py",
         "pages/10_Features.py", "pages/8_Circuit_Discovery.py"]  # the slowest last (> 11 min measured on 2 cores)


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(folder: str, dtype: str) -> None:
    """Every page's first run on `folder` in `dtype`, printed as one JSON line each as it ends (seconds, charts
    drawn, exceptions and error messages, the dtype the sidebar holds and the process' peak so far)."""
    os.environ["INTERP_DEFAULT_MODEL"] = folder
    os.environ.pop("INTERP_HOSTED", None)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.query_params["dtype"] = dtype
    for page in [None, *PAGES]:
        started = time.perf_counter()
        (at.switch_page(page) if page else at).run()
        print(json.dumps({"page": page or "app.py", "seconds": round(time.perf_counter() - started, 1),
                          "charts": len(at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")),
                          "exceptions": [e.message for e in at.exception], "errors": [str(e.value) for e in at.error],
                          "dtype": at.session_state["dtype"], "peak_mib": round(_peak_mib(), 1)}), flush=True)


def _pages(folder: Path) -> tuple[list[dict], str]:
    """The pages' lines from a fresh process, and what stopped it early ("" when every page ran)."""
    command = [sys.executable, "-m", "bench.big_model_bench", "--folder", str(folder)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
        out, stopped = done.stdout, "" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-300:]}"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stopped = f"stopped after {TIMEOUT_S} s, {len(out.splitlines())} pages done"
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")], stopped


def run(plan: Plan, models: Models, workdir: Path) -> list[Row]:
    quick = plan.name == "quick"
    tokenizer, _ = organism_tokenizer()
    folder = save_llama_shaped(workdir / "llama_1b_bench14", tokenizer, LLAMA_QUICK if quick else LLAMA_1B)
    pages, stopped = _pages(folder)
    broken = [p["page"] for p in pages if p["exceptions"]]
    ran_all = len(pages) == len(PAGES) + 1
    peak = max((p["peak_mib"] for p in pages), default=float("nan"))
    row = Row(WORKLOAD, f"bfloat16, every page's first run (AppTest, default prompt), {len(PAGES) + 1} pages",
              "Llama-1B-shaped" + (" (quick sizes)" if quick else ""),
              Timing((sum(p["seconds"] for p in pages),)), value=f"peak RSS {peak / 1024:.1f} GiB",
              target="every page draws, no exception",
              check=f"{len(pages)} pages ran; exceptions on: " + (", ".join(broken) if broken else "none"))
    row.met = ran_all and not broken and all(p["dtype"] == "bfloat16" for p in pages)
    if not ran_all:
        stopped += f"; {Path(PAGES[len(pages) - 1]).stem} had not finished" if pages else ""
    row.note = ((stopped + ". " if stopped else "") + "The first page (app.py, the Overview) includes the model's "
                "load. " + "; ".join(f"{Path(p['page']).stem} {p['seconds']:.0f} s, {p['charts']} charts"
                                     + (f" (says: {p['errors'][0][:80]})" if p["errors"] else "") for p in pages))
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    measure(args.folder, args.dtype)


if __name__ == "__main__":
    main()
