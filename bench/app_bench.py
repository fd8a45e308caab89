"""Workload 6: the app through a real browser (Playwright driving Debian's chromium, as tests/e2e does).

- Cold start to first chart: from launching `streamlit run app.py` (a fresh server: imports, model load, first
  trace) until the Overview's first Altair chart has been drawn (a canvas inside a chart container that is not
  stale) in a page opened as soon as the server answers its health check. The browser is started beforehand.
- Warm page switch: after every page has been visited once (its analyses are in st.cache_data), the time from a
  click on a sidebar link until the new page's title is shown, no script run is in progress and a chart of the
  new page has been drawn. Measured over rounds through all six pages.
There is no anchor: a notebook has no pages. The targets are absolute (issue 9).
"""

from __future__ import annotations

import os
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

# True once the page titled `title` has finished its script run and drawn a chart that is not stale.
DONE_JS = """title => {
  const h1 = [...document.querySelectorAll('h1')].some(h => h.textContent.includes(title));
  const running = document.querySelector("[data-testid='stStatusWidget']") !== null;
  const drawn = [...document.querySelectorAll("[data-testid='stElementContainer']:not([data-stale='true'])")]
    .some(c => c.querySelector("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg.marks"));
  return h1 && !running && drawn;
}"""


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


def _switch(page, label: str, title: str) -> float:
    link = page.locator("[data-testid='stSidebar'] a[data-testid='stPageLink-NavLink']", has_text=label).first
    start = time.perf_counter()
    link.click()
    _wait_done(page, title)
    return time.perf_counter() - start


def run(plan: Plan, models: Models, workdir: Path) -> list[Row]:
    if not Path(CHROMIUM).exists():
        return [Row(WORKLOAD, "browser workloads", "-", note=f"skipped: {CHROMIUM} is missing "
                                                             "(apt-get install -y chromium)")]
    from playwright.sync_api import sync_playwright

    shipped = models.organism is not None
    model_ref, model_name = ("organism", "shipped organism") if shipped else (str(models.big_folder),
                                                                               "GPT-2-small-shaped")
    cold: list[float] = []
    first_visit: dict[str, float] = {}
    switches: dict[str, list[float]] = {label: [] for label, _ in PAGES}
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
                    page.goto(url, timeout=TIMEOUT_MS)
                    _wait_done(page, "Interpretability workbench")
                    cold.append(time.perf_counter() - start)
                    if i == plan.app_cold_repeats - 1:  # the last server also serves the page switches
                        for label, title in PAGES:
                            first_visit[label] = _switch(page, label, title)
                        for _ in range(plan.app_switch_rounds):
                            for label, title in PAGES:
                                switches[label].append(_switch(page, label, title))
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
                note="fresh `streamlit run` each time: imports, model load, first trace, first chart")]
    every = Timing(tuple(t for values in switches.values() for t in values))
    medians = {label: Timing(tuple(values)).median for label, values in switches.items()}
    row = Row(WORKLOAD, "warm page switch (click to drawn chart), all pages", model_name, every,
              target=f"<= {SWITCH_TARGET_S:g} s on every page", met=max(medians.values()) <= SWITCH_TARGET_S,
              note="met = every page's median switch within the target")
    breakdown = ["| page | first visit (computes) | warm switches (median, min-max) |", "|---|---:|---|"]
    breakdown += [f"| {label} | {first_visit[label]:.2f} s | {Timing(tuple(switches[label])).fmt()} |"
                  for label, _ in PAGES]
    row.profile = "\n".join(breakdown)
    rows.append(row)
    return rows
