"""What the benchmarks that serve the app over HTTP share: the app and a baseline under gunicorn on loopback,
wrk sending prepared raw requests, interleaved rounds of baseline and app, and their medians and ratio.

``run.py`` (the issue's figures), ``hot_paths_bench.py`` and ``notify_bench.py`` import it from ``bench/``:

    servers = Servers.start(env, workers=3, threads=4, workdir=tmp)   # the app and bench/bare.py, both answering /healthz
    apps, bares = interleaved(servers, rounds=3, duration=10, workdir=tmp, app_batch=lambda n: [raw_request("GET", "/api/v1/me", headers)])
    figures = summarize(apps, bares)                                  # medians over the rounds, the median of each round's app/bare
"""
from __future__ import annotations

import functools
import json
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

#: wrk's load: the issue's 16 connections from 2 threads.
CONNECTIONS = 16
WRK_THREADS = 2
#: How long gunicorn may take to answer ``/healthz``.
STARTUP_SECONDS = 60
WRK_MISSING = "wrk is not installed: sudo apt-get install wrk (Debian, Ubuntu) or brew install wrk (macOS)"
APP = "server:create_app()"
#: ``bench/bare.py``: a trivial JSON envelope on any GET, the body read and 204 on a pay notification.
BARE = "bare:create_app()"
#: Variables of the caller's environment the servers never inherit: the bench sets its own.
NOT_INHERITED = ("WECHAT_", "DATABASE_URL", "REDIS_URL", "GUNICORN_", "WEB_CONCURRENCY", "PROMETHEUS_")


# -- figures -------------------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def load1() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as ``uptime`` prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the environment -----------------------------------------------------------------------------------


def bench_env(tmp: str, database_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of the servers and of the in-process app: this process's, less what the bench sets
    (``NOT_INHERITED``), on ``database_url``, with the WeChat sandbox's keys in ``tmp``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
    env |= {
        "DATABASE_URL": database_url, "APP_ENV": "development", "WECHAT_SANDBOX": "1", "WECHAT_PAY_SANDBOX_KEY_DIR": f"{tmp}/keys",
        "SECRET_KEY": "bench-only-secret", "LOG_LEVEL": "WARNING",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env | extra


def config_from(env: dict[str, str]) -> Any:
    """The app's ``Config`` as the servers will read it from ``env`` (this process's environment is put back)."""
    from server.config import Config

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return Config()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def fresh_database(url: str) -> str:
    """Empty the database at ``url`` (every table it holds, whichever code made them) and describe it."""
    from sqlalchemy import MetaData, create_engine, text

    engine = create_engine(url)
    found = MetaData()
    found.reflect(engine)
    found.drop_all(engine)
    with engine.begin() as conn:
        version = conn.execute(text("SELECT VERSION()")).scalar() if engine.dialect.name == "mysql" else f"SQLite {conn.execute(text('select sqlite_version()')).scalar()}"
    engine.dispose()
    return str(version)


# -- servers -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gunicorn:
    """A gunicorn this process started (gunicorn.conf.py, with the given workers and threads), stopped by its own handle."""

    def __init__(self, target: str, *, env: dict[str, str], workers: int, threads: int, log: Path, pythonpath: Path | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [
            str(Path(sys.executable).with_name("gunicorn")), "-c", str(ROOT / "gunicorn.conf.py"),
            "-w", str(workers), "--threads", str(threads), "-b", f"127.0.0.1:{self.port}",
            # No worker is replaced in the middle of a measurement.
            "--max-requests", "0", "--log-level", "warning",
        ]
        if pythonpath is not None:
            command += ["--pythonpath", str(pythonpath)]
        self.log = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(command + [target], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        """Return once ``/healthz`` answers 200; raise if gunicorn exits or stays silent for ``STARTUP_SECONDS``."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {STARTUP_SECONDS}s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@dataclass
class Servers:
    """The app and its baseline under gunicorn with the same workers and threads."""

    app: Gunicorn
    bare: Gunicorn

    @classmethod
    def start(cls, env: dict[str, str], *, workers: int, threads: int, workdir: Path, bare: str = BARE) -> Servers:
        """Start the app and the baseline (``bench/bare.py`` unless ``bare`` names another app of ``bench/``),
        logging to ``app.log`` and ``bare.log`` in ``workdir``, and wait until both answer."""
        started = cls(
            app=Gunicorn(APP, env=env, workers=workers, threads=threads, log=workdir / "app.log"),
            bare=Gunicorn(bare, env=env, workers=workers, threads=threads, log=workdir / "bare.log", pythonpath=BENCH),
        )
        try:
            started.app.wait_ready()
            started.bare.wait_ready()
        except BaseException:
            started.stop()
            raise
        return started

    def stop(self) -> None:
        self.app.stop()
        self.bare.stop()


# -- wrk -----------------------------------------------------------------------------------------------

#: Reads the prepared requests (``<length>\n<raw HTTP request>`` after one another), gives each wrk thread
#: every n-th one, sends them in turn (starting over at the end), and prints the figures as JSON.
WRK_SCRIPT = """
local FILE = %(file)s
local THREADS = %(threads)d
local threads = {}
local count = 0

function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  pool = {}
  local f = assert(io.open(FILE, "rb"))
  local data = f:read("*a")
  f:close()
  local pos, i = 1, 0
  while pos <= #data do
    local nl = data:find("\\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    if i %% THREADS == tid then pool[#pool + 1] = data:sub(nl + 1, nl + len) end
    pos = nl + 1 + len
    i = i + 1
  end
  sent = 0
end

function request()
  sent = sent + 1
  return pool[(sent - 1) %% #pool + 1]
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (thread:get("sent") or 0) end
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "mean_us": %%d, "errors": %%d, "non_2xx": %%d, "sent": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), math.floor(latency.mean),
    e.connect + e.read + e.write + e.status + e.timeout, e.status, total))
end
"""


@dataclass
class Wrk:
    """One wrk run: requests answered per second, latencies in ms, errors and what the Lua script sent."""

    rate: float
    p50: float
    p99: float
    mean: float
    requests: int
    #: Socket errors, timeouts and answers other than 2xx or 3xx.
    errors: int
    #: Of those, the answers other than 2xx or 3xx.
    non_2xx: int
    sent: int
    #: The 1-minute load average right after the run.
    load: float


def raw_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """The HTTP/1.1 request wrk sends as it is."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items() if name.lower() not in ("host", "content-length")]
    if method != "GET" or body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run_wrk(base: str, batch: list[bytes], duration: float, workdir: Path, connections: int = CONNECTIONS) -> Wrk:
    """wrk (``WRK_THREADS`` threads, ``connections`` connections) on ``base`` for ``duration`` seconds,
    sending the requests of ``batch`` in turn."""
    if not batch:
        raise ValueError("nothing to send")
    while len(batch) < WRK_THREADS:
        batch = batch + batch
    requests_file = workdir / f"requests-{secrets.token_hex(4)}.bin"
    with requests_file.open("wb") as out:
        for item in batch:
            out.write(b"%d\n" % len(item) + item)
    script = workdir / (requests_file.stem + ".lua")
    script.write_text(WRK_SCRIPT % {"file": json.dumps(str(requests_file)), "threads": WRK_THREADS})
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(script), base]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK ")), None)
    requests_file.unlink()
    script.unlink()
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-1000:]} {done.stderr[-1000:]}")
    figures = json.loads(line[4:])
    seconds = figures["duration_us"] / 1e6
    answered = figures["requests"] - figures["errors"]
    return Wrk(
        rate=answered / seconds, p50=figures["p50_us"] / 1000, p99=figures["p99_us"] / 1000, mean=figures["mean_us"] / 1000,
        requests=figures["requests"], errors=figures["errors"], non_2xx=figures["non_2xx"], sent=figures["sent"], load=load1(),
    )


# -- rounds --------------------------------------------------------------------------------------------


def round_order(n: int) -> tuple[str, str]:
    """Who runs first in round ``n``: the baseline in even rounds, the app in odd ones."""
    return ("bare", "app") if n % 2 == 0 else ("app", "bare")


def interleaved_round(servers: Servers, n: int, app_batch: list[bytes], bare_batch: list[bytes], duration: float, workdir: Path,
                      *, connections: int = CONNECTIONS, after_app: Callable[[Wrk, float], bool] | None = None) -> tuple[Wrk, Wrk, bool]:
    """Round ``n``: the baseline then the app, the other way round in every second round, so a busy moment of a
    shared machine falls on both. ``after_app(run, started)`` sees the app's run (``started``: its
    ``time.monotonic()``) and says whether to keep it. Returns the app's run, the baseline's and that answer."""
    runs: dict[str, Wrk] = {}
    kept = True
    for target in round_order(n):
        if target == "bare":
            runs["bare"] = run_wrk(servers.bare.base, bare_batch, duration, workdir, connections)
        else:
            started = time.monotonic()
            runs["app"] = run_wrk(servers.app.base, app_batch, duration, workdir, connections)
            if after_app is not None:
                kept = after_app(runs["app"], started)
    return runs["app"], runs["bare"], kept


def interleaved(servers: Servers, rounds: int, duration: float, workdir: Path, app_batch: Callable[[int], list[bytes]],
                bare_batch: Callable[[int], list[bytes]] | None = None, after_app: Callable[[int, Wrk, float], bool] | None = None,
                *, connections: int = CONNECTIONS) -> tuple[list[Wrk], list[Wrk]]:
    """``rounds`` interleaved rounds (``interleaved_round``) of the requests ``app_batch(n)`` (the baseline gets
    ``bare_batch(n)``, else the same). ``after_app`` may refuse the app's run (say, it ran out of fresh
    requests): the round is run again, at most twice more. The app's runs and the baseline's, a pair a round."""
    apps: list[Wrk] = []
    bares: list[Wrk] = []
    for n in range(rounds):
        for attempt in range(3):
            batch = app_batch(n)
            check = None if after_app is None else functools.partial(after_app, n)
            app, bare, kept = interleaved_round(servers, n, batch, bare_batch(n) if bare_batch else batch, duration, workdir,
                                                connections=connections, after_app=check)
            if kept or attempt == 2:
                apps.append(app)
                bares.append(bare)
                break
    return apps, bares


@dataclass
class Summary:
    """Interleaved rounds in figures: medians over the rounds; the ratio is the median of each round's app/bare."""

    app: float | None
    bare: float | None
    ratio: float | None
    p50: float | None
    p99: float | None
    #: The median 1-minute load average after each run, the app's and the baseline's.
    load: float | None
    #: The app's failed requests over all rounds (``Wrk.errors``).
    errors: int


def summarize(apps: list[Wrk], bares: list[Wrk]) -> Summary:
    """The figures of the paired runs ``apps`` and ``bares`` (one pair a round); latencies are the app's."""
    return Summary(
        app=median([w.rate for w in apps]), bare=median([w.rate for w in bares]),
        ratio=median([a.rate / b.rate for a, b in zip(apps, bares) if b.rate]),
        p50=median([w.p50 for w in apps]), p99=median([w.p99 for w in apps]),
        load=median([w.load for w in apps + bares]), errors=sum(w.errors for w in apps),
    )
