"""Prometheus metrics, the request id and the access line of every request.

The metrics (``prometheus-client``) are declared here, once per process, and counted where things
happen: requests by ``RequestObserver``, WeChat calls in ``server.wechat.client``, notifications in
``server.notifications.delivery``, scheduled jobs in ``server.scheduler``, queued jobs in ``server.jobs.queue``. Every label comes from a
small fixed set (a route's rule, never its path; a known WeChat errcode or ``other``), so a client
cannot make the series grow.

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py prepares it), every process of the host
(each gunicorn worker and the scheduler) writes its figures to files there and ``GET /metrics`` adds
them up; without it a process answers with its own. The outbox backlog is read from the database
when scraped (one indexed count, remembered for a few seconds), and so is the job queue by state.

``GET /metrics`` answers only a client address in ``METRICS_ALLOWED_IPS`` or a request bearing
``METRICS_TOKEN``; to anyone else it is the app's 404 for a path it does not have, and as it is
answered here, in front of the app's routing, no other method reveals it either.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from flask import Flask, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from server import logs
from server.api import forwarded_client
from server.jobs.queries import job_counts
from server.notifications.queries import backlog

NAMESPACE = "referral"

REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time to answer a request, by route (the URL rule, not the path), method and status class.",
    ["route", "method", "status"],
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
NOTIFICATIONS = Counter(
    "notifications",
    "Outbox messages by what became of a send: sent, retried, dropped or failed (given up), with the reason code.",
    ["outcome", "reason"],
    namespace=NAMESPACE,
)
WECHAT_REQUESTS = Counter(
    "wechat_requests",
    "Calls to WeChat's APIs, WeChat Pay's included, by path template and errcode (0 when it answered; WeChat Pay's "
    "error code; timeout, network, http_5xx … when there was none).",
    ["api", "errcode"],
    namespace=NAMESPACE,
)
WECHAT_SECONDS = Histogram(
    "wechat_request_duration_seconds",
    "Time WeChat took to answer, by path template.",
    ["api"],
    namespace=NAMESPACE,
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOB_RUNS = Counter(
    "scheduler_job_runs",
    "Scheduled job runs by job and outcome: done, skipped (period taken or nothing due) or failed.",
    ["job", "outcome"],
    namespace=NAMESPACE,
)
JOB_SECONDS = Histogram(
    "scheduler_job_duration_seconds",
    "How long each scheduled job ran.",
    ["job"],
    namespace=NAMESPACE,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
)
QUEUED_JOBS = Counter(
    "queued_jobs",
    "Runs of jobs from the durable queue by kind and outcome: done, retried (put back after a backoff) or failed (given up).",
    ["kind", "outcome"],
    namespace=NAMESPACE,
)
QUEUED_JOB_SECONDS = Histogram(
    "queued_job_duration_seconds",
    "How long each run of a queued job took, its commit included.",
    ["kind"],
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
)
JOB_LAST_SUCCESS = Gauge(
    "scheduler_job_last_success_timestamp_seconds",
    "When each job last ran to its end (Unix time).",
    ["job"],
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",
)

#: HTTP methods counted by name; any other is ``OTHER``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request no rule matched (404, or a 405 before matching).
UNMATCHED = "unmatched"
#: Where the request's matched rule is left in the WSGI environ for the observer.
ROUTE_KEY = "referral.route"

#: WeChat errcodes counted by number: the ones our calls meet (busy, tokens, quotas, subscribe and
#: template refusals, codes). Any other is ``other``, so an upstream answer cannot grow the series.
WECHAT_ERRCODES = frozenset({
    -1, 0, 40001, 40002, 40003, 40013, 40014, 40029, 40037, 40125, 40163, 40164, 40226, 41001, 41002, 41004,
    41008, 41030, 42001, 43004, 43101, 44002, 45009, 45011, 47001, 47003, 48001, 61024, 85096, 89503,
})

#: WeChat Pay's error codes (v2 ``err_code``/``return_code``, v3 ``code``) counted by name; any other is ``other``.
WECHAT_PAY_CODES = frozenset({
    "ORDERPAID", "ORDERCLOSED", "ORDER_CLOSED", "ORDERNOTEXIST", "ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS", "SYSTEMERROR",
    "SYSTEM_ERROR", "BANKERROR", "FREQUENCY_LIMITED", "FREQ_LIMIT", "PARAM_ERROR", "INVALID_REQUEST", "SIGN_ERROR", "SIGNERROR",
    "NOAUTH", "NO_AUTH", "NOTENOUGH", "NOT_ENOUGH", "OUT_TRADE_NO_USED", "APPID_MCHID_NOT_MATCH", "MCH_NOT_EXISTS",
    "USER_ACCOUNT_ABNORMAL", "BIZERR_NEED_RETRY", "ERROR", "FAIL", "INVALID_TRANSACTIONID", "REFUNDNOTEXIST", "XML_FORMAT_ERROR",
})
#: A path segment kept as it is in a template: lower-case words such as ``cgi-bin`` or ``oauth2``.
_WORD = re.compile(r"[a-z][a-z0-9_.-]{0,39}")
#: A segment that holds an id or a token however it is spelled: a run of digits or a long mixed run.
_ID_LIKE = re.compile(r"[0-9]{3,}|[A-Za-z0-9_-]{24,}")
#: Segments kept in a template; deeper paths are cut (no WeChat API we call is deeper).
MAX_SEGMENTS = 6

#: Seconds the outbox backlog read at one scrape is reused by the next.
BACKLOG_TTL = 5.0

access_log = logging.getLogger("server.access")


def multiprocess_dir() -> str | None:
    """Where this host's processes keep their figures, if they share them."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def errcode_label(errcode: int | None) -> str:
    """A WeChat errcode as a label: its number when known, else ``other`` (``none`` for no errcode)."""
    if errcode is None:
        return "none"
    return str(errcode) if errcode in WECHAT_ERRCODES else "other"


def pay_code_label(code: str) -> str:
    """A WeChat Pay error code as a label: its name when known, else ``other``."""
    return code if code in WECHAT_PAY_CODES else "other"


def api_template(path: str) -> str:
    """A WeChat API path as a label: its words kept, anything that looks like an id or token ``{id}``."""
    segments = [s for s in path.split("?", 1)[0].split("/") if s][:MAX_SEGMENTS]
    return "/".join(s if _WORD.fullmatch(s) and not _ID_LIKE.search(s) else "{id}" for s in segments) or "/"


def count_wechat(path: str, errcode: str, seconds: float | None) -> None:
    """Count one WeChat call to ``path`` that ended with ``errcode`` (a label), and its time when it was answered."""
    api = api_template(path)
    WECHAT_REQUESTS.labels(api, errcode).inc()
    if seconds is not None:
        WECHAT_SECONDS.labels(api).observe(seconds)


def count_notification(outcome: str, reason: str) -> None:
    """Count what became of one send of an outbox message."""
    NOTIFICATIONS.labels(outcome, reason).inc()


def count_job(job: str, outcome: str, seconds: float) -> None:
    """Count one run of a scheduled job."""
    JOB_RUNS.labels(job, outcome).inc()
    JOB_SECONDS.labels(job).observe(seconds)
    if outcome != "failed":
        JOB_LAST_SUCCESS.labels(job).set(time.time())


def count_queued_job(kind: str, outcome: str, seconds: float) -> None:
    """Count one run of a job from the durable queue (server/jobs)."""
    QUEUED_JOBS.labels(kind, outcome).inc()
    QUEUED_JOB_SECONDS.labels(kind).observe(seconds)


class OutboxBacklog(Collector):
    """The messages still to be sent, counted in the database when scraped, remembered ``BACKLOG_TTL`` seconds."""

    def __init__(self, engine: Engine, ttl: float = BACKLOG_TTL) -> None:
        self.engine = engine
        self.ttl = ttl
        self._read_at = float("-inf")
        self._value = 0
        self._lock = threading.Lock()

    def value(self) -> int:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                with Session(self.engine) as sess:
                    self._value = backlog(sess)
                self._read_at = time.monotonic()
            return self._value

    def collect(self) -> Iterator[Metric]:
        try:
            value = self.value()
        except Exception as error:  # a scrape must still answer the other figures
            logging.getLogger(__name__).warning("outbox backlog not read: %s", type(error).__name__)
            return
        family = GaugeMetricFamily(f"{NAMESPACE}_outbox_backlog", "Outbox messages still to be sent (queued or being sent).", labels=["outbox"])
        family.add_metric(["notifications"], value)
        yield family


class JobQueue(Collector):
    """The durable job queue by state (queued, running, failed), counted when scraped, remembered ``ttl`` seconds."""

    def __init__(self, engine: Engine, ttl: float = BACKLOG_TTL) -> None:
        self.engine = engine
        self.ttl = ttl
        self._read_at = float("-inf")
        self._value: dict[str, int] = {}
        self._lock = threading.Lock()

    def value(self) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                with Session(self.engine) as sess:
                    self._value = job_counts(sess)
                self._read_at = time.monotonic()
            return self._value

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.value()
        except Exception as error:  # a scrape must still answer the other figures
            logging.getLogger(__name__).warning("job queue not read: %s", type(error).__name__)
            return
        family = GaugeMetricFamily(f"{NAMESPACE}_jobs", "Jobs in the durable queue by state: queued, running, failed (given up).", labels=["state"])
        for state, number in counts.items():
            family.add_metric([state], number)
        yield family


class _ThisProcess(Collector):
    """The figures of this process alone (no shared directory): what the default registry holds."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape(*database_collectors: Collector) -> bytes:
    """The text exposition of every figure: all processes' when they share a directory, else this one's,
    and the figures read from the database (the backlogs)."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir()
    if path is not None:
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ThisProcess())
    for collector in database_collectors:
        registry.register(collector)
    return generate_latest(registry)


StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class RequestObserver:
    """WSGI middleware around the app: request id, the request's time and status, the access line, GET /metrics.

    It wraps Flask's whole ``wsgi_app``, so the time includes the request's teardown (the session's
    rollback and close) and every answer is counted, the errors Flask renders included.
    """

    def __init__(self, app: Flask, wsgi_app: WSGIApp) -> None:
        self.wsgi_app = wsgi_app
        self.hops = int(app.config["TRUSTED_PROXIES"])
        self.allowed = tuple(ipaddress.ip_network(n, strict=False) for n in app.config["METRICS_ALLOWED_IPS"])
        self.token = app.config["METRICS_TOKEN"].encode()
        self.backlog = OutboxBacklog(app.extensions["db_engine"])
        self.jobs = JobQueue(app.extensions["db_engine"])

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        rid = logs.valid_request_id(environ.get("HTTP_X_REQUEST_ID")) or logs.new_request_id()
        if environ.get("PATH_INFO") == "/metrics" and environ.get("REQUEST_METHOD") == "GET" and self.may_scrape(environ):
            body = scrape(self.backlog, self.jobs)
            start_response("200 OK", [
                ("Content-Type", CONTENT_TYPE_PLAIN_0_0_4),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("X-Request-Id", rid),
            ])
            return [body]
        status: list[str] = []

        def start(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[:] = [code]
            headers.append(("X-Request-Id", rid))
            return start_response(code, headers, exc_info) if exc_info else start_response(code, headers)

        token = logs.request_id.set(rid)
        began = time.perf_counter()
        try:
            return self.wsgi_app(environ, start)
        finally:
            self.observe(environ, int(status[0][:3]) if status else 500, time.perf_counter() - began)
            logs.request_id.reset(token)

    def may_scrape(self, environ: dict[str, Any]) -> bool:
        """A bearer of METRICS_TOKEN, or a client address in METRICS_ALLOWED_IPS."""
        if self.token:
            given = environ.get("HTTP_AUTHORIZATION", "")
            if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), self.token):
                return True
        address = forwarded_client(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.hops)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # an IPv4 client of a server listening on [::]
        return any(ip in network for network in self.allowed)

    def observe(self, environ: dict[str, Any], status: int, seconds: float) -> None:
        """Count the request and write its access line."""
        route = environ.get(ROUTE_KEY) or UNMATCHED
        method = environ.get("REQUEST_METHOD", "")
        if method not in METHODS:
            method = "OTHER"
        REQUEST_SECONDS.labels(route, method, f"{status // 100}xx").observe(seconds)
        if access_log.isEnabledFor(logging.INFO):
            path = environ.get("PATH_INFO", "")
            duration_ms = round(seconds * 1000, 1)
            access_log.info(
                "%s %s %s %.1f ms",
                method,
                path,
                status,
                duration_ms,
                extra={
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "client": forwarded_client(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.hops),
                },
            )


def init_app(app: Flask) -> None:
    """Put the observer in front of the app (after the database is set up: it reads the backlog from it)."""
    path = multiprocess_dir()
    if path is not None:
        # prometheus-client writes a process's first figure into it; the scheduler may start before gunicorn makes it.
        os.makedirs(path, exist_ok=True)
    app.wsgi_app = RequestObserver(app, app.wsgi_app)  # type: ignore[method-assign]  # Flask's documented way to add WSGI middleware

    @app.teardown_request
    def _note_route(_exc: BaseException | None) -> None:
        # The rule routing matched, for the observer, which sees the request only after its context is gone.
        if request.url_rule is not None:
            request.environ[ROUTE_KEY] = request.url_rule.rule
