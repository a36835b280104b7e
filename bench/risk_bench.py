"""Risk controls: recall on injected fraud, false positives on honest members, and the scoring time a
payment notification pays for them.

Builds the generated merchant of tests/risk/generate.py (honest traffic and injected fraud of every
kind, each labelled) in a temporary SQLite database, then pays ``--payments`` more honest orders.
Every payment's scoring (the risk handler of the paid event, run inside ``apply_payment`` in the
notification's transaction) is timed with ``time.perf_counter``, after the payment's own rows are
flushed (the commit writes those whether or not anything is scored).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import create_app, db, events, migrate  # noqa: E402
from server.config import TestingConfig  # noqa: E402
from server.orders.models import OrderStatus  # noqa: E402
from server.risk import handlers  # noqa: E402
from tests.risk.generate import Builder, build, measure  # noqa: E402


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sharers", type=int, default=20, help="honest sharers (default 20)")
    parser.add_argument("--buyers", type=int, default=15, help="honest buyers per sharer (default 15)")
    parser.add_argument("--cases", type=int, default=5, help="injected cases of each kind (default 5)")
    parser.add_argument("--payments", type=int, default=1000, help="more honest payments to time (default 1000)")
    args = parser.parse_args()
    logging.getLogger("server.risk").setLevel(logging.CRITICAL)

    with tempfile.TemporaryDirectory() as tmp:
        config = TestingConfig()
        config.DATABASE_URL = f"sqlite:///{tmp}/bench.db"
        app = create_app(config)
        migrate.upgrade(app)
        timings: list[float] = []
        cpu: list[float] = []

        def timed(sess: Any, *, order: Any, status: OrderStatus) -> None:
            # The payment's own rows are written before the clock starts: the commit writes them anyway,
            # and the scoring's savepoint would otherwise be charged for them.
            sess.flush()
            started, started_cpu = time.perf_counter(), time.process_time()
            handlers.on_order_status_changed(sess, order=order, status=status)
            if status == OrderStatus.paid:
                timings.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)

        events.order_status_changed.disconnect(handlers.on_order_status_changed)
        events.order_status_changed.connect(timed)
        with app.app_context():
            sess = db.session()
            started = time.perf_counter()
            merchant = build(sess, sharers=args.sharers, buyers_per_sharer=args.buyers, cases_per_kind=args.cases)
            quality = measure(sess, merchant)
            built = time.perf_counter() - started
            b = Builder(sess, seed=99, prefix="more")
            sharer = b.member()
            for i in range(args.payments):
                if i % 20 == 0:
                    buyer = b.member()
                    b.bind(buyer, sharer, days_ago=10 + i / 100)
                b.order(buyer)
            db.commit()

    ms = [t * 1000 for t in timings]
    print(f"generated merchant: {len(merchant.honest)} honest members, {len(merchant.cases)} injected cases ({args.cases} of each kind), built in {built:.1f} s")
    print(f"recall on injected cases:        {quality.recall:.1%}  (missed: {[(c.kind, c.member_id) for c in quality.missed] or 'none'})")
    print(f"false positives, honest members: {quality.false_positive_rate:.2%}  ({len(quality.flagged_honest)} of {len(merchant.honest)})")
    print(f"scoring added to the payment-notification path, SQLite, time.perf_counter over {len(ms)} payments:")
    print(f"  median {statistics.median(ms):.2f} ms, mean {statistics.fmean(ms):.2f} ms, p95 {percentile(ms, 0.95):.2f} ms, max {max(ms):.2f} ms")
    print(f"  (this process's CPU time, time.process_time, for the same calls: mean {statistics.fmean(cpu) * 1000:.2f} ms; the wall figures include waiting for a busy machine)")


if __name__ == "__main__":
    main()
