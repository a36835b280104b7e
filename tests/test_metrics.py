"""Prometheus metrics: GET /metrics only for an allowed address or the token, labels from small fixed sets,
WeChat calls and job runs counted, the outbox backlog read when scraped, and the figures of several
processes added up through PROMETHEUS_MULTIPROC_DIR."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from server import db, metrics, scheduler
from server.accounts.models import Member
from server import config as server_config
from server.config import ConfigError
from server.jobs.models import Job, JobState
from server.notifications.models import NotifyEvent, OutboxMessage, OutboxState

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}


def sample(name: str, **labels: str) -> float:
    """The value of one series in this process (0 when it was never counted)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(client: FlaskClient, **kwargs: Any) -> dict[str, list[Any]]:
    """GET /metrics, parsed: samples by metric family name."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.data[:200]
    assert response.mimetype == "text/plain"
    return {family.name: family.samples for family in text_string_to_metric_families(response.get_data(as_text=True))}


def routes_seen() -> set[tuple[str, str, str]]:
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"])
        for family in REGISTRY.collect()
        if family.name == "referral_http_request_duration_seconds"
        for s in family.samples
        if s.name.endswith("_count")
    }


def test_a_request_is_timed_by_its_route_method_and_status_class(client: FlaskClient) -> None:
    before = sample("referral_http_request_duration_seconds_count", route="/healthz", method="GET", status="2xx")
    assert client.get("/healthz").status_code == 200
    families = scraped(client)
    [count] = [
        s for s in families["referral_http_request_duration_seconds"]
        if s.name.endswith("_count") and s.labels == {"route": "/healthz", "method": "GET", "status": "2xx"}
    ]
    assert count.value == before + 1
    assert "referral_outbox_backlog" in families


def test_metrics_are_a_404_like_any_unknown_path_for_anyone_else(client: FlaskClient) -> None:
    unknown = client.get(f"/no-such-{uuid.uuid4().hex}", environ_base=OUTSIDE)
    refused = client.get("/metrics", environ_base=OUTSIDE)
    assert refused.status_code == unknown.status_code == 404
    assert refused.get_json() == unknown.get_json()
    assert b"referral_" not in refused.data
    # No other method tells it apart from a path the app does not have (a route would answer 405).
    for method in ("post", "put", "delete"):
        assert getattr(client, method)("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer anything"}, environ_base=OUTSIDE).status_code == 404


def test_behind_the_proxy_the_forwarded_client_is_judged_not_the_proxy(app_factory: Callable[..., Flask]) -> None:
    client = app_factory(TRUSTED_PROXIES=1).test_client()
    # nginx on the loopback forwards a client from the internet: refused, though the peer is 127.0.0.1.
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 404
    assert client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}).status_code == 404
    # Prometheus on the host scrapes gunicorn directly, with no forwarded header.
    assert client.get("/metrics").status_code == 200


def test_the_token_opens_metrics_from_any_address_and_a_wrong_one_does_not(app_factory: Callable[..., Flask]) -> None:
    token = "metrics-" + uuid.uuid4().hex
    client = app_factory(METRICS_TOKEN=token, METRICS_ALLOWED_IPS=()).test_client()
    assert client.get("/metrics").status_code == 404  # no address is allowed now, the loopback included
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}x"}, environ_base=OUTSIDE).status_code == 404
    assert client.get("/metrics", headers={"Authorization": token}, environ_base=OUTSIDE).status_code == 404
    assert "referral_http_request_duration_seconds" in scraped(client, headers={"Authorization": f"Bearer {token}"}, environ_base=OUTSIDE)


def test_allowed_networks_are_configurable_and_checked_at_start(app_factory: Callable[..., Flask]) -> None:
    client = app_factory(METRICS_ALLOWED_IPS=("10.1.0.0/16",)).test_client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:10.2.0.1"}).status_code == 404
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "not an address"}).status_code == 404
    config = server_config.TestingConfig()
    config.METRICS_ALLOWED_IPS = ("10.1.0.0/16", "not-a-network")
    with pytest.raises(ConfigError, match="METRICS_ALLOWED_IPS"):
        config.check()


def test_labels_never_carry_a_path_a_client_chose(client: FlaskClient, wx_login: Callable[..., dict[str, Any]]) -> None:
    member = wx_login("alice")
    for _ in range(3):
        client.get(f"/no-such-{uuid.uuid4().hex}")
        client.get(f"/api/v1/orders/{uuid.uuid4().int % 10**9}", headers=member["headers"])
    client.open("/healthz", method="BREW")
    text = client.get("/metrics").get_data(as_text=True)
    assert "no-such-" not in text
    seen = routes_seen()
    assert ("unmatched", "GET", "4xx") in seen
    assert ("/api/v1/orders/<int:order_id>", "GET", "4xx") in seen
    assert ("unmatched", "OTHER", "4xx") in seen  # a method the rule does not take: 405 before any rule matched
    assert {method for _, method, _ in seen} <= metrics.METHODS | {"OTHER"}
    assert {status for _, _, status in seen} <= {"1xx", "2xx", "3xx", "4xx", "5xx"}


def test_wechat_calls_are_counted_by_path_template_and_errcode(client: FlaskClient, wx_login: Callable[..., dict[str, Any]]) -> None:
    ok = sample("referral_wechat_requests_total", api="sns/jscode2session", errcode="0")
    refused = sample("referral_wechat_requests_total", api="sns/jscode2session", errcode="40029")
    timed = sample("referral_wechat_request_duration_seconds_count", api="sns/jscode2session")
    wx_login("bob")
    response = client.post("/api/v1/auth/wx-login", json={"code": "0" + uuid.uuid4().hex})
    assert response.status_code >= 400
    assert sample("referral_wechat_requests_total", api="sns/jscode2session", errcode="0") == ok + 1
    assert sample("referral_wechat_requests_total", api="sns/jscode2session", errcode="40029") == refused + 1
    assert sample("referral_wechat_request_duration_seconds_count", api="sns/jscode2session") == timed + 2
    text = client.get("/metrics").get_data(as_text=True)
    # Paths only: no query (where the secret, the code and the access token travel) in any label.
    apis = {s.labels["api"] for family in text_string_to_metric_families(text) if family.name.startswith("referral_wechat_") for s in family.samples}
    assert "sns/jscode2session" in apis and not [api for api in apis if "?" in api or "=" in api or "&" in api]
    assert server_config.SANDBOX_DEFAULTS["WECHAT_SECRET"] not in text


@pytest.mark.parametrize(("path", "template"), [
    ("cgi-bin/message/subscribe/send", "cgi-bin/message/subscribe/send"),
    ("sns/oauth2/access_token?appid=wx1&secret=s", "sns/oauth2/access_token"),
    ("v3/pay/transactions/out-trade-no/20261202000123", "v3/pay/transactions/out-trade-no/{id}"),
    ("v3/refund/domestic/refunds/R2026ABCDEF", "v3/refund/domestic/refunds/{id}"),
    ("cgi-bin/x/" + "A" * 40, "cgi-bin/x/{id}"),
    ("a/b/c/d/e/f/g/h", "a/b/c/d/e/f"),
])
def test_api_templates_keep_words_and_hide_ids(path: str, template: str) -> None:
    assert metrics.api_template(path) == template


def test_unknown_errcodes_share_one_label() -> None:
    assert metrics.errcode_label(43101) == "43101"
    assert metrics.errcode_label(0) == "0"
    assert metrics.errcode_label(987654) == metrics.errcode_label(-42) == "other"
    assert metrics.errcode_label(None) == "none"


def test_job_runs_are_counted_by_outcome_and_timed(app: Flask) -> None:
    name = f"test-job-{uuid.uuid4().hex[:8]}"
    now = datetime.now().astimezone()

    def failing(_app: Flask, _now: datetime) -> None:
        raise RuntimeError("boom")

    assert scheduler.run_job(app, name, lambda _app, _now: {"done": 1}, now) == {"done": 1}
    assert scheduler.run_job(app, name, lambda _app, _now: None, now) is None
    assert scheduler.run_job(app, name, failing, now) is None
    for outcome in ("done", "skipped", "failed"):
        assert sample("referral_scheduler_job_runs_total", job=name, outcome=outcome) == 1
    assert sample("referral_scheduler_job_duration_seconds_count", job=name) == 3
    assert sample("referral_scheduler_job_last_success_timestamp_seconds", job=name) > 0


def test_a_real_job_is_counted_through_the_scheduler(app: Flask) -> None:
    before = sample("referral_scheduler_job_runs_total", job="notifications", outcome="done")
    scheduler.run_job(app, "notifications", scheduler.notifications_job)
    assert sample("referral_scheduler_job_runs_total", job="notifications", outcome="done") == before + 1


def _queue_messages(app: Flask, member_id: int, states: list[OutboxState]) -> None:
    with app.app_context():
        sess = db.session()
        for state in states:
            sess.add(OutboxMessage(key=f"test:{uuid.uuid4().hex}", event=NotifyEvent.order_shipped, member_id=member_id, template_id="T", state=state))
        db.commit()


def test_the_outbox_backlog_is_read_when_scraped(app: Flask, client: FlaskClient, wx_login: Callable[..., dict[str, Any]]) -> None:
    member_id = wx_login("carol")["user"]["id"]
    _queue_messages(app, member_id, [OutboxState.queued, OutboxState.queued, OutboxState.sending, OutboxState.sent, OutboxState.dropped, OutboxState.failed])
    [backlog] = scraped(client)["referral_outbox_backlog"]
    assert backlog.labels == {"outbox": "notifications"} and backlog.value == 3


def test_the_job_queue_is_counted_by_state_when_scraped(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        for n, state in enumerate([JobState.queued, JobState.queued, JobState.running, JobState.failed]):
            db.session().add(Job(kind="order-points", ref=str(n), state=state))
        db.commit()
    samples = {s.labels["state"]: s.value for s in scraped(client)["referral_jobs"]}
    assert samples == {"queued": 2, "running": 1, "failed": 1}


def test_the_backlog_is_remembered_for_a_few_seconds(app: Flask, wx_login: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    member_id = wx_login("dave")["user"]["id"]
    clock = [1000.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    collector = metrics.OutboxBacklog(app.extensions["db_engine"], ttl=5.0)
    assert collector.value() == 0
    _queue_messages(app, member_id, [OutboxState.queued])
    clock[0] += 4.9
    assert collector.value() == 0
    clock[0] += 0.2
    assert collector.value() == 1


def test_a_backlog_that_cannot_be_read_leaves_the_other_figures(app: Flask) -> None:
    class Broken:
        def connect(self) -> Any:
            raise RuntimeError("database away")

    collector = metrics.OutboxBacklog(Broken(), ttl=0)  # type: ignore[arg-type]  # stands in for the engine
    assert list(collector.collect()) == []
    assert b"referral_http_request_duration_seconds" in metrics.scrape(collector)


# -- several processes ---------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from server import create_app, scheduler
    from tests.conftest import make_config

    class Sandbox:
        base_url = sys.argv[2]

    app = create_app(make_config(sys.argv[1], Sandbox()))
    client = app.test_client()
    if sys.argv[3] == "work":
        assert client.get("/healthz").status_code == 200
        scheduler.run_job(app, "multiprocess-test", lambda _app, _now: {"ok": 1})
    else:
        sys.stdout.write(client.get("/metrics").get_data(as_text=True))
    """
)


def test_processes_sharing_a_directory_are_scraped_together(database_url: str, sandbox: Any, tmp_path: Path) -> None:
    """Two processes count (a web worker's request, the scheduler's job run); a third answers /metrics with both."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def child(role: str) -> str:
        done = subprocess.run([sys.executable, "-c", _CHILD, database_url, sandbox.base_url, role], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    child("work")
    child("work")
    families = {f.name: f.samples for f in text_string_to_metric_families(child("scrape"))}
    [runs] = [s for s in families["referral_scheduler_job_runs"] if s.name.endswith("_total") and s.labels["job"] == "multiprocess-test"]
    assert runs.value == 2
    [healthz] = [
        s for s in families["referral_http_request_duration_seconds"]
        if s.name.endswith("_count") and s.labels["route"] == "/healthz"
    ]
    assert healthz.value == 2
    assert len(list(tmp_path.glob("*.db"))) >= 2


def test_gunicorn_keeps_a_running_process_files_and_marks_dead_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("LOG_FORMAT", "text")  # gunicorn's own lines are test_logs.py's business
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout.strip()
    conf["on_starting"](None)  # creates the directory
    directory = tmp_path / "metrics"
    for name in (f"counter_{dead}.db", f"histogram_{dead}.db", f"counter_{os.getpid()}.db", f"gauge_livesum_{os.getpid()}.db", "notes.txt"):
        (directory / name).write_bytes(b"")
    conf["on_starting"](None)
    assert sorted(p.name for p in directory.iterdir()) == sorted([f"counter_{os.getpid()}.db", f"gauge_livesum_{os.getpid()}.db", "notes.txt"])

    class Worker:
        pid = os.getpid()

    conf["child_exit"](None, Worker())
    assert sorted(p.name for p in directory.iterdir()) == sorted([f"counter_{os.getpid()}.db", "notes.txt"])
