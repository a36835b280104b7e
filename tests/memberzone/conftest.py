"""Fixtures for the member zone: a browser (test client) signed in to the zone as a mini-program member."""
from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.distribution.conftest import apply, decide, distributor, ops, owner, sess, share_scene  # noqa: F401  (fixtures)



def follow_oauth(client: FlaskClient, response: Any, user: str) -> Any:
    """Play WeChat's OAuth page for ``user`` until the app stops sending the browser there."""
    while response.status_code == 302 and "connect/oauth2/authorize" in response.headers["Location"]:
        location = response.headers["Location"].split("#")[0]
        wechat = requests.get(location + f"&sandbox_user={user}", allow_redirects=False, timeout=10)
        assert wechat.status_code == 302
        back = urlsplit(wechat.headers["Location"])
        response = client.get(f"{back.path}?{back.query}")
    return response


@pytest.fixture
def zone(app: Flask, wx_login: Callable[..., dict[str, Any]]) -> Callable[..., tuple[FlaskClient, dict[str, Any]]]:
    """``zone("alice")`` signs alice in to the mini-program and returns (a browser signed in to her zone, her sign-in)."""

    def open_zone(name: str, scene: str | None = None, path: str = "/h5/member") -> tuple[FlaskClient, dict[str, Any]]:
        member = wx_login(name, scene=scene)
        browser = app.test_client()
        landed = follow_oauth(browser, browser.get(path), name)
        assert landed.status_code == 302, landed.get_data(as_text=True)[:500]
        return browser, member

    return open_zone


def form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, "the page has no form"
    return found.group(1)


def form_fields(html: str, form_id_fragment: str) -> dict[str, str]:
    """The hidden fields of the first form after ``form_id_fragment`` in ``html``."""
    start = html.index(form_id_fragment)
    form = html[start : html.index("</form>", start)]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))




@pytest.fixture(scope="session")
def base_url() -> None:
    """No base URL for Playwright's pages (see tests/console/conftest.py: pytest-playwright's own is a
    method-style fixture this pytest warns about)."""
    return None


#: Stands in for WeChat's JS-SDK in a browser: records wx.config and the share calls in ``window.__wx``;
#: ``wx.ready`` runs its callback once the page's script is done, as WeChat's does.
FAKE_JSSDK = """
window.__wx = { configs: [], shares: [] };
window.wx = {
  config: function (c) { window.__wx.configs.push(c); },
  ready: function (fn) { setTimeout(fn, 0); },
  error: function () {},
  updateAppMessageShareData: function (d) { window.__wx.shares.push(["appMessage", d]); },
  updateTimelineShareData: function (d) { window.__wx.shares.push(["timeline", d]); }
};
"""


def stand_in_jssdk(target: Any) -> None:
    """Serve ``FAKE_JSSDK`` for WeChat's JS-SDK URL to a Playwright page or context (no browser here reaches res.wx.qq.com)."""
    from server.memberzone.wechat_share import JWEIXIN_URL

    target.route(JWEIXIN_URL, lambda route: route.fulfill(status=200, content_type="application/javascript", body=FAKE_JSSDK))
