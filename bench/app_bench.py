"""Workload 6: the app through a real browser (Playwright driving Debian's chromium, as tests/e2e does), against
floors measured the same way in the same run (an absolute time on a shared CPU does not hold; a ratio does).

- Cold start to first chart: from launching `streamlit run app.py` (a fresh server: imports, model load, first
  trace) until the Overview's first Altair chart has been drawn (a canvas inside a chart container that is not
  stale) in a page opened as soon as the server answers its health check. The browser is started beforehand.
  Floor: the same for a one-page app that only imports our dependencies (torch, transformers, streamlit, altair,
  pandas and the scikit-learn modules the probing uses), calls `interp_core.loading.load_model` on the default
  model and draws one three-point chart. Target: ours <= 1.3x the floor.
- Warm page switch: after every page has been visited once (its analyses are in st.cache_data), the time from a
  click on a sidebar link until the new page's title is shown, its script run has ended and a chart of the new
  page has been drawn. Measured over rounds through all six pages, with a second's pause before each click
  (untimed: a reader looks at a page before leaving it). Floor: the same click-to-drawn-chart switch between the
  two pages of a trivial app (a title, two sidebar links and one three-point chart each). Target: every page's
  median <= 2x the floor's median. A second floor draws exactly what our pages draw with none of our code: each
  page's warm run recorded under AppTest and its messages sent again by a replay app (bench/replay.py). The replay
  against the trivial switch is what Streamlit and the browser need for those elements (the least the target row
  can reach); ours against the replay is what our own code adds.
The floor apps are written to a temporary folder at run time, with our .streamlit/config.toml (the same server
and client settings), and run by the same `streamlit run` command. Cold starts alternate ours and the floor; switch
rounds alternate ours, the replay and the trivial app, so that drift on a shared machine hits all three. When a
target is missed, py-spy records our server (one more round of switches, or one more cold start) and the report
shows where it went.
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
from bench.replay import record_pages, write_replay_app

WORKLOAD = "6. App"
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PAGES = [("Attention", "Attention"), ("Attribution", "Attribution"), ("Probing", "Probing"),
         ("Logit lens", "Logit lens"), ("Circuits", "Circuits"), ("Patching", "Patching"),
         ("Ablation", "Ablation"), ("Features", "Features"), ("Overview", "Interpretability workbench")]
COLD_TARGET = 1.3  # ours / the import-and-load floor (issue 16)
SWITCH_TARGET = 2.0  # every page's median switch / the trivial-page switch (issue 16)
OVERVIEW_TITLE = "Interpretability workbench"
FLOOR_COLD_TITLE = "Floor: imports and model load"
FLOOR_PAGES = [("Floor two", "Floor page two"), ("Floor one", "Floor page one")]  # (link label, title), in turn
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


_TINY_CHART = """st.altair_chart(alt.Chart(pd.DataFrame({"x": [0, 1, 2], "y": [0, 1, 0]})).mark_line()
                .encode(x="x", y="y"))
"""
_SWITCH_PAGE = """import altair as alt
import pandas as pd
import streamlit as st

st.sidebar.page_link("app.py", label="Floor one")
st.sidebar.page_link("pages/1_Two.py", label="Floor two")
st.title("{title}")
""" + _TINY_CHART
_COLD_PAGE = """import os

import altair as alt
import pandas as pd
import sklearn.dummy
import sklearn.linear_model
import sklearn.metrics
import sklearn.model_selection
import sklearn.neural_network
import sklearn.pipeline
import sklearn.preprocessing
import streamlit as st
import torch
import transformers

from interp_core.loading import load_model

bundle = load_model(os.environ.get("INTERP_DEFAULT_MODEL", "").strip() or "organism")
st.title("{title}")
""" + _TINY_CHART


def write_floor_apps(folder: Path) -> tuple[Path, Path]:
    """The two floor apps under `folder`: (the trivial two-page app, the import-and-load app), each with our
    .streamlit/config.toml."""
    switch, cold = folder / "floor_switch", folder / "floor_cold"
    for app in (switch, cold):
        (app / ".streamlit").mkdir(parents=True, exist_ok=True)
        config = ROOT / ".streamlit" / "config.toml"
        if config.is_file():
            (app / ".streamlit" / "config.toml").write_text(config.read_text())
    (switch / "pages").mkdir(exist_ok=True)
    (switch / "app.py").write_text(_SWITCH_PAGE.replace("{title}", "Floor page one"))
    (switch / "pages" / "1_Two.py").write_text(_SWITCH_PAGE.replace("{title}", "Floor page two"))
    (cold / "app.py").write_text(_COLD_PAGE.replace("{title}", FLOOR_COLD_TITLE))
    return switch, cold


def _start_server(model_ref: str, log: Path, app_dir: Path = ROOT,
                  py_spy_raw: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` in `app_dir` (with py_spy_raw: under `py-spy record`, sampling from its start)."""
    port = _free_port()
    env = {**os.environ, "INTERP_DEFAULT_MODEL": model_ref, "PYTHONPATH": str(ROOT)}
    env.pop("INTERP_HOSTED", None)
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
               f"--server.port={port}", "--server.address=127.0.0.1", "--server.fileWatcherType=none",
               "--browser.gatherUsageStats=false"]
    if py_spy_raw is not None:
        command = [str(_py_spy()), "record", "--format", "raw", "--rate", "250", "--gil", "--output",
                   str(py_spy_raw), "--", *command]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
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


def _open_app(browser, contexts: list, servers: list, model_ref: str, app_dir: Path, log: Path):
    """A fresh server of the app in `app_dir` and a browser page opened on it (both added to the lists to close)."""
    server, url = _start_server(model_ref, log, app_dir)
    servers.append(server)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    contexts.append(context)
    page = context.new_page()
    _wait_healthy(url, server, log)
    page.goto(url, timeout=TIMEOUT_MS)
    return page


def _py_spy() -> Path:
    return Path(sys.executable).with_name("py-spy")


def _py_spy_summary(raw: Path, rows: int = 25, what: str = "during one more round of switches") -> str:
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

    header = (f"py-spy record of the streamlit server {what}: {total} samples of the thread holding the GIL "
              "(Python work; sleeping and waiting threads left out)")
    return "\n".join([header] + table(inclusive, "-- inclusive (function and what it calls):")
                     + table(own, "-- self:"))


def _profile_server(page, server: subprocess.Popen, workdir: Path) -> str:
    """py-spy (if installed) on the server while the browser goes once more through every page."""
    py_spy = _py_spy()
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


def _profile_cold(browser, model_ref: str, workdir: Path) -> str:
    """py-spy (if installed) over one more cold start of our app, from its launch to the first drawn chart."""
    if not _py_spy().exists():
        return "py-spy is not installed (requirements-bench.txt): no server profile"
    raw, log = workdir / "py_spy_cold.txt", workdir / "streamlit_profiled.log"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    spy, url = _start_server(model_ref, log, py_spy_raw=raw)  # py-spy starts the server and samples it from its start
    try:
        _wait_healthy(url, spy, log)
        page.goto(url, timeout=TIMEOUT_MS)
        _wait_done(page, OVERVIEW_TITLE)
    finally:
        context.close()
        _stop_under_py_spy(spy)
    if not raw.exists():
        return f"py-spy failed: {log.read_text()[-500:]}"
    return _py_spy_summary(raw, what="from `streamlit run` to the Overview's first drawn chart (one more cold start)")


def _stop_under_py_spy(spy: subprocess.Popen) -> None:
    """Stop the server that py-spy started (py-spy then writes its file and exits), then py-spy itself."""
    try:
        children = Path(f"/proc/{spy.pid}/task/{spy.pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.send_signal(signal.SIGINT)
        _stop(spy)


class _Cold:
    """Fresh `streamlit run` of one app to its first drawn chart: the times, and the last server kept on request."""

    def __init__(self, browser, model_ref: str, workdir: Path) -> None:
        self.browser, self.model_ref, self.workdir = browser, model_ref, workdir
        self.times: dict[str, list[float]] = {"ours": [], "floor": []}
        self.healthy: dict[str, list[float]] = {"ours": [], "floor": []}
        self.kept: tuple | None = None  # (server, context, page) of the kept server

    def measure(self, which: str, app_dir: Path, title: str, keep: bool = False) -> None:
        log = self.workdir / f"streamlit_{which}_{len(self.times[which])}.log"
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        start = time.perf_counter()
        server, url = _start_server(self.model_ref, log, app_dir)
        try:
            _wait_healthy(url, server, log)
            self.healthy[which].append(time.perf_counter() - start)
            page.goto(url, timeout=TIMEOUT_MS)
            _wait_done(page, title)
            self.times[which].append(time.perf_counter() - start)
        except BaseException:
            keep = False
            raise
        finally:
            if not keep:
                context.close()
                _stop(server)
        if keep:
            self.kept = (server, context, page)


def run(plan: Plan, models: Models, workdir: Path) -> list[Row]:
    if not Path(CHROMIUM).exists():
        return [Row(WORKLOAD, "browser workloads", "-", note=f"skipped: {CHROMIUM} is missing "
                                                             "(apt-get install -y chromium)")]
    from playwright.sync_api import sync_playwright

    shipped = models.organism is not None
    model_ref, model_name = ("organism", "shipped organism") if shipped else (str(models.big_folder),
                                                                               "GPT-2-small-shaped")
    floor_switch_dir, floor_cold_dir = write_floor_apps(workdir / "floor_apps")
    first_visit: dict[str, float] = {}
    switches: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in PAGES}  # (script ran, drawn)
    replayed: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in PAGES}
    trivial: list[tuple[float, float]] = []
    server_profile = cold_profile = ""
    servers: list[subprocess.Popen] = []
    contexts = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            cold = _Cold(browser, model_ref, workdir)
            n = plan.app_cold_repeats
            for i in range(n):  # alternate which goes first; ours is the last one, and its server is kept
                order = ("ours", "floor") if (n - 1 - i) % 2 else ("floor", "ours")
                for which in order:
                    if which == "ours":
                        cold.measure("ours", ROOT, OVERVIEW_TITLE, keep=i == n - 1)
                    else:
                        cold.measure("floor", floor_cold_dir, FLOOR_COLD_TITLE)
            server, context, page = cold.kept
            servers.append(server)
            contexts.append(context)

            # recorded after the cold starts, so that its AppTest run in this process does not slow them
            replay_dir = write_replay_app(workdir / "replay_app", record_pages(model_ref))
            floor_page = _open_app(browser, contexts, servers, model_ref, floor_switch_dir,
                                   workdir / "streamlit_trivial.log")
            _wait_done(floor_page, FLOOR_PAGES[1][1])
            replay_page = _open_app(browser, contexts, servers, model_ref, replay_dir, workdir / "streamlit_replay.log")
            _wait_done(replay_page, OVERVIEW_TITLE)

            for label, title in PAGES:  # first visits compute; not part of the warm switch
                first_visit[label] = _switch(page, label, title)[1]
                _switch(replay_page, label, title)
            for label, title in FLOOR_PAGES:  # and one untimed round trip on the trivial app
                _switch(floor_page, label, title)
            for r in range(plan.app_switch_rounds):
                for which in (("ours", "replay", "floor") if r % 2 == 0 else ("floor", "replay", "ours")):
                    if which in ("ours", "replay"):
                        into, tab = (switches, page) if which == "ours" else (replayed, replay_page)
                        for label, title in PAGES:
                            into[label].append(_switch(tab, label, title))
                    else:  # as many switches as ours, back and forth (an even number: it ends on page one)
                        for k in range(len(PAGES)):
                            trivial.append(_switch(floor_page, *FLOOR_PAGES[k % 2]))
            t_trivial = Timing(tuple(t for _, t in trivial))
            drawn = {label: Timing(tuple(t for _, t in values)) for label, values in switches.items()}
            if max(t.median for t in drawn.values()) > SWITCH_TARGET * t_trivial.median:
                server_profile = _profile_server(page, server, workdir)
            exceptions = page.locator("[data-testid='stException']").count()
            if exceptions:
                raise RuntimeError(f"the app showed {exceptions} exception(s) during the benchmark")
            for context in contexts:
                context.close()
            contexts.clear()
            for s in servers:
                _stop(s)
            servers.clear()
            t_cold, t_floor = Timing(tuple(cold.times["ours"])), Timing(tuple(cold.times["floor"]))
            if t_cold.median > COLD_TARGET * t_floor.median:
                cold_profile = _profile_cold(browser, model_ref, workdir)
        finally:
            for context in contexts:
                context.close()
            for s in servers:
                _stop(s)
            browser.close()

    health = {k: Timing(tuple(v)).median for k, v in cold.healthy.items()}
    row = Row(WORKLOAD, "cold start to first drawn chart (Overview)", model_name, t_cold,
              "floor: `streamlit run` of a page that imports our dependencies and loads the model", t_floor,
              target=f"<= {COLD_TARGET:g}x the floor",
              note=f"fresh `streamlit run` each time, ours and the floor alternating; the health check answered after "
                   f"{health['ours']:.1f} s (ours) and {health['floor']:.1f} s (floor), medians; the rest is the "
                   "first script run (imports, model load; ours: trace, analyses, charts) and drawing")
    row.met = row.ratio <= COLD_TARGET
    if cold_profile:
        row.profile = cold_profile  # the report puts it in a code block
    rows = [row]

    every = Timing(tuple(t for values in switches.values() for _, t in values))
    ran = {label: Timing(tuple(t for t, _ in values)) for label, values in switches.items()}
    ratios = {label: t.median / t_trivial.median for label, t in drawn.items()}
    worst = max(ratios, key=ratios.get)
    row = Row(WORKLOAD, "warm page switch (click to drawn chart), all pages", model_name, every,
              "floor: switch between two trivial pages (title, links, one tiny chart)", t_trivial,
              target=f"<= {SWITCH_TARGET:g}x the floor on every page", met=ratios[worst] <= SWITCH_TARGET,
              note=f"met = every page's median within {SWITCH_TARGET:g}x the floor's median; worst: {worst} "
                   f"{ratios[worst]:.2f}x")
    replay = {label: Timing(tuple(t for _, t in values)) for label, values in replayed.items()}
    breakdown = ["| page | first visit (computes) | warm: script run ended (median) | warm: chart drawn (median, "
                 "min-max) | / floor switch | same elements replayed: chart drawn | replay / floor | ours / replay |",
                 "|---|---:|---:|---|---:|---|---:|---:|"]
    breakdown += [f"| {label} | {first_visit[label]:.2f} s | {ran[label].median:.2f} s | {drawn[label].fmt()} | "
                  f"{ratios[label]:.2f}x | {replay[label].fmt()} | {replay[label].median / t_trivial.median:.2f}x | "
                  f"{drawn[label].median / replay[label].median:.2f}x |" for label, _ in PAGES]
    floor_ran = Timing(tuple(t for t, _ in trivial))
    breakdown.append(f"| floor: trivial page | - | {floor_ran.median:.2f} s | {t_trivial.fmt()} | 1.00x | | | |")
    row.profile = "\n".join(breakdown) + ("\n\n```\n" + server_profile + "\n```" if server_profile else "")
    rows.append(row)
    all_replayed = Timing(tuple(t for values in replayed.values() for _, t in values))
    bound = {label: t.median / t_trivial.median for label, t in replay.items()}
    ours_share = {label: drawn[label].median / replay[label].median for label in drawn}
    rows.append(Row(WORKLOAD, "warm page switch against the same elements replayed, all pages", model_name, every,
                    "floor: each page's recorded messages sent again by a page with none of our code "
                    "(bench/replay.py)", all_replayed,
                    note=f"what Streamlit and the browser need for our pages' elements: the replay is "
                         f"{min(bound.values()):.2f}-{max(bound.values()):.2f}x the trivial switch, so that is the "
                         f"least the target row can reach; ours / replay per page "
                         f"{min(ours_share.values()):.2f}-{max(ours_share.values()):.2f}x (table above)"))
    return rows
