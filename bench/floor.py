"""The floor under the wrk ratios: what one or two primary-key reads cost a Flask app on this stack, by layer.

A Flask app served by ``gunicorn -c gunicorn.conf.py`` like the app, with a route per layer:

- ``/bare``: ``bare.py``'s envelope;
- ``/one``, ``/two``: the same after one or two ``SELECT id, nickname FROM members WHERE id = …`` through
  PyMySQL itself (a connection per thread, autocommit, nothing else);
- ``/core-one``, ``/core-two``: the same statement through SQLAlchemy Core on the app's own engine
  (``server.db.make_engine``: its pool and its hooks), the transaction committed, as the app ends a request;
- ``/orm-one``, ``/orm-two``: ``Session.get(Member, …)`` through the ORM with the app's ``Member`` model, in
  a session made as the app's (``expire_on_commit=False``, without the app's savepoint bookkeeping),
  committed (the second read refreshes the row, as a second statement would).

Nothing else is done: no sign-in, no metrics, no logging. Each route against ``/bare`` is the most a path that
reads the database that way once or twice per request can reach.

    .venv/bin/python bench/floor.py --database-url 'mysql+pymysql://referral:referral@127.0.0.1:3306/referral_bench?charset=utf8mb4' \\
        [--rounds 4] [--duration 8] [--workers 3] [--threads 4]

The database is emptied and migrated, and one member is written. The app is then served alone under gunicorn,
and wrk (``-t2 -c16``) runs every route for ``--duration`` seconds a round, in an order reversed every round.
The script prints each route's median requests a second and the median of its rounds' ratios to that round's
``/bare``. Needs ``wrk`` on the PATH.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flask import Flask, Response, jsonify  # noqa: E402

#: The member every route reads.
MEMBER_ID = 1
ROUTES = ("/bare", "/one", "/two", "/core-one", "/core-two", "/orm-one", "/orm-two")


def create_app() -> Flask:
    """The floor app on ``FLOOR_DATABASE_URL`` (a ``mysql+pymysql://`` URL)."""
    import pymysql
    from sqlalchemy import bindparam, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.orm import Session, sessionmaker

    from server.accounts.models import Member
    from server.db import make_engine

    url = os.environ["FLOOR_DATABASE_URL"]
    parts = make_url(url)
    engine = make_engine(url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    statement = select(Member.id, Member.nickname).where(Member.id == bindparam("id"))
    local = threading.local()
    #: Every thread's own PyMySQL connection, so whoever built the app can close them (``close``).
    opened: list[Any] = []

    def connection() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = pymysql.connect(
                host=parts.host, port=parts.port or 3306, user=parts.username, password=parts.password, database=parts.database,
                charset="utf8mb4", autocommit=True,
            )
            opened.append(conn)
        return conn

    def raw(times: int) -> Any:
        row = None
        with connection().cursor() as cur:
            for _ in range(times):
                cur.execute("SELECT id, nickname FROM members WHERE id = %s", (MEMBER_ID,))
                row = cur.fetchone()
        return row[0] if row else None

    def core(times: int) -> Any:
        row = None
        with engine.connect() as conn:
            for _ in range(times):
                row = conn.execute(statement, {"id": MEMBER_ID}).first()
            conn.commit()
        return row[0] if row else None

    def orm(times: int) -> Any:
        sess: Session = sessions()
        try:
            member = sess.get(Member, MEMBER_ID)
            if times > 1:
                member = sess.get(Member, MEMBER_ID, populate_existing=True)
            sess.commit()
        finally:
            sess.close()
        return member.id if member else None

    app = Flask("floor")
    app.extensions["db_engine"] = engine
    app.extensions["floor_connections"] = opened

    def answer(value: Any) -> Response:
        return jsonify({"code": 0, "message": "ok", "data": {"id": value}})

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok")

    @app.get("/bare")
    def bare() -> Response:
        return jsonify({"code": 0, "message": "ok", "data": {"ok": True}})

    app.add_url_rule("/one", "one", lambda: answer(raw(1)))
    app.add_url_rule("/two", "two", lambda: answer(raw(2)))
    app.add_url_rule("/core-one", "core_one", lambda: answer(core(1)))
    app.add_url_rule("/core-two", "core_two", lambda: answer(core(2)))
    app.add_url_rule("/orm-one", "orm_one", lambda: answer(orm(1)))
    app.add_url_rule("/orm-two", "orm_two", lambda: answer(orm(2)))
    return app


def close(app: Flask) -> None:
    """Close what ``create_app``'s app opened: the PyMySQL connections of its threads and its engine's pool."""
    for conn in app.extensions["floor_connections"]:
        conn.close()
    app.extensions["db_engine"].dispose()


def _prepare(url: str, workdir: Path) -> str:
    """Empty and migrate the database at ``url`` and write the member the routes read; its version."""
    from sqlalchemy import delete

    from servers import bench_env, config_from, fresh_database

    from server import create_app as create_server, db, migrate
    from server.accounts.models import Member

    version = fresh_database(url)
    config = config_from(bench_env(str(workdir), url))
    config.JOB_DRAINERS = 0
    app = create_server(config)
    migrate.upgrade(app)
    with app.app_context():
        sess = db.session()
        sess.execute(delete(Member).where(Member.id == MEMBER_ID))
        sess.add(Member(id=MEMBER_ID, openid="floor-member", nickname="floor"))
        db.commit()
    app.extensions["db_engine"].dispose()
    return version


def main() -> int:
    from servers import NOT_INHERITED, WRK_MISSING, Gunicorn, load_average, raw_request, run_wrk

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"), required="BENCH_DATABASE_URL" not in os.environ,
                        help="a mysql+pymysql:// URL; emptied and migrated (default: BENCH_DATABASE_URL)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY") or (os.cpu_count() or 1) + 1))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GUNICORN_THREADS") or 4))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    if not args.database_url.startswith("mysql+pymysql://"):
        print("--database-url must be a mysql+pymysql:// URL", file=sys.stderr)
        return 2

    rates: dict[str, list[float]] = {route: [] for route in ROUTES}
    ratios: dict[str, list[float]] = {route: [] for route in ROUTES}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        workdir = Path(tmp)
        version = _prepare(args.database_url, workdir)
        print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; database {version}; gunicorn -w {args.workers} --threads {args.threads}; wrk -t2 -c16, {args.rounds} rounds of {args.duration:g} s")
        print(f"load average at the start: {load_average()}", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
        env |= {"FLOOR_DATABASE_URL": args.database_url, "LOG_FORMAT": "text"}
        server = Gunicorn("floor:create_app()", env=env, workers=args.workers, threads=args.threads, log=workdir / "floor.log", pythonpath=ROOT / "bench")
        try:
            server.wait_ready()
            for route in ROUTES:  # every worker's connections and pool opened before the first round
                run_wrk(server.base, [raw_request("GET", route)], 1, workdir)
            for n in range(args.rounds):
                order = ROUTES if n % 2 == 0 else tuple(reversed(ROUTES))
                found = {route: run_wrk(server.base, [raw_request("GET", route)], args.duration, workdir) for route in order}
                failed = [route for route, run in found.items() if run.errors]
                if failed:
                    raise RuntimeError(f"requests failed on {', '.join(failed)}; the server's log ends: {server.log.read_text()[-2000:]}")
                for route, run in found.items():
                    rates[route].append(run.rate)
                    ratios[route].append(run.rate / found["/bare"].rate)
                print(f"  round {n + 1}: " + ", ".join(f"{route} {found[route].rate:,.0f}" for route in ROUTES) + f" (load {load_average()})", flush=True)
        finally:
            server.stop()
    print()
    print(f"{'route':<10} {'req/s (median)':>15} {'ratio to /bare (median of rounds)':>35}")
    for route in ROUTES:
        print(f"{route:<10} {statistics.median(rates[route]):>15,.0f} {statistics.median(ratios[route]):>34.2f}×")
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
