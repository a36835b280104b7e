"""The risk pages in Chromium: operations open the queue from the navigation, read a held payment's
evidence, reverse its rewards through the form, and read the report's chart, at laptop and phone
width, without script errors or Content-Security-Policy violations."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server import db
from server.risk.models import RiskEvent, RiskReview
from tests.console.test_browser import LAPTOP, PHONE, LiveServer, browser_type_launch_args, errors, live, pytestmark, shots, sign_in  # noqa: F401
from tests.risk.generate import Builder, Merchant, inject_case

# ``pytestmark`` (imported above) skips this module without Chromium, like the console's other browser tests.


def test_operations_reverse_a_held_payment_and_read_the_report(page: Any, live: LiveServer, errors: list[str], shots: Any) -> None:  # noqa: F811
    with live.app.app_context():
        sess = db.session()
        merchant = Merchant()
        inject_case(Builder(sess, seed=41, prefix="browser"), merchant, "shared_payer")
        review_id = sess.scalar(select(RiskReview.id).where(RiskReview.member_id == merchant.cases[0].member_id, RiskReview.event == RiskEvent.payment))
        db.commit()

    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "ops")
    page.click("nav.nav >> text=风控")
    page.wait_for_url(f"{live.url}/console/risk")
    page.select_option("#event", "payment")
    page.wait_for_url(f"{live.url}/console/risk?*event=payment*")
    page.click(f"#review-{review_id} a")
    page.wait_for_selector("#linked")
    assert "付款人" in page.locator("#linked").inner_text()
    assert page.locator("#hold").inner_text() == "扣留中"
    page.screenshot(path=str(shots / "risk-review.png"), full_page=True)
    page.fill("#note", "邀请人代付")
    page.click("#decide button[value=reverse]")
    page.wait_for_selector("text=冲回奖励。")
    assert page.locator("#hold").inner_text() == "已冲回"

    page.click("text=← 风控审核")
    page.click("text=信号报表")
    page.wait_for_selector("#chart-risk canvas, #chart-risk svg")
    assert "买家与邀请人或上级共用" in page.locator("#risk-totals").inner_text()
    page.screenshot(path=str(shots / "risk-report.png"), full_page=True)

    page.set_viewport_size(PHONE)
    for path in ("/console/risk", f"/console/risk/{review_id}", "/console/risk/report"):
        page.goto(f"{live.url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"{path} scrolls sideways on a phone"
    assert errors == []
