"""The report pages in Chromium: every chart renders with no script error or CSP violation, the distributor
ranking links to a monthly trend, and an export downloads a file that openpyxl opens."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl
import pytest

from tests.console.test_browser import (  # noqa: F401  (the module's browser, live server and watchers)
    CHROMIUM,
    LAPTOP,
    PHONE,
    LiveServer,
    browser_type_launch_args,
    errors,
    live,
    shots,
    sign_in,
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")

REPORTS = [
    ("渠道漏斗", "reports-funnel.png"),
    ("分销员业绩", "reports-distributors.png"),
    ("新分销员活跃", None),
    ("地区", "reports-regions.png"),
    ("商品", None),
    ("复购", None),
    ("积分负债", "reports-liability.png"),
]


def test_every_report_chart_renders_and_an_export_opens(page: Any, live: LiveServer, errors: list[str], shots: Path, tmp_path: Path) -> None:  # noqa: F811
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "finance")
    page.click("nav.nav >> text=报表")
    page.wait_for_url(f"{live.url}/console/reports/funnel")
    for tab, shot in REPORTS:
        page.click(f"nav.tabs >> text={tab}")
        page.wait_for_selector("nav.tabs a[aria-current=page]")
        assert page.locator("nav.tabs a[aria-current=page]").inner_text() == tab
        charts = page.locator("[data-chart=report]")
        if charts.count():
            page.wait_for_selector("#chart-report[data-rendered=true] canvas")
        if shot:
            page.screenshot(path=str(shots / shot), full_page=True)

    # The ranking's first distributor opens their monthly trend, with its own chart.
    page.click("nav.tabs >> text=分销员业绩")
    page.click("#report-table tbody tr:first-child a")
    page.wait_for_selector("#chart-report[data-rendered=true] canvas")
    assert page.locator("#report-table tbody tr").count() == 12

    # The funnel by content, first touch: the filters stay in the URL and the export carries them.
    page.click("nav.tabs >> text=渠道漏斗")
    page.select_option("#view", "first")
    page.select_option("#by", "content")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/console/reports/funnel?**view=first**")
    with page.expect_download() as download:
        page.click("form.filters >> text=Excel")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name.startswith("funnel-") and path.suffix == ".xlsx"
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None and [cell.value for cell in next(sheet.iter_rows())][:2] == ["渠道", "内容"]

    # At phone width the page still fits and the chart still draws.
    page.set_viewport_size(PHONE)
    page.reload()
    page.wait_for_selector("#chart-report[data-rendered=true] canvas")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert errors == []


def test_operations_open_the_notifications_page_without_script_errors(page: Any, live: LiveServer, errors: list[str]) -> None:  # noqa: F811
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "ops")
    page.click("nav.nav >> text=通知")
    page.wait_for_url(f"{live.url}/console/notifications")
    assert page.locator("h1").inner_text() != ""
    page.set_viewport_size(PHONE)
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert errors == []
