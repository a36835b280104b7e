"""Sharing outside the mini-program: the member zone's wx.config, and the scene's links back into the
mini-program on the landing page, from the visitor's click to their binding."""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest
import requests

from server import cache, db
from server.referral import sharing
from server.referral.errors import ForeignPageError
from server.wechat import miniprogram
from server.wechat.client import MiniProgram
from wechat_sandbox import SandboxServer

WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2f) NetType/WIFI Language/zh_CN"
)
SAFARI_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
OPEN_LINK = re.compile(r'<a class="open" id="open-miniprogram" href="([^"]+)">打开小程序</a>')


def calls(sandbox: SandboxServer, path: str) -> int:
    return sandbox.app.extensions["sandbox_state"].calls[path]


def open_in_wechat(sandbox: SandboxServer, url: str) -> requests.Response:
    return requests.get(sandbox.base_url + "sandbox/links/open", params={"url": url}, timeout=10)


def verify(sandbox: SandboxServer, url: str, config: dict[str, Any]) -> str:
    res = requests.post(sandbox.base_url + "sandbox/jssdk/verify", json={"url": url, "config": config}, timeout=10)
    return res.json()["errMsg"]


def open_link_of(page: Any) -> str | None:
    found = OPEN_LINK.search(page.get_data(as_text=True))
    return found.group(1).replace("&amp;", "&") if found else None


@pytest.fixture
def link_quota(sandbox: SandboxServer) -> Iterator[Any]:
    """The session sandbox's link book; its daily limit is put back afterwards."""
    book = sandbox.app.extensions["sandbox_links"]
    limit = book.daily_limit
    yield book
    book.daily_limit = limit


# -- the JS-SDK --------------------------------------------------------------------------


def test_wx_config_signs_pages_of_this_site(app, sandbox):
    base = app.config["PUBLIC_BASE_URL"]
    with app.test_request_context():
        page = sharing.public_page_url("/h5/member", b"from=menu")
        assert page == f"{base}/h5/member?from=menu"
        config = sharing.wx_config(page)
    assert config["jsApiList"] == ["updateAppMessageShareData", "updateTimelineShareData"]
    assert verify(sandbox, page, config) == "config:ok"


def test_public_page_url_is_what_the_browser_shows(app):
    with app.test_request_context():
        assert sharing.public_page_url("/h5/会员", "a=1&b=%E5") == app.config["PUBLIC_BASE_URL"] + "/h5/%E4%BC%9A%E5%91%98?a=1&b=%E5"
        assert sharing.public_page_url("/h5/member") == app.config["PUBLIC_BASE_URL"] + "/h5/member"


@pytest.mark.parametrize(
    "url",
    ["https://evil.example.com/h5/member", "javascript:alert(1)", "//evil.example.com/x", "ftp://127.0.0.1:5000/"],
)
def test_wx_config_refuses_a_foreign_page(app, sandbox, url):
    before = calls(sandbox, "/cgi-bin/ticket/getticket")
    with app.test_request_context():
        with pytest.raises(ForeignPageError) as raised:
            sharing.wx_config(url)
    assert raised.value.code == 42266 and raised.value.http_status == 422
    assert calls(sandbox, "/cgi-bin/ticket/getticket") == before  # refused before WeChat is asked


def test_wx_config_refuses_another_port_or_scheme(app_factory):
    app = app_factory(PUBLIC_BASE_URL="https://shop.example.com")
    with app.test_request_context():
        for url in ("http://shop.example.com/h5/member", "https://shop.example.com:8443/h5/member"):
            with pytest.raises(ForeignPageError):
                sharing.wx_config(url)
        assert sharing.wx_config("https://SHOP.example.com/h5/member")["signature"]


def test_no_ticket_means_no_share_menu_not_an_error(app_factory, caplog):
    app = app_factory(WECHAT_OA_SECRET="not-the-secret")
    with app.test_request_context(), caplog.at_level(logging.WARNING):
        assert sharing.wx_config_or_none(app.config["PUBLIC_BASE_URL"] + "/h5/member") is None
    assert "errcode=40125" in caplog.text


# -- links back into the mini-program ---------------------------------------------------------


def test_landing_page_opens_the_mini_program_with_the_scene(client, wx_login, scene_of, sandbox):
    alice = wx_login("alice")
    code = scene_of(alice, "h5_link")
    # Inside WeChat the URL Link opens the mini-program directly.
    page = client.get(f"/s/{code}", headers={"User-Agent": WECHAT_UA})
    assert page.status_code == 200 and page.headers["Vary"] == "User-Agent"
    link = open_link_of(page)
    assert link and link.startswith("https://wxaurl.cn/")
    target = open_in_wechat(sandbox, link).json()
    assert target["path"] == "pages/index/index" and target["query"] == f"scene={code}"
    assert 29 * 86400 < target["expires_at"] - time.time() <= 30 * 86400
    # A phone's browser hands the URL Scheme to WeChat; it leads to the same page.
    scheme = open_link_of(client.get(f"/s/{code}", headers={"User-Agent": SAFARI_UA}))
    assert scheme and scheme.startswith("weixin://dl/business/?t=")
    assert open_in_wechat(sandbox, scheme).json()["query"] == f"scene={code}"
    # The visitor signs in to the mini-program with the scene the link gave: bound to the sharer.
    scene = parse_qs(target["query"])["scene"][0]
    bob = wx_login("bob", scene=scene)
    assert bob["binding"]["bound"] is True and bob["binding"]["inviter"]["id"] == alice["user"]["id"]
    team = client.get("/api/v1/referral/team", headers=alice["headers"]).get_json()["data"]
    assert [m["id"] for m in team["direct"]] == [bob["user"]["id"]]


def test_links_are_made_once_and_cached(app, client, wx_login, scene_of, sandbox):
    code = scene_of(wx_login("alice"), "h5_link")
    before = calls(sandbox, "/wxa/generate_urllink"), calls(sandbox, "/wxa/generatescheme")
    first = open_link_of(client.get(f"/s/{code}", headers={"User-Agent": WECHAT_UA}))
    for _ in range(2):
        assert open_link_of(client.get(f"/s/{code}", headers={"User-Agent": WECHAT_UA})) == first
    assert (calls(sandbox, "/wxa/generate_urllink"), calls(sandbox, "/wxa/generatescheme")) == (before[0] + 1, before[1] + 1)
    # A day before they expire, the cached links are replaced.
    with app.app_context():
        key = sharing._links_key(miniprogram().appid, sharing.scene_page(), code)
        entry = cache.get_value(key)
        cache.set_value(key, {**entry, "expires_at": int(time.time()) + 86400 - 60}, 3600)
    renewed = open_link_of(client.get(f"/s/{code}", headers={"User-Agent": WECHAT_UA}))
    assert renewed != first and calls(sandbox, "/wxa/generate_urllink") == before[0] + 2
    with app.app_context():
        assert cache.get_value(key)["url_link"] == renewed


def test_links_are_made_with_no_transaction_open(app, client, wx_login, scene_of, monkeypatch):
    code = scene_of(wx_login("alice"), "h5_link")
    seen: list[bool] = []
    real = MiniProgram.generate_url_link

    def checked(self: MiniProgram, *args: Any, **kwargs: Any) -> Any:
        seen.append(db.session().in_transaction())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MiniProgram, "generate_url_link", checked)
    assert open_link_of(client.get(f"/s/{code}")) is not None
    assert seen == [False]


def test_landing_page_without_wechat_has_no_button(client, wx_login, scene_of, link_quota, caplog):
    code = scene_of(wx_login("alice"), "h5_link")
    link_quota.daily_limit = 0  # WeChat answers 45009: the day's links are spent
    with caplog.at_level(logging.WARNING):
        page = client.get(f"/s/{code}", headers={"User-Agent": WECHAT_UA})
    assert page.status_code == 200 and "留下联系方式" in page.get_data(as_text=True)
    assert open_link_of(page) is None
    assert "errcode=45009" in caplog.text
    # Nothing failed is cached: once WeChat makes links again, the button is back.
    link_quota.daily_limit = 500_000
    assert open_link_of(client.get(f"/s/{code}")) is not None


def test_landing_page_when_wechat_cannot_be_reached(app_factory):
    # The second app shares the database and points at a closed port.
    client = app_factory().test_client()
    alice = client.post("/api/v1/auth/wx-login", json={"code": "sandbox:alice"}).get_json()["data"]
    code = client.post("/api/v1/referral/scenes", headers={"Authorization": f"Bearer {alice['token']}"},
                       json={"channel": "h5_link"}).get_json()["data"]["scene"]
    offline = app_factory(WECHAT_API_BASE="http://127.0.0.1:9/", WECHAT_TIMEOUT=1).test_client()
    page = offline.get(f"/s/{code}")
    assert page.status_code == 200 and open_link_of(page) is None


def test_a_dead_scene_gets_no_link(client, sandbox):
    before = calls(sandbox, "/wxa/generate_urllink")
    assert client.get("/s/doesNotExist").status_code == 404
    assert calls(sandbox, "/wxa/generate_urllink") == before


def test_two_first_visits_at_once_ask_wechat_once(app, client, wx_login, scene_of, sandbox, monkeypatch):
    """Workers that find the cache cold at the same moment take turns: the second finds the first's links."""
    code = scene_of(wx_login("alice"), "h5_link")
    before = calls(sandbox, "/wxa/generate_urllink"), calls(sandbox, "/wxa/generatescheme")
    real = MiniProgram.generate_url_link

    def slow(self: MiniProgram, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # long enough for the other visit to find the cache still cold
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MiniProgram, "generate_url_link", slow)
    got: list[Any] = []

    def visit() -> None:
        with app.app_context():
            got.append(sharing.scene_links(code))

    threads = [threading.Thread(target=visit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 2 and got[0] is not None and got[0] == got[1]
    assert (calls(sandbox, "/wxa/generate_urllink"), calls(sandbox, "/wxa/generatescheme")) == (before[0] + 1, before[1] + 1)
