"""gunicorn settings for the web workers: ``gunicorn 'server:create_app()'`` run from the repository reads this file.

Every value can be changed through the environment, so the systemd unit (deploy/systemd) and a
container share one file. The app is not preloaded: each worker builds its own app, database pool
and Redis client after the fork, so no connection is ever shared between processes.

Graceful restart: ``kill -HUP <master>`` (``systemctl reload referral-web``) starts new workers with
the new code and lets the old ones finish their requests for up to ``graceful_timeout`` seconds.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time

from prometheus_client import multiprocess


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


#: Where nginx reaches the workers (deploy/nginx/referral.conf proxies to it); loopback only.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
#: Processes: one per core and one more. Each holds its own database pool (DB_POOL_SIZE).
workers = _int("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1)
#: Threads per process: requests mostly wait on MariaDB, Redis or WeChat, so a few threads each
#: keep the cores busy without the memory of more processes.
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 4)
#: A request that takes longer than this is killed and its worker replaced. WeChat calls time out
#: well before (WECHAT_TIMEOUT), so only a stuck request reaches it.
timeout = _int("GUNICORN_TIMEOUT", 30)
#: On a reload or stop, workers finish what they are doing for this long.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
#: nginx keeps upstream connections open (``keepalive`` in the upstream block); keep ours open longer.
keepalive = _int("GUNICORN_KEEPALIVE", 75)
#: Replace each worker after this many requests (with jitter, so they do not restart together),
#: which bounds the effect of any slow leak.
max_requests = _int("GUNICORN_MAX_REQUESTS", 5000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 500)
#: Heartbeat files on tmpfs, so a slow disk never makes the master think a worker hung.
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
#: Header and request-line limits (the app limits bodies to 2 MiB itself, nginx to 3 MiB).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
#: gunicorn's own X-Forwarded-* handling only for nginx on the same host; the app takes the client
#: address from X-Forwarded-For with TRUSTED_PROXIES hops.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
#: The app writes its own access line for every request (logger ``server.access``: route, status,
#: duration and the request id, in LOG_FORMAT), so gunicorn's is off unless GUNICORN_ACCESS_LOG names a file ("-": stdout).
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}i)s'
proc_name = "referral-web"

#: LOG_FORMAT as the app reads it (server/config.py): json unless APP_ENV=development, whose default is text.
log_format = (os.environ.get("LOG_FORMAT") or ("text" if os.environ.get("APP_ENV", "").strip().lower() == "development" else "json")).strip().lower()


class GunicornJsonFormatter(logging.Formatter):
    """gunicorn's own lines (start, workers booting and exiting, timeouts) as JSON objects like the app's
    (server/logs.py), so every line of the service parses; written here because the master must not
    import the app, or a graceful reload would keep serving the old code's modules."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def _json_lines(server: object) -> None:
    """With LOG_FORMAT=json, gunicorn's handlers write JSON lines (the workers inherit them)."""
    if log_format != "json":
        return
    formatter = GunicornJsonFormatter()
    glog = server.log  # type: ignore[attr-defined]  # gunicorn's Arbiter
    for logger in (glog.error_log, glog.access_log):
        for handler in logger.handlers:
            handler.setFormatter(formatter)


def on_reload(server: object) -> None:
    """A reload (SIGHUP) sets gunicorn's logging up again: JSON again."""
    _json_lines(server)


#: Prometheus multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set (systemd: RuntimeDirectory), each worker
#: and the scheduler write their figures to files there and GET /metrics on any worker adds them up.
#: prometheus-client reads the variable when it is imported, so it must be in the environment of
#: gunicorn and of the scheduler, not set by the app.
metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def on_starting(server: object) -> None:
    """JSON lines when LOG_FORMAT says so; then start from an empty metrics directory: the files of processes
    that are gone (the workers of an earlier run) are removed, those of a running process (the scheduler) kept."""
    _json_lines(server)
    if metrics_dir is None:
        return
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        stem, _, pid = name.removesuffix(".db").rpartition("_")
        if name.endswith(".db") and stem and pid.isdigit() and not _pid_running(int(pid)):
            os.remove(os.path.join(metrics_dir, name))


def child_exit(server: object, worker: object) -> None:
    """A worker ended: its live gauges stop counting (prometheus-client's own bookkeeping); its counters stay summed."""
    if metrics_dir is None:
        return
    multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[attr-defined]  # gunicorn's Worker
