"""The sandbox's JS-SDK ticket and mini-program links refuse what WeChat refuses, with WeChat's codes."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from wechat_sandbox import SandboxState, create_sandbox_app
from wechat_sandbox.jssdk import TICKET_TTL, signature_of
from wechat_sandbox.links import LinkBook

APPID, SECRET = "wxsandboxlinks001", "links-secret"
PAGES = frozenset({"pages/index/index", "pages/goods/detail"})
DAY = 86400


@pytest.fixture
def sandbox() -> Any:
    return create_sandbox_app({APPID: SECRET}, seed="links-seed", pages=PAGES)


@pytest.fixture
def wx(sandbox: Any) -> FlaskClient:
    return sandbox.test_client()


@pytest.fixture
def state(sandbox: Any) -> SandboxState:
    return sandbox.extensions["sandbox_state"]


@pytest.fixture
def token(wx: FlaskClient) -> str:
    res = wx.get("/cgi-bin/token", query_string={"grant_type": "client_credential", "appid": APPID, "secret": SECRET})
    return res.get_json()["access_token"]


def errcode(res: Any) -> int:
    assert res.status_code == 200
    return int(res.get_json().get("errcode", 0))


# -- cgi-bin/ticket/getticket -------------------------------------------------------------------


def test_ticket_is_issued_for_two_hours(wx: FlaskClient, token: str) -> None:
    res = wx.get("/cgi-bin/ticket/getticket", query_string={"access_token": token, "type": "jsapi"})
    body = res.get_json()
    assert body["errcode"] == 0 and body["errmsg"] == "ok" and body["expires_in"] == TICKET_TTL == 7200
    again = wx.get("/cgi-bin/ticket/getticket", query_string={"access_token": token, "type": "jsapi"}).get_json()
    assert again["ticket"] != body["ticket"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"type": "jsapi"}, 41001),
        ({"type": "jsapi", "access_token": "not-a-token"}, 40001),
        ({"type": "jsapi_ticket", "access_token": "TOKEN"}, 40097),
        ({"access_token": "TOKEN"}, 40097),
    ],
)
def test_ticket_refusals(wx: FlaskClient, token: str, query: dict[str, str], code: int) -> None:
    query = {k: (token if v == "TOKEN" else v) for k, v in query.items()}
    assert errcode(wx.get("/cgi-bin/ticket/getticket", query_string=query)) == code


def test_ticket_with_an_expired_token_or_the_wrong_method(wx: FlaskClient, token: str, state: SandboxState) -> None:
    assert errcode(wx.post("/cgi-bin/ticket/getticket", query_string={"access_token": token, "type": "jsapi"})) == 43001
    state.expire_tokens()
    assert errcode(wx.get("/cgi-bin/ticket/getticket", query_string={"access_token": token, "type": "jsapi"})) == 42001


def test_verify_checks_the_signature_against_live_tickets(wx: FlaskClient, token: str, sandbox: Any) -> None:
    ticket = wx.get("/cgi-bin/ticket/getticket", query_string={"access_token": token, "type": "jsapi"}).get_json()["ticket"]
    url = "https://shop.example.com/h5/member"
    config = {"appId": APPID, "timestamp": 1700000000, "nonceStr": "abc123",
              "signature": signature_of(ticket, "abc123", "1700000000", url), "jsApiList": []}
    check = lambda c, u=url: wx.post("/sandbox/jssdk/verify", json={"url": u, "config": c}).get_json()["errMsg"]  # noqa: E731
    assert check(config) == "config:ok"
    assert check({**config, "timestamp": "1700000000"}) == "config:ok"
    assert check({**config, "nonceStr": "abc124"}) == "config:invalid signature"
    assert check({**config, "timestamp": True}) == "config:invalid signature"
    assert wx.post("/sandbox/jssdk/verify", json={"url": url}).status_code == 400
    # A ticket of the card API signs nothing for the JS-SDK.
    card = wx.get("/cgi-bin/ticket/getticket", query_string={"access_token": token, "type": "wx_card"}).get_json()["ticket"]
    assert check({**config, "signature": signature_of(card, "abc123", "1700000000", url)}) == "config:invalid signature"
    sandbox.extensions["sandbox_tickets"].tickets[ticket].expires_at = time.time() - 1
    assert check(config) == "config:invalid signature"


# -- wxa/generate_urllink and wxa/generatescheme ---------------------------------------------------


def urllink(wx: FlaskClient, token: str, **body: Any) -> Any:
    return wx.post("/wxa/generate_urllink", query_string={"access_token": token}, json=body)


def scheme(wx: FlaskClient, token: str, *, expire: dict[str, Any] | None = None, **target: Any) -> Any:
    body = {"jump_wxa": target, **(expire if expire is not None else {"expire_type": 1, "expire_interval": 30})}
    return wx.post("/wxa/generatescheme", query_string={"access_token": token}, json=body)


def opened(wx: FlaskClient, url: str) -> Any:
    return wx.get("/sandbox/links/open", query_string={"url": url})


def test_url_link_opens_its_page_with_its_query(wx: FlaskClient, token: str) -> None:
    expire_time = int(time.time()) + 10 * DAY
    body = urllink(wx, token, path="pages/index/index", query="scene=Ab12", env_version="trial",
                   expire_type=0, expire_time=expire_time).get_json()
    assert body["errcode"] == 0 and body["url_link"].startswith("https://wxaurl.cn/")
    page = opened(wx, body["url_link"]).get_json()
    assert page == {"appid": APPID, "kind": "url_link", "path": "pages/index/index", "query": "scene=Ab12",
                    "env_version": "trial", "expires_at": expire_time}


def test_scheme_opens_its_page_and_a_leading_slash_is_the_same_page(wx: FlaskClient, token: str) -> None:
    body = scheme(wx, token, path="/pages/goods/detail", query="scene=Ab12&id=3").get_json()
    assert body["errcode"] == 0 and body["openlink"].startswith("weixin://dl/business/?t=")
    page = opened(wx, body["openlink"]).get_json()
    assert (page["kind"], page["path"], page["query"], page["env_version"]) == ("scheme", "pages/goods/detail", "scene=Ab12&id=3", "release")
    assert abs(page["expires_at"] - (time.time() + 30 * DAY)) < 5


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ({"path": "pages/index/index?scene=1"}, 40165),
        ({"path": "pages/nowhere/index"}, 40165),
        ({"path": "pages/index/index", "query": "a" * 1025}, 40212),
        ({"path": "pages/index/index", "query": "name=店"}, 40212),
        ({"path": "pages/index/index", "query": "a=b c"}, 40212),
        ({"path": "pages/index/index", "env_version": "beta"}, 40097),
        ({"path": 12}, 47001),
    ],
)
def test_link_target_refusals(wx: FlaskClient, token: str, target: dict[str, Any], code: int) -> None:
    assert errcode(urllink(wx, token, expire_type=1, expire_interval=1, **target)) == code
    assert errcode(scheme(wx, token, **target)) == code


@pytest.mark.parametrize(
    ("expire", "code"),
    [
        ({"expire_type": 0, "expire_time": "tomorrow"}, 47001),
        ({"expire_type": 0, "expire_time": 31 * DAY}, 85401),  # seconds, not a timestamp
        ("+31d", 85401),
        ("+30s", 85401),
        ({"expire_type": 1, "expire_interval": 31}, 85401),
        ({"expire_type": 1, "expire_interval": 0}, 85401),
        ({"expire_type": 2}, 40097),
    ],
)
def test_link_expiry_refusals(wx: FlaskClient, token: str, expire: Any, code: int) -> None:
    if isinstance(expire, str):
        seconds = int(expire[1:-1]) * (DAY if expire.endswith("d") else 1)
        expire = {"expire_type": 0, "expire_time": int(time.time()) + seconds}
    assert errcode(urllink(wx, token, path="pages/index/index", **expire)) == code
    assert errcode(scheme(wx, token, expire=expire, path="pages/index/index")) == code


def test_links_need_a_valid_token_and_post(wx: FlaskClient, token: str, state: SandboxState) -> None:
    assert errcode(wx.post("/wxa/generate_urllink", json={})) == 41001
    assert errcode(urllink(wx, "nope", path="")) == 40001
    assert errcode(wx.get("/wxa/generatescheme", query_string={"access_token": token})) == 43002
    assert errcode(wx.post("/wxa/generate_urllink", query_string={"access_token": token}, data=b"[1]")) == 47001
    state.expire_tokens()
    assert errcode(urllink(wx, token, path="")) == 42001


def test_daily_quota_counts_both_kinds(wx: FlaskClient, token: str, sandbox: Any) -> None:
    book: LinkBook = sandbox.extensions["sandbox_links"]
    book.daily_limit = 2
    assert errcode(urllink(wx, token, path="")) == 0
    assert errcode(scheme(wx, token, path="")) == 0
    assert errcode(urllink(wx, token, path="")) == 45009
    assert errcode(scheme(wx, token, path="")) == 45009


def test_an_expired_or_unknown_link_does_not_open(wx: FlaskClient, token: str, sandbox: Any) -> None:
    url = urllink(wx, token, path="", expire_type=1, expire_interval=1).get_json()["url_link"]
    book: LinkBook = sandbox.extensions["sandbox_links"]
    link_token = url.rsplit("/", 1)[1]
    book.links[link_token] = dataclasses.replace(book.links[link_token], expires_at=time.time() - 1)
    assert opened(wx, url).status_code == 410
    assert opened(wx, "https://wxaurl.cn/nothing").status_code == 404
    assert opened(wx, "https://example.com/").status_code == 404
