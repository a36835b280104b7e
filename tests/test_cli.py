"""``python -m server run`` and ``python -m server demo``: what they promise the operator."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from server import cli, db
from server.demo import run_demo, seed_demo
from wechat_sandbox import serve_in_thread


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs ``run`` up to the point of serving, and records what it would serve and with which config."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli.migrate, "upgrade", lambda app, revision="head": None)

    def start_sandbox(app: Flask, port: int) -> str:
        seen["public_at_sandbox_start"] = app.config["PUBLIC_BASE_URL"]
        return f"http://127.0.0.1:{port}/"

    def run_simple(host: str, port: int, app: Flask, **kwargs: Any) -> None:
        seen.update(host=host, port=port, public=app.config["PUBLIC_BASE_URL"])

    monkeypatch.setattr(cli, "_start_sandbox", start_sandbox)
    monkeypatch.setattr(cli, "run_simple", run_simple)
    return seen


def test_run_on_another_port_points_public_urls_at_that_port(app_factory, served):
    app = app_factory(PUBLIC_BASE_URL="http://127.0.0.1:5000", PUBLIC_BASE_URL_SET=False)
    result = app.test_cli_runner().invoke(args=["run", "--port", "8000"])
    assert result.exit_code == 0, result.output
    assert served["port"] == 8000
    # The sandbox pushes messages there and WeChat Pay notifies there: it must be the served port.
    assert served["public"] == served["public_at_sandbox_start"] == "http://127.0.0.1:8000"
    assert "http://127.0.0.1:8000" in result.output


def test_run_on_all_interfaces_is_reached_on_the_loopback(app_factory, served):
    app = app_factory(PUBLIC_BASE_URL_SET=False)
    assert app.test_cli_runner().invoke(args=["run", "--host", "0.0.0.0", "--port", "8001"]).exit_code == 0
    assert served["public"] == "http://127.0.0.1:8001"
    assert cli.served_base_url("::1", 80) == "http://[::1]:80"


def test_run_keeps_a_public_base_url_that_was_set(app_factory, served):
    app = app_factory(PUBLIC_BASE_URL="https://shop.example.com", PUBLIC_BASE_URL_SET=True)
    assert app.test_cli_runner().invoke(args=["run", "--port", "8000"]).exit_code == 0
    assert served["public"] == "https://shop.example.com"


def test_healthz_says_where_the_sandbox_is(client, app):
    data = client.get("/healthz").get_json()["data"]
    assert data["sandbox_url"] == app.config["WECHAT_API_BASE"].rstrip("/")


def test_healthz_names_no_sandbox_outside_sandbox_mode(app_factory):
    app = app_factory(WECHAT_SANDBOX=False)
    assert app.test_client().get("/healthz").get_json()["data"]["sandbox_url"] is None


def test_demo_finds_the_servers_sandbox_by_itself(app, sandbox):
    """The story pays through the sandbox: it works only if the demo found the right one."""
    with app.app_context():
        list(seed_demo(db.session()))
        db.commit()
    server = serve_in_thread(app)
    try:
        app.config["PUBLIC_BASE_URL"] = server.base_url.rstrip("/")
        lines: list[str] = []
        ok = run_demo(server.base_url.rstrip("/"), lines.append)
    finally:
        server.shutdown()
    assert ok, "\n".join(lines)
    assert any(sandbox.base_url.rstrip("/") in line for line in lines)


def test_run_outside_sandbox_mode_starts_no_sandbox(app_factory, served):
    app = app_factory(WECHAT_SANDBOX=False, PUBLIC_BASE_URL_SET=False)
    result = app.test_cli_runner().invoke(args=["run", "--port", "8002"])
    assert result.exit_code == 0, result.output
    assert "public_at_sandbox_start" not in served
    assert "WeChat sandbox" not in result.output


def test_the_sandbox_command_refuses_outside_sandbox_mode(app_factory):
    app = app_factory(WECHAT_SANDBOX=False)
    result = app.test_cli_runner().invoke(args=["sandbox", "--port", "0"])
    assert result.exit_code == 1
    assert "only runs in sandbox mode" in result.output
