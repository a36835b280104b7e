"""Fixtures for the member zone: a browser (test client) signed in to the zone as a mini-program member."""
from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient



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


__all__ = ["follow_oauth", "form_token", "form_fields", "parse_qs"]
