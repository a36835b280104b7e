"""How fast the app takes WeChat Pay v3 notifications, next to a bare Flask endpoint served the same way.

Both run under gunicorn (gunicorn.conf.py, ``-w 2 --threads 4`` by default) on loopback, started
by ``servers.py``; the bare endpoint is ``bare.py``. The app gets a temporary SQLite database (or
``--database-url``), N distinct unpaid orders, and N valid v3 notifications signed and encrypted by
the sandbox's merchant keys; each must pay its order. The bare endpoint reads the same bodies and
answers 204. A thread pool posts them with ``requests`` and the script prints throughput, p50 and
p99 of both, and the ratios.

    .venv/bin/python bench/notify_bench.py [--count 2000] [--concurrency 16] [--workers 2] [--threads 4] [--setting KEY=VALUE]

``--sustain SECONDS`` posts for that long instead (bare first, then the app, each for the whole time),
with buyers who were invited (so every payment queues an order's points job, and each job posts
two rewards), and samples the job queue every ``--sample`` seconds: its backlog and the orders whose
points are done, while the app is posted to and afterwards until the queue is empty (at most
``--drain-wait`` seconds). It prints answered req/s, p50 and p99 of both, points processed per second,
and the backlog over time:

    .venv/bin/python bench/notify_bench.py --sustain 60 --count 20000 --database-url "$URL" --redis-url redis://127.0.0.1:6379/10
"""
from __future__ import annotations

import argparse
import itertools
import math
import secrets
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from servers import Servers, bench_env, config_from, load_average, percentile  # noqa: E402

#: A run never takes longer than this, whatever the machine.
DEADLINE_SECONDS = 600
WARMUP = 50


def fire(base: str, batch: list[tuple[dict[str, str], bytes]], concurrency: int, deadline: float) -> tuple[list[float], float, list[int]]:
    """POST every notification of ``batch`` from ``concurrency`` threads: (latencies in ms, seconds, statuses)."""
    local = threading.local()

    def send(item: tuple[dict[str, str], bytes]) -> tuple[float, int]:
        if time.monotonic() > deadline:
            return 0.0, -1
        http = getattr(local, "http", None)
        if http is None:
            http = local.http = requests.Session()
        started = time.perf_counter()
        try:
            status = http.post(base + "/wechat/pay/v3/notify", data=item[1], headers=item[0], timeout=30).status_code
        except requests.RequestException:
            status = 0
        return (time.perf_counter() - started) * 1000, status

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(send, batch))
    elapsed = time.perf_counter() - started
    return [ms for ms, _ in results], elapsed, [status for _, status in results]


def prepare(config: Any, count: int, settings: dict[str, str]) -> list[str]:
    """Migrate, store ``settings``, then place ``count`` unpaid orders of one member; their out_trade_nos."""
    from server import create_app, db, migrate
    from server.accounts.models import Member
    from server.orders.models import Product, Sku
    from server.orders.services import LineRequest, place_order
    from server.settings.services import set_setting

    app = create_app(config)
    migrate.upgrade(app)
    numbers = []
    with app.app_context():
        sess = db.session()
        for key, value in settings.items():
            set_setting(sess, key, value, by="bench")
        member = Member(openid="o" + secrets.token_hex(13), nickname="bench")
        product = Product(title="有机茶叶礼盒")
        sess.add_all([member, product])
        sess.flush()
        sku = Sku(product_id=product.id, name="500g", price_fen=9_900, stock=count)
        sess.add(sku)
        sess.flush()
        for _ in range(count):
            numbers.append(place_order(sess, member, [LineRequest(sku.id, 1)]).out_trade_no)
        db.commit()
    app.extensions["db_engine"].dispose()
    return numbers


def prepare_invited(config: Any, count: int, settings: dict[str, str], inviters: int = 200, orders_per_buyer: int = 4) -> list[str]:
    """Migrate, store ``settings``, then place ``count`` unpaid orders of invited buyers; their out_trade_nos.

    One upline invited ``inviters`` members, each of whom invited buyers; each buyer places
    ``orders_per_buyer`` orders, so every payment earns two rewards (level 1 and 2) spread over many
    member accounts, as a shop's would be.
    """
    from server import create_app, db, migrate
    from server.accounts.models import Member
    from server.orders.models import Product, Sku
    from server.orders.services import LineRequest, place_order
    from server.referral.models import Binding
    from server.settings.services import set_setting

    app = create_app(config)
    migrate.upgrade(app)
    numbers: list[str] = []
    with app.app_context():
        sess = db.session()
        for key, value in settings.items():
            set_setting(sess, key, value, by="bench")
        run = secrets.token_hex(4)
        upline = Member(openid=f"o-up-{run}", nickname="upline")
        product = Product(title="有机茶叶礼盒")
        sess.add_all([upline, product])
        sess.flush()
        sku = Sku(product_id=product.id, name="500g", price_fen=9_900, stock=count)
        sess.add(sku)
        middle = [Member(openid=f"o-in-{run}-{n}", nickname=f"inviter {n}") for n in range(inviters)]
        sess.add_all(middle)
        sess.flush()
        sess.add_all([Binding(member_id=m.id, inviter_id=upline.id, channel="bench") for m in middle])
        buyers = [Member(openid=f"o-buy-{run}-{n}", nickname=f"buyer {n}") for n in range(math.ceil(count / orders_per_buyer))]
        sess.add_all(buyers)
        sess.flush()
        sess.add_all([Binding(member_id=b.id, inviter_id=middle[n % inviters].id, upline_id=upline.id, channel="bench") for n, b in enumerate(buyers)])
        sess.flush()
        for n in range(count):
            numbers.append(place_order(sess, buyers[n // orders_per_buyer], [LineRequest(sku.id, 1)]).out_trade_no)
            if n % 1000 == 999:
                db.commit()
        db.commit()
    app.extensions["db_engine"].dispose()
    return numbers


def notifications(config: Any, numbers: list[str]) -> Iterator[tuple[dict[str, str], bytes]]:
    """A valid v3 payment notification per order, as WeChat Pay would sign and encrypt it."""
    from wechat_sandbox import PayState, pay_merchant_from_config

    state = PayState(pay_merchant_from_config(vars(config)))
    for number in numbers:
        state.open_order(out_trade_no=number, appid=config.WECHAT_APPID, openid="o-bench", total_fee=9_900, description="tea", notify_url="http://127.0.0.1/", api="v3")
        yield state.build_pay_notification(number)


def count_paid(config: Any, numbers: list[str]) -> tuple[int, int]:
    from sqlalchemy import func, select

    from server import create_app, db
    from server.orders.models import Order, OrderEvent, OrderStatus

    app = create_app(config)
    with app.app_context():
        sess = db.session()
        paid = sess.scalar(select(func.count()).select_from(Order).where(Order.out_trade_no.in_(numbers), Order.status == OrderStatus.paid))
        events = sess.scalar(
            select(func.count()).select_from(OrderEvent).join(Order, Order.id == OrderEvent.order_id).where(Order.out_trade_no.in_(numbers), OrderEvent.event == "paid")
        )
    app.extensions["db_engine"].dispose()
    return int(paid or 0), int(events or 0)


def sustain(base: str, batch: Iterator[tuple[dict[str, str], bytes]], concurrency: int, seconds: float) -> tuple[list[float], float, list[int]]:
    """POST from ``batch`` for ``seconds`` from ``concurrency`` threads, each sending its next as soon as it is
    answered: (latencies in ms, seconds, statuses). Stops early when ``batch`` runs out."""
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: list[int] = []

    def worker(stop_at: float) -> None:
        http = requests.Session()
        while time.monotonic() < stop_at:
            with lock:
                item = next(batch, None)
            if item is None:
                return
            began = time.perf_counter()
            try:
                status = http.post(base + "/wechat/pay/v3/notify", data=item[1], headers=item[0], timeout=30).status_code
            except requests.RequestException:
                status = 0
            ms = (time.perf_counter() - began) * 1000
            with lock:
                latencies.append(ms)
                statuses.append(status)

    started = time.perf_counter()
    stop_at = time.monotonic() + seconds
    threads = [threading.Thread(target=worker, args=(stop_at,)) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, statuses


class QueueSampler:
    """Samples, every ``interval`` seconds, the job queue's backlog and the bench orders whose points are done."""

    def __init__(self, url: str, interval: float) -> None:
        from server.db import make_engine

        self.engine = make_engine(url)
        self.interval = interval
        self.samples: list[tuple[float, int, int, int]] = []  # (t, backlog, failed, orders rewarded)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.began = time.monotonic()

    def read(self) -> tuple[int, int, int]:
        from sqlalchemy import func, select

        from server.jobs.models import Job, JobState
        from server.points.models import OrderReward

        with self.engine.connect() as conn:
            backlog = conn.scalar(select(func.count()).select_from(Job).where(Job.state.in_((JobState.queued, JobState.running))))
            failed = conn.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.failed))
            rewarded = conn.scalar(select(func.count(func.distinct(OrderReward.order_id))))
        return int(backlog or 0), int(failed or 0), int(rewarded or 0)

    def start(self) -> None:
        self.began = time.monotonic()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.began, *self.read()))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic() - self.began, *self.read()))
        self.engine.dispose()

    def rewarded_at(self, t: float) -> int:
        """Orders rewarded by ``t`` seconds (the last sample at or before it)."""
        return max([s[3] for s in self.samples if s[0] <= t] or [0])


def run_sustained(args: argparse.Namespace, config: Any, env: dict[str, str], tmp: str, settings: dict[str, str]) -> None:
    """The sustained mode: bare and app each posted for ``args.sustain`` seconds; the queue sampled meanwhile."""
    count = max(100, min(args.count, 50_000))
    print(f"preparing {count} orders of invited buyers (database: {config.DATABASE_URL.split('@')[-1]}) ...")
    numbers = prepare_invited(config, count, settings)
    env = env | {"JOB_DRAINERS": str(args.job_drainers), "JOB_BACKPRESSURE": "0" if args.no_backpressure else "1"}
    sampler = QueueSampler(config.DATABASE_URL, args.sample)
    rewarded_before = sampler.read()[2]
    servers = Servers.start(env, workers=args.workers, threads=args.threads, workdir=Path(tmp))
    app_server, bare_server = servers.app, servers.bare
    try:
        # Signed just before sending: WeChat's notifications (and our check) allow five minutes of skew.
        batch = list(notifications(config, numbers))
        print(f"gunicorn -w {args.workers} --threads {args.threads} on loopback, {args.job_drainers} job drainer(s) a worker, back-pressure {'off' if args.no_backpressure else 'on'}; concurrency {args.concurrency}; {args.sustain:.0f} s each; load average {load_average()}")
        sustain(bare_server.base, iter(batch[:WARMUP]), args.concurrency, args.sustain)
        bare_ms, bare_s, bare_status = sustain(bare_server.base, itertools.cycle(batch), args.concurrency, args.sustain)
        print(f"load average after the bare run: {load_average()}")
        sampler.start()
        app_ms, app_s, app_status = sustain(app_server.base, iter(batch), args.concurrency, args.sustain)
        print(f"load average after the app run: {load_average()}")
        drain_deadline = time.monotonic() + args.drain_wait
        while time.monotonic() < drain_deadline:
            backlog, _, _ = sampler.read()
            if backlog == 0:
                break
            time.sleep(args.sample)
        sampler.stop()
    finally:
        servers.stop()

    bare = summarize("bare Flask endpoint", bare_ms, bare_s)
    app = summarize("app: verify + pay the order", app_ms, app_s)
    answered = sum(1 for s in app_status if s == 204)
    in_window = sampler.rewarded_at(app_s) - rewarded_before
    total = sampler.samples[-1][3] - rewarded_before
    half = app_s / 2
    steady = (sampler.rewarded_at(app_s) - sampler.rewarded_at(half)) / max(app_s - half, 1e-9)
    print(f"ratio app/bare: throughput {app['throughput'] / bare['throughput']:.2f}x, p50 {app['p50'] / bare['p50']:.2f}x, p99 {app['p99'] / bare['p99']:.2f}x")
    print(
        f"points processed: {in_window} orders in the {app_s:.0f} s window = {in_window / app_s:.1f}/s "
        f"({in_window / app_s / bare['throughput']:.2f}x bare); second half {steady:.1f}/s; "
        f"{total} of {answered} paid orders rewarded by {sampler.samples[-1][0]:.0f} s"
    )
    print("backlog over time (s: queued+running jobs, failed, orders rewarded):")
    print("  " + "  ".join(f"{t:.0f}:{b}/{f}/{r - rewarded_before}" for t, b, f, r in sampler.samples))
    peak = max(s[1] for s in sampler.samples)
    print(f"backlog peak {peak}, at the window's end {min(sampler.samples, key=lambda s: abs(s[0] - app_s))[1]}, final {sampler.samples[-1][1]}")
    bad = sum(1 for s in app_status if s != 204) + sum(1 for s in bare_status if s != 204)
    print(f"non-204 answers: {bad}; load average at the end {load_average()}")


def summarize(label: str, latencies: list[float], elapsed: float) -> dict[str, float]:
    figures = {
        "throughput": len(latencies) / elapsed,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
    }
    print(f"{label:<28} n={len(latencies):<6} {figures['throughput']:9.1f} req/s   p50 {figures['p50']:7.2f} ms   p99 {figures['p99']:7.2f} ms")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="notifications (and orders) per target; at most 20000")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--redis-url", default=None, help="default: no Redis")
    parser.add_argument("--sustain", type=float, default=None, metavar="SECONDS", help="post for this long (see the module's docstring)")
    parser.add_argument("--sample", type=float, default=2.0, help="with --sustain: seconds between samples of the job queue")
    parser.add_argument("--drain-wait", type=float, default=120.0, help="with --sustain: how long to wait for the queue to empty afterwards")
    parser.add_argument("--job-drainers", type=int, default=1, help="job drainer threads per gunicorn worker")
    parser.add_argument("--no-backpressure", action="store_true", help="with --sustain: requests never run a job themselves (JOB_BACKPRESSURE=0)")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a merchant setting for the run, e.g. risk_enabled=false to leave out the risk scoring")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.setting)
    count = max(10, min(args.count, 20_000))
    deadline = time.monotonic() + DEADLINE_SECONDS

    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        env = bench_env(tmp, args.database_url or f"sqlite:///{tmp}/bench.db", args.redis_url)
        config = config_from(env)
        if args.sustain:
            run_sustained(args, config, env, tmp, settings)
            return

        print(f"preparing {count + WARMUP} orders and notifications (database: {config.DATABASE_URL.split('@')[-1]}) ...")
        numbers = prepare(config, count + WARMUP, settings)
        servers = Servers.start(env, workers=args.workers, threads=args.threads, workdir=Path(tmp))
        app_server, bare_server = servers.app, servers.bare
        try:
            # Signed just before sending: WeChat's notifications (and our check) allow five minutes of skew.
            batch = list(notifications(config, numbers))
            warm, measured = batch[:WARMUP], batch[WARMUP:]
            print(f"gunicorn -w {args.workers} --threads {args.threads} on loopback; {len(measured)} notifications, concurrency {args.concurrency}")
            fire(bare_server.base, warm, args.concurrency, deadline)
            fire(app_server.base, warm, args.concurrency, deadline)
            bare_ms, bare_s, bare_status = fire(bare_server.base, measured, args.concurrency, deadline)
            app_ms, app_s, app_status = fire(app_server.base, measured, args.concurrency, deadline)
        finally:
            servers.stop()

        bare = summarize("bare Flask endpoint", bare_ms, bare_s)
        app = summarize("app: verify + pay the order", app_ms, app_s)
        print(f"ratio app/bare: throughput {app['throughput'] / bare['throughput']:.2f}x, p50 {app['p50'] / bare['p50']:.2f}x, p99 {app['p99'] / bare['p99']:.2f}x")
        bad = sum(1 for s in app_status if s != 204) + sum(1 for s in bare_status if s != 204)
        paid, events = count_paid(config, numbers)
        print(f"non-204 answers: {bad}; orders paid: {paid}/{len(numbers)}; paid events: {events}")


if __name__ == "__main__":
    main()
