"""Training in the member zone in Chromium as WeChat's browser on a phone: demo alice finishes the demo
course (marks the lesson she had left, passes the quiz) and sends a suggestion, with no script error or
CSP violation and nothing wider than the screen."""
from __future__ import annotations

from typing import Any

import pytest

from tests.console.test_browser import CHROMIUM, LiveServer
from tests.memberzone.test_zone_browser import (  # noqa: F401  (the module's browser, live server, watchers and alice)
    _fits,
    alice,
    browser_context_args,
    browser_type_launch_args,
    errors,
    live,
    shots,
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")


def test_alice_finishes_the_demo_course_and_sends_a_suggestion(page: Any, live: LiveServer, alice: int, errors: list[str], shots: Any) -> None:  # noqa: F811
    page.goto(f"{live.url}/h5/member/training")
    assert "已学 1 / 2 课时" in page.locator("#courses").inner_text()
    page.click("#courses >> text=合规推广入门")
    page.wait_for_selector("#quiz")
    page.click("text=标记为已学完")
    page.wait_for_selector("#progress >> text=2/2")
    # The demo quiz: the right answers are the second option, then the first.
    page.locator("#quiz fieldset").nth(0).locator("input").nth(1).check()
    page.locator("#quiz fieldset").nth(1).locator("input").nth(0).check()
    page.click("#quiz button[type=submit]")
    page.wait_for_selector("#quiz-result")
    assert "通过！" in page.locator("#quiz-result").inner_text()
    assert "已完成" in page.locator("#progress").inner_text() and "正确答案" in page.locator("#quiz").inner_text()
    _fits(page)
    page.screenshot(path=str(shots / "member-zone-training.png"), full_page=True)

    page.goto(f"{live.url}/h5/member/feedback")
    page.select_option("#choice", "feedback:service")
    page.fill("#body", "希望客服周末也在线")
    page.click("#feedback-form button[type=submit]")
    page.wait_for_selector("text=已收到")
    assert "希望客服周末也在线" in page.locator("#feedback").inner_text()
    _fits(page)
    assert not errors, errors
