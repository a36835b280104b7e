"""What the request observer (request id, timing, metrics) and the access line cost per request.

One app in one process, on a temporary SQLite database; the Flask test client sends GET requests to a
route that returns a constant and to /healthz (one ``SELECT 1``), in interleaved rounds, each round with
one of four set-ups in turn: the bare Flask app (observer taken off), the observer with no log handler,
the observer with the JSON access line written to /dev/null, the same with a text line. CPU time of this
process per request, so other processes on the machine disturb it less than wall time would.

    .venv/bin/python bench/observer_bench.py [--requests 500] [--rounds 30]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import create_app, logs, metrics  # noqa: E402
from server.config import TestingConfig  # noqa: E402

SETUPS = ("bare", "metrics", "json", "text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per round and set-up")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    config = TestingConfig()
    config.DATABASE_URL = f"sqlite:///{tempfile.mkdtemp(prefix='observer-bench-')}/bench.db"
    app = create_app(config)

    @app.get("/bench-constant")
    def constant() -> str:
        return "ok"

    observer = app.wsgi_app
    assert isinstance(observer, metrics.RequestObserver)
    note_route = app.teardown_request_funcs[None][-1]
    devnull = open(os.devnull, "w")
    root = logging.getLogger()

    def use(setup: str) -> None:
        root.handlers = []
        root.setLevel(logging.WARNING)
        hooks = app.teardown_request_funcs[None]
        if note_route in hooks:
            hooks.remove(note_route)
        if setup == "bare":
            app.wsgi_app = observer.wsgi_app  # type: ignore[method-assign]  # the app as it was before the observer
            return
        hooks.append(note_route)
        app.wsgi_app = observer  # type: ignore[method-assign]
        if setup in ("json", "text"):
            logs.configure("INFO", setup, devnull)

    client = app.test_client()
    for path in ("/bench-constant", "/healthz"):
        times: dict[str, list[float]] = {setup: [] for setup in SETUPS}
        for setup in SETUPS:  # warm up
            use(setup)
            for _ in range(200):
                client.get(path)
        for _ in range(args.rounds):
            for setup in SETUPS:
                use(setup)
                began = time.process_time()
                for _ in range(args.requests):
                    client.get(path)
                times[setup].append((time.process_time() - began) / args.requests * 1e6)
        bare: Any = statistics.median(times["bare"])
        print(f"{path}")
        for setup in SETUPS:
            median = statistics.median(times[setup])
            print(f"  {setup:8} min {min(times[setup]):7.1f} µs  median {median:7.1f} µs  (+{median - bare:5.1f} µs)")
    use("bare")


if __name__ == "__main__":
    main()
