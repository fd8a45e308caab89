"""More browser checks: every page draws a chart, the Attention heatmap follows the layer and head, injection
prompts stay inert text, and 8 browser contexts at once all get their charts."""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect
from test_browser import assert_no_traceback, wait_until_idle

CHART = "[data-testid='stVegaLiteChart']"
CHART_TIMEOUT_MS = 180_000
PAGE_PATHS = {  # label -> URL path (Streamlit names a page by its file name, less the number)
    "Overview": "",
    "Attention": "Attention",
    "Attribution": "Attribution",
    "Probing": "Probing",
    "Logit lens": "Logit_Lens",
    "Circuits": "Circuits",
    "Patching": "Patching",
    "Ablation": "Ablation",
    "Circuit discovery": "Circuit_Discovery",
    "Features": "Features",
}
INJECTIONS = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>"]


def wait_for_chart(page: Page, timeout_ms: int = CHART_TIMEOUT_MS) -> None:
    expect(page.locator(f"{CHART}:visible").first).to_be_visible(timeout=timeout_ms)  # not one in a closed expander


@pytest.mark.parametrize("label", list(PAGE_PATHS))
def test_every_page_draws_a_chart(page: Page, app_url, label):
    # No page of this app waits for a button before drawing: each draws its charts on the first script run.
    page.goto(f"{app_url}/{PAGE_PATHS[label]}")
    wait_for_chart(page)
    assert_no_traceback(page)


def first_chart_picture(page: Page, url: str) -> bytes:
    page.goto(url)
    wait_until_idle(page)
    assert_no_traceback(page)
    chart = page.locator(CHART).first
    expect(chart).to_be_visible(timeout=CHART_TIMEOUT_MS)
    page.wait_for_timeout(1500)  # let Vega finish drawing
    return chart.screenshot()


def test_attention_heatmap_follows_layer_and_head(page: Page, app_url):
    prompt = quote("The cat sat on the mat")
    before = first_chart_picture(page, f"{app_url}/Attention?prompt={prompt}&layer=0&head=0")
    expect(page).to_have_url(re.compile(r"[?&]layer=0(&|$)"))
    after = first_chart_picture(page, f"{app_url}/Attention?prompt={prompt}&layer=1&head=1")
    expect(page).to_have_url(re.compile(r"[?&]layer=1(&|$)"))
    assert before != after, "the heatmap for layer 1 head 1 looks exactly like the one for layer 0 head 0"


INJECTED_NODES_JS = """() => {
    const imgs = document.querySelectorAll("img[src='x']").length;
    const scripts = [...document.querySelectorAll('script')].filter(s => s.textContent.includes('alert(1)')).length;
    return imgs + scripts;
}"""


@pytest.mark.parametrize("path", ["", "Attention"], ids=["Overview", "Attention"])
@pytest.mark.parametrize("payload", INJECTIONS, ids=["img-onerror", "script-tag"])
def test_injection_prompts_stay_text(page: Page, app_url, path, payload):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{app_url}/{path}?prompt={quote(payload)}")
    wait_until_idle(page)
    wait_for_chart(page)
    assert_no_traceback(page)
    expect(page.locator("[data-testid='stSidebar'] textarea[aria-label='Prompt']")).to_have_value(payload)
    page.wait_for_timeout(1000)
    assert dialogs == [], f"the prompt {payload!r} opened a dialog: {dialogs}"
    assert page.evaluate(INJECTED_NODES_JS) == 0, f"the prompt {payload!r} added an element to the page"


def test_eight_contexts_at_once(browser, app_url, screenshots):
    n = 8
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(n)]
    try:
        pages = [c.new_page() for c in contexts]
        lines = []
        for path in ("", "Attention"):
            name = path or "Overview"
            starts = []
            for p in pages:
                starts.append(time.monotonic())
                p.goto(f"{app_url}/{path}", wait_until="commit")
            for i, p in enumerate(pages):
                wait_for_chart(p, timeout_ms=240_000)
                assert_no_traceback(p)
                # Waited in order, so a later context's time is an upper bound on when its chart appeared.
                line = f"{name} context {i}: chart after {time.monotonic() - starts[i]:.1f} s"
                print(line)
                lines.append(line)
        (screenshots / "load_times.txt").write_text("\n".join(lines) + "\n")
    finally:
        for c in contexts:
            c.close()


def test_circuit_discovery_draws_its_curve_its_circuit_and_its_routes(page: Page, app_url):
    """Issue 18: the faithfulness curve, the circuit graph and the routes chart are drawn, each at a readable
    size, on the page's first run (the default task, scored with a progress bar)."""
    page.goto(f"{app_url}/Circuit_Discovery")
    wait_until_idle(page)
    assert_no_traceback(page)
    charts = page.locator(CHART)
    expect(charts).to_have_count(3, timeout=CHART_TIMEOUT_MS)
    for i in range(3):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        expect(chart.locator("canvas, svg").first).to_be_visible(timeout=CHART_TIMEOUT_MS)
        box = chart.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 150, (i, box)


def test_features_draws_the_card_steering_and_known_truth(page: Page, app_url):
    """Issue 20: on the shipped organism's SAE the page draws the latent's histogram, its logit effects and the
    steering chart, each at a readable size, and the known-truth table, on its first run."""
    page.goto(f"{app_url}/Features")
    # The known-truth table is the script's last output: once both tables are there the run is over (on a slow
    # machine the status widget may not have appeared yet when wait_until_idle first looks).
    tables = page.locator("[data-testid='stDataFrame']")
    expect(tables).to_have_count(2, timeout=CHART_TIMEOUT_MS)  # the prompt's features, known truth
    wait_until_idle(page)
    assert_no_traceback(page)
    charts = page.locator(f"{CHART}:visible")  # not the quality chart in its closed expander
    expect(charts).to_have_count(3, timeout=CHART_TIMEOUT_MS)
    drawn = []
    for i in range(3):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        expect(chart.locator("canvas, svg").first).to_be_visible(timeout=CHART_TIMEOUT_MS)
        drawn.append(chart.bounding_box())
    assert all(box["width"] > 200 and box["height"] > 120 for box in drawn), drawn
    expect(page.get_by_text("Known truth", exact=False).first).to_be_visible()
