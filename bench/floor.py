"""The floor under the wrk ratios: what one or two primary-key reads cost a Flask app on this stack.

A Flask app with three routes, served by ``gunicorn -c gunicorn.conf.py`` like the app: ``/bare`` answers
``bare.py``'s envelope, ``/one`` the same after one ``SELECT … WHERE id = 1`` on ``members`` through PyMySQL
(a connection per thread, autocommit, no ORM, no sign-in), ``/two`` after two. Nothing else is done, so
``/one`` against ``/bare`` is the most a path that reads the database once per request can reach.

    .venv/bin/gunicorn -c gunicorn.conf.py -w 3 --threads 4 -b 127.0.0.1:8911 --pythonpath bench 'floor:create_app()'
    for p in bare one two; do wrk -t2 -c16 -d8s http://127.0.0.1:8911/$p; done

FLOOR_DATABASE (default ``referral_test_bench``) names the MariaDB database, as user ``referral`` on loopback.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import pymysql
from flask import Flask, Response, jsonify

_local = threading.local()


def _connection() -> Any:
    conn = getattr(_local, "conn", None)
    if conn is None:
        database = os.environ.get("FLOOR_DATABASE", "referral_test_bench")
        conn = _local.conn = pymysql.connect(host="127.0.0.1", user="referral", password="referral", database=database, autocommit=True)
    return conn


def _read(times: int) -> Any:
    row = None
    with _connection().cursor() as cur:
        for _ in range(times):
            cur.execute("SELECT id, nickname FROM members WHERE id = %s", (1,))
            row = cur.fetchone()
    return row[0] if row else None


def create_app() -> Flask:
    app = Flask("floor")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok")

    @app.get("/bare")
    def bare() -> Response:
        return jsonify({"code": 0, "message": "ok", "data": {"ok": True}})

    @app.get("/one")
    def one() -> Response:
        return jsonify({"code": 0, "message": "ok", "data": {"id": _read(1)}})

    @app.get("/two")
    def two() -> Response:
        return jsonify({"code": 0, "message": "ok", "data": {"id": _read(2)}})

    return app
