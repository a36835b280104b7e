"""The zone's share menu (WeChat's JS-SDK) and its link back to the mini-program, on every member page."""
from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from server.wechat.client import OfficialAccount, WeChatError

JWEIXIN = "https://res.wx.qq.com/open/js/jweixin-1.6.0.js"


def share_data(page: Any) -> dict[str, Any] | None:
    found = re.search(r'<script type="application/json" id="wx-share" nonce="[^"]+">(.*?)</script>', page.get_data(as_text=True))
    return json.loads(found.group(1)) if found else None


def open_link(page: Any) -> str | None:
    found = re.search(r'id="open-miniprogram" href="([^"]+)"', page.get_data(as_text=True))
    return found.group(1) if found else None


def verify(sandbox: Any, url: str, config: dict[str, Any]) -> str:
    res = requests.post(sandbox.base_url + "sandbox/jssdk/verify", json={"url": url, "config": config}, timeout=10)
    return res.json()["errMsg"]


def share_scene(client: Any, member: dict[str, Any]) -> str:
    scenes = client.get("/api/v1/referral/scenes", headers=member["headers"]).get_json()["data"]["items"]
    [scene] = [s["scene"] for s in scenes if s["channel"] == "h5_link"]
    return scene


@pytest.mark.parametrize("path", ["/h5/member", "/h5/member/points?account=pending", "/h5/member/team?level=indirect"])
def test_every_member_page_is_signed_for_its_own_url(app, client, zone, sandbox, path):
    browser, alice = zone("alice")
    page = browser.get(path)
    assert page.status_code == 200
    share = share_data(page)
    assert share is not None
    base = app.config["PUBLIC_BASE_URL"]
    assert verify(sandbox, base + path, share["config"]) == "config:ok"
    assert verify(sandbox, base + "/h5/member/shop", share["config"]) == "config:invalid signature"
    assert share["config"]["jsApiList"] == ["updateAppMessageShareData", "updateTimelineShareData"]
    # What both share menus send: the member's own share link.
    assert share["link"] == f"{base}/s/{share_scene(client, alice)}"
    assert share["title"].endswith("」") and share["desc"]
    assert f'<script src="{JWEIXIN}" nonce=' in page.get_data(as_text=True)
    assert page.headers["Content-Security-Policy"].count(JWEIXIN) == 1


@pytest.mark.parametrize(
    "request_line",
    [{"RAW_URI": "/h5/member/points?"}, {"RAW_URI": "", "REQUEST_URI": "/h5/member/points?"}],
    ids=["gunicorn", "werkzeug"],
)
def test_a_page_opened_with_a_bare_question_mark_is_signed_with_it(app, zone, sandbox, request_line):
    """``location.href`` keeps an empty query's ``?`` (a link pasted as ``…/points?``), so the signature must."""
    browser, _ = zone("alice")
    page = browser.get("/h5/member/points", environ_overrides=request_line)
    config = share_data(page)["config"]
    base = app.config["PUBLIC_BASE_URL"]
    assert verify(sandbox, base + "/h5/member/points?", config) == "config:ok"
    assert verify(sandbox, base + "/h5/member/points", config) == "config:invalid signature"
    # Without the mark the page is signed for the address without it, as before.
    plain = share_data(browser.get("/h5/member/points"))["config"]
    assert verify(sandbox, base + "/h5/member/points", plain) == "config:ok"


def test_the_share_picture_is_the_members_poster_once_drawn(app, client, zone):
    browser, _ = zone("alice")
    assert share_data(browser.get("/h5/member"))["imgUrl"] == ""
    poster_page = browser.get("/h5/member/share").get_data(as_text=True)
    [poster] = re.findall(r'<img id="poster" src="([^"]+)"', poster_page)
    # WeChat wants the picture's full URL.
    assert share_data(browser.get("/h5/member"))["imgUrl"] == app.config["PUBLIC_BASE_URL"] + poster


def test_open_the_mini_program_with_the_members_scene(client, zone, sandbox):
    browser, alice = zone("alice")
    link = open_link(browser.get("/h5/member/points"))
    assert link and link.startswith("https://wxaurl.cn/")
    target = requests.get(sandbox.base_url + "sandbox/links/open", params={"url": link}, timeout=10).json()
    assert target["path"] == "pages/index/index"
    assert parse_qs(target["query"]) == {"scene": [share_scene(client, alice)]}


def test_without_a_ticket_the_page_has_no_share_menu(zone, monkeypatch, caplog):
    browser, _ = zone("alice")

    def refused(self: OfficialAccount, *args: Any, **kwargs: Any) -> Any:
        raise WeChatError(40164, "invalid ip, not in whitelist")

    monkeypatch.setattr(OfficialAccount, "jssdk_config", refused)
    with caplog.at_level(logging.WARNING):
        page = browser.get("/h5/member/points")
    assert page.status_code == 200 and share_data(page) is None
    assert JWEIXIN not in page.get_data(as_text=True) and JWEIXIN not in page.headers["Content-Security-Policy"]
    assert open_link(page) is not None
    assert "errcode=40164" in caplog.text


def test_without_links_the_page_has_no_open_link(zone, sandbox):
    browser, _ = zone("alice")
    book = sandbox.app.extensions["sandbox_links"]
    limit, book.daily_limit = book.daily_limit, 0
    try:
        page = browser.get("/h5/member")
    finally:
        book.daily_limit = limit
    assert page.status_code == 200 and open_link(page) is None and share_data(page) is not None


def test_pages_for_visitors_who_are_not_members_share_nothing(app):
    from tests.memberzone.conftest import follow_oauth

    browser = app.test_client()
    follow_oauth(browser, browser.get("/h5/member"), "stranger")  # never signed in to the mini-program
    page = browser.get("/h5/member")
    assert page.status_code == 200 and "还差一步" in page.get_data(as_text=True)
    assert share_data(page) is None and open_link(page) is None


def test_a_member_out_of_share_links_still_sees_the_page(app, client, zone):
    from server import db
    from server.settings.services import set_setting

    browser, alice = zone("alice")  # signed in; no zone page seen yet, so no share link either
    with app.app_context():
        set_setting(db.session(), "scene_daily_limit", 1, by="test")
        db.commit()
    assert client.post("/api/v1/referral/scenes", headers=alice["headers"], json={"channel": "moments_poster"}).status_code == 200
    page = browser.get("/h5/member/points")
    assert page.status_code == 200 and share_data(page) is None and open_link(page) is None
