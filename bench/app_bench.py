"""Workload 6: the app through a real browser (Playwright driving Debian's chromium, as tests/e2e does).

- Cold start to first chart: from launching `streamlit run app.py` (a fresh server: imports, model load, first
  trace) until the Overview's first Altair chart has been drawn (a canvas inside a chart container that is not
  stale) in a page opened as soon as the server answers its health check. The browser is started beforehand.
- Warm page switch: after every page has been visited once (its analyses are in st.cache_data), the time from a
  click on a sidebar link until the new page's title is shown, its script run has ended and a chart of the new
  page has been drawn. Measured over rounds through all six pages, with a second's pause before each click
  (untimed: a reader looks at a page before leaving it; it also lets Streamlit's post-run garbage collection end).
There is no anchor: a notebook has no pages. The targets are absolute (issue 9).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import Models, Plan, Row, Timing

WORKLOAD = "6. App"
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PAGES = [("Attention", "Attention"), ("Attribution", "Attribution"), ("Probing", "Probing"),
         ("Logit lens", "Logit lens"), ("Circuits", "Circuits"), ("Overview", "Interpretability workbench")]
COLD_TARGET_S = 10.0
SWITCH_TARGET_S = 0.5
TIMEOUT_MS = 180_000
THINK_MS = 1_000  # pause before each click, not timed: nobody switches pages within a second of the last one

# True once the page titled `title` has finished its script run (Streamlit's own e2e marker on stApp).
RAN_JS = """title => {
  const app = document.querySelector("[data-testid='stApp']");
  return app !== null && app.getAttribute('data-test-script-state') === 'notRunning'
    && [...document.querySelectorAll('h1')].some(h => h.textContent.includes(title));
}"""
# ... and shows a drawn chart that is not stale (left over from the previous page).
DONE_JS = """title => (""" + RAN_JS + """)(title)
  && [...document.querySelectorAll("[data-testid='stElementContainer']:not([data-stale='true'])")]
    .some(c => c.querySelector("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg.marks"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(model_ref: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "INTERP_DEFAULT_MODEL": model_ref, "PYTHONPATH": str(ROOT)}
    env.pop("INTERP_HOSTED", None)
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
               f"--server.port={port}", "--server.address=127.0.0.1", "--server.fileWatcherType=none",
               "--browser.gatherUsageStats=false"]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return server, f"http://127.0.0.1:{port}"


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout_s:.0f} s")


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _wait_done(page, title: str) -> None:
    page.wait_for_function(DONE_JS, arg=title, polling="raf", timeout=TIMEOUT_MS)


def _switch(page, label: str, title: str) -> tuple[float, float]:
    """Click the sidebar link to `label`; (seconds until its script run ended, seconds until a chart was drawn)."""
    link = page.locator("[data-testid='stSidebar'] a[data-testid='stPageLink-NavLink']", has_text=label).first
    page.wait_for_timeout(THINK_MS)  # a reader looks at a page before leaving it (and Streamlit's post-run GC ends)
    start = time.perf_counter()
    link.click()
    page.wait_for_function(RAN_JS, arg=title, polling="raf", timeout=TIMEOUT_MS)
    ran = time.perf_counter() - start
    _wait_done(page, title)
    return ran, time.perf_counter() - start


def _py_spy_summary(raw: Path, rows: int = 25) -> str:
    """Inclusive and self shares of the functions in py-spy's collapsed stacks ("f1;f2;...;fn count" lines)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    if not total:
        return "py-spy recorded no samples"

    def table(counts: dict[str, int], title: str) -> list[str]:
        top = sorted(counts.items(), key=lambda kv: -kv[1])
        top = [(f, c) for f, c in top if c < 0.9 * total][:rows]  # thread roots say nothing
        return [title] + [f"{100 * c / total:5.1f}%  {f}" for f, c in top]

    header = (f"py-spy record of the streamlit server during one more round of switches: {total} samples of the "
              "thread holding the GIL (Python work; sleeping and waiting threads left out)")
    return "\n".join([header] + table(inclusive, "-- inclusive (function and what it calls):")
                     + table(own, "-- self:"))


def _profile_server(page, server: subprocess.Popen, workdir: Path) -> str:
    """py-spy (if installed) on the server while the browser goes once more through every page."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        return "py-spy is not installed (requirements-bench.txt): no server profile"
    raw = workdir / "py_spy.txt"
    command = [str(py_spy), "record", "--pid", str(server.pid), "--format", "raw", "--rate", "250", "--gil",
               "--output", str(raw)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    for label, title in PAGES:
        _switch(page, label, title)
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
    if not raw.exists():
        return f"py-spy failed: {spy.stderr.read().decode()[-500:] if spy.stderr else ''}"
    return _py_spy_summary(raw)


def run(plan: Plan, models: Models, workdir: Path) -> list[Row]:
    if not Path(CHROMIUM).exists():
        return [Row(WORKLOAD, "browser workloads", "-", note=f"skipped: {CHROMIUM} is missing "
                                                             "(apt-get install -y chromium)")]
    from playwright.sync_api import sync_playwright

    shipped = models.organism is not None
    model_ref, model_name = ("organism", "shipped organism") if shipped else (str(models.big_folder),
                                                                               "GPT-2-small-shaped")
    cold: list[float] = []
    healthy: list[float] = []  # seconds from launch until /_stcore/health answered
    first_visit: dict[str, float] = {}
    switches: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in PAGES}  # (script ran, drawn)
    server_profile = ""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for i in range(plan.app_cold_repeats):
                log = workdir / f"streamlit_{i}.log"
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                start = time.perf_counter()
                server, url = _start_server(model_ref, log)
                try:
                    _wait_healthy(url, server, log)
                    healthy.append(time.perf_counter() - start)
                    page.goto(url, timeout=TIMEOUT_MS)
                    _wait_done(page, "Interpretability workbench")
                    cold.append(time.perf_counter() - start)
                    if i == plan.app_cold_repeats - 1:  # the last server also serves the page switches
                        for label, title in PAGES:
                            first_visit[label] = _switch(page, label, title)[1]
                        for _ in range(plan.app_switch_rounds):
                            for label, title in PAGES:
                                switches[label].append(_switch(page, label, title))
                        medians = [Timing(tuple(t for _, t in v)).median for v in switches.values()]
                        if max(medians) > SWITCH_TARGET_S:
                            server_profile = _profile_server(page, server, workdir)
                        exceptions = page.locator("[data-testid='stException']").count()
                        if exceptions:
                            raise RuntimeError(f"the app showed {exceptions} exception(s) during the benchmark")
                finally:
                    context.close()
                    _stop(server)
        finally:
            browser.close()

    t_cold = Timing(tuple(cold))
    rows = [Row(WORKLOAD, "cold start to first drawn chart (Overview)", model_name, t_cold,
                target=f"<= {COLD_TARGET_S:g} s", met=t_cold.median <= COLD_TARGET_S,
                note=f"fresh `streamlit run` each time; the server answered its health check after "
                     f"{Timing(tuple(healthy)).median:.1f} s (median), the rest is the first script run (model "
                     "load, trace, analyses) and drawing")]
    every = Timing(tuple(t for values in switches.values() for _, t in values))
    drawn = {label: Timing(tuple(t for _, t in values)) for label, values in switches.items()}
    ran = {label: Timing(tuple(t for t, _ in values)) for label, values in switches.items()}
    row = Row(WORKLOAD, "warm page switch (click to drawn chart), all pages", model_name, every,
              target=f"<= {SWITCH_TARGET_S:g} s on every page",
              met=max(t.median for t in drawn.values()) <= SWITCH_TARGET_S,
              note="met = every page's median switch within the target")
    breakdown = ["| page | first visit (computes) | warm: script run ended (median) | warm: chart drawn (median, "
                 "min-max) |", "|---|---:|---:|---|"]
    breakdown += [f"| {label} | {first_visit[label]:.2f} s | {ran[label].median:.2f} s | {drawn[label].fmt()} |"
                  for label, _ in PAGES]
    row.profile = "\n".join(breakdown) + ("\n\n```\n" + server_profile + "\n```" if server_profile else "")
    rows.append(row)
    return rows
