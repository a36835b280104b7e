"""What an order's points job sends to the database, and how much of it runs while the members' accounts are locked.

A popular sharer's accounts are a leg of every order they brought in, so each order's job waits for the one
before it to commit: the fewer statements between the lock and the commit, the more orders a second that
member's orders can be rewarded at.
"""
from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from server import db
from server.jobs import queue
from server.points import ledger
from server.points.models import AccountKind, OrderReward
from tests.points import make_member, make_sku, pay, place
from tests.statements import statements_sent

#: How the account lock (``ledger.locking``) orders what it reads, on every database.
LOCK_MARK = "ORDER BY ledger_accounts.member_id, ledger_accounts.kind"


def test_a_paid_orders_points_job_reads_first_and_locks_the_accounts_just_before_posting(app: Flask) -> None:
    app.config.update(TASKS_EAGER=False, JOB_DRAINERS=0)  # the jobs wait in the queue until this test runs them: no drainer thread takes them
    with app.app_context():
        sess = db.session()
        upline = make_member(sess, "upline")
        inviter = make_member(sess, "inviter", inviter=upline)
        buyer = make_member(sess, "buyer", inviter=inviter, upline=upline)
        sku = make_sku(sess)
        for _ in range(2):  # the first order opens the members' accounts; the second is the common case
            pay(sess, place(sess, buyer, sku))
            db.commit()
    first, second = queue.claim(app)
    assert queue.run(app, first)

    with statements_sent(app) as recorded:
        assert queue.run(app, second)
    sent = [statement for statement in recorded if not statement.startswith("BEGIN")]  # SQLite's own way of opening the transaction MariaDB opens implicitly

    locks = [n for n, statement in enumerate(sent) if LOCK_MARK in statement]
    assert locks, sent
    held = sent[locks[0]:]
    assert len(sent) <= 27, "\n".join(sent)
    # After the lock: the lock itself, two postings (savepoint, transaction, a balance, the entries in one
    # INSERT, release), two reward rows, the notification's titles and the job's own row; the commit follows.
    assert len(held) <= 15, "\n".join(held)
    assert len([s for s in held if s.startswith("INSERT INTO ledger_entries")]) == 2, "\n".join(held)
    assert not any(statement.lstrip().upper().startswith("SELECT") and "settings" in statement for statement in held)
    with app.app_context():
        sess = db.session()
        for member in (inviter, upline):
            rewards = sess.scalars(select(OrderReward.amount).where(OrderReward.member_id == member.id)).all()
            assert len(rewards) == 2 and min(rewards) > 0
            assert ledger.account(sess, member.id, AccountKind.pending).balance == sum(rewards)
