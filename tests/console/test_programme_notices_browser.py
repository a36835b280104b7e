"""The programme rules and notices pages in Chromium: a draft previewed with the live rates, saved and
published through the confirmation dialog; a notice written, published and read by a member; no script
error or CSP violation, and no sideways scrolling on a phone."""
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


def _fits_a_phone(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_operations_preview_and_publish_the_programme_rules(page: Any, live: LiveServer, errors: list[str], shots: Path) -> None:  # noqa: F811
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "ops")
    page.click("nav.nav >> text=规则")
    page.wait_for_url(f"{live.url}/console/distributor-rules")
    page.click("main a:text-is('新建草稿')")
    page.wait_for_url(f"{live.url}/console/distributor-rules/new")
    page.fill("#title", "推广员规则与协议")
    page.fill("#body", "## 奖励\n首单一级奖励 {{reward_level1_first_bp}}，二级为{{level2_reward}}。\n\n- 积分价值：{{points_value}}")
    page.click("button[value=preview]")
    preview = page.locator("#preview")
    assert "首单一级奖励 0.5%，二级为一级奖励的 10%。" in preview.inner_text()
    assert preview.locator("table.rates tr").count() >= 5
    page.click("button[value=save]")
    page.wait_for_selector("text=已保存草稿")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=发布此版本")
    # The demo shop published version 1 already; this draft becomes the next version.
    page.wait_for_selector("text=/已发布第 \\d+ 版分销规则/")
    assert "当前版本" in page.locator("h1").inner_text()
    page.screenshot(path=str(shots / "distributor-rules.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.reload()
    assert _fits_a_phone(page), "the rules page scrolls sideways on a phone"
    page.goto(f"{live.url}/console/distributor-rules/new")
    assert _fits_a_phone(page), "the rules editor scrolls sideways on a phone"
    assert errors == []


def test_operations_publish_a_notice_and_see_who_read_it(page: Any, live: LiveServer, errors: list[str], shots: Path) -> None:  # noqa: F811
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "ops")
    page.click("nav.nav >> text=公告")
    page.wait_for_url(f"{live.url}/console/notices")
    page.click("main a:text-is('新建公告')")
    page.wait_for_url(f"{live.url}/console/notices/new")
    page.fill("#title", "十二月推广活动")
    page.fill("#body", "本月首单奖励提高。\n详见分销规则。")
    page.select_option("#audience", "distributors")
    page.click("main form button[type=submit]")
    page.wait_for_selector("text=已保存草稿公告")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("main form button:text-is('发布')")
    page.wait_for_selector("text=已发布公告")
    assert page.locator("#read-count").inner_text().startswith("0 / ")
    page.screenshot(path=str(shots / "notice.png"), full_page=True)
    page.goto(f"{live.url}/console/notices")
    # The demo shop's two notices are listed too; the new one once.
    assert page.locator("tbody tr", has_text="十二月推广活动").count() == 1
    page.set_viewport_size(PHONE)
    page.reload()
    assert _fits_a_phone(page), "the notices page scrolls sideways on a phone"
    assert errors == []
