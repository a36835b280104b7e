"""Training and feedback pages in Chromium: operations add a lesson to the demo course, then work the demo
report from the dashboard's queue to the distributor's record, with no script error or CSP violation and
nothing scrolling sideways on a phone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _fits(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_operations_edit_the_demo_course_and_handle_the_demo_report(page: Any, live: LiveServer, errors: list[str], shots: Path) -> None:  # noqa: F811
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "ops")
    page.click("nav.nav >> text=培训")
    page.wait_for_url(f"{live.url}/console/training")
    page.click("#results >> text=合规推广入门")
    page.wait_for_selector("#lessons")
    assert page.locator("#stats").inner_text().count("1 人") == 1  # alice started it
    page.select_option("#new-kind", "video")
    page.fill("#new-title", "门店实拍")
    page.fill("#new-video_url", "https://v.qq.com/x/page/demo.html")
    page.click("#new-lesson button[type=submit]")
    page.wait_for_selector("text=已添加课时「门店实拍」")
    assert page.locator("#lessons h3").nth(2).inner_text().startswith("3. 门店实拍")
    page.screenshot(path=str(shots / "training-course.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert _fits(page), "the course editor scrolls sideways on a phone"

    page.set_viewport_size(LAPTOP)
    page.goto(f"{live.url}/console/")
    page.click("text=反馈与举报待处理")
    page.wait_for_url(f"{live.url}/console/feedback?state=new")
    page.click("#results >> text=朋友圈里说产品能治病")
    page.wait_for_selector("#reported")
    page.fill("#reply-text", "已联系推广员核实")
    page.click("button[value=start]")
    page.wait_for_selector("text=已受理")
    assert page.locator("#state").inner_text() == "处理中" and page.locator("#reply").inner_text() == "已联系推广员核实"
    page.screenshot(path=str(shots / "feedback.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert _fits(page), "the feedback page scrolls sideways on a phone"
    page.set_viewport_size(LAPTOP)
    page.click("#reported a")
    page.wait_for_selector("#reports")
    assert "共 1 条" in page.locator("#reports").inner_text()
    assert "1 / 1" not in page.locator("#training").inner_text() and "0 / 1" in page.locator("#training").inner_text()
    assert errors == []
