"""One lock order for a member's ledger accounts: a credit and a debit of the same member never deadlock.

Each race pauses both units of work right after their first row lock (``SELECT … FOR UPDATE``) until
the other has taken its own, or for two seconds if the other is waiting on that lock. Two units that
lock in opposite orders then meet head-on and MariaDB rolls one back (error 1213); under the one
order the second waits on the first and both commit.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from server import db
from server.accounts.models import StaffRole
from server.accounts.services import create_staff
from server.db import unit_of_work
from server.orders.models import Order
from server.points import redemption, settlement
from server.points.checks import check_ledger
from server.points.models import AccountKind, ItemKind
from server.points.queries import member_balances
from server.points.services import reverse_order_rewards
from tests.points import completed_order, make_member, make_sku, post_to

K = AccountKind


def _mariadb_only(app: Flask) -> None:
    with app.app_context():
        if db.session().get_bind().dialect.name != "mysql":
            pytest.skip("SQLite serialises writers; the row locks exist on MariaDB")


@contextmanager
def paused_after_first_lock(app: Flask, names: tuple[str, str]) -> Iterator[None]:
    """Each thread named in ``names`` stops after its first ``FOR UPDATE`` until the other has taken its first too (two seconds at most)."""
    with app.app_context():
        engine = db.session().get_bind().engine
    locked = {name: threading.Event() for name in names}

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        me = threading.current_thread().name
        if me in locked and "FOR UPDATE" in statement and not locked[me].is_set():
            locked[me].set()
            (other,) = (name for name in names if name != me)
            locked[other].wait(2)

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(engine, "after_cursor_execute", after)


def race(app: Flask, first: Callable[[Any], None], second: Callable[[Any], None]) -> list[BaseException]:
    """Run ``first`` and ``second`` each in its own unit of work, paused after their first locks; the errors raised."""
    errors: list[BaseException] = []

    def run(work: Callable[[Any], None]) -> None:
        try:
            with unit_of_work(app) as s:
                work(s)
                db.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(work,), name=f"lock-order-{i}") for i, work in enumerate((first, second))]
    with paused_after_first_lock(app, (threads[0].name, threads[1].name)):
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_a_grant_and_the_reversal_of_settled_points_of_one_member_both_commit(app: Flask) -> None:
    """A credit (debt first, then available) and a refund's reversal (available short, the rest as debt) of the same member."""
    _mariadb_only(app)
    with app.app_context():
        sess = db.session()
        zoe = make_member(sess, "zoe")
        bob = make_member(sess, "bob", inviter=zoe)
        order = completed_order(sess, bob, make_sku(sess, price_fen=100_000))
        settlement.settle(sess, period="manual:setup", mode="weekly", actor="test")
        settlement.grant_points(sess, zoe.id, -400, reason="spent", key="test:spent", actor="test")
        db.commit()
        assert member_balances(sess, zoe.id).available == 100  # 500 settled, 400 of it spent
        zoe_id, order_id = zoe.id, order.id

    def grant(s: Any) -> None:
        settlement.grant_points(s, zoe_id, 1_000, reason="goodwill", key=f"test:{uuid.uuid4().hex}", actor="test")

    def refund(s: Any) -> None:
        found = s.get(Order, order_id)
        found.refunded_fee = found.total_fee
        s.flush()
        assert reverse_order_rewards(s, found) == 500

    assert race(app, grant, refund) == []
    with app.app_context():
        sess = db.session()
        balances = member_balances(sess, zoe_id)
        # Either way round: 100 + 1,000 − 500, nothing owed.
        assert (balances.available, balances.debt) == (600, 0)
        assert check_ledger(sess).ok


def test_a_settlement_and_a_redemption_cancellation_of_one_member_both_commit(app: Flask) -> None:
    """A run (matured into available, debt first) and a cancellation (points back into available, debt first) of the same member."""
    _mariadb_only(app)
    with app.app_context():
        sess = db.session()
        owner = create_staff(sess, username=f"owner-{uuid.uuid4().hex[:8]}", password="correct horse battery", role=StaffRole.owner)
        zoe = make_member(sess, "zoe")
        bob = make_member(sess, "bob", inviter=zoe)
        completed_order(sess, bob, make_sku(sess, price_fen=100_000))
        post_to(sess, zoe, K.available, 1_000)
        item = redemption.create_item(sess, kind=ItemKind.privilege, title="线下活动入场资格", price=300)
        placed = redemption.redeem(sess, zoe.id, item_id=item.id, quantity=1, idempotency_key="lock-order-1")
        db.commit()
        assert (member_balances(sess, zoe.id).available, member_balances(sess, zoe.id).matured) == (700, 500)
        zoe_id, redemption_id, staff_id = zoe.id, placed.redemption.id, owner.id

    def run(s: Any) -> None:
        assert settlement.settle(s, period="manual:race", mode="weekly", actor="test").total == 500

    def cancel(s: Any) -> None:
        redemption.cancel_redemption(s, redemption_id, staff_id=staff_id, note="changed their mind")

    assert race(app, run, cancel) == []
    with app.app_context():
        sess = db.session()
        balances = member_balances(sess, zoe_id)
        assert (balances.available, balances.matured, balances.debt) == (1_500, 0, 0)
        assert check_ledger(sess).ok
