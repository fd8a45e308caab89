"""Charts that fit: at 1,280, 1,440 and 1,920 pixels wide, no chart on any page is wider than the column it sits in.
Screenshots of every page at each width land in screenshots/ (name_width.png)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect
from test_browser import assert_no_traceback, wait_until_idle

WIDTHS = (1280, 1440, 1920)
LONG = quote("When Mary and John went to the store, John gave a drink to Mary. The capital of France is Paris. "
             "The dogs near the river saw the cat.")  # 32 tokens on the organism: the windowed and packed views
VIEWS = {  # screenshot name -> path and query of the view
    "Overview": "", "Attention": "Attention", "Attribution": "Attribution", "Probing": "Probing",
    "Logit_lens": "Logit_Lens", "Circuits": "Circuits", "Patching": "Patching", "Ablation": "Ablation",
    "Circuit_discovery": "Circuit_Discovery", "Features": "Features",
    "Overview_long": f"?prompt={LONG}", "Attention_long": f"Attention?prompt={LONG}",
    "Attribution_long": f"Attribution?prompt={LONG}", "Logit_lens_long": f"Logit_Lens?prompt={LONG}",
}
SLACK_PX = 2  # sub-pixel rounding

# Each drawn chart (a canvas or svg inside a Vega-Lite element) against the column that holds it: the nearest
# Streamlit column, else the main block. The chart's own box, not its element's, is what a reader sees clipped.
OVERFLOWS = """(slack) => {
  const found = [];
  for (const element of document.querySelectorAll("[data-testid='stVegaLiteChart']")) {
    const drawn = element.querySelector("canvas, svg");
    if (!drawn) continue;
    const holder = element.closest("[data-testid='stColumn']")
      || element.closest("[data-testid='stMainBlockContainer']");
    const chart = drawn.getBoundingClientRect(), column = holder.getBoundingClientRect();
    if (chart.width === 0) continue;  // in a tab that is not open
    if (chart.left < column.left - slack || chart.right > column.right + slack) {
      const title = (element.getAttribute("aria-label") || drawn.getAttribute("aria-label") || "").slice(0, 60);
      found.push(`${title || "chart"}: ${Math.round(chart.left)}-${Math.round(chart.right)} px in a column `
                 + `${Math.round(column.left)}-${Math.round(column.right)} px`);
    }
  }
  return found;
}"""


@pytest.mark.parametrize("width", WIDTHS)
def test_no_chart_is_wider_than_its_column(browser, app_url, screenshots, width):
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page: Page = context.new_page()
    page.set_default_timeout(240_000)
    problems = {}
    try:
        for name, path in VIEWS.items():
            page.goto(f"{app_url}/{path}")
            wait_until_idle(page)
            assert_no_traceback(page)
            drawn = "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg"
            expect(page.locator(drawn).locator("visible=true").first).to_be_visible()  # not in a closed expander
            page.screenshot(path=str(screenshots / f"{name}_{width}.png"), full_page=True)
            found = page.evaluate(OVERFLOWS, SLACK_PX)
            if found:
                problems[name] = found
    finally:
        context.close()
    assert not problems, f"charts wider than their column at {width} px: {problems}"
