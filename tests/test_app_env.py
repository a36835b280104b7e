"""APP_ENV: production refuses the sandbox, demo data and default secrets at start; development is as before."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from flask import Flask

from server import create_app
from server.config import ROOT, SANDBOX_DEFAULTS, SANDBOX_SECRET_KEY, Config, ConfigError

#: What a production start needs at the least.
PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": "a-production-secret-key-of-at-least-32-characters",
    "DATABASE_URL": "sqlite://",
    "PUBLIC_BASE_URL": "https://shop.example.com",
    "WECHAT_APPID": "wx0123456789abcdef",
    "WECHAT_SECRET": "a-real-mini-program-secret",
}


def _clean_environ() -> dict[str, str]:
    """The environment without anything that configures the app."""
    prefixes = ("APP_ENV", "SECRET_KEY", "DATABASE_URL", "PUBLIC_BASE_URL", "REDIS_URL", "WECHAT_", "TEST_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """os.environ with nothing of the app's configuration set; set what a test needs on the returned monkeypatch."""
    for name in set(os.environ) - set(_clean_environ()):
        monkeypatch.delenv(name)
    return monkeypatch


def _set(environ: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        environ.setenv(name, value)


def _refusal(environ: pytest.MonkeyPatch, **values: str) -> str:
    _set(environ, values)
    with pytest.raises(ConfigError) as refused:
        create_app(Config())
    return str(refused.value)


def test_production_without_anything_names_every_missing_variable(environ):
    message = _refusal(environ, APP_ENV="production")
    assert message.startswith("APP_ENV=production needs: ")
    for name in ("SECRET_KEY", "WECHAT_APPID", "WECHAT_SECRET", "DATABASE_URL", "PUBLIC_BASE_URL"):
        assert name in message
    assert "APP_ENV=development" in message


def test_an_unset_app_env_is_production(environ):
    config = Config()
    assert config.APP_ENV == "production" and not config.WECHAT_SANDBOX
    message = _refusal(environ)
    assert "APP_ENV is unset, so production is assumed" in message
    assert "WECHAT_APPID" in message and "SECRET_KEY" in message


def test_production_with_everything_set_starts_without_the_sandbox(environ):
    _set(environ, PRODUCTION)
    app = create_app(Config())
    try:
        assert app.config["APP_ENV"] == "production"
        assert app.config["WECHAT_SANDBOX"] is False
        assert app.config["WECHAT_API_BASE"] == "https://api.weixin.qq.com/"
        assert app.config["WECHAT_OA_APPID"] == "" and app.config["WECHAT_PAY_API_KEY"] == ""
    finally:
        app.extensions["db_engine"].dispose()


def test_production_refuses_the_sandbox_even_with_credentials(environ):
    message = _refusal(environ, **PRODUCTION, WECHAT_SANDBOX="1")
    assert message == (
        "APP_ENV=production needs: WECHAT_SANDBOX (unset or 0: the sandbox is for development). "
        "To run against the WeChat sandbox with demo data, set APP_ENV=development (scripts/run does)."
    )


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (SANDBOX_SECRET_KEY, "not a default written in the repository"),
        ("test-secret-key", "not a default written in the repository"),
        ("short-but-not-a-default", "at least 32 characters"),
    ],
)
def test_production_refuses_a_default_or_short_secret_key(environ, secret, why):
    message = _refusal(environ, **(PRODUCTION | {"SECRET_KEY": secret}))
    assert f"needs: SECRET_KEY ({why})." in message


def test_production_refuses_the_sandboxs_public_credentials(environ):
    message = _refusal(
        environ, **(PRODUCTION | {"WECHAT_APPID": SANDBOX_DEFAULTS["WECHAT_APPID"], "WECHAT_OA_TOKEN": "sandbox-token"})
    )
    assert "WECHAT_APPID (not the sandbox's public default)" in message
    assert "WECHAT_OA_TOKEN (not the sandbox's public default)" in message


def test_production_needs_an_https_public_base_url(environ):
    message = _refusal(environ, **(PRODUCTION | {"PUBLIC_BASE_URL": "http://shop.example.com"}))
    assert "needs: PUBLIC_BASE_URL (https://" in message


def test_production_needs_the_pay_keys_once_a_merchant_is_named(environ):
    message = _refusal(environ, **PRODUCTION, WECHAT_PAY_MCH_ID="1230000109", WECHAT_OA_APPID="wx00000000000000aa")
    for name in (
        "WECHAT_OA_SECRET",
        "WECHAT_PAY_API_V3_KEY",
        "WECHAT_PAY_MCH_CERT_SERIAL",
        "WECHAT_PAY_MCH_PRIVATE_KEY",
    ):
        assert name in message
    # Platform certificates are downloaded: none needs configuring, and no public key either.
    assert "WECHAT_PAY_PLATFORM" not in message and "WECHAT_PAY_PUBLIC_KEY" not in message
    assert "WECHAT_PAY_API_KEY" not in message
    message = _refusal(environ, WECHAT_PAY_API="v2")
    assert "WECHAT_PAY_API_KEY, WECHAT_PAY_MCH_CERT, WECHAT_PAY_MCH_KEY" in message
    assert "WECHAT_PAY_API_V3_KEY" not in message


@pytest.mark.parametrize(
    ("settings", "needed", "not_needed"),
    [
        ({"WECHAT_PAY_PLATFORM_SERIAL": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"}, ["WECHAT_PAY_PLATFORM_PUBLIC_KEY"], ["WECHAT_PAY_PUBLIC_KEY"]),
        ({"WECHAT_PAY_PUBLIC_KEY_ID": "PUB_KEY_ID_0114232134912410000000000000"}, ["WECHAT_PAY_PUBLIC_KEY"], ["WECHAT_PAY_PLATFORM", "WECHAT_PAY_PUBLIC_KEY_ID"]),
        ({"WECHAT_PAY_V3_VERIFY": "public_key"}, ["WECHAT_PAY_PUBLIC_KEY, WECHAT_PAY_PUBLIC_KEY_ID"], ["WECHAT_PAY_PLATFORM"]),
        ({"WECHAT_PAY_V3_VERIFY": "both", "WECHAT_PAY_PUBLIC_KEY": "/etc/wechatpay/pub_key.pem"}, ["WECHAT_PAY_PUBLIC_KEY_ID"], ["WECHAT_PAY_PLATFORM"]),
        ({"WECHAT_PAY_V3_VERIFY": "public_key", "WECHAT_PAY_PUBLIC_KEY": "/k.pem", "WECHAT_PAY_PUBLIC_KEY_ID": "0114232134912410000000000000"}, ["WECHAT_PAY_PUBLIC_KEY_ID (starts with PUB_KEY_ID_)"], []),
        ({"WECHAT_PAY_V3_VERIFY": "certs"}, ["WECHAT_PAY_V3_VERIFY (certificates, public_key, both)"], ["WECHAT_PAY_PUBLIC_KEY"]),
    ],
)
def test_production_needs_the_keys_of_the_pay_verification_mode_chosen(environ, settings, needed, not_needed):
    message = _refusal(environ, **PRODUCTION, WECHAT_PAY_MCH_ID="1230000109", **settings)
    for text in needed:
        assert text in message
    for text in not_needed:
        assert text not in message


def test_an_unknown_app_env_is_refused(environ):
    assert _refusal(environ, APP_ENV="staging") == "APP_ENV must be development or production, not 'staging'"


def test_development_keeps_the_sandbox_unless_wechat_credentials_are_given(environ):
    _set(environ, {"APP_ENV": "development", "DATABASE_URL": "sqlite://"})
    config = Config()
    config.check()
    assert config.WECHAT_SANDBOX and config.SECRET_KEY == SANDBOX_SECRET_KEY
    assert config.WECHAT_APPID == SANDBOX_DEFAULTS["WECHAT_APPID"]
    environ.setenv("WECHAT_APPID", "wx0123456789abcdef")
    with pytest.raises(ConfigError, match="SECRET_KEY must be set when WeChat is not the sandbox"):
        Config().check()
    environ.setenv("SECRET_KEY", "short")  # development takes any key
    with pytest.raises(ConfigError, match="missing WeChat configuration: WECHAT_SECRET"):
        Config().check()
    environ.setenv("WECHAT_SECRET", "secret")
    config = Config()
    config.check()
    assert not config.WECHAT_SANDBOX


@pytest.mark.parametrize("command", [["seed-demo"], ["demo"], ["sandbox"]])
def test_production_refuses_demo_data_and_the_sandbox_commands(app: Flask, command: list[str]):
    app.config["APP_ENV"] = "production"
    result = app.test_cli_runner().invoke(args=command)
    assert result.exit_code == 1
    assert "is for development: APP_ENV=production never runs the sandbox or demo data" in result.output


def _server(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "server", *args], cwd=ROOT, env=env | {"PYTHONUNBUFFERED": "1"}, stdout=out, stderr=out
        )


@pytest.mark.parametrize("app_env", ["production", None])
def test_the_command_line_exits_non_zero_naming_what_production_misses(tmp_path, app_env):
    env = _clean_environ() | ({"APP_ENV": app_env} if app_env else {})
    process = _server(["run", "--port", "1"], env, tmp_path / "out.log")
    assert process.wait(timeout=60) == 1
    output = (tmp_path / "out.log").read_text()
    assert "Error: APP_ENV=production" in output and "Traceback" not in output
    for name in ("SECRET_KEY", "WECHAT_APPID", "WECHAT_SECRET", "DATABASE_URL", "PUBLIC_BASE_URL"):
        assert name in output
    assert "WeChat sandbox at" not in output


def test_help_shows_the_refusal_without_a_traceback(tmp_path):
    process = _server(["--help"], _clean_environ(), tmp_path / "out.log")
    assert process.wait(timeout=60) == 0
    output = (tmp_path / "out.log").read_text()
    assert "Error: APP_ENV=production (APP_ENV is unset" in output and "Traceback" not in output


def test_the_command_line_serves_production_when_everything_is_set(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _clean_environ() | PRODUCTION | {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "LOG_LEVEL": "WARNING"}
    process = _server(["run", "--port", str(port)], env, tmp_path / "out.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "out.log").read_text()
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (tmp_path / "out.log").read_text()
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
    output = (tmp_path / "out.log").read_text()
    assert f"API at http://127.0.0.1:{port}/ (public URL https://shop.example.com" in output
    assert "WeChat sandbox at" not in output
