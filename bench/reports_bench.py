"""Report times on a large merchant: the rollup rebuild, every report over a year's range, the console's
report pages and their exports, against a bare Flask JSON endpoint in the same run.

Fill the database first with ``bench/large_merchant.py`` (100,000 members, 1,000,000 orders, 3,000,000
ledger entries and 5,000,000 touch events at full size), then:

    .venv/bin/python bench/reports_bench.py --database-url 'mysql+pymysql://referral:referral@127.0.0.1:3306/referral_bench?charset=utf8mb4'

First the daily rollups are rebuilt for every day with data (``--skip-rebuild`` keeps the ones there),
as ``python -m server reports-rebuild`` does, and the time per day is printed. Then each report is
requested in-process through Flask's test client as the owner, ``from`` a year ago ``to`` today, ``--n``
times after ``--warmup`` requests: the status, the median and 95th percentile in milliseconds, the SQL
statements one request runs, and the median as a multiple of a bare Flask JSON endpoint. The target is
a 95th percentile under 500 ms for every report.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, jsonify
from sqlalchemy import event, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from console_bench import p95  # noqa: E402
from large_merchant import OWNER, bench_app  # noqa: E402

from server import db  # noqa: E402
from server.clock import local  # noqa: E402
from server.distribution.models import Distributor  # noqa: E402
from server.orders.models import Order  # noqa: E402
from server.reports import rollups  # noqa: E402

#: (label, path) of what is measured; ``{range}`` is ``from=<a year ago>&to=<today>``, ``{dist}`` the top seller.
PATHS: list[tuple[str, str]] = [
    ("API funnel, last touch", "/admin/api/v1/reports/funnel?{range}"),
    ("API funnel, first touch by content", "/admin/api/v1/reports/funnel?{range}&view=first&by=content"),
    ("API distributors, by sales", "/admin/api/v1/reports/distributors?{range}"),
    ("API distributors, by last sale", "/admin/api/v1/reports/distributors?{range}&sort=days_since_last_sale"),
    ("API distributors, page 100", "/admin/api/v1/reports/distributors?{range}&page=100"),
    ("API one distributor's months", "/admin/api/v1/reports/distributors/{dist}/trend?{range}"),
    ("API distributor cohorts", "/admin/api/v1/reports/distributor-cohorts?{range}"),
    ("API regions", "/admin/api/v1/reports/regions?{range}"),
    ("API products", "/admin/api/v1/reports/products?{range}"),
    ("API products by SKU", "/admin/api/v1/reports/products?{range}&by=sku"),
    ("API repeat business", "/admin/api/v1/reports/repeat-business?{range}"),
    ("API points liability", "/admin/api/v1/reports/points-liability?{range}"),
    ("console funnel", "/console/reports/funnel?{range}"),
    ("console distributors", "/console/reports/distributors?{range}"),
    ("console regions", "/console/reports/regions?{range}"),
    ("console points liability", "/console/reports/points-liability?{range}"),
    ("console dashboard", "/console/"),
    ("console dashboard trend", "/console/dashboard/trend.json"),
    ("export distributors CSV (all)", "/admin/api/v1/reports/distributors?{range}&format=csv"),
    ("export regions XLSX", "/admin/api/v1/reports/regions?{range}&format=xlsx"),
]


def timings(client: Any, path: str, n: int, warmup: int, counter: list[int]) -> tuple[int, list[float], int]:
    """As console_bench's, but each body is read to its end, so a streamed export is timed whole."""
    status = 0
    for _ in range(warmup):
        response = client.get(path)
        response.get_data()
        status = response.status_code
    samples, statements = [], 0
    for _ in range(n):
        counter[0] = 0
        started = time.perf_counter()
        response = client.get(path)
        response.get_data()
        samples.append((time.perf_counter() - started) * 1000)
        status, statements = response.status_code, counter[0]
    return status, samples, statements


def bare_app() -> Flask:
    app = Flask("bare")

    @app.get("/")
    def answer() -> Any:
        return jsonify(code=0, message="ok", data={"rows": [{"day": f"2026-01-{i:02d}", "value": i} for i in range(1, 21)]})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-rebuild", action="store_true")
    args = parser.parse_args()

    app = bench_app(args.database_url)
    app.config["CONSOLE_IDLE_MINUTES"] = 600
    counter = [0]
    with app.app_context():
        engine = app.extensions["db_engine"]
        sess = db.session()
        if not args.skip_rebuild:
            first = rollups.data_start(sess)
            assert first is not None, "the database is empty: run bench/large_merchant.py first"
            days = rollups.days_between(first, local(db.utcnow()).date())
            started = time.perf_counter()
            for day in days:
                rollups.refresh_day(sess, day)
                db.commit()
            took = time.perf_counter() - started
            print(f"rollups rebuilt: {len(days)} days in {took:.1f} s ({took / len(days) * 1000:.0f} ms a day)\n")
        event.listen(engine, "before_cursor_execute", lambda *a, **k: counter.__setitem__(0, counter[0] + 1))
        orders = sess.scalar(select(func.count(Order.id))) or 0
        dist = sess.scalar(
            select(Order.inviter_id).join(Distributor, Distributor.member_id == Order.inviter_id).group_by(Order.inviter_id).order_by(func.count().desc()).limit(1)
        )
        sess.close()
    today = local(db.utcnow()).date()
    fill = {"range": f"from={today - timedelta(days=365)}&to={today}", "dist": dist}
    print(f"{orders:,} orders; year {fill['range']}; busiest distributor: member {dist}\n")

    client = app.test_client()
    token = client.post("/admin/api/v1/auth/login", json={"username": OWNER[0], "password": OWNER[1]}).get_json()["data"]["token"]
    api_headers = {"Authorization": f"Bearer {token}"}
    console = app.test_client()
    login = console.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert csrf, "no CSRF token on the sign-in page"
    assert console.post("/console/login", data={"username": OWNER[0], "password": OWNER[1], "csrf_token": csrf.group(1)}).status_code == 303

    class Api:
        def get(self, path: str) -> Any:
            return client.get(path, headers=api_headers)

    bare = bare_app().test_client()
    _, bare_samples, _ = timings(bare, "/", args.n * 5, args.warmup, [0])
    bare_median = statistics.median(bare_samples)
    print(f"bare Flask JSON endpoint: median {bare_median:.2f} ms\n")
    print(f"{'path':<38} {'status':>6} {'median ms':>10} {'p95 ms':>8} {'SQL':>5} {'× bare':>8}")
    for label, path in PATHS:
        url = path.format(**fill)
        target = console if url.startswith("/console") else Api()
        status, samples, statements = timings(target, url, args.n, args.warmup, counter)
        median = statistics.median(samples)
        print(f"{label:<38} {status:>6} {median:>10.1f} {p95(samples):>8.1f} {statements:>5} {median / bare_median:>8.1f}")


if __name__ == "__main__":
    main()
