"""The hot read paths under wrk, against a bare Flask app served the same way, on MariaDB and Redis.

Paths: ``GET /api/v1/me`` (a member with an inviter), a replayed WeChat Pay payment notification
(v2 and v3: the order is paid, the same notification is sent again and again), and a cached
``POST /api/v1/referral/posters``. Both apps run under gunicorn with the repository's
gunicorn.conf.py (``WEB_CONCURRENCY`` workers, ``GUNICORN_THREADS`` threads); the bare app answers
each path with a constant body of the same kind. Servers, wrk and rounds are ``servers.py``'s: each
round runs every path on both, bare and app one after the other (the order swapping every round), so
both see the same load on a shared machine; the script prints requests/s of each run, the median of
each, the median of the rounds' app/bare and the load average, and the statements each path sends.

    .venv/bin/python bench/hot_paths_bench.py --database-url "mysql+pymysql://…/referral_bench?charset=utf8mb4" \\
        --redis-url redis://127.0.0.1:6379/12 [--rounds 3] [--seconds 8] [--connections 16]

The database is emptied and migrated; the Redis database is flushed. Needs ``wrk`` on the PATH.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flask import Flask, Response, jsonify, request  # noqa: E402

from servers import (  # noqa: E402
    WRK_MISSING, Servers, Wrk, bench_env, config_from, fresh_database, interleaved_round, load_average, raw_request, round_order,
    summarize,
)

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


def prepare(config: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Migrate an empty database; sign a member in with an inviter; draw their poster; pay two orders (v2, v3).

    Returns the member's headers and what the notifications need.
    """
    from server import create_app, db, migrate
    from server.accounts.models import Member
    from server.orders.models import Product, Sku
    from server.orders.services import LineRequest, place_order
    from wechat_sandbox import create_sandbox_app, pay_merchant_from_config, sandbox_apps_from_config, serve_in_thread

    sandbox = serve_in_thread(create_sandbox_app(sandbox_apps_from_config(vars(config)), seed="hot", pay=pay_merchant_from_config(vars(config))))
    config.WECHAT_API_BASE = config.WECHAT_PAY_API_BASE = sandbox.base_url
    fresh_database(config.DATABASE_URL)
    app = create_app(config)
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
        sys.exit(WRK_MISSING)
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="hot-bench-") as tmp:
        env = bench_env(tmp, args.database_url, args.redis_url, LOGIN_RATE_LIMIT="1000000")
        config = config_from(env)

        member, pay = prepare(config)
        for label, sent in statements(config, member, pay).items():
            print(f"{label:<28} {len(sent)} statements: {' '.join(sent)}")
        env |= {"WECHAT_API_BASE": pay["sandbox"].base_url, "WECHAT_PAY_API_BASE": pay["sandbox"].base_url}
        runs: dict[str, dict[str, list[Wrk]]] = {}
        try:
            servers = Servers.start(env, workers=_workers(), threads=_threads(), workdir=Path(tmp), bare="hot_paths_bench:bare_app()")
            try:
                print(f"gunicorn -w {_workers()} --threads {_threads()} (gthread) on loopback; wrk -t 2 -c {args.connections} -d {args.seconds}s; "
                      f"{args.rounds} rounds, bare and app alternating")
                for round_no in range(args.rounds):
                    for label, raw in _requests(member, pay).items():
                        if time.monotonic() - started > DEADLINE_SECONDS:
                            raise SystemExit("deadline reached")
                        app, bare, _ = interleaved_round(servers, round_no, [raw], [raw], args.seconds, Path(tmp), connections=args.connections)
                        found = runs.setdefault(label, {"app": [], "bare": []})
                        found["app"].append(app)
                        found["bare"].append(bare)
                        for name in round_order(round_no):
                            run = app if name == "app" else bare
                            print(f"round {round_no + 1} {label:<28} {name:<4} {run.rate:9.1f} req/s  latency {run.mean:6.2f}ms  non-2xx {run.non_2xx}  load {run.load:.2f}")
            finally:
                servers.stop()
        finally:
            pay["sandbox"].shutdown()
        print()
        for label, pairs in runs.items():
            figures = summarize(pairs["app"], pairs["bare"])
            print(f"{label:<28} app {figures.app or 0:8.1f} req/s   bare {figures.bare or 0:8.1f} req/s   ratio {figures.ratio or 0:.2f}x")
        print(f"load average at the end: {load_average()}")


def _requests(member: dict[str, str], pay: dict[str, Any]) -> dict[str, bytes]:
    """Each path's request as wrk sends it, notifications signed now (WeChat's five minutes of skew)."""
    requests_ = {"GET /api/v1/me": raw_request("GET", ME, member)}
    for api in ("v2", "v3"):
        headers, body = pay["state"].build_pay_notification(pay["numbers"][api])
        requests_[f"{api} notification, replayed"] = raw_request("POST", V2_NOTIFY if api == "v2" else V3_NOTIFY, dict(headers), body)
    requests_["POST posters, cached"] = raw_request("POST", POSTERS, member | {"Content-Type": "application/json"}, b"{}")
    return requests_


def _workers() -> int:
    return int(os.environ.get("WEB_CONCURRENCY") or 3)


def _threads() -> int:
    return int(os.environ.get("GUNICORN_THREADS") or 4)


if __name__ == "__main__":
    main()
