"""The programme rules and notices of the member zone in Chromium as WeChat's browser on a phone: the
rules with their rates table fit the screen, a member ticks the agreement and applies, and a notice
opens and counts as read; no script error or CSP violation."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from server import db, security
from server.accounts.models import Member
from server.distribution import programme
from server.distribution.models import Distributor, RulesAcceptance
from server.notices import services as notices
from tests.console.test_browser import (  # noqa: F401  (the module's browser, live server and watchers)
    CHROMIUM,
    PHONE,
    LiveServer,
    browser_type_launch_args,
    errors,
    live,
    shots,
)
from tests.memberzone.conftest import stand_in_jssdk
from tests.memberzone.test_zone_browser import WECHAT_UA, _fits

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": PHONE, "user_agent": WECHAT_UA, "locale": "zh-CN"}


def test_a_member_reads_the_rules_applies_and_reads_a_notice(page: Any, live: LiveServer, errors: list[str], shots: Any) -> None:
    with live.app.app_context():
        sess = db.session()
        applicants = select(Distributor.member_id)
        member = sess.scalars(select(Member).where(Member.id.not_in(applicants)).order_by(Member.id)).first()
        assert member is not None
        member.unionid = member.unionid or f"union-{member.id}"
        rules = programme.create_draft(
            sess,
            title="推广员规则与协议",
            body="## 奖励\n首单一级奖励 {{reward_level1_first_bp}}，复购 {{reward_level1_repeat_bp}}，二级为{{level2_reward}}。\n\n- 积分价值：{{points_value}}\n- 结算：{{settlement_delay}}",
            staff_id=None,
        )
        programme.publish(sess, rules.id, staff_id=None)
        # The demo shop's own notices are read already, so the new one is the member's one unread notice.
        seen, _ = notices.member_notices(sess, member.id, before=None, limit=100)
        for shown, _read_at in seen:
            notices.mark_read(sess, member.id, shown.id)
        notice = notices.create_notice(sess, {"title": "十二月活动", "body": "本月首单奖励提高。\n详见分销规则。"}, staff_id=None)
        notices.publish_notice(sess, notice.id, staff_id=None)
        token = security.sign_token({"u": member.unionid}, "member-zone")
        db.commit()
        member_id, notice_id = member.id, notice.id
    page.context.add_cookies([{"name": "member_zone", "value": token, "domain": "127.0.0.1", "path": "/h5", "httpOnly": True, "sameSite": "Lax"}])
    stand_in_jssdk(page)  # every zone page loads WeChat's JS-SDK

    page.goto(f"{live.url}/h5/member/rules")
    assert "首单一级奖励 0.5%" in page.locator("#rules").inner_text()
    assert page.locator("#rules table.rates tr").count() >= 5
    _fits(page)
    page.screenshot(path=str(shots / "member-zone-rules.png"), full_page=True)
    page.fill("#real_name", "张三")
    page.fill("#phone", "13800138000")
    page.check("input[name=accept]")
    page.click("#apply button[type=submit]")
    page.wait_for_url(f"{live.url}/h5/member/rules?applied=1")
    assert page.locator("#applied").is_visible() and page.locator("#status").is_visible()
    _fits(page)

    page.goto(f"{live.url}/h5/member/notices")
    assert "1 条未读" in page.locator("#unread").inner_text()
    page.click(f"#notice-{notice_id} a")
    page.wait_for_url(f"{live.url}/h5/member/notices/{notice_id}")
    assert "详见分销规则" in page.locator("#notice").inner_text()
    _fits(page)
    page.goto(f"{live.url}/h5/member/notices")
    assert page.locator("#unread").inner_text() == "全部已读"
    with live.app.app_context():
        acceptance = db.session().scalars(select(RulesAcceptance).where(RulesAcceptance.member_id == member_id)).one()
        assert acceptance.rules_id == rules.id
    assert not errors, errors
