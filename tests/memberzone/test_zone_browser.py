"""The member zone in Chromium as WeChat's in-app browser on a phone (390 px, WeChat's user agent): every
page renders with no script error or CSP violation and nothing wider than the screen, the tab bar
leads around, and redeeming in the shop spends once even when the button is tapped twice."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from server import db, security
from server.accounts.models import Member
from server.points.models import ItemKind, Redemption
from server.points.redemption import create_item
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
from tests.points import post_to
from server.points.models import AccountKind

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")

WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2f) NetType/WIFI Language/zh_CN"
)
PAGES = ["", "/points", "/statements", "/shop", "/redemptions", "/team", "/team?level=indirect", "/orders", "/recruits", "/share", "/materials", "/rules", "/notices"]


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": PHONE, "user_agent": WECHAT_UA, "locale": "zh-CN"}


@pytest.fixture
def alice(live: LiveServer, page: Any) -> int:
    """Demo alice (a distributor with a team and orders) opens her zone: her cookie is what OAuth would set."""
    with live.app.app_context():
        sess = db.session()
        member = sess.scalar(select(Member).where(Member.openid == "demo-alice"))
        assert member is not None
        member.unionid = member.unionid or "demo-union-alice"
        token = security.sign_token({"u": member.unionid}, "member-zone")
        db.commit()
        member_id = member.id
    page.context.add_cookies([{"name": "member_zone", "value": token, "domain": "127.0.0.1", "path": "/h5", "httpOnly": True, "sameSite": "Lax"}])
    stand_in_jssdk(page)  # every page loads WeChat's JS-SDK
    return member_id


def _fits(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width}px wide"


def test_every_page_fits_a_phone_in_wechat_with_no_script_errors(page: Any, live: LiveServer, alice: int, errors: list[str], shots: Any) -> None:
    for path in PAGES:
        response = page.goto(f"{live.url}/h5/member{path}")
        assert response.status == 200, path
        assert page.locator("nav.tabbar").is_visible()
        _fits(page)
        if path == "":
            page.screenshot(path=str(shots / "member-zone.png"), full_page=True)
    assert not errors, errors
    # The tab bar leads around.
    page.goto(f"{live.url}/h5/member")
    page.click("nav.tabbar >> text=团队")
    page.wait_for_url(f"{live.url}/h5/member/team")
    assert page.locator("#team li").count() >= 1
    assert page.locator("nav.tabbar a.on").inner_text().endswith("团队")
    page.click("nav.tabbar >> text=推广")
    page.wait_for_url(f"{live.url}/h5/member/share")
    page.wait_for_selector("#poster")
    assert page.evaluate("document.getElementById('poster').naturalWidth") > 0  # the poster image loaded


def test_a_double_tap_on_redeem_spends_once(page: Any, live: LiveServer, alice: int, errors: list[str]) -> None:
    with live.app.app_context():
        sess = db.session()
        post_to(sess, sess.get(Member, alice), AccountKind.available, 100_000)
        item = create_item(sess, kind=ItemKind.privilege, title="双击测试权益", price=10_000, stock=None, per_member_limit=None)
        db.commit()
        item_id = item.id
        before = sess.scalar(select(func.count()).select_from(Redemption).where(Redemption.member_id == alice))
    page.goto(f"{live.url}/h5/member/shop")
    button = page.locator(f"#item-{item_id} button")
    button.dblclick()
    page.wait_for_url(f"{live.url}/h5/member/redemptions?done=*")
    assert page.locator("#redemptions li").first.inner_text().startswith("双击测试权益 × 1")
    _fits(page)
    with live.app.app_context():
        after = db.session().scalar(select(func.count()).select_from(Redemption).where(Redemption.member_id == alice))
    assert after == before + 1
    assert not errors, errors
