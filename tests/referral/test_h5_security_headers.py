"""Security headers on every HTML page the server sends (the H5 landing page and the member zone)."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from server.wechat import official_account
from tests.referral.test_official_account import follow_oauth, play, wechat_pushes  # noqa: F401 (fixtures)


def assert_secured(response: Any) -> dict[str, str]:
    """The page carries the headers, and its inline blocks the CSP's nonce; returns the CSP's directives."""
    assert "text/html" in response.content_type
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["form-action"] == "'self'" and policy["base-uri"] == "'none'"
    [nonce] = re.findall(r"'nonce-([^']+)'", policy["style-src"])
    html = response.get_data(as_text=True)
    blocks = re.findall(r"<(style|script)\b([^>]*)>", html)
    assert blocks and all(f'nonce="{nonce}"' in attributes for _, attributes in blocks)
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers are refused by the CSP"
    return policy


def test_landing_pages_are_sent_with_security_headers(client, wx_login, scene_of):
    code = scene_of(wx_login("alice"), "h5_link")
    policy = assert_secured(client.get(f"/s/{code}"))
    assert policy["script-src"] == policy["style-src"]  # the landing page loads no script file
    assert_secured(client.get("/s/doesNotExist"))  # the 404 page too
    assert_secured(client.post(f"/s/{code}/lead", data={"contact_name": "李女士", "phone": "13700001111"}))


def test_each_page_has_its_own_nonce(client, wx_login, scene_of):
    code = scene_of(wx_login("alice"), "h5_link")
    first, second = (client.get(f"/s/{code}").headers["Content-Security-Policy"] for _ in range(2))
    assert first != second


def test_member_zone_is_sent_with_security_headers_and_may_show_the_qr_code(app, client, wx_login, play):
    wx_login("alice")
    play("alice", "subscribe")
    follow_oauth(client, client.get("/h5/member"), "alice", [])
    page = client.get("/h5/member")
    assert page.status_code == 200 and "showqrcode?ticket=" in page.get_data(as_text=True)
    policy = assert_secured(page)
    with app.app_context():
        host = urlsplit(official_account().mp_base)
    assert f"{host.scheme}://{host.netloc}" in policy["img-src"].split()
    # A member's page may load WeChat's JS-SDK, that one file and nothing else; other pages no script file at all.
    assert policy["script-src"] == policy["style-src"] + " https://res.wx.qq.com/open/js/jweixin-1.6.0.js"
    refused = assert_secured(client.get("/h5/member/oauth", query_string={"code": "x", "state": "00ff"}))
    assert refused["script-src"] == refused["style-src"]


def test_json_answers_are_nosniff_and_keep_their_type(client):
    response = client.get("/healthz")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in response.headers
