"""Settlement and ledger-check on a merchant on settlement day: matured rewards settled per second.

Fills a database with ``settle_data.py`` (default 10,000 members with 100,000 matured rewards),
then times ``settlement.settle`` (the service the scheduler, the CLI and the console call: claim,
lock, post, statements, the ``points_settled`` event) and its commit, each with ``time.perf_counter``
in this process (start-up and the load not counted), then ``check_ledger`` (what
``python -m server ledger-check`` runs) after it.

    .venv/bin/python bench/settle_bench.py                      # SQLite in a temporary directory
    .venv/bin/python bench/settle_bench.py --database-url 'mysql+pymysql://referral:referral@127.0.0.1:3306/referral_test_settle_bench?charset=utf8mb4'
    .venv/bin/python bench/settle_bench.py --database-url "$URL" --members 60000 --rewards 250000   # about a million entries for ledger-check

The database is emptied (the app's tables dropped) and migrated first.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import configure_mappers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from settle_data import generate  # noqa: E402

from server import create_app, db, models  # noqa: E402
from server.config import TestingConfig  # noqa: E402
from server.migrate import upgrade  # noqa: E402
from server.points import settlement  # noqa: E402
from server.points.checks import DEFAULT_WORKERS, check_ledger  # noqa: E402
from server.points.models import OrderReward, RewardState, Statement  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rewards", type=int, default=100_000, help="matured order rewards, two per order (default 100,000)")
    parser.add_argument("--mode", choices=settlement.MODES, default="weekly")
    parser.add_argument("--reversed", type=float, default=0.05, help="share of rewards partly reversed while matured")
    parser.add_argument("--bonuses", type=float, default=0.1, help="share of members with a stage bonus matured since the last run")
    parser.add_argument("--debts", type=float, default=0.05, help="share of members owing points")
    parser.add_argument("--settled-before", type=float, default=0.2, help="share of members settled in an earlier run")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="ledger-check's connections at once on MariaDB (the command's default)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/settle.db"
        engine = create_engine(url)
        models.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
        config = TestingConfig()
        config.DATABASE_URL = url
        config.TASKS_EAGER = True
        app = create_app(config)
        with app.app_context():
            upgrade(app)
            started = time.perf_counter()
            with db.engine().connect() as conn:
                counts = generate(
                    conn, members=args.members, rewards=args.rewards, reversed_share=args.reversed, bonus_share=args.bonuses,
                    debt_share=args.debts, settled_before=args.settled_before, seed=args.seed,
                )
            print(f"generated in {time.perf_counter() - started:.1f} s: " + ", ".join(f"{n:,} {table}" for table, n in counts.items()))

        # The mappers are configured on first use: process start-up, not the run.
        configure_mappers()
        with app.app_context():
            sess = db.session()
            matured = sess.scalar(select(func.count()).select_from(OrderReward).where(OrderReward.state == RewardState.matured)) or 0
            load = os.getloadavg()[0]
            started = time.perf_counter()
            run = settlement.settle(sess, period=settlement.manual_period_key(), mode=args.mode, actor="bench")
            settled_in = time.perf_counter() - started
            db.commit()
            total = time.perf_counter() - started
            statements = sess.scalar(select(func.count()).select_from(Statement).where(Statement.run_id == run.id)) or 0
            left = sess.scalar(select(func.count()).select_from(OrderReward).where(OrderReward.state == RewardState.matured)) or 0
            members, points = run.members, run.total
        print(f"{engine.dialect.name}, {args.mode}: {matured:,} matured rewards of {args.members:,} members; load average {load:.2f} before the run")
        print(f"  settle {settled_in:.2f} s + commit {total - settled_in:.2f} s = {total:.2f} s: {(matured - left) / total:,.0f} rewards/s, "
              f"{members:,} statements ({statements:,} rows), {points / 100:,.2f} points; {left:,} rewards left matured")

        with app.app_context():
            sess = db.session()
            if db.engine().dialect.name == "mysql":
                sess.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            load = os.getloadavg()[0]
            started = time.perf_counter()
            report = check_ledger(sess, workers=args.workers)
            checked = time.perf_counter() - started
        entries = report.counts.get("entries", 0)
        print(f"  ledger-check ({args.workers} workers) {checked:.2f} s for {entries:,} entries ({checked / max(entries, 1) * 1e6:.2f} s per million; load average {load:.2f}): "
              + ("passed" if report.ok else f"{len(report.violations)} violations, first: {report.violations[:3]}"))


if __name__ == "__main__":
    main()
