"""Log lines: one JSON object per line (or text), the request id from X-Request-Id or made and echoed, one
access line per request with its route, status and time, and no full mobile number anywhere."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import runpy
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server import config as server_config
from server import db, logs, scheduler, tasks
from server.config import ConfigError

HEX32 = re.compile(r"[0-9a-f]{32}")
ROOT = Path(__file__).resolve().parent.parent


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    return dict(json.loads(line))


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.INFO, logger="server.access")
    return lambda: [r for r in caplog.records if r.name == "server.access"]


def test_the_access_line_has_the_route_status_and_time(client: FlaskClient, access: Callable[[], list[logging.LogRecord]]) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": "nginx-4f0c2a9b7d1e"})
    assert response.headers["X-Request-Id"] == "nginx-4f0c2a9b7d1e"
    [record] = access()
    line = as_json(record)
    assert line["logger"] == "server.access" and line["level"] == "INFO"
    assert line["method"] == "GET" and line["route"] == "/healthz" and line["path"] == "/healthz"
    assert line["status"] == 200 and isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["client"] == "127.0.0.1"
    assert line["message"].startswith("GET /healthz 200 ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_the_access_line_carries_the_requests_id(client: FlaskClient, access: Callable[[], list[logging.LogRecord]]) -> None:
    # The formatter reads the id while the record is written; caplog keeps the record, so format it the
    # way the handler did, inside the request: a handler of our own does that.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logging.getLogger("server.access").addHandler(handler)
    try:
        client.get("/healthz", headers={"X-Request-Id": "rid-0123456789abcdef"})
        sent = client.get("/healthz")
    finally:
        logging.getLogger("server.access").removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "rid-0123456789abcdef"
    assert HEX32.fullmatch(second["request_id"]) and second["request_id"] == sent.headers["X-Request-Id"]


@pytest.mark.parametrize("given", ["", "short", "has spaces in it", "x" * 65, "id\nInjected: line", "-leading-dash-id", "引用-0123456789"])
def test_a_malformed_request_id_is_replaced(client: FlaskClient, given: str) -> None:
    # Straight into the WSGI environ: a header as a proxy might pass it, which the test client would refuse to build.
    response = client.get("/healthz", environ_base={"HTTP_X_REQUEST_ID": given} if given else {})
    assert HEX32.fullmatch(response.headers["X-Request-Id"])


def test_every_line_a_request_logs_has_its_id(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    """A failed WeChat sign-in logs WeChat's refusal from deep in the adapter: the line names the request."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.INFO)
    try:
        response = client.post("/api/v1/auth/wx-login", json={"code": "0" + uuid.uuid4().hex}, headers={"X-Request-Id": "signin-attempt-42"})
    finally:
        root.removeHandler(handler)
    assert response.status_code >= 400
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    refusal = [line for line in lines if line["logger"] == "server.wechat.client"]
    assert refusal and all(line["request_id"] == "signin-attempt-42" for line in refusal)
    assert server_config.SANDBOX_DEFAULTS["WECHAT_SECRET"] not in stream.getvalue()


def test_mobile_numbers_are_masked_in_messages_fields_and_tracebacks() -> None:
    logger = logging.getLogger("tests.logs")
    try:
        raise ValueError("phone 13912345678 refused")
    except ValueError:
        record = logger.makeRecord("tests.logs", logging.ERROR, __file__, 1, "bound %s to member %s", ("+86 13812345678", 7), sys.exc_info(), extra={"path": "/x/15000001111"})
    line = as_json(record)
    assert line["message"] == "bound +86 138****5678 to member 7"
    assert line["path"] == "/x/150****1111"
    assert "139****5678" in line["exc"] and "13912345678" not in line["exc"]
    text = logs.TextFormatter().format(record)
    assert "138****5678" in text and "13812345678" not in text and "13912345678" not in text


@pytest.mark.parametrize(("text", "masked"), [
    ("13812345678", "138****5678"),
    ("tel:8613812345678.", "tel:86138****5678."),
    ("order 2026120213812345678", "order 2026120213812345678"),  # a longer number is not a phone
    ("12812345678", "12812345678"),  # no mainland mobile starts 12
    ("1381234567", "1381234567"),  # ten digits
    ("a 13812345678 and 19900001111", "a 138****5678 and 199****1111"),
])
def test_what_counts_as_a_mobile_number(text: str, masked: str) -> None:
    assert logs.mask_mobiles(text) == masked


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without pytest's capturing handlers (added for each test's call), restored afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    # configure() quietens these two as well; other tests read the development server's lines.
    quietened = {name: logging.getLogger(name).level for name in ("werkzeug", "alembic.runtime.plugins")}
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers = saved
        root.setLevel(level)
        for name, old in quietened.items():
            logging.getLogger(name).setLevel(old)


def test_configure_writes_json_lines_and_replaces_itself() -> None:
    first, stream = io.StringIO(), io.StringIO()
    with bare_root() as root:
        logs.configure("INFO", "text", first)
        logs.configure("INFO", "json", stream)
        assert len(root.handlers) == 1
        token = logs.request_id.set("job-run-000001")
        try:
            logging.getLogger("server.scheduler").info("settled %s members", 3)
        finally:
            logs.request_id.reset(token)
    assert first.getvalue() == ""
    line = json.loads(stream.getvalue())
    assert line["message"] == "settled 3 members" and line["request_id"] == "job-run-000001" and line["level"] == "INFO"


def test_configure_leaves_a_root_logger_someone_else_set_up() -> None:
    theirs = logging.NullHandler()
    with bare_root() as root:
        root.addHandler(theirs)
        logs.configure("INFO", "json", io.StringIO())
        assert root.handlers == [theirs]


def test_log_format_defaults_by_environment_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.setenv("APP_ENV", "production")
    assert server_config.Config().LOG_FORMAT == "json"
    monkeypatch.setenv("APP_ENV", "development")
    assert server_config.Config().LOG_FORMAT == "text"
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert server_config.Config().LOG_FORMAT == "json"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        server_config.Config().check()


def test_an_app_outside_tests_logs_in_its_format(app_factory: Callable[..., Flask], capsys: pytest.CaptureFixture[str]) -> None:
    with bare_root():
        app = app_factory(TESTING=False, LOG_FORMAT="json")
        app.test_client().get("/healthz", headers={"X-Request-Id": "from-nginx-123456"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    [line] = [line for line in lines if line["logger"] == "server.access"]
    assert line["request_id"] == "from-nginx-123456" and line["route"] == "/healthz" and line["status"] == 200


def _json_lines_of(logger_name: str) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logging.getLogger(logger_name).addHandler(handler)
    return stream, handler


def test_a_background_task_logs_with_the_id_of_the_request_that_queued_it(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(TASKS_EAGER=False)
    stream, handler = _json_lines_of("tests.task")
    try:
        with app.test_request_context():
            token = logs.request_id.set("queued-by-request-1")
            tasks.defer(lambda: logging.getLogger("tests.task").warning("follow-up ran"))
            db.commit()
            logs.request_id.reset(token)
        app.extensions["task_pool"].shutdown(wait=True)
    finally:
        logging.getLogger("tests.task").removeHandler(handler)
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["message"] == "follow-up ran" and line["request_id"] == "queued-by-request-1"


def test_a_job_runs_lines_share_an_id_of_their_own(app: Flask) -> None:
    stream, handler = _json_lines_of("tests.job")

    def job(_app: Flask, _now: Any) -> dict[str, int]:
        logging.getLogger("tests.job").warning("one")
        logging.getLogger("tests.job").warning("two")
        return {"done": 1}

    try:
        scheduler.run_job(app, "log-test", job)
        scheduler.run_job(app, "log-test", job)
    finally:
        logging.getLogger("tests.job").removeHandler(handler)
    ids = [json.loads(text)["request_id"] for text in stream.getvalue().splitlines()]
    assert len(ids) == 4 and ids[0] == ids[1] != ids[2] == ids[3]
    assert all(re.fullmatch(r"log-test-[0-9a-f]{12}", rid) and logs.valid_request_id(rid) for rid in ids)
    assert logs.request_id.get() is None


def test_gunicorns_own_lines_are_json_when_the_apps_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.setenv("APP_ENV", "production")
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert conf["log_format"] == "json"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    error_log = logging.getLogger(f"tests.gunicorn.{uuid.uuid4().hex}")
    error_log.addHandler(handler)
    error_log.propagate = False

    # gunicorn's Arbiter, as far as the hook reads it.
    arbiter = SimpleNamespace(log=SimpleNamespace(error_log=error_log, access_log=logging.getLogger("tests.gunicorn.access")))
    conf["on_starting"](arbiter)
    error_log.warning("Booting worker with pid: %s", 4242)
    line = json.loads(stream.getvalue())
    assert line["message"] == "Booting worker with pid: 4242" and line["level"] == "WARNING" and "time" in line
    monkeypatch.setenv("APP_ENV", "development")
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["log_format"] == "text"
