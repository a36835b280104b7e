"""Console fixtures: staff signed in through the login form, with the CSRF token the form carries."""
from __future__ import annotations

import re
from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

PASSWORD = "correct-horse"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: str) -> str:
    """The CSRF token of the first form on ``page``."""
    found = CSRF_RE.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Console:
    """A browser-like client of the console: remembers the session cookie and the page's CSRF token."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.token = ""

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(path, **kwargs)
        if response.mimetype == "text/html" and CSRF_RE.search(response.text):
            self.token = csrf_token(response.text)
        return response

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any) -> Any:
        if csrf and not self.token:
            self.get("/console/login")
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token
        response = self.client.post(path, data=form, **kwargs)
        if response.mimetype == "text/html" and CSRF_RE.search(response.text):
            self.token = csrf_token(response.text)
        return response

    def login(self, username: str, password: str = PASSWORD) -> Any:
        """Sign in through the form; a new session has a new CSRF token, which the next page carries."""
        self.get("/console/login")
        response = self.post("/console/login", {"username": username, "password": password})
        if response.status_code == 303:
            self.get("/console/account/password")
        return response


@pytest.fixture
def console(app: Flask, make_staff: Callable[..., Any]) -> Callable[..., Console]:
    """``console("finance")`` creates a staff member of that role and signs them in; ``console()`` is signed out."""

    def make(role: str | None = None, username: str | None = None) -> Console:
        browser = Console(app.test_client())
        if role is not None:
            staff = make_staff(role, username=username or f"{role}-console")
            response = browser.login(staff.username)
            assert response.status_code == 303, response.text
        return browser

    return make


@pytest.fixture(scope="session")
def base_url() -> None:
    """No base URL for Playwright's pages: the browser tests name their live server's address in full.

    Defined here because pytest-playwright's stand-in for pytest-base-url is a fixture written as a
    method, which this pytest warns about (and warnings are errors)."""
    return None
