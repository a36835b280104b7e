"""One lock order for a member's ledger accounts: a credit and a debit of the same member never deadlock.

Each race pauses both units of work right after a row lock (``SELECT … FOR UPDATE``, their first unless
said otherwise) until the other has taken its own, or for two seconds if the other is waiting on that lock. Two units that
lock in opposite orders then meet head-on and MariaDB rolls one back (error 1213); under the one
order the second waits on the first and both commit.
"""
from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

from server import db, scheduler
from server.accounts.models import StaffRole
from server.accounts.services import create_staff
from server.db import unit_of_work, utcnow
from server.jobs import queue
from server.orders.models import Order
from server.points import ledger, redemption, settlement
from server.points.checks import check_ledger
from server.points.models import MEMBER_KINDS, AccountKind, ItemKind, OrderReward
from server.points.queries import member_balances
from server.points.services import reverse_order_rewards
from tests.points import completed_order, make_member, make_sku, pay, place, post_to

K = AccountKind


def _mariadb_only(app: Flask) -> None:
    with app.app_context():
        if db.session().get_bind().dialect.name != "mysql":
            pytest.skip("SQLite serialises writers; the row locks exist on MariaDB")


@contextmanager
def paused_after_lock(app: Flask, pauses: dict[str, int]) -> Iterator[None]:
    """Each of two threads (by name) stops after its n-th ``FOR UPDATE`` until the other has stopped too (two seconds at most)."""
    with app.app_context():
        engine = db.session().get_bind().engine
    locks = dict.fromkeys(pauses, 0)
    paused = {name: threading.Event() for name in pauses}

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        me = threading.current_thread().name
        if me not in pauses or "FOR UPDATE" not in statement:
            return
        locks[me] += 1
        if locks[me] == pauses[me]:
            paused[me].set()
            (other,) = (name for name in pauses if name != me)
            paused[other].wait(2)

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(engine, "after_cursor_execute", after)


def race(app: Flask, first: Callable[[Any], None], second: Callable[[Any], None], pauses: tuple[int, int] = (1, 1)) -> list[BaseException]:
    """Run ``first`` and ``second`` each in its own unit of work, paused after their ``pauses`` locks (the first lock by default); the errors raised."""
    errors: list[BaseException] = []

    def run(work: Callable[[Any], None]) -> None:
        try:
            with unit_of_work(app) as s:
                work(s)
                db.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(work,), name=f"lock-order-{i}") for i, work in enumerate((first, second))]
    with paused_after_lock(app, {t.name: n for t, n in zip(threads, pauses)}):
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


def test_the_lock_order_is_the_order_the_member_kind_index_keeps() -> None:
    """One ``SELECT … FOR UPDATE`` along (member, kind) takes each member's accounts in ``LOCK_ORDER``: kinds sort as strings."""
    assert list(ledger.LOCK_ORDER) == sorted(ledger.LOCK_ORDER, key=lambda kind: kind.value)
    assert set(ledger.LOCK_ORDER) == set(MEMBER_KINDS)
    assert ledger.LOCK_ORDER.index(K.available) < ledger.LOCK_ORDER.index(K.debt)


def test_a_settlement_and_a_refund_of_an_order_whose_upline_joined_first_both_commit(app: Flask) -> None:
    """The refund reverses level 1 (the newer member) before level 2 (the older); the run locks member by member in id order."""
    _mariadb_only(app)
    with app.app_context():
        sess = db.session()
        zoe = make_member(sess, "zoe")
        yan = make_member(sess, "yan", inviter=zoe)
        bob = make_member(sess, "bob", inviter=yan, upline=zoe)
        sku = make_sku(sess, price_fen=100_000)
        refunded = completed_order(sess, bob, sku)
        settlement.settle(sess, period="manual:setup", mode="weekly", actor="test")
        completed_order(sess, bob, sku)  # matured for the run
        db.commit()
        assert zoe.id < yan.id
        assert all(member_balances(sess, m.id).available > 0 and member_balances(sess, m.id).matured > 0 for m in (zoe, yan))
        member_ids, order_id = (zoe.id, yan.id), refunded.id

    def run(s: Any) -> None:
        assert settlement.settle(s, period="manual:race", mode="weekly", actor="test").members == 2

    def refund(s: Any) -> None:
        found = s.get(Order, order_id)
        found.refunded_fee = found.total_fee
        s.flush()
        assert reverse_order_rewards(s, found) > 0

    # The refund stops after its second lock (before this change: level 1's available account, after it: both
    # members' accounts), the run after its first.
    assert race(app, refund, run, pauses=(2, 1)) == []
    with app.app_context():
        sess = db.session()
        for member_id in member_ids:
            kept = sess.scalar(select(func.sum(OrderReward.amount - OrderReward.reversed_amount)).where(OrderReward.member_id == member_id))
            balances = member_balances(sess, member_id)
            assert (balances.available, balances.matured, balances.debt) == (kept, 0, 0)
        assert check_ledger(sess).ok


def test_the_orders_tick_holds_each_orders_members_only_for_that_orders_own_work(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tick brings many orders' points in line; while it works on one, another order's members stay free."""
    _mariadb_only(app)
    monkeypatch.setattr(queue, "wake", lambda: None)  # the tick, not a drainer, does the points
    with app.app_context():
        sess = db.session()
        sku = make_sku(sess)
        first_sharer, second_sharer = make_member(sess, "first-sharer"), make_member(sess, "second-sharer")
        for sharer in (first_sharer, second_sharer):
            post_to(sess, sharer, K.pending, 100)  # accounts that exist, so a lock holds rows
        for sharer in (first_sharer, second_sharer):
            buyer = make_member(sess, f"buyer-of-{sharer.nickname}", inviter=sharer)
            pay(sess, place(sess, buyer, sku))
        db.commit()
        engine = db.session().get_bind().engine
        first_id, second_id = sorted((first_sharer.id, second_sharer.id))

    probe: dict[str, Any] = {}

    def try_the_second_sharer() -> None:
        with app.app_context():
            probe_sess = db.session()
            probe_sess.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
            try:
                ledger.lock_accounts(probe_sess, [second_id], open_missing=False)
                probe["locked"] = True
            except OperationalError as error:
                probe["locked"] = False
                probe["error"] = str(error.orig)
            finally:
                probe_sess.rollback()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread().name == "tick" and "FOR UPDATE" in statement and "ledger_accounts" in statement and "locked" not in probe:
            prober = threading.Thread(target=try_the_second_sharer)
            prober.start()
            prober.join()

    outcome: dict[str, Any] = {}
    event.listen(engine, "after_cursor_execute", after)
    try:
        tick = threading.Thread(target=lambda: outcome.update(scheduler.orders_tick(app, utcnow() + timedelta(hours=1)) or {}), name="tick")
        tick.start()
        tick.join()
    finally:
        event.remove(engine, "after_cursor_execute", after)
    assert outcome.get("points") == 2
    assert probe == {"locked": True}, probe  # the first order's work did not hold the second order's sharer
    with app.app_context():
        sess = db.session()
        assert all(member_balances(sess, m).pending > 100 for m in (first_id, second_id))
        assert check_ledger(sess).violations == []
