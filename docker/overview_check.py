"""Open the app's Overview page in headless Chromium and check that it draws with no exception.

    BASE_URL=http://127.0.0.1:8501 SHOT=/tmp/overview.png .venv/bin/python docker/overview_check.py

Used by docker/run-here.sh on the app started from the built image. Same browser setup as tests/e2e (Debian's
/usr/bin/chromium driven by Playwright); the page is done when its table and a chart are shown and the script
has stopped running for 3 s.
"""

from __future__ import annotations

import os
import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]


def main() -> int:
    base = os.environ.get("BASE_URL", "http://127.0.0.1:8501")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.time()
        page.goto(base + "/")
        idle_since = None
        while time.time() - start < 300:
            running = page.locator('[data-testid="stStatusWidget"]').count() > 0
            drawn = (page.locator("[data-testid='stDataFrame']").count() > 0
                     and page.locator(".vega-embed").count() > 0)
            if drawn and not running:
                idle_since = idle_since or time.time()
                if time.time() - idle_since >= 3:
                    break
            else:
                idle_since = None
            time.sleep(0.5)
        else:
            print("Overview did not finish drawing within 300 s")
            return 1
        took = idle_since - start
        h1 = page.locator("h1").first.inner_text() if page.locator("h1").count() else "(no h1)"
        exceptions = page.locator("[data-testid='stException']").count()
        errors = page.locator("[data-testid='stAlertContentError']").count()
        charts = page.locator(".vega-embed").count()
        tables = page.locator("[data-testid='stDataFrame']").count()
        if os.environ.get("SHOT"):
            page.screenshot(path=os.environ["SHOT"], full_page=True)
        print(f"Overview drawn in {took:.1f} s: h1 {h1!r}, {tables} tables, {charts} charts, "
              f"{exceptions} exceptions, {errors} error boxes")
        browser.close()
        return 0 if exceptions == 0 and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
