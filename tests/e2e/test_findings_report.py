"""The findings HTML report in a real browser with every request but the file itself refused: every chart draws
(Vega inlined, nothing fetched), no script error. A screenshot lands in screenshots/findings_report.png."""

from __future__ import annotations

from interp_core.findings import html_report
from tests.test_findings_export import BASE, make_finding

DRAWN = "div.chart svg.marks, div.chart canvas.marks"  # the chart itself, not the actions menu's icon


def test_the_report_draws_every_chart_with_no_network(browser, screenshots, tmp_path):
    findings = [make_finding(1, title="Name mover heads copy the indirect object",
                             note="Integrated gradients put most of the weight on ' Mary'.\nSee the deletion curve."),
                make_finding(2)]  # its title, note and chart titles hold <script> and <b>: shown as text
    path = tmp_path / "findings.html"
    path.write_text(html_report(findings, BASE), encoding="utf-8")
    n_charts = sum(len(finding.charts) for finding in findings)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    aborted, errors = [], []

    def only_the_file(route):
        if route.request.url == path.as_uri():
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        page.goto(path.as_uri())
        page.wait_for_function("([selector, n]) => document.querySelectorAll(selector).length >= n",
                               arg=[DRAWN, n_charts], timeout=60_000)
        assert page.locator(DRAWN).count() == page.locator("div.chart").count() == n_charts
        assert page.locator("h2", has_text="<script>alert(1)</script>").count() == 1  # a title shown as typed
        page.screenshot(path=str(screenshots / "findings_report.png"), full_page=True)
    finally:
        context.close()
    assert aborted == [] and errors == []


def test_a_finding_added_in_the_browser_shows_on_the_findings_page(browser, app_url, screenshots):
    """Add to findings on the Attention page, then the Findings page lists it with its chart (screenshots at 1,280
    and 1,920 pixels of both)."""
    from playwright.sync_api import expect
    from test_browser import assert_no_traceback, open_page, wait_until_idle

    for width in (1280, 1920):
        context = browser.new_context(viewport={"width": width, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(180_000)
        page.goto(f"{app_url}/Attention?layer=1&head=0")
        wait_until_idle(page)
        sidebar = page.locator("[data-testid='stSidebar']")
        sidebar.get_by_text("Add to findings").first.click()
        sidebar.get_by_label("Title").fill("Layer 1 head 0 looks back one token")
        sidebar.get_by_label("Title").press("Enter")
        wait_until_idle(page)
        page.screenshot(path=screenshots / f"findings_add_box_{width}.png")
        sidebar.get_by_role("button", name="Add to findings").click()
        wait_until_idle(page)
        open_page(page, "Findings")
        expect(page.get_by_text("1. Layer 1 head 0 looks back one token")).to_be_visible()
        expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
        assert_no_traceback(page)
        page.wait_for_timeout(1500)
        page.screenshot(path=screenshots / f"findings_page_{width}.png", full_page=True)
        context.close()
