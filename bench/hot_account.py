"""Does the merchant's issuance account, a leg of every reward, serialise the postings?

N threads each post rewards through ``ledger.post`` in units of work of their own (one posting,
one commit), every thread to members of its own, for ``--seconds``. Two kinds of posting, in
interleaved rounds: a reward (issuance → the member's pending, as ``credit_order_rewards`` posts
it) and a posting of the same shape between two accounts of the member alone (available →
pending), which no other thread touches. If the issuance leg serialises the postings, rewards
stop scaling with threads while the member-only postings keep scaling. Prints postings per
second per kind and thread count, the load average beside each, and runs ``ledger-check``.
On MariaDB it also prints the server's row-lock waits during each run (``Innodb_row_lock_waits``
and ``Innodb_row_lock_time``, server-wide counters): they show the queueing on the shared row
directly, where the rates on a busy machine are mostly the CPU's share.

    .venv/bin/python bench/hot_account.py --database-url "mysql+pymysql://…/referral_test_x?charset=utf8mb4" [--threads 1,8] [--seconds 8] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Members per thread (postings rotate over them).
MEMBERS_PER_THREAD = 20
#: What each member is given to spend in the member-only postings.
FUNDING = 10_000_000


def build_app(url: str):  # type: ignore[no-untyped-def]
    from server import create_app, migrate
    from server.config import Config

    saved = dict(os.environ)
    os.environ.update({"DATABASE_URL": url, "APP_ENV": "development", "SECRET_KEY": "bench-only-secret", "LOG_LEVEL": "WARNING", "WECHAT_SANDBOX": "1"})
    try:
        config = Config()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    app = create_app(config)
    migrate.upgrade(app)
    return app


def make_members(app, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """``count`` members, each with ``FUNDING`` available (one posting from issuance each)."""
    from server import db
    from server.accounts.models import Member
    from server.points import ledger
    from server.points.models import AccountKind, TxKind

    run = uuid.uuid4().hex[:8]
    with db.unit_of_work(app) as sess:
        members = [Member(openid=f"o-hot-{run}-{n}", nickname=f"hot {n}") for n in range(count)]
        sess.add_all(members)
        sess.flush()
        issuance = ledger.account(sess, None, AccountKind.issuance)
        for member in members:
            ledger.post(
                sess,
                key=f"bench:fund:{run}:{member.id}",
                kind=TxKind.adjust,
                legs=[(issuance, -FUNDING), (ledger.account(sess, member.id, AccountKind.available), FUNDING)],
                reason="bench funding",
                member_id=member.id,
            )
            ledger.account(sess, member.id, AccountKind.pending)
        db.commit()
        return [m.id for m in members]


def post_for(app, kind: str, members: list[int], seconds: float, counts: list[int], slot: int, barrier: threading.Barrier) -> None:  # type: ignore[no-untyped-def]
    from server import db
    from server.points import ledger
    from server.points.models import AccountKind, TxKind

    barrier.wait()
    stop_at = time.monotonic() + seconds
    n = 0
    while time.monotonic() < stop_at:
        member_id = members[n % len(members)]
        with db.unit_of_work(app) as sess:
            source = ledger.account(sess, None, AccountKind.issuance) if kind == "reward" else ledger.account(sess, member_id, AccountKind.available)
            ledger.post(
                sess,
                key=f"bench:{kind}:{uuid.uuid4().hex}",
                kind=TxKind.adjust,
                legs=[(source, -1), (ledger.account(sess, member_id, AccountKind.pending), 1)],
                reason="bench posting",
                member_id=member_id,
            )
            db.commit()
        n += 1
    counts[slot] = n


def row_lock_waits(app) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """MariaDB's row-lock waits so far and the milliseconds spent in them (server-wide); zeros elsewhere."""
    engine = app.extensions["db_engine"]
    if engine.dialect.name != "mysql":
        return 0, 0
    with engine.connect() as conn:
        status = dict(conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_%%'").all())
    return int(status["Innodb_row_lock_waits"]), int(status["Innodb_row_lock_time"])


def measure(app, kind: str, threads: int, members: list[int], seconds: float) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    """Postings a second, and the row-lock waits and milliseconds waited during the run."""
    waits_before, time_before = row_lock_waits(app)
    counts = [0] * threads
    barrier = threading.Barrier(threads)
    workers = [
        threading.Thread(target=post_for, args=(app, kind, members[t * MEMBERS_PER_THREAD : (t + 1) * MEMBERS_PER_THREAD], seconds, counts, t, barrier))
        for t in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    waits_after, time_after = row_lock_waits(app)
    return sum(counts) / seconds, waits_after - waits_before, time_after - time_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--threads", default="1,8", help="thread counts to compare, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]

    from server import db
    from server.points.checks import check_ledger

    app = build_app(args.database_url)
    members = make_members(app, max(counts) * MEMBERS_PER_THREAD)
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for threads in counts:
            for kind in ("reward", "member-only"):
                rate, waits, waited = measure(app, kind, threads, members, args.seconds)
                results.setdefault((kind, threads), []).append(rate)
                posted = max(rate * args.seconds, 1)
                print(
                    f"{kind:<12} {threads:>2} threads: {rate:8.1f} postings/s   row-lock waits {waits:6d} ({waits / posted:.2f} a posting, "
                    f"{waited / posted:6.1f} ms waited a posting)   load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                    flush=True,
                )
    print("median over rounds:")
    for threads in counts:
        reward = sorted(results[("reward", threads)])[len(results[("reward", threads)]) // 2]
        member = sorted(results[("member-only", threads)])[len(results[("member-only", threads)]) // 2]
        print(f"  {threads:>2} threads: reward {reward:8.1f}/s, member-only {member:8.1f}/s, reward/member-only {reward / member:.2f}")
    with db.unit_of_work(app) as sess:
        if sess.get_bind().dialect.name == "mysql":
            sess.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        report = check_ledger(sess)
    print("ledger-check: " + ("passed" if report.ok else f"{len(report.violations)} violations, e.g. {report.violations[:3]}"))
    app.extensions["db_engine"].dispose()


if __name__ == "__main__":
    main()
