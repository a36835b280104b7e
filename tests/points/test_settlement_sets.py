"""The set-based settlement against the member-at-a-time one it replaced, and its locks on MariaDB.

``settle_one_by_one`` is the previous implementation, kept here as the specification: lock the
member's matured account, read their matured rewards and the other matured postings since their
last settlement, ``ledger.credit_available`` (debt first), mark the rewards settled, write the
statement. Both run on the same mixed merchant (debts, threshold, rewards reversed in part, a
stage bonus, members below the threshold, a member who settled before), inside a savepoint for
the reference, and must leave the same rows.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from server import db
from server.accounts.models import Member
from server.db import unit_of_work, utcnow
from server.orders.models import Order
from server.points import ledger, settlement
from server.points.checks import check_ledger
from server.points.models import Account, AccountKind, Entry, LedgerTransaction, OrderReward, RewardState, SettlementRun, Statement, TxKind
from server.points.queries import member_balances, statement_lines
from server.points.services import mature_order_rewards, reverse_order_rewards
from server.settings.services import set_setting
from tests.points import completed_order, make_member, make_sku, pay, place, post_to

K = AccountKind


# -- the specification: one member at a time, through the ORM ---------------------------------------


def _lines_one_by_one(sess: Session, matured: Account, rewards: list[tuple[OrderReward, str]], settled: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [
        {"kind": "order_reward", "order_id": row.order_id, "out_trade_no": no, "level": row.level, "amount": row.amount - row.reversed_amount, "rule": row.rule}
        for row, no in rewards
    ]
    last_settle = (
        select(func.max(Entry.id))
        .join(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
        .where(Entry.account_id == matured.id, LedgerTransaction.kind == TxKind.settle)
        .scalar_subquery()
    )
    others = sess.execute(
        select(Entry.amount, LedgerTransaction)
        .join(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
        .where(Entry.account_id == matured.id, Entry.id > func.coalesce(last_settle, 0), LedgerTransaction.order_id.is_(None))
        .order_by(Entry.id)
    ).all()
    lines += [{"kind": tx.kind.value, "transaction_id": tx.id, "reason": tx.reason, "amount": int(amount)} for amount, tx in others]
    rest = settled - sum(line["amount"] for line in lines)
    if rest:
        lines.append({"kind": "other", "amount": rest, "reason": "matured postings not itemised above"})
    return lines


def settle_one_by_one(sess: Session, run: SettlementRun, minimum: int) -> None:
    members = sess.scalars(select(Account.member_id).where(Account.kind == K.matured, Account.balance >= minimum).order_by(Account.member_id)).all()
    for member_id in members:
        assert member_id is not None
        matured = ledger.account(sess, member_id, K.matured)
        sess.refresh(matured, with_for_update=True)
        amount = matured.balance
        if amount < minimum:
            continue
        rewards = [(row, no) for row, no in sess.execute(
            select(OrderReward, Order.out_trade_no).join(Order, Order.id == OrderReward.order_id)
            .where(OrderReward.member_id == member_id, OrderReward.state == RewardState.matured).order_by(OrderReward.id)
        )]
        lines = _lines_one_by_one(sess, matured, rewards, amount)
        repaid, credited = ledger.credit_available(
            sess, member_id, amount, source=K.matured, key=f"settle:{run.id}:{member_id}", kind=TxKind.settle,
            reason=f"Settlement {run.period}: {amount / 100:.2f} matured points", actor=run.actor, detail={"run_id": run.id, "period": run.period},
        )
        for row, _ in rewards:
            row.state = RewardState.settled
        after = member_balances(sess, member_id)
        statement = Statement(run_id=run.id, member_id=member_id, settled=amount, debt_repaid=repaid, credited=credited,
                              available_after=after.available, debt_after=after.debt)
        sess.add(statement)
        sess.flush()
        # The lines read back from the ledger are those the member's rewards and postings gave at settlement.
        assert statement_lines(sess, [statement])[statement.id] == lines
        run.members += 1
        run.total += amount
    sess.flush()


def outcome(sess: Session, run_id: int) -> dict[str, Any]:
    """Everything a run leaves, with its own ids left out (they differ between the two runs)."""
    sess.expire_all()
    rows = sess.scalars(select(Statement).where(Statement.run_id == run_id)).all()
    lines = statement_lines(sess, rows)
    statements = {s.member_id: (s.settled, s.debt_repaid, s.credited, s.available_after, s.debt_after, lines[s.id]) for s in rows}
    postings = {}
    for tx in sess.scalars(select(LedgerTransaction).where(LedgerTransaction.idempotency_key.like(f"settle:{run_id}:%"))):
        assert tx.idempotency_key == f"settle:{run_id}:{tx.member_id}"
        # Accounts by owner and kind: one the run opens gets a new id on MariaDB, whose rolled-back ids are not reused.
        entries = sess.execute(
            select(Account.member_id, Account.kind, Entry.amount).join(Account, Account.id == Entry.account_id).where(Entry.transaction_id == tx.id).order_by(Entry.id)
        ).all()
        detail = dict(tx.detail)
        assert detail.pop("run_id") == run_id
        postings[tx.member_id] = (tx.kind, tx.reason, tx.actor, detail, tx.order_id, tx.level, [tuple(e) for e in entries])
    return {
        "statements": statements,
        "postings": postings,
        "balances": sorted((row.member_id or 0, row.kind.value, row.balance) for row in sess.execute(select(Account.member_id, Account.kind, Account.balance).where(Account.balance != 0))),
        "rewards": sorted((r.id, r.state) for r in sess.scalars(select(OrderReward))),
    }


# -- a mixed merchant -------------------------------------------------------------------------------------


def refund_part(sess: Session, order: Order, fee: int) -> None:
    """A refund of part of the order, as the refund's success leaves it: its rewards reduced from wherever they sit."""
    order.refunded_fee = fee
    sess.flush()
    reverse_order_rewards(sess, order)


def debt_of(sess: Session, member: Member, owed: int) -> None:
    ledger.post(
        sess, key=f"test:debt:{member.id}", kind=TxKind.reversal,
        legs=[(ledger.account(sess, member.id, K.debt), -owed), (ledger.account(sess, None, K.issuance), owed)],
        reason="test debt", member_id=member.id,
    )


def mixed_merchant(sess: Session) -> dict[str, Member]:
    people = {name: make_member(sess, name) for name in ("zoe", "yan")}
    for name, inviter, upline in (("alice", "zoe", None), ("bob", "alice", "zoe"), ("carol", "yan", None), ("dave", "carol", "yan"), ("erin", "zoe", None)):
        people[name] = make_member(sess, name, inviter=people[inviter], upline=people[upline] if upline else None)
    sku = make_sku(sess, price_fen=200_000, stock=1_000)
    # Erin and Zoe settled before; only what matured since is itemised in the run.
    post_to(sess, people["erin"], K.matured, 900, tx_kind=TxKind.lead_reward)
    completed_order(sess, people["erin"], sku)
    settlement.settle(sess, period="manual:before", mode="weekly", actor="test")
    # Zoe: rewards on two levels, one of them reduced by a partial refund while matured; a stage bonus.
    completed_order(sess, people["alice"], sku)
    refund_part(sess, completed_order(sess, people["bob"], sku), 80_000)
    post_to(sess, people["zoe"], K.matured, 1_234, tx_kind=TxKind.stage_bonus)
    # Alice: matured rewards and a debt larger than them; Yan: a debt smaller than his rewards.
    completed_order(sess, people["bob"], sku)
    debt_of(sess, people["alice"], 5_000)
    completed_order(sess, people["carol"], sku)
    debt_of(sess, people["yan"], 150)
    # Carol: a reward refunded in full while matured (nothing of it settles), then another one.
    refund_part(sess, completed_order(sess, people["dave"], sku), 200_000)
    completed_order(sess, people["dave"], sku)
    # Erin: a stage bonus and an adjustment matured since the earlier run.
    post_to(sess, people["erin"], K.matured, 40_000, tx_kind=TxKind.stage_bonus)
    post_to(sess, people["erin"], K.matured, 7, tx_kind=TxKind.adjust)
    completed_order(sess, people["alice"], sku)
    # Bob: a pending reward only (his order is not finished): nothing matured, nothing settles.
    pay(sess, place(sess, people["dave"], sku))
    sess.flush()
    return people


@pytest.mark.parametrize(("mode", "threshold"), [("weekly", None), ("threshold", 1_500)])
def test_the_set_based_run_leaves_what_one_member_at_a_time_left(app: Flask, mode: str, threshold: int | None) -> None:
    with app.app_context():
        sess = db.session()
        if threshold is not None:
            set_setting(sess, "settlement_threshold", threshold, by="test")
        mixed_merchant(sess)
        db.commit()
        minimum = threshold or 1
        below = sess.scalar(select(func.count()).select_from(Account).where(Account.kind == K.matured, Account.balance > 0, Account.balance < minimum))

        with sess.begin_nested() as reference:
            run = settlement._claim_period(sess, period=f"{mode}:compare", mode=mode, actor="test")
            settle_one_by_one(sess, run, minimum)
            expected = outcome(sess, run.id)
            expected_run = (run.members, run.total)
            reference.rollback()

        run = settlement.settle(sess, period=f"{mode}:compare", mode=mode, actor="test")
        db.commit()
        assert outcome(sess, run.id) == expected and (run.members, run.total) == expected_run
        statements = expected["statements"]
        assert len(statements) == expected_run[0] and check_ledger(sess).ok
        if threshold is not None:
            assert below == 1 and expected_run[0] == 4  # Yan's 12 points stay matured
            return
        # The mix is what it says: debts repaid in part and in full, a bonus and an adjustment since the earlier run.
        assert expected_run[0] == 5
        assert any(repaid and debt_after for _, repaid, _, _, debt_after, _ in statements.values())
        assert any(repaid and not debt_after for _, repaid, _, _, debt_after, _ in statements.values())
        kinds = {line["kind"] for *_, lines in statements.values() for line in lines}
        assert {"order_reward", "stage_bonus", "adjust"} <= kinds


def test_a_run_with_nothing_matured_writes_no_statement(app: Flask) -> None:
    with app.app_context():
        sess = db.session()
        make_member(sess, "idle")
        run = settlement.settle(sess, period="manual:empty", mode="weekly", actor="test")
        db.commit()
        assert (run.members, run.total) == (0, 0) and run.finished_at is not None
        assert sess.scalar(select(func.count()).select_from(Statement)) == 0


def test_runs_larger_than_a_step_report_progress_per_step(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settlement, "CHUNK", 2)
    with app.app_context():
        sess = db.session()
        members = [make_member(sess, f"m{i}") for i in range(5)]
        for i, member in enumerate(members):
            post_to(sess, member, K.matured, 100 + i)
        reported: list[tuple[int, int]] = []
        run = settlement.settle(sess, period="manual:steps", mode="weekly", actor="test", progress=lambda done, total: reported.append((done, total)))
        db.commit()
        assert reported == [(0, 5), (2, 5), (4, 5), (5, 5)]
        assert (run.members, run.total) == (5, 510)
        assert [member_balances(sess, m.id).available for m in members] == [100, 101, 102, 103, 104]
        assert check_ledger(sess).ok


# -- MariaDB: what the run locks, and what it waits for ----------------------------------------------------


def _mariadb_only(app: Flask) -> None:
    with app.app_context():
        if db.session().get_bind().dialect.name != "mysql":
            pytest.skip("SQLite serialises writers; the row locks exist on MariaDB")


def test_a_maturing_in_flight_is_settled_whole_once_it_commits(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run waits on the member's matured account while a maturing holds it, then settles the reward it matured, itemised."""
    _mariadb_only(app)
    with app.app_context():
        sess = db.session()
        zoe = make_member(sess, "zoe")
        bob = make_member(sess, "bob", inviter=zoe)
        sku = make_sku(sess, price_fen=100_000)
        completed_order(sess, bob, sku)
        # The next order completes, and its rewards wait for finance: confirming it is the maturing in flight.
        set_setting(sess, "require_finance_confirmation", True, by="test")
        order = completed_order(sess, bob, sku)
        db.commit()
        assert (member_balances(sess, zoe.id).matured, member_balances(sess, zoe.id).pending) == (500, 1_000)
        order_id, zoe_id = order.id, zoe.id

    posted, release = threading.Event(), threading.Event()
    outcome_of_run: list[Any] = []

    original = ledger.post

    def post_then_wait(*args: Any, **kwargs: Any) -> Any:
        # The maturing posts to the matured account (and holds its lock) before it marks the reward.
        result = original(*args, **kwargs)
        if threading.current_thread() is maturing:
            posted.set()
            release.wait(10)
        return result

    monkeypatch.setattr(ledger, "post", post_then_wait)

    def mature() -> None:
        with unit_of_work(app) as s:
            found = s.get(Order, order_id)
            assert found is not None
            found.finance_confirmed_at = utcnow()
            mature_order_rewards(s, found)
            db.commit()

    def run() -> None:
        with unit_of_work(app) as s:
            found = settlement.settle(s, period="manual:race", mode="weekly", actor="test")
            db.commit()
            outcome_of_run.append(found.total)

    maturing = threading.Thread(target=mature)
    maturing.start()
    assert posted.wait(10)
    settling = threading.Thread(target=run)
    settling.start()
    settling.join(1.5)
    assert settling.is_alive(), "the run must wait for the maturing's lock on the matured account"
    release.set()
    maturing.join(20)
    settling.join(20)
    with app.app_context():
        sess = db.session()
        statement = sess.scalars(select(Statement).where(Statement.member_id == zoe_id)).one()
        assert statement.settled == outcome_of_run[0] == 1_500  # 0.5% of a first ¥1000 order, 1% of the repeat one
        lines = statement_lines(sess, [statement])[statement.id]
        assert [(line["kind"], line["amount"]) for line in lines] == [("order_reward", 500), ("order_reward", 1_000)]
        assert sess.scalar(select(func.count()).select_from(OrderReward).where(OrderReward.state == RewardState.matured)) == 0
        assert member_balances(sess, zoe_id).matured == 0
        assert check_ledger(sess).ok


def test_the_run_locks_only_its_members_accounts(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a run holds its members' accounts, postings to the merchant's accounts and to other members go on."""
    _mariadb_only(app)
    with app.app_context():
        sess = db.session()
        members = [make_member(sess, f"m{i}") for i in range(6)]
        for member in members[:3]:
            post_to(sess, member, K.matured, 500)
        for member in members[3:]:
            post_to(sess, member, K.available, 500)
        db.commit()
        outsiders = [m.id for m in members[3:]]

    locked, release = threading.Event(), threading.Event()
    original = settlement._insert_statements

    # The first thing a step does once its members' accounts are locked.
    def hold(*args: Any) -> Any:
        locked.set()
        release.wait(20)
        return original(*args)

    monkeypatch.setattr(settlement, "_insert_statements", hold)

    def run() -> None:
        with unit_of_work(app) as s:
            settlement.settle(s, period="manual:locks", mode="weekly", actor="test")
            db.commit()

    settling = threading.Thread(target=run)
    settling.start()
    try:
        assert locked.wait(10)
        with unit_of_work(app) as s:
            s.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
            for member_id in outsiders:
                outsider = s.get(Member, member_id)
                assert outsider is not None
                # The merchant's issuance account and other members' available and matured accounts.
                post_to(s, outsider, K.matured, 100)
                post_to(s, outsider, K.available, 100)
            db.commit()
    finally:
        release.set()
        settling.join(20)
    with app.app_context():
        sess = db.session()
        assert sess.scalar(select(func.count()).select_from(Statement)) == 3
        assert [member_balances(sess, m).available for m in outsiders] == [600] * 3
        assert check_ledger(sess).ok
