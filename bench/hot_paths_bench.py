"""The hot read paths under wrk, against a bare Flask app served the same way, on MariaDB and Redis.

Paths: ``GET /api/v1/me`` (a member with an inviter), a replayed WeChat Pay payment notification
(v2 and v3: the order is paid, the same notification is sent again and again), and a cached
``POST /api/v1/referral/posters``. Both apps run under gunicorn with the repository's
gunicorn.conf.py (``WEB_CONCURRENCY`` workers, ``GUNICORN_THREADS`` threads); the bare app answers
each path with a constant body of the same kind. Rounds alternate bare and app for every path, so
both see the same load on a shared machine; the script prints requests/s of each round, the
median of each, the ratio app/bare and the load average, and the statements each path sends.

    .venv/bin/python bench/hot_paths_bench.py --database-url "mysql+pymysql://…/referral_bench?charset=utf8mb4" \\
        --redis-url redis://127.0.0.1:6379/12 [--rounds 3] [--seconds 8] [--connections 16]

The database is emptied and migrated; the Redis database is flushed. Needs ``wrk`` on the PATH.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flask import Flask, Response, jsonify, request  # noqa: E402

from notify_bench import Gunicorn  # noqa: E402

ME = "/api/v1/me"
POSTERS = "/api/v1/referral/posters"
V2_NOTIFY = "/wechat/pay/notify"
V3_NOTIFY = "/wechat/pay/v3/notify"
#: A run never takes longer than this, whatever the arguments.
DEADLINE_SECONDS = 1200


def bare_app() -> Flask:
    """The comparison: the same paths answered with constant bodies, no database, no checks."""
    app = Flask("bare")
    member = {"id": 2, "openid": "o" * 28, "nickname": "微信用户", "avatar_url": "", "phone": None, "status": "active",
              "inviter": {"id": 1, "nickname": "微信用户"}, "created_at": "2026-12-02T07:00:00+00:00"}

    @app.get(ME)
    def me() -> Any:
        request.headers.get("Authorization")
        return jsonify(code=0, message="ok", data=member)

    @app.post(POSTERS)
    def posters() -> Any:
        request.get_json()
        return jsonify(code=0, message="ok", data={"scene": "x" * 16, "image_url": "http://127.0.0.1/p.png", "cached": True})

    @app.post(V3_NOTIFY)
    def v3() -> Response:
        request.get_data()
        return Response(status=204)

    @app.post(V2_NOTIFY)
    def v2() -> Response:
        request.get_data()
        return Response("<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>", mimetype="application/xml")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok")

    return app


def _lua(method: str, headers: dict[str, str], body: bytes, path: Path) -> Path:
    """A wrk script sending one fixed request."""
    lines = [f'wrk.method = "{method}"']
    for name, value in headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    if body:
        lines.append(f"wrk.body = {_lua_string(body.decode('latin-1'))}")
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return path


def _lua_string(value: str) -> str:
    return '"' + "".join(f"\\{ord(ch):03d}" if ch in '"\\' or ord(ch) < 32 or ord(ch) > 126 else ch for ch in value) + '"'


def wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, str, int]:
    """requests/s, the latency line, and non-2xx answers of one wrk run."""
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = re.search(r"Latency\s+(\S+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, latency.group(1) if latency else "?", int(bad.group(1)) if bad else 0


def prepare(config: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Migrate an empty database; sign a member in with an inviter; draw their poster; pay two orders (v2, v3).

    Returns the member's headers and what the notifications need.
    """
    from sqlalchemy import text

    from server import create_app, db, migrate
    from server.accounts.models import Member
    from server.models import metadata
    from server.orders.models import Product, Sku
    from server.orders.services import LineRequest, place_order
    from wechat_sandbox import create_sandbox_app, pay_merchant_from_config, sandbox_apps_from_config, serve_in_thread

    sandbox = serve_in_thread(create_sandbox_app(sandbox_apps_from_config(vars(config)), seed="hot", pay=pay_merchant_from_config(vars(config))))
    config.WECHAT_API_BASE = config.WECHAT_PAY_API_BASE = sandbox.base_url
    app = create_app(config)
    with app.extensions["db_engine"].begin() as conn:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
        for table in reversed(metadata.sorted_tables):
            conn.execute(text(f"DROP TABLE IF EXISTS {table.name}"))
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
    migrate.upgrade(app)
    if app.extensions["redis"] is not None:
        app.extensions["redis"].flushdb()
    client = app.test_client()

    def sign_in(name: str, scene: str | None = None) -> dict[str, str]:
        body = {"code": f"sandbox:{name}"} | ({"scene": scene} if scene else {})
        token = client.post("/api/v1/auth/wx-login", json=body).get_json()["data"]["token"]
        return {"Authorization": f"Bearer {token}"}

    inviter = sign_in("bench-inviter")
    scene = client.post(POSTERS, headers=inviter, json={}).get_json()["data"]["scene"]
    member = sign_in("bench-member", scene)
    assert client.get(ME, headers=member).get_json()["data"]["inviter"] is not None
    assert client.post(POSTERS, headers=member, json={}).status_code == 200
    assert client.post(POSTERS, headers=member, json={}).get_json()["data"]["cached"] is True

    state = sandbox.app.extensions["sandbox_pay"]
    with app.app_context():
        sess = db.session()
        buyer = sess.get(Member, 2)
        product = Product(title="有机茶叶礼盒")
        sess.add(product)
        sess.flush()
        sku = Sku(product_id=product.id, name="500g", price_fen=9_900, stock=10)
        sess.add(sku)
        sess.flush()
        numbers = {api: place_order(sess, buyer, [LineRequest(sku.id, 1)]).out_trade_no for api in ("v2", "v3")}  # type: ignore[arg-type]
        db.commit()
    for api, number in numbers.items():
        state.open_order(out_trade_no=number, appid=config.WECHAT_APPID, openid="o-bench", total_fee=9_900, description="tea",
                         notify_url="http://127.0.0.1/", api=api, sign_type=config.WECHAT_PAY_V2_SIGN_TYPE)
        headers, body = state.build_pay_notification(number)
        response = client.post(V2_NOTIFY if api == "v2" else V3_NOTIFY, data=body, headers=headers)
        assert response.status_code in (200, 204) and b"FAIL" not in response.data, response.data
    app.extensions["db_engine"].dispose()
    return member, {"state": state, "numbers": numbers, "sandbox": sandbox}


def statements(config: Any, member: dict[str, str], pay: dict[str, Any]) -> dict[str, list[str]]:
    """The statements each path sends, counted at the driver (tests/statements.py)."""
    from server import create_app
    from tests.statements import round_trips

    app = create_app(config)
    client = app.test_client()
    found = {}
    for label, call in _calls(member, pay).items():
        call(client)
        tries = []
        for _ in range(3):  # the fewest of three: a background thread's statements may fall into one count
            with round_trips(app) as sent:
                call(client)
            tries.append(sent)
        found[label] = min(tries, key=len)
    app.extensions["db_engine"].dispose()
    return found


def _calls(member: dict[str, str], pay: dict[str, Any]) -> dict[str, Any]:
    def notify(api: str) -> Any:
        headers, body = pay["state"].build_pay_notification(pay["numbers"][api])
        return lambda client: client.post(V2_NOTIFY if api == "v2" else V3_NOTIFY, data=body, headers=headers)

    return {
        "GET /api/v1/me": lambda client: client.get(ME, headers=member),
        "v2 notification, replayed": notify("v2"),
        "v3 notification, replayed": notify("v3"),
        "POST posters, cached": lambda client: client.post(POSTERS, headers=member, json={}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a MariaDB database to empty and migrate")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    started = time.monotonic()

    from server.config import Config

    with tempfile.TemporaryDirectory(prefix="hot-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "DATABASE_URL", "REDIS_URL"))}
        env |= {"DATABASE_URL": args.database_url, "APP_ENV": "development", "WECHAT_SANDBOX": "1", "WECHAT_PAY_SANDBOX_KEY_DIR": f"{tmp}/keys",
                "SECRET_KEY": "bench-only-secret", "LOG_LEVEL": "WARNING", "LOGIN_RATE_LIMIT": "1000000"}
        if args.redis_url:
            env["REDIS_URL"] = args.redis_url
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            config = Config()
        finally:
            os.environ.clear()
            os.environ.update(saved)

        member, pay = prepare(config)
        for label, sent in statements(config, member, pay).items():
            print(f"{label:<28} {len(sent)} statements: {' '.join(sent)}")
        app_env = env | {"WECHAT_API_BASE": pay["sandbox"].base_url, "WECHAT_PAY_API_BASE": pay["sandbox"].base_url}
        servers = {
            "app": Gunicorn("server:create_app()", env=app_env, workers=_workers(), threads=_threads(), log=Path(tmp) / "app.log"),
            "bare": Gunicorn("hot_paths_bench:bare_app()", env=env, workers=_workers(), threads=_threads(), log=Path(tmp) / "bare.log", pythonpath=ROOT / "bench"),
        }
        rates: dict[tuple[str, str], list[float]] = {}
        try:
            for server in servers.values():
                server.wait_ready()
            print(f"gunicorn -w {_workers()} --threads {_threads()} (gthread) on loopback; wrk -t 2 -c {args.connections} -d {args.seconds}s; "
                  f"{args.rounds} rounds, bare and app alternating")
            for round_no in range(args.rounds):
                for label, (method, path, headers, body) in _requests(member, pay).items():
                    for name in ("bare", "app"):
                        if time.monotonic() - started > DEADLINE_SECONDS:
                            raise SystemExit("deadline reached")
                        script = _lua(method, headers, body, Path(tmp) / "req.lua")
                        rate, latency, bad = wrk(servers[name].base + path, script, args.seconds, args.connections)
                        rates.setdefault((label, name), []).append(rate)
                        load = os.getloadavg()[0]
                        print(f"round {round_no + 1} {label:<28} {name:<4} {rate:9.1f} req/s  latency {latency:>8}  non-2xx {bad}  load {load:.2f}")
        finally:
            for server in servers.values():
                server.stop()
            pay["sandbox"].shutdown()
        print()
        for label in _requests(member, pay):
            app_rate, bare_rate = statistics.median(rates[(label, "app")]), statistics.median(rates[(label, "bare")])
            print(f"{label:<28} app {app_rate:8.1f} req/s   bare {bare_rate:8.1f} req/s   ratio {app_rate / bare_rate:.2f}x")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _requests(member: dict[str, str], pay: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, str], bytes]]:
    """Each path's request, notifications signed now (WeChat's five minutes of skew)."""
    requests_ = {"GET /api/v1/me": ("GET", ME, member, b"")}
    for api in ("v2", "v3"):
        headers, body = pay["state"].build_pay_notification(pay["numbers"][api])
        requests_[f"{api} notification, replayed"] = ("POST", V2_NOTIFY if api == "v2" else V3_NOTIFY, headers, body)
    requests_["POST posters, cached"] = ("POST", POSTERS, member | {"Content-Type": "application/json"}, b"{}")
    return requests_


def _workers() -> int:
    return int(os.environ.get("WEB_CONCURRENCY") or 3)


def _threads() -> int:
    return int(os.environ.get("GUNICORN_THREADS") or 4)


if __name__ == "__main__":
    main()
