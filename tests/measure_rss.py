"""Resident memory of the app on the shipped model after visiting every page in a real browser.

    python tests/measure_rss.py            # hosted mode (as in the Dockerfile); --local for local limits

Starts `streamlit run app.py` on a free port, waits on /_stcore/health, opens every page in headless Chromium
(Debian's /usr/bin/chromium, driven by Playwright), waits until each page has drawn its charts and stopped
running, and prints the server's resident set size (VmRSS) after each page and its peak (VmHWM) at the end.
Not a pytest test (it takes minutes); the number goes into the README's "Deploying" section.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["", "Attention", "Attribution", "Probing", "Logit_Lens", "Circuits", "Patching", "Ablation"]  # "" = Overview
CHROMIUM = "/usr/bin/chromium"
PAGE_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of `pid` in MB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def wait_healthy(url: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def wait_page_done(page, timeout: float = PAGE_TIMEOUT_S) -> float:
    """Wait until the page shows a chart and the script is no longer running for 3 s; returns seconds taken."""
    start = time.time()
    idle_since = None
    while time.time() - start < timeout:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        charts = page.locator(".vega-embed").count()
        if charts and not running:
            idle_since = idle_since or time.time()
            if time.time() - idle_since >= 3:
                return time.time() - start
        else:
            idle_since = None
        time.sleep(0.5)
    raise TimeoutError(f"page did not finish within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="local limits instead of hosted mode")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "INTERP_DEFAULT_MODEL": "organism", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                                                                "1")}
    env.pop("INTERP_HOSTED", None) if args.local else env.update(INTERP_HOSTED="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true", f"--server.port={port}",
         "--server.address=127.0.0.1", "--server.fileWatcherType=none", "--browser.gatherUsageStats=false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/_stcore/health")
        print(f"mode: {'local' if args.local else 'hosted'}; after start: {memory_mb(server.pid)['VmRSS']:.0f} MB")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for path in PAGES:
                page.goto(f"{base}/{path}")
                took = wait_page_done(page)
                print(f"/{path:<12} drawn in {took:6.1f} s; server RSS {memory_mb(server.pid)['VmRSS']:.0f} MB",
                      flush=True)
            browser.close()
        mem = memory_mb(server.pid)
        print(f"after every page: RSS {mem['VmRSS']:.0f} MB, peak {mem['VmHWM']:.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
