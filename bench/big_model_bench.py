"""Workload 14 (issue 22): a Llama-1B-shaped model (Llama-3.2-1B's sizes, random weights, bench/common.py) in
bfloat16 opens every page of the app under the local caps. One fresh process runs the app under Streamlit's
AppTest with the folder as its default model and `?dtype=bfloat16`, then switches to each page in turn (each
page's first run, with its default prompt and settings, is what is timed); its peak RSS is the process's.

    python -m bench.big_model_bench --folder F      # prints the pages' times and the peak as JSON
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
PAGES = ["pages/1_Attention.py", "pages/2_Attribution.py", "pages/3_Probing.py", "pages/4_Logit_Lens.py",
         "pages/5_Circuits.py", "pages/6_Patching.py", "pages/7_Ablation.py", "pages/8_Circuit_Discovery.py",
         "pages/9_Findings.py", "pages/10_Features.py"]


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(folder: str, dtype: str) -> dict:
    """Every page's first run on `folder` in `dtype`: seconds, exceptions and error messages, and the peak."""
    os.environ["INTERP_DEFAULT_MODEL"] = folder
    os.environ.pop("INTERP_HOSTED", None)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=1800)
    at.query_params["dtype"] = dtype
    pages = []
    for page in [None, *PAGES]:
        started = time.perf_counter()
        (at.switch_page(page) if page else at).run()
        pages.append({"page": page or "app.py", "seconds": round(time.perf_counter() - started, 1),
                      "charts": len(at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")),
                      "exceptions": [e.message for e in at.exception], "errors": [str(e.value) for e in at.error]})
    return {"pages": pages, "peak_mib": round(_peak_mib(), 1), "dtype": at.session_state["dtype"]}


def run(plan: Plan, models: Models, workdir: Path) -> list[Row]:
    quick = plan.name == "quick"
    tokenizer, _ = organism_tokenizer()
    folder = save_llama_shaped(workdir / "llama_1b_bench14", tokenizer, LLAMA_QUICK if quick else LLAMA_1B)
    done = subprocess.run([sys.executable, "-m", "bench.big_model_bench", "--folder", str(folder)], cwd=ROOT,
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    found = json.loads(done.stdout.strip().splitlines()[-1])
    pages = found["pages"]
    broken = [p["page"] for p in pages if p["exceptions"]]
    total = sum(p["seconds"] for p in pages)
    row = Row(WORKLOAD, f"bfloat16, every page's first run (AppTest, default prompt), {len(pages)} pages",
              "Llama-1B-shaped" + (" (quick sizes)" if quick else ""), Timing((total,)),
              value=f"peak RSS {found['peak_mib'] / 1024:.1f} GiB", target="every page draws, no exception",
              check="exceptions on: " + (", ".join(broken) if broken else "none"))
    row.met = not broken and found["dtype"] == "bfloat16"
    row.note = (f"ran in {found['dtype']}; the first page (app.py, the Overview) includes the model's load. "
                + "; ".join(f"{Path(p['page']).stem} {p['seconds']:.0f} s, {p['charts']} charts"
                            + (f" (says: {p['errors'][0][:80]})" if p["errors"] else "") for p in pages))
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    print(json.dumps(measure(args.folder, args.dtype)))


if __name__ == "__main__":
    main()
