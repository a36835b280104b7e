"""Server time of the console's pages on a large merchant, against a bare Flask page in the same run.

Fill the database first with ``bench/large_merchant.py`` (100,000 members and 1,000,000 orders by
default), then:

    .venv/bin/python bench/console_bench.py --database-url 'mysql+pymysql://referral:referral@127.0.0.1:3306/referral_test_bench?charset=utf8mb4'

Each page is requested in-process through Flask's test client as the signed-in owner (no network,
so the time is the app's: routing, session, queries, template), ``--n`` times after ``--warmup``
requests. Printed per page: the status, the median and 95th percentile in milliseconds, the SQL
statements one request runs, and the median as a multiple of a bare Flask page rendering a small
template. Pages that do not exist (404) are listed as such. The target is a 95th percentile under
200 ms for every list page.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from flask import Flask, render_template_string
from sqlalchemy import event, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_merchant import OWNER, bench_app  # noqa: E402

from server import db  # noqa: E402
from server.distribution.models import Distributor  # noqa: E402
from server.orders.models import Order  # noqa: E402
from server.points.models import SettlementRun  # noqa: E402
from server.referral.models import Binding, Lead  # noqa: E402

#: (label, path) of the pages measured; the ``{…}`` fields are filled from the data.
PAGES = [
    ("dashboard", "/console/"),
    ("dashboard trend", "/console/dashboard/trend.json"),
    ("members", "/console/members"),
    ("members, page 2,000", "/console/members?page=2000"),
    ("members, search nickname", "/console/members?q={q}"),
    ("members, search id", "/console/members?q={member}"),
    ("member with the largest team", "/console/members/{hub}"),
    ("member, ordinary", "/console/members/{member}"),
    ("audit", "/console/audit"),
    ("audit, page 500", "/console/audit?page=500"),
    ("audit, one action", "/console/audit?action=refund.approve"),
    ("orders", "/console/orders"),
    ("orders, completed", "/console/orders?status=completed"),
    ("orders, page 1,000", "/console/orders?page=1000"),
    ("orders, by inviter", "/console/orders?inviter={hub}"),
    ("order", "/console/orders/{order}"),
    ("products", "/console/products"),
    ("distributors", "/console/distributors"),
    ("leads", "/console/leads"),
    ("contracts", "/console/contracts"),
    ("points", "/console/points"),
    ("points, one kind", "/console/points?kind=order_reward"),
    ("points, one month", "/console/points?from=2026-01-01&to=2026-01-31"),
    ("points, the hub's ledger", "/console/points?member={hub}"),
    ("settlement runs", "/console/points/settlements"),
    ("settlement run (latest)", "/console/points/settlements/{run}"),
    ("points compliance", "/console/points/compliance"),
    ("refunds", "/console/refunds"),
    ("lead with its timeline", "/console/leads/{lead}"),
    ("partners, one partner", "/console/partners/1"),
    ("distributor", "/console/distributors/{distributor}"),
    ("redemptions", "/console/redemptions"),
    ("redemptions to fulfil", "/console/redemptions?status=placed"),
    ("invite codes", "/console/redemptions/invite-codes"),
]

BARE_TEMPLATE = "<!doctype html><title>{{ title }}</title><ul>{% for i in items %}<li>{{ i }}</li>{% endfor %}</ul>"


def bare_app() -> Flask:
    app = Flask("bare")

    @app.get("/")
    def page() -> str:
        return render_template_string(BARE_TEMPLATE, title="bare", items=range(20))

    return app


def timings(client: Any, path: str, n: int, warmup: int, counter: list[int]) -> tuple[int, list[float], int]:
    status = 0
    for _ in range(warmup):
        status = client.get(path).status_code
    samples = []
    statements = 0
    for _ in range(n):
        counter[0] = 0
        started = time.perf_counter()
        status = client.get(path).status_code
        samples.append((time.perf_counter() - started) * 1000)
        statements = counter[0]
    return status, samples, statements


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    app = bench_app(args.database_url)
    app.config["CONSOLE_IDLE_MINUTES"] = 600
    counter = [0]
    with app.app_context():
        engine = app.extensions["db_engine"]
        event.listen(engine, "before_cursor_execute", lambda *a, **k: counter.__setitem__(0, counter[0] + 1))
        sess = db.session()
        hub = sess.scalar(select(Binding.inviter_id).group_by(Binding.inviter_id).order_by(func.count().desc()).limit(1))
        members = sess.scalar(select(func.count(Binding.member_id))) or 0
        order = sess.scalar(select(func.max(Order.id)))
        ordinary = max(1, members // 2)
        run = sess.scalar(select(func.max(SettlementRun.id))) or 0
        lead = sess.scalar(select(func.max(Lead.id)).where(Lead.member_id.is_not(None))) or 0
        distributor = sess.scalar(select(func.min(Distributor.id))) or 0
        sess.close()
    fill = {"hub": hub, "member": ordinary, "order": order, "q": "小明12", "run": run, "lead": lead, "distributor": distributor}

    client = app.test_client()
    login = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert token, "no CSRF token on the sign-in page"
    answer = client.post("/console/login", data={"username": OWNER[0], "password": OWNER[1], "csrf_token": token.group(1)})
    assert answer.status_code == 303, f"sign-in failed ({answer.status_code}): run bench/large_merchant.py first"

    bare = bare_app().test_client()
    _, bare_samples, _ = timings(bare, "/", args.n * 5, args.warmup, [0])
    bare_median = statistics.median(bare_samples)
    print(f"bare Flask page: median {bare_median:.2f} ms\n")
    print(f"{'page':<32} {'status':>6} {'median ms':>10} {'p95 ms':>8} {'SQL':>5} {'× bare':>8}")
    for label, path in PAGES:
        url = path.format(**fill)
        status, samples, statements = timings(client, url, args.n, args.warmup, counter)
        if status == 404:
            print(f"{label:<32} {'404':>6}   (no such page)")
            continue
        median = statistics.median(samples)
        print(f"{label:<32} {status:>6} {median:>10.1f} {p95(samples):>8.1f} {statements:>5} {median / bare_median:>8.1f}")


if __name__ == "__main__":
    main()
