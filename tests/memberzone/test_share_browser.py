"""The zone's share menu in a real browser: Debian's Chromium at phone width with WeChat's user agent,
WeChat's JS-SDK replaced by a stand-in that records what the page asks of it.

The stand-in is served for exactly the URL the page loads (``res.wx.qq.com``), so the page's
Content-Security-Policy is what lets it run; Chromium reports a refused script as a console error.
"""
from __future__ import annotations

import shutil
import threading
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from tests.memberzone.conftest import follow_oauth, stand_in_jssdk

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")

WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2f) NetType/WIFI Language/zh_CN"
)
PHONE = {"width": 390, "height": 844}
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch arguments, with the system Chromium (containers run as root: no sandbox)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--no-sandbox", "--disable-dev-shm-usage"]}


@pytest.fixture
def live(app: Flask) -> Iterator[str]:
    """The test's app on a free port, which is its PUBLIC_BASE_URL: the origin the zone signs pages for."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app.config["PUBLIC_BASE_URL"] = url
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield url
    server.shutdown()


def test_a_member_page_configures_wechat_sharing_with_the_members_link(browser: Any, app: Flask, live: str, sandbox: Any) -> None:
    client = app.test_client()
    alice = client.post("/api/v1/auth/wx-login", json={"code": "sandbox:alice"}).get_json()["data"]
    headers = {"Authorization": f"Bearer {alice['token']}"}
    # Signed in to the zone the way WeChat's OAuth does it; the browser gets the zone's cookie.
    follow_oauth(client, client.get("/h5/member"), "alice")
    cookie = client.get_cookie("member_zone", path="/h5")
    assert cookie is not None
    client.get("/h5/member/share")  # draws the Moments poster, the share picture

    context = browser.new_context(user_agent=WECHAT_UA, viewport=PHONE, is_mobile=True, has_touch=True)
    context.add_cookies([{"name": "member_zone", "value": cookie.value, "url": live + "/h5"}])
    stand_in_jssdk(context)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(live + "/h5/member/points?account=pending#top")
        page.wait_for_function("window.__wx && window.__wx.shares.length === 2")
        recorded = page.evaluate("window.__wx")
        href = page.evaluate("location.href")
        open_link = page.get_attribute("#open-miniprogram", "href")
        fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        context.close()
    assert errors == []
    # The signature is good for the page as the browser has it (the JS-SDK drops the fragment).
    [config] = recorded["configs"]
    assert config["debug"] is False and config["jsApiList"] == ["updateAppMessageShareData", "updateTimelineShareData"]
    check = requests.post(sandbox.base_url + "sandbox/jssdk/verify", json={"url": href, "config": config}, timeout=10).json()
    assert check == {"errMsg": "config:ok"}
    # Both share menus send the member's own share link, with their poster as the picture.
    scenes = client.get("/api/v1/referral/scenes", headers=headers).get_json()["data"]["items"]
    [share_scene] = [s["scene"] for s in scenes if s["channel"] == "h5_link"]
    (kind_a, friend), (kind_b, moments) = recorded["shares"]
    assert (kind_a, kind_b) == ("appMessage", "timeline")
    assert friend["link"] == moments["link"] == f"{live}/s/{share_scene}"
    assert friend["imgUrl"] == moments["imgUrl"] and friend["imgUrl"].startswith(f"{live}/api/v1/referral/posters/")
    assert friend["title"] == moments["title"] and friend["desc"]
    # 打开小程序 opens the mini-program with the member's scene.
    target = requests.get(sandbox.base_url + "sandbox/links/open", params={"url": open_link}, timeout=10).json()
    assert parse_qs(target["query"]) == {"scene": [share_scene]}
    assert fits
