"""The performance figures of the issue in one run: each path of the app against a bare Flask baseline.

The app (``server:create_app()``) and a bare Flask app (``bench/bare.py``) run under gunicorn with the
repository's gunicorn.conf.py and the same worker and thread counts, both on loopback; wrk drives both
with the same connections and threads, one after the other, round after round (interleaved, so a busy
moment of a shared machine falls on both). In-process cases (a cold poster, settlement, ledger-check)
time the function the route or command runs.

The database given is emptied and migrated afresh; the Redis database given is flushed.

    .venv/bin/python bench/run.py --database-url "mysql+pymysql://…/referral_test_bench?charset=utf8mb4" \\
        --redis-url redis://127.0.0.1:6379/13 [--rounds 3] [--duration 10] [--only me,notify] [--markdown FILE]
    .venv/bin/python bench/run.py --smoke     # SQLite, one short round of a few paths: checks the script works

wrk comes from the distribution: ``sudo apt-get install wrk`` (Debian, Ubuntu) or ``brew install wrk``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402
from flask import Flask  # noqa: E402

from servers import (  # noqa: E402
    CONNECTIONS, WRK_MISSING, WRK_THREADS, Servers, Wrk, bench_env, config_from, fresh_database, interleaved, load1, median,
    percentile, raw_request, summarize,
)

#: How long the points work may take to catch up after a round of fresh notifications.
DRAIN_SECONDS = 20
#: ledger-check runs once a round, but no new run starts after this long.
LEDGER_CHECK_SECONDS = 30
ME = "/api/v1/me"
TEAM = "/api/v1/referral/team"
POSTERS = "/api/v1/referral/posters"
NOTIFY = "/wechat/pay/v3/notify"


# -- figures -----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. ``app`` and ``bare`` are in ``unit``; latencies in milliseconds."""

    path: str
    target: str
    app: float | None = None
    bare: float | None = None
    unit: str = "req/s"
    ratio: float | None = None
    p50: float | None = None
    p99: float | None = None
    load: float | None = None
    note: str = ""
    #: "<" or ">" when ``app`` is a bound (a measurement stopped at its budget).
    bound: str = ""
    #: The job queue's backlog at the end of a round (the largest over the rounds), where the app has one.
    backlog: int | None = None


# -- cases ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    run: Callable[[Bench], list[Row]]
    #: Part of ``--smoke``.
    smoke: bool
    #: Data the case needs, written before the servers start (nothing else writes then, so the
    #: generators may choose their rows' ids).
    prepare: Callable[[Bench], Any] | None
    #: Timed in this process, one request or command at a time: run before the servers start and before
    #: any load, so what it measures is the path itself and not what the load left running (MariaDB
    #: flushing and purging the writes of the notification rounds, a load average still falling).
    quiet: bool = False


#: Every case, in the order of the table (the quiet ones run first, in this order; settlement changes
#: the data, so it comes after the other quiet cases).
CASES: dict[str, Case] = {}


def case(name: str, *, smoke: bool = False, prepare: Callable[[Bench], Any] | None = None, quiet: bool = False) -> Callable[[Callable[[Bench], list[Row]]], Callable[[Bench], list[Row]]]:
    """Register ``fn(bench) -> rows`` as the case ``name`` (what ``--only`` names)."""

    def register(fn: Callable[[Bench], list[Row]]) -> Callable[[Bench], list[Row]]:
        CASES[name] = Case(name, fn, smoke, prepare, quiet)
        return fn

    return register


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    team_direct: int = 5_000
    team_indirect: int = 20_000
    settle_members: int = 10_000
    settle_rewards: int = 100_000
    cold_posters: int = 10
    replay_pool: int = 200
    buyers: int = 100
    referrers: int = 25


SMOKE_SIZES = Sizes(team_direct=60, team_indirect=240, settle_members=20, settle_rewards=200, cold_posters=2, replay_pool=20, buyers=4, referrers=2)


@dataclass
class Bench:
    args: argparse.Namespace
    sizes: Sizes
    workdir: Path
    config: Any
    env: dict[str, str]
    sandbox: Any
    rounds: int
    duration: float
    #: The in-process app on the same database and Redis (data preparation and the in-process cases).
    flask: Flask
    cache: dict[str, Any] = field(default_factory=dict)
    #: The app and the baseline under gunicorn, once the data is prepared.
    servers: Servers = field(init=False)

    # -- helpers the cases share

    def sign_in(self, name: str, scene: str | None = None) -> tuple[int, dict[str, str]]:
        """Sign ``name`` in through the sandbox (wx-login); their member id and bearer header."""
        body: dict[str, Any] = {"code": f"sandbox:{name}"}
        if scene is not None:
            body["scene"] = scene
        response = self.flask.test_client().post("/api/v1/auth/wx-login", json=body)
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        headers = {"Authorization": f"Bearer {data['token']}"}
        member = self.flask.test_client().get(ME, headers=headers).get_json()["data"]
        return int(member["id"]), headers

    def referrer_scenes(self) -> list[str]:
        """Share scenes of the referrers: bench-bob-0 … (each invited by one of five bench-alice-N). A member
        arriving by one has an inviter and an upline, so each of their payments earns two levels of points;
        spread over several referrers, as a shop's buyers are, not all on one account."""
        if "scenes" not in self.cache:
            from server import db
            from server.referral.models import Channel
            from server.referral.services import scene_for_share

            scenes = []
            with self.flask.app_context():
                alices = []
                for i in range(max(1, self.sizes.referrers // 5)):
                    alice, _ = self.sign_in(f"bench-alice-{i}")
                    alices.append(scene_for_share(db.session(), alice, Channel.miniprogram_code).code)
                    db.commit()
                for i in range(self.sizes.referrers):
                    bob, _ = self.sign_in(f"bench-bob-{i}", scene=alices[i % len(alices)])
                    scenes.append(scene_for_share(db.session(), bob, Channel.miniprogram_code).code)
                    db.commit()
            self.cache["scenes"] = scenes
        return self.cache["scenes"]

    def member(self) -> tuple[int, dict[str, str]]:
        """The signed-in member of the /me and poster paths, bench-bob-0's invitee."""
        if "member" not in self.cache:
            self.cache["member"] = self.sign_in("bench-member", scene=self.referrer_scenes()[0])
        return self.cache["member"]

    def interleaved(self, app_batch: Callable[[int], list[bytes]], bare_batch: Callable[[int], list[bytes]] | None = None,
                    after_app: Callable[[int, Wrk, float], bool] | None = None) -> tuple[list[Wrk], list[Wrk]]:
        """``--rounds`` interleaved rounds of ``--duration`` seconds against the baseline (``servers.interleaved``)."""
        return interleaved(self.servers, self.rounds, self.duration, self.workdir, app_batch, bare_batch, after_app)

    def http_row(self, path: str, target: str, apps: list[Wrk], bares: list[Wrk], note: str = "") -> Row:
        found = summarize(apps, bares)
        if found.errors:
            note = (note + "; " if note else "") + f"{found.errors} app requests failed (non-2xx or socket errors)"
        return Row(path=path, target=target, app=found.app, bare=found.bare, ratio=found.ratio, p50=found.p50, p99=found.p99, load=found.load, note=note)


# -- the paths -----------------------------------------------------------------------------------------


@case("me", smoke=True)
def me_case(bench: Bench) -> list[Row]:
    _, headers = bench.member()
    request = raw_request("GET", ME, headers)
    apps, bares = bench.interleaved(lambda _: [request])
    return [bench.http_row(f"GET {ME}", "≥ 0.60×", apps, bares)]


class Orders:
    """Unpaid orders of the bench buyers (each invited by a referrer, ``Bench.referrer_scenes``), placed as they are needed, and their v3 payment notifications signed by the sandbox."""

    def __init__(self, bench: Bench) -> None:
        from wechat_sandbox import PayState

        self.bench = bench
        self.pay: PayState = bench.sandbox.app.extensions["sandbox_pay"]
        self.unpaid: list[tuple[str, int]] = []
        self.opened: set[str] = bench.cache.setdefault("opened", set())
        if "buyers" not in bench.cache:
            scenes = bench.referrer_scenes()
            bench.cache["buyers"] = [bench.sign_in(f"bench-buyer-{i}", scene=scenes[i % len(scenes)])[0] for i in range(bench.sizes.buyers)]
        self.buyers: list[int] = bench.cache["buyers"]

    def place(self, count: int) -> None:
        from server import db
        from server.accounts.models import Member
        from server.orders.models import Product, Sku
        from server.orders.services import LineRequest, place_order

        started = time.perf_counter()
        with self.bench.flask.app_context():
            sess = db.session()
            if "sku" not in self.bench.cache:
                product = Product(title="有机茶叶礼盒")
                sess.add(product)
                sess.flush()
                sku = Sku(product_id=product.id, name="500g", price_fen=9_900, stock=10_000_000)
                sess.add(sku)
                db.commit()
                self.bench.cache["sku"] = sku.id
            members = [sess.get_one(Member, m) for m in self.buyers]
            for i in range(count):
                order = place_order(sess, members[i % len(members)], [LineRequest(self.bench.cache["sku"], 1)])
                self.unpaid.append((order.out_trade_no, order.total_fee))
                if i % 500 == 499:
                    db.commit()
            db.commit()
        print(f"  {count:,} orders placed in {time.perf_counter() - started:.1f} s", flush=True)

    def notifications(self, orders: list[tuple[str, int]]) -> list[bytes]:
        """A valid, freshly signed v3 payment notification for each order (WeChat allows five minutes of skew)."""
        config = self.bench.config
        batch = []
        for number, fee in orders:
            if number not in self.opened:
                self.pay.open_order(out_trade_no=number, appid=config.WECHAT_APPID, openid="o-bench", total_fee=fee, description="tea", notify_url="http://127.0.0.1/", api="v3")
                self.opened.add(number)
            headers, body = self.pay.build_pay_notification(number)
            batch.append(raw_request("POST", NOTIFY, dict(headers), body))
        return batch

    def settle_paid(self, orders: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Of ``orders``, those now paid (the rest stay unpaid for the next round)."""
        from sqlalchemy import select

        from server import db
        from server.orders.models import Order, OrderStatus

        numbers = [n for n, _ in orders]
        with self.bench.flask.app_context():
            paid: set[str] = set()
            for chunk in range(0, len(numbers), 1000):
                paid |= set(db.session().scalars(
                    select(Order.out_trade_no).where(Order.out_trade_no.in_(numbers[chunk:chunk + 1000]), Order.status != OrderStatus.created)
                ))
        self.unpaid = [o for o in self.unpaid if o[0] not in paid]
        return [o for o in orders if o[0] in paid]


def queued_jobs(bench: Bench) -> int | None:
    """Follow-up work waiting in the app's job queue (a ``jobs`` table's queued and running rows), or None
    when the app has no such table."""
    from sqlalchemy import inspect, text

    engine = bench.flask.extensions["db_engine"]
    if "jobs" not in inspect(engine).get_table_names():
        return None
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")).scalar() or 0)


def rewarded(bench: Bench, numbers: list[str]) -> int:
    """How many of the orders ``numbers`` have their points credited (an order reward row)."""
    from sqlalchemy import func, select

    from server import db
    from server.orders.models import Order
    from server.points.models import OrderReward

    total = 0
    with bench.flask.app_context():
        sess = db.session()
        for chunk in range(0, len(numbers), 1000):
            total += int(sess.scalar(
                select(func.count(func.distinct(OrderReward.order_id))).join(Order, Order.id == OrderReward.order_id)
                .where(Order.out_trade_no.in_(numbers[chunk:chunk + 1000]))
            ) or 0)
        sess.rollback()
    return total


@case("notify", smoke=True)
def fresh_notification_case(bench: Bench) -> list[Row]:
    """Each request pays a distinct order; then the points work (rewards credited off the request) is
    followed until it has caught up: processed orders a second over the round and its catch-up."""
    orders = Orders(bench)
    #: Orders for the first round; later rounds get 1.5 times what the app answered in the last one, and a
    #: round that ran out of fresh orders is run again with more.
    need = 200 if bench.args.smoke else 800
    exhausted = 0
    points: list[float] = []
    backlogs: list[int] = []
    queued: list[int] = []
    round_orders: dict[int, list[tuple[str, int]]] = {}

    def batch(n: int) -> list[bytes]:
        if len(orders.unpaid) < need:
            orders.place(need - len(orders.unpaid))
        round_orders[n] = orders.unpaid[:need]
        return orders.notifications(round_orders[n])

    def follow_points(n: int, answered: Wrk, started: float) -> bool:
        nonlocal need, exhausted
        jobs = queued_jobs(bench)
        paid = [number for number, _ in orders.settle_paid(round_orders[n])]
        done = rewarded(bench, paid)
        backlog = len(paid) - done
        deadline = time.monotonic() + DRAIN_SECONDS
        while done < len(paid) and time.monotonic() < deadline:
            time.sleep(0.25)
            done = rewarded(bench, paid)
        need = max(need, int(answered.rate * bench.duration * 1.5) + 100)
        if answered.sent > len(round_orders[n]):
            exhausted += 1
            print(f"  round {n + 1} ran out of fresh orders ({answered.sent:,} sent, {len(round_orders[n]):,} prepared): again with {need:,}", flush=True)
            return False
        backlogs.append(backlog)
        if jobs is not None:
            queued.append(jobs)
        points.append(done / (time.monotonic() - started))
        return True

    apps, bares = bench.interleaved(batch, after_app=follow_points)
    note = "each request pays a distinct order"
    if exhausted:
        note += f"; {exhausted} run{'s' if exhausted != 1 else ''} ran out of fresh orders and {'were' if exhausted != 1 else 'was'} run again with more"
    rows = [bench.http_row(f"POST {NOTIFY} (fresh)", "≥ 0.30×, p99 < 50 ms", apps, bares, note)]
    bare_rate = median([w.rate for w in bares])
    rate = median(points)
    rows.append(Row(
        path="points processed (fresh notifications)", target="≥ 0.20×, backlog bounded over 60 s",
        app=rate, bare=bare_rate, unit="orders/s", ratio=(rate / bare_rate) if rate and bare_rate else None,
        load=median([w.load for w in apps]), backlog=max(queued) if queued else None,
        note=f"orders rewarded per second from the round's start until caught up (or {DRAIN_SECONDS} s after it); at the round's end {max(backlogs, default=0)} paid orders were still without their rewards"
        + (f", and the jobs table held {max(queued)} queued or running jobs" if queued else ""),
    ))
    return rows


@case("replay")
def replayed_notification_case(bench: Bench) -> list[Row]:
    """Notifications of orders already paid, signed afresh each round: the app recognises and acknowledges them."""
    orders = Orders(bench)
    size = bench.sizes.replay_pool
    orders.place(size)
    pool = orders.unpaid[:size]
    for item in orders.notifications(pool):
        head, body = item.split(b"\r\n\r\n", 1)
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[2:] if not line.startswith("Content-Length"))
        assert requests.post(bench.servers.app.base + NOTIFY, data=body, headers=headers, timeout=30).status_code == 204
    orders.settle_paid(pool)
    apps, bares = bench.interleaved(lambda _: orders.notifications(pool))
    return [bench.http_row(f"POST {NOTIFY} (replayed)", "≥ 0.50×", apps, bares, f"{size} paid orders' notifications in turn")]


@case("poster")
def cached_poster_case(bench: Bench) -> list[Row]:
    _, headers = bench.member()
    client = bench.flask.test_client()
    first = client.post(POSTERS, headers=headers, json={})
    assert first.status_code == 200, first.get_json()
    request = raw_request("POST", POSTERS, headers | {"Content-Type": "application/json"}, b"{}")
    apps, bares = bench.interleaved(lambda _: [request])
    return [bench.http_row(f"POST {POSTERS} (cached)", "≥ 0.50×", apps, bares)]


@case("poster-cold", quiet=True)
def cold_poster_case(bench: Bench) -> list[Row]:
    """A poster drawn for a member who has none, in-process (the route through the test client), with the
    mini-program code's call to WeChat (the sandbox, over HTTP) timed apart."""
    from server.wechat.client import MiniProgram

    original = MiniProgram.get_unlimited_code
    spent: list[float] = []

    def timed_code(self: MiniProgram, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent.append((time.perf_counter() - started) * 1000)

    client = bench.flask.test_client()
    members = [bench.sign_in(f"bench-poster-{i}")[1] for i in range(bench.sizes.cold_posters * bench.rounds + 1)]
    client.post(POSTERS, headers=members.pop(), json={})  # fonts, the WeChat token, the template
    totals: list[float] = []
    codes: list[float] = []
    loads: list[float] = []
    MiniProgram.get_unlimited_code = timed_code  # type: ignore[method-assign]
    try:
        for headers in members:
            spent.clear()
            started = time.perf_counter()
            response = client.post(POSTERS, headers=headers, json={})
            totals.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and response.get_json()["data"]["cached"] is False, response.get_json()
            codes.append(sum(spent))
            loads.append(load1())
    finally:
        MiniProgram.get_unlimited_code = original  # type: ignore[method-assign]
    besides = [t - c for t, c in zip(totals, codes)]
    return [Row(
        path=f"POST {POSTERS} (cold, in-process)", target="≤ 15 ms besides the wxacode call", app=median(besides), unit="ms",
        p50=median(besides), p99=percentile(besides, 0.99), load=median(loads),
        note=f"{len(totals)} members; the whole request {median(totals):.1f} ms, of which the wxacode call {median(codes):.1f} ms (medians)",
    )]


def team_lead(bench: Bench) -> tuple[int, dict[str, str]]:
    """A signed-in member with the generated team (5,000 direct and 20,000 indirect invitees by default)."""
    if "team" not in bench.cache:
        import generate

        lead_id, headers = bench.sign_in("bench-team-lead")
        started = time.perf_counter()
        generate.team(bench.flask.extensions["db_engine"], lead_id, direct=bench.sizes.team_direct, indirect=bench.sizes.team_indirect)
        print(f"  team of {bench.sizes.team_direct:,} direct and {bench.sizes.team_indirect:,} indirect invitees generated in {time.perf_counter() - started:.1f} s", flush=True)
        bench.cache["team"] = (lead_id, headers)
    return bench.cache["team"]


def team_paths(bench: Bench, lead_id: int) -> list[str]:
    """The first page of both levels, and pages of each level from cursors spread through the team."""
    from sqlalchemy import select

    from server import db
    from server.referral.models import Binding
    from server.referral.services import TeamCursor

    paths = [f"{TEAM}?level=all"]
    with bench.flask.app_context():
        sess = db.session()
        for level, column, size in (("direct", Binding.inviter_id, bench.sizes.team_direct), ("indirect", Binding.upline_id, bench.sizes.team_indirect)):
            for fraction in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
                row = sess.execute(
                    select(Binding.bound_at, Binding.member_id).where(column == lead_id)
                    .order_by(Binding.bound_at.desc(), Binding.member_id.desc()).offset(int(size * fraction)).limit(1)
                ).first()
                if row is not None:
                    paths.append(f"{TEAM}?level={level}&cursor={TeamCursor(row.bound_at, row.member_id).encode()}")
        sess.rollback()
    return paths


@case("team", smoke=True, prepare=lambda bench: team_lead(bench))
def team_case(bench: Bench) -> list[Row]:
    lead_id, headers = team_lead(bench)
    paths = team_paths(bench, lead_id)
    apps, bares = bench.interleaved(lambda _: [raw_request("GET", p, headers) for p in paths])
    size = f"{bench.sizes.team_direct:,} + {bench.sizes.team_indirect:,}"
    return [bench.http_row(f"GET {TEAM} ({size}, cursors)", "≥ 0.30×", apps, bares, f"{len(paths)} pages in turn: the first of both levels, then keyset pages through each")]


@case("team-page", smoke=True, prepare=lambda bench: team_lead(bench), quiet=True)
def team_page_case(bench: Bench) -> list[Row]:
    """The team's pages (``team_paths``) one at a time through the test client, in-process."""
    lead_id, headers = team_lead(bench)
    paths = team_paths(bench, lead_id)
    client = bench.flask.test_client()
    one_by_one: list[float] = []
    loads: list[float] = []
    for _ in range(3 if bench.args.smoke else 10):
        for path in paths:
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            one_by_one.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.get_json()
        loads.append(load1())
    return [Row(
        path=f"GET {TEAM} one at a time (in-process)", target="≤ 5 ms a page", app=median(one_by_one), unit="ms",
        p50=median(one_by_one), p99=percentile(one_by_one, 0.99), load=median(loads), note=f"{len(one_by_one)} requests through the test client, no concurrency",
    )]


def settlement_data(bench: Bench) -> Any:
    if "settle" not in bench.cache:
        import generate

        buyer_id, _ = bench.sign_in("bench-settle-buyer")
        started = time.perf_counter()
        data = generate.matured_rewards(bench.flask.extensions["db_engine"], buyer_id, members=bench.sizes.settle_members, rewards=bench.sizes.settle_rewards)
        print(f"  {data.members:,} members with {data.rewards:,} matured rewards ({data.entries:,} ledger entries) generated in {time.perf_counter() - started:.1f} s", flush=True)
        bench.cache["settle"] = data
    return bench.cache["settle"]


def settle_in_child() -> int:
    """``--settle-child``: what ``python -m server settle`` runs (``settlement.settle`` and the commit) on the
    database of the environment, timed; prints the figures as JSON. A process of its own, so a settlement
    past the budget can be stopped (its transaction rolls back)."""
    from sqlalchemy import func, select

    from server import create_app, db
    from server.points import settlement
    from server.points.models import OrderReward, RewardState

    app = create_app()
    with app.app_context():
        sess = db.session()
        before = int(sess.scalar(select(func.count()).select_from(OrderReward).where(OrderReward.state == RewardState.settled)) or 0)
        print("settling", flush=True)
        started = time.perf_counter()
        run = settlement.settle(sess, period=settlement.manual_period_key(), mode="weekly", actor="bench")
        db.commit()
        seconds = time.perf_counter() - started
        settled = int(sess.scalar(select(func.count()).select_from(OrderReward).where(OrderReward.state == RewardState.settled)) or 0) - before
        print(json.dumps({"seconds": seconds, "members": run.members, "settled": settled}))
    app.extensions["db_engine"].dispose()
    return 0


@case("settle", smoke=True, prepare=lambda bench: settlement_data(bench), quiet=True)
def settlement_case(bench: Bench) -> list[Row]:
    """The settlement of the generated matured rewards, once, stopped at ``--settle-budget`` seconds."""
    data = settlement_data(bench)
    path = f"settlement ({data.members:,} members, {data.rewards:,} matured rewards)"
    budget = bench.args.settle_budget
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--settle-child"], cwd=ROOT, env=bench.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    child.stdout.readline()  # "settling": the app is up, the clock starts
    try:
        out, err = child.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return [Row(path=path, target="≥ 50,000 rewards/s", app=data.rewards / budget, bound="<", unit="rewards/s", load=load1(),
                    note=f"stopped after {budget:.0f} s (--settle-budget), under {data.rewards / budget:,.0f} rewards/s; its transaction rolled back")]
    line = out.strip().splitlines()[-1] if out.strip() else ""
    if child.returncode != 0 or not line.startswith("{"):
        raise RuntimeError(f"the settlement failed ({child.returncode}): {out[-2000:]} {err[-2000:]}")
    found = json.loads(line)
    seconds, members, settled = found["seconds"], found["members"], found["settled"]
    return [Row(
        path=path, target="≥ 50,000 rewards/s", app=settled / seconds, unit="rewards/s", load=load1(),
        note=f"{settled:,} rewards of {members:,} members settled in {seconds:.1f} s ({members / seconds:,.0f} members/s), one run",
    )]


@case("ledger-check", smoke=True, prepare=lambda bench: settlement_data(bench), quiet=True)
def ledger_check_case(bench: Bench) -> list[Row]:
    """``python -m server ledger-check``'s work (``check_ledger`` with the command's default workers), timed in-process."""
    from server import db
    from server.points.checks import DEFAULT_WORKERS, check_ledger

    settlement_data(bench)
    times: list[float] = []
    loads: list[float] = []
    entries = 0
    violations = 0
    began = time.monotonic()
    for _ in range(bench.rounds):
        if times and time.monotonic() - began > LEDGER_CHECK_SECONDS:
            break
        with bench.flask.app_context():
            sess = db.session()
            if sess.get_bind().dialect.name == "mysql":
                sess.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            started = time.perf_counter()
            report = check_ledger(sess, workers=DEFAULT_WORKERS)
            times.append(time.perf_counter() - started)
            loads.append(load1())
            entries = report.counts["entries"]
            violations = len(report.violations)
            sess.rollback()
    seconds = median(times) or 0.0
    per_million = seconds / entries * 1_000_000 if entries else None
    return [Row(
        path=f"ledger-check ({entries:,} entries)", target="≤ 2 s per million entries", app=per_million, unit="s/million entries",
        load=median(loads), note=f"{seconds:.2f} s a check (median of {len(times)}); {'passed' if not violations else f'{violations} violations'}",
    )]


# -- output --------------------------------------------------------------------------------------------


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> list[list[str]]:
    """The rows as cells; the backlog column only when some row has one (the app has a job queue)."""
    queue = any(r.backlog is not None for r in rows)
    head = ["path", "app", "bare", "ratio", "p50 ms", "p99 ms", "target", "load (1 min)"] + (["jobs backlog"] if queue else [])
    body = [
        [
            r.path, (r.bound + " " if r.bound else "") + number(r.app, r.unit), number(r.bare, "req/s" if r.bare is not None else ""),
            f"{r.ratio:.2f}×" if r.ratio is not None else "", number(r.p50), number(r.p99), r.target,
            f"{r.load:.2f}" if r.load is not None else "",
        ] + ([f"{r.backlog:,}" if r.backlog is not None else ""] if queue else [])
        for r in rows
    ]
    return [head] + body


def plain(rows: list[Row]) -> str:
    cells = table(rows)
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.path}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def markdown(rows: list[Row], machine: list[str]) -> str:
    cells = table(rows)
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
    lines.insert(1, "|" + "---|" * len(cells[0]))
    notes = [f"- {r.path}: {r.note}" for r in rows if r.note]
    return "\n".join([*(f"- {m}" for m in machine), "", *lines, "", *notes, ""])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"), help="emptied and migrated afresh (default: BENCH_DATABASE_URL, else a temporary SQLite file)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"), help="flushed first (default: BENCH_REDIS_URL, else no Redis)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of each path against its baseline (default 3)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of each wrk run (default 10)")
    parser.add_argument("--only", default=None, help="comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers of both apps (default: gunicorn.conf.py's, cores + 1)")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker of both apps (default: gunicorn.conf.py's, 4)")
    parser.add_argument("--markdown", default=None, metavar="FILE", help="also write the table as Markdown")
    parser.add_argument("--logs", default=None, metavar="DIR", help="keep the two gunicorn logs (app.log, bare.log) in DIR")
    parser.add_argument("--settle-budget", type=float, default=60.0, help="seconds the settlement may take before it is stopped (default 60)")
    parser.add_argument("--settle-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="a tiny run to check the script works: SQLite unless a database is given, no demo data, one worker, 1 round of 1 s, small data, a few paths")
    args = parser.parse_args(argv)
    if args.settle_child:
        return settle_in_child()

    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.smoke else 3)
    duration = args.duration or (1.0 if args.smoke else 10.0)
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else [c.name for c in CASES.values() if c.smoke or not args.smoke]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}; the cases are {', '.join(CASES)}")
    workers = args.workers or (1 if args.smoke else int(os.environ.get("WEB_CONCURRENCY") or (os.cpu_count() or 1) + 1))
    threads = args.threads or int(os.environ.get("GUNICORN_THREADS") or 4)
    sizes = SMOKE_SIZES if args.smoke else Sizes()
    started_at = datetime.now(timezone.utc)
    load_start = os.getloadavg()

    from server import create_app, migrate
    from server.demo import seed_demo
    from server.jobs import queue as jobs
    from wechat_sandbox import create_sandbox_app, pay_merchant_from_config, sandbox_apps_from_config, serve_in_thread

    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        env = bench_env(
            tmp, url, args.redis_url, LOGIN_RATE_LIMIT="1000000", MEDIA_DIR=f"{tmp}/media", EXPORT_DIR=f"{tmp}/exports",
            WEB_CONCURRENCY=str(workers), GUNICORN_THREADS=str(threads),
        )
        config = config_from(env)
        sandbox = serve_in_thread(create_sandbox_app(sandbox_apps_from_config(vars(config)), seed="bench", pay=pay_merchant_from_config(vars(config))))
        env |= {"WECHAT_API_BASE": sandbox.base_url, "WECHAT_PAY_API_BASE": sandbox.base_url}
        config.WECHAT_API_BASE = config.WECHAT_PAY_API_BASE = sandbox.base_url

        print(f"database {url.split('@')[-1]}: emptied, migrating …", flush=True)
        version = fresh_database(url)
        # No background drainer in this process: the generators below pick ids while nothing else writes;
        # what the demo queues is drained here, and whatever comes later by the servers.
        config.JOB_DRAINERS = 0
        flask = create_app(config)
        migrate.upgrade(flask)
        if flask.extensions.get("redis") is not None:
            flask.extensions["redis"].flushdb()
        if not args.smoke:
            with flask.app_context():
                from server import db

                for _ in seed_demo(db.session()):  # the demo shop's staff, catalog, members and orders beside the bench's own
                    pass
                db.commit()
            jobs.drain(flask)

        bench = Bench(args=args, sizes=sizes, workdir=workdir, config=config, env=env, sandbox=sandbox, rounds=rounds, duration=duration, flask=flask)
        selected = [CASES[c] for c in CASES if c in names]
        rows: list[Row] = []
        try:
            for chosen in selected:
                if chosen.prepare is not None:
                    chosen.prepare(bench)
            found_by_case: dict[str, list[Row]] = {}

            def measure(chosen: Case) -> None:
                began = time.monotonic()
                print(f"{chosen.name} …", flush=True)
                found = found_by_case[chosen.name] = chosen.run(bench)
                for row in found:
                    print(f"  {row.path}: {number(row.app, row.unit)}" + (f", bare {number(row.bare, 'req/s')}, {row.ratio:.2f}×" if row.ratio is not None else "")
                          + f" (load {row.load:.2f}, {time.monotonic() - began:.0f} s)", flush=True)

            quiet = [c for c in selected if c.quiet]
            if quiet:
                print("in-process, one at a time, before any load:", flush=True)
            for chosen in quiet:
                measure(chosen)
            loaded = [c for c in selected if not c.quiet]
            if loaded:
                bench.servers = Servers.start(env, workers=workers, threads=threads, workdir=workdir)
                print(f"gunicorn -w {workers} --threads {threads} (gthread) for the app and the bare Flask app; wrk -t{WRK_THREADS} -c{CONNECTIONS}, "
                      f"{rounds} rounds of {duration:g} s each, interleaved", flush=True)
            for chosen in loaded:
                measure(chosen)
            rows += [row for chosen in selected for row in found_by_case[chosen.name]]
        finally:
            servers = getattr(bench, "servers", None)
            if servers is not None:
                servers.stop()
                if args.logs:
                    Path(args.logs).mkdir(parents=True, exist_ok=True)
                    for server in (servers.app, servers.bare):
                        shutil.copy(server.log, Path(args.logs) / server.log.name)
            flask.extensions["db_engine"].dispose()
            sandbox.shutdown()

    load_end = os.getloadavg()
    finished_at = datetime.now(timezone.utc)
    database = f"MariaDB {version}" if "mariadb" in version.lower() else version
    machine = [
        f"{started_at:%Y-%m-%d %H:%M} UTC, {(finished_at - started_at).total_seconds() / 60:.1f} min; {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}",
        f"load average (1, 5, 15 min) at the start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}",
        f"database {database}, Redis {'on' if args.redis_url else 'off'}; gunicorn -w {workers} --threads {threads} for both apps; wrk -t{WRK_THREADS} -c{CONNECTIONS}, {rounds} rounds of {duration:g} s, medians",
    ]
    print()
    print("\n".join(machine))
    print()
    print(plain(rows))
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, machine), encoding="utf-8")
        print(f"\nMarkdown written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
