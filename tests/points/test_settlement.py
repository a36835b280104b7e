"""Settlement: matured → available with statements, one run per period, thresholds, debt first; expiry."""
from __future__ import annotations

import re
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from server import db
from server.db import unit_of_work, utcnow
from server.points import ledger, settlement
from server.points.checks import check_ledger
from server.points.errors import SettlementClaimedError
from server.points.models import AccountKind, Entry, LedgerTransaction, OrderReward, RewardState, SettlementRun, Statement, TxKind
from server.points.queries import member_balances, statement_lines
from server.points.services import reverse_order_rewards
from server.settings.services import set_setting
from tests.points import completed_order, make_member, make_sku, post_to
from tests.statements import statements_sent

K = AccountKind


def counts(sess):
    return (
        sess.scalar(select(func.count()).select_from(SettlementRun)),
        sess.scalar(select(func.count()).select_from(Statement)),
    )


def test_settle_moves_matured_points_to_available_with_a_statement(app):
    with app.app_context():
        sess = db.session()
        zoe = make_member(sess, "zoe")
        alice = make_member(sess, "alice", inviter=zoe)
        bob = make_member(sess, "bob", inviter=alice, upline=zoe)
        order = completed_order(sess, bob, make_sku(sess, price_fen=100_000))
        post_to(sess, alice, K.matured, 1_000, tx_kind=TxKind.stage_bonus)
        db.commit()
        assert member_balances(sess, alice.id).matured == 500 + 1_000  # 0.5% of ¥1000, plus the bonus

        run = settlement.settle(sess, period="weekly:2026-W47", mode="weekly", actor="test")
        db.commit()

        assert (run.members, run.total, run.mode, run.actor) == (2, 1_550, "weekly", "test") and run.finished_at is not None
        alice_now, zoe_now = member_balances(sess, alice.id), member_balances(sess, zoe.id)
        assert (alice_now.matured, alice_now.available) == (0, 1_500)
        assert (zoe_now.matured, zoe_now.available) == (0, 50)
        statement = sess.scalars(select(Statement).where(Statement.member_id == alice.id)).one()
        assert (statement.run_id, statement.settled, statement.debt_repaid, statement.credited) == (run.id, 1_500, 0, 1_500)
        assert (statement.available_after, statement.debt_after) == (1_500, 0)
        zoe_statement = sess.scalars(select(Statement).where(Statement.member_id == zoe.id)).one()
        lines = statement_lines(sess, [statement, zoe_statement])
        first = dict(lines[statement.id][0])
        assert first.pop("rule").startswith("level 1")
        assert first == {"kind": "order_reward", "order_id": order.id, "out_trade_no": order.out_trade_no, "level": 1, "amount": 500}
        assert lines[statement.id][1]["kind"] == "stage_bonus" and lines[statement.id][1]["amount"] == 1_000
        assert sum(line["amount"] for line in lines[statement.id]) == statement.settled
        assert [(line["level"], line["amount"]) for line in lines[zoe_statement.id]] == [(2, 50)]
        rewards = sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id)).all()
        assert {r.state for r in rewards} == {RewardState.settled}
        assert ledger.find(sess, f"settle:{run.id}:{alice.id}").kind == TxKind.settle
        assert check_ledger(sess).ok


def test_the_next_statement_lists_only_what_matured_since(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        post_to(sess, alice, K.matured, 700)
        settlement.settle(sess, period="manual:a", mode="weekly", actor="test")
        post_to(sess, alice, K.matured, 300, tx_kind=TxKind.lead_reward)
        run = settlement.settle(sess, period="manual:b", mode="weekly", actor="test")
        db.commit()
        statement = sess.scalars(select(Statement).where(Statement.run_id == run.id)).one()
        assert [(line["kind"], line["amount"]) for line in statement_lines(sess, [statement])[statement.id]] == [("lead_reward", 300)]
        assert member_balances(sess, alice.id).available == 1_000


def _refund(sess, order, fee):
    order.refunded_fee = fee
    sess.flush()
    reverse_order_rewards(sess, order)


def test_a_statement_nets_what_was_reversed_while_matured_and_reads_the_same_after_a_late_refund(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        sku = make_sku(sess, price_fen=100_000, stock=10)
        kept, halved, refunded = (completed_order(sess, make_member(sess, name, inviter=alice), sku) for name in ("bob", "carol", "dave"))
        _refund(sess, halved, halved.total_fee // 2)  # while matured: the line is what is left
        _refund(sess, refunded, refunded.total_fee)  # reversed whole while matured: no line at all
        post_to(sess, alice, K.matured, 200, tx_kind=TxKind.stage_bonus)
        run = settlement.settle(sess, period="manual:a", mode="weekly", actor="test")
        db.commit()
        statement = sess.scalars(select(Statement).where(Statement.run_id == run.id)).one()
        lines = statement_lines(sess, [statement])[statement.id]
        assert [(line["kind"], line.get("out_trade_no"), line["amount"]) for line in lines] == [
            ("order_reward", kept.out_trade_no, 500),
            ("order_reward", halved.out_trade_no, 250),
            ("stage_bonus", None, 200),
        ]
        assert statement.settled == 950
        # A refund after the settlement takes the points from available; the statement is history and stays.
        _refund(sess, kept, kept.total_fee)
        db.commit()
        assert member_balances(sess, alice.id).available == 450
        assert statement_lines(sess, [statement])[statement.id] == lines
        assert check_ledger(sess).ok


def test_a_statement_whose_previous_settle_posting_lost_its_key_still_starts_after_it(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        post_to(sess, alice, K.matured, 700)
        first = settlement.settle(sess, period="manual:a", mode="weekly", actor="test")
        post_to(sess, alice, K.matured, 300, tx_kind=TxKind.lead_reward)
        run = settlement.settle(sess, period="manual:b", mode="weekly", actor="test")
        # Data repaired by hand: the first run's posting no longer carries the key its statement names.
        sess.execute(update(LedgerTransaction).where(LedgerTransaction.idempotency_key == f"settle:{first.id}:{alice.id}").values(idempotency_key="settle:repaired"))
        db.commit()
        statement = sess.scalars(select(Statement).where(Statement.run_id == run.id)).one()
        assert [(line["kind"], line["amount"]) for line in statement_lines(sess, [statement])[statement.id]] == [("lead_reward", 300)]


def test_a_page_of_statements_reads_its_lines_in_four_queries(app):
    with app.app_context():
        sess = db.session()
        members = [make_member(sess, f"m{i}") for i in range(6)]
        sku = make_sku(sess, price_fen=100_000, stock=20)
        for member in members:
            completed_order(sess, make_member(sess, f"buyer-of-{member.id}", inviter=member), sku)
        settlement.settle(sess, period="manual:a", mode="weekly", actor="test")
        for member in members[::2]:
            post_to(sess, member, K.matured, 300, tx_kind=TxKind.lead_reward)
        run = settlement.settle(sess, period="manual:b", mode="weekly", actor="test")
        db.commit()
        rows = sess.scalars(select(Statement)).all()
        with statements_sent(app) as seen:
            lines = statement_lines(sess, rows)
        assert len(seen) == 4
        assert {len(v) for v in lines.values()} == {1}
        assert sorted(line[0]["kind"] for line in lines.values()) == ["lead_reward"] * 3 + ["order_reward"] * 6
        assert all(lines[s.id][0]["kind"] == "lead_reward" for s in rows if s.run_id == run.id)


def test_a_second_settle_of_the_same_period_is_refused_and_changes_nothing(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        post_to(sess, alice, K.matured, 2_000)
        settlement.settle(sess, period="monthly:2026-11", mode="monthly", actor="test")
        db.commit()
        post_to(sess, alice, K.matured, 900)
        db.commit()
        before = (member_balances(sess, alice.id), counts(sess))
        with pytest.raises(SettlementClaimedError):
            settlement.settle(sess, period="monthly:2026-11", mode="monthly", actor="test")
        db.commit()
        assert (member_balances(sess, alice.id), counts(sess)) == before
        assert member_balances(sess, alice.id).matured == 900


def test_two_settles_of_one_period_at_once_make_one_run(app):
    with app.app_context():
        sess = db.session()
        members = [make_member(sess, name) for name in ("alice", "bob", "carol")]
        for member in members:
            post_to(sess, member, K.matured, 1_234)
        db.commit()
        ids = [m.id for m in members]

    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def settle_once() -> None:
        with unit_of_work(app) as sess:
            barrier.wait()
            try:
                run = settlement.settle(sess, period="weekly:2026-W48", mode="weekly", actor="test")
                db.commit()
                outcomes.append(f"run:{run.members}")
            except SettlementClaimedError:
                outcomes.append("claimed")

    threads = [threading.Thread(target=settle_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["claimed", "run:3"]
    with app.app_context():
        sess = db.session()
        assert counts(sess) == (1, 3)
        assert [member_balances(sess, i).available for i in ids] == [1_234] * 3
        assert check_ledger(sess).ok


def test_threshold_mode_settles_only_members_at_or_over_the_threshold(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "settlement_threshold", 100_000, by="test")
        alice, bob, carol = (make_member(sess, n) for n in ("alice", "bob", "carol"))
        post_to(sess, alice, K.matured, 150_000)
        post_to(sess, bob, K.matured, 99_999)
        post_to(sess, carol, K.matured, 100_000)
        run = settlement.settle(sess, period=settlement.period_key("threshold", utcnow()), mode="threshold", actor="test")
        db.commit()
        assert (run.members, run.total) == (2, 250_000)
        assert member_balances(sess, alice.id).available == 150_000
        assert member_balances(sess, carol.id).available == 100_000
        assert (member_balances(sess, bob.id).matured, member_balances(sess, bob.id).available) == (99_999, 0)
        # Other modes settle everyone with matured points.
        settlement.settle(sess, period="weekly:2026-W49", mode="weekly", actor="test")
        assert member_balances(sess, bob.id).available == 99_999


@pytest.mark.parametrize(("owed", "repaid", "credited", "debt_after"), [(300, 300, 700, 0), (1_500, 1_000, 0, 500)])
def test_settlement_repays_debt_first(app, owed, repaid, credited, debt_after):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        # A debt as a refund leaves it: the member owes points the merchant already gave out.
        ledger.post(
            sess,
            key="test:debt",
            kind=TxKind.reversal,
            legs=[(ledger.account(sess, alice.id, K.debt), -owed), (ledger.account(sess, None, K.issuance), owed)],
            reason="test debt",
            member_id=alice.id,
        )
        post_to(sess, alice, K.matured, 1_000)
        settlement.settle(sess, period="weekly:2026-W50", mode="weekly", actor="test")
        db.commit()
        statement = sess.scalars(select(Statement)).one()
        assert (statement.settled, statement.debt_repaid, statement.credited, statement.debt_after) == (1_000, repaid, credited, debt_after)
        after = member_balances(sess, alice.id)
        assert (after.matured, after.available, after.debt) == (0, credited, debt_after)
        assert check_ledger(sess).ok


def test_period_keys_are_china_time():
    # 17:30 UTC on Sunday 22 November is 01:30 on Monday 23 November in China.
    before_two = datetime(2026, 11, 22, 17, 30, tzinfo=timezone.utc)
    assert settlement.period_key("weekly", before_two) == "weekly:2026-W48"
    assert settlement.period_key("threshold", before_two) == "threshold:2026-11-23T01"
    assert settlement.due_period("weekly", before_two, 1) is None
    assert settlement.due_period("weekly", before_two + timedelta(minutes=30), 1) == "weekly:2026-W48"
    assert settlement.due_period("weekly", before_two + timedelta(days=3), 1) == "weekly:2026-W48"  # catches up later in the week
    assert settlement.due_period("weekly", before_two + timedelta(days=3), 5) is None
    new_year = datetime(2026, 12, 31, 17, 0, tzinfo=timezone.utc)  # 01:00 on Friday 1 January 2027 in China
    assert settlement.period_key("weekly", new_year) == "weekly:2026-W53"  # the ISO year, not the calendar year
    assert settlement.period_key("monthly", new_year) == "monthly:2027-01"
    assert settlement.due_period("monthly", new_year, 1) is None
    assert settlement.due_period("monthly", new_year + timedelta(hours=1), 1) == "monthly:2027-01"
    assert settlement.due_period("threshold", new_year, 1) == "threshold:2027-01-01T01"
    assert re.fullmatch(r"manual:\d{8}T\d{6}-[0-9a-f]{8}", settlement.manual_period_key())
    assert settlement.manual_period_key() != settlement.manual_period_key()


def backdate(sess, tx_id: int, days: int) -> None:
    sess.execute(update(Entry).where(Entry.transaction_id == tx_id).values(created_at=utcnow() - timedelta(days=days)))


def spend(sess, member, amount: int) -> int:
    posted = ledger.post(
        sess,
        key=f"test:spend:{uuid.uuid4().hex}",
        kind=TxKind.redeem,
        legs=[(ledger.account(sess, member.id, K.available), -amount), (ledger.account(sess, None, K.redemption), amount)],
        reason="test spend",
        member_id=member.id,
    )
    return posted.transaction.id


def test_expiry_takes_the_oldest_unspent_points(app):
    with app.app_context():
        sess = db.session()
        alice, bob = make_member(sess, "alice"), make_member(sess, "bob")
        backdate(sess, post_to(sess, alice, K.available, 1_000), 40)
        backdate(sess, post_to(sess, alice, K.available, 500), 10)
        backdate(sess, spend(sess, alice, 300), 5)
        # Bob spent more than his old points: the spend used them up, nothing of his is old enough.
        backdate(sess, post_to(sess, bob, K.available, 1_000), 40)
        backdate(sess, post_to(sess, bob, K.available, 500), 10)
        spend(sess, bob, 1_200)
        db.commit()

        assert settlement.expire_points(sess, utcnow()) == settlement.Expired(0, 0)  # 0 days: never

        set_setting(sess, "points_expiry_days", 30, by="test")
        assert settlement.expire_points(sess, utcnow()) == settlement.Expired(1, 700)
        assert settlement.expire_points(sess, utcnow()) == settlement.Expired(0, 0)  # once a day, and nothing left
        db.commit()
        assert member_balances(sess, alice.id).available == 500
        assert member_balances(sess, bob.id).available == 300
        assert ledger.balance(sess, ledger.account(sess, None, K.expiry)) == 700
        assert check_ledger(sess).ok


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=-500, max_value=1_000), st.integers(min_value=0, max_value=60)), min_size=1, max_size=8))
def test_expiring_amount_is_first_in_first_out(app, moves):
    """Against a direct simulation: spends eat the oldest credits; whatever is left of credits past the cutoff expires."""
    cutoff_days = 30
    with app.app_context():
        sess = db.session()
        member = make_member(sess, "fifo")
        lots: list[list[int]] = []  # [age in days, amount left], oldest first
        ages = sorted((age for _, age in moves), reverse=True)
        for (amount, _), age in zip(moves, ages):
            if amount > 0:
                backdate(sess, post_to(sess, member, K.available, amount), age)
                lots.append([age, amount])
            elif amount < 0 and sum(left for _, left in lots) >= -amount:
                backdate(sess, spend(sess, member, -amount), age)
                owed = -amount
                for lot in lots:
                    take = min(lot[1], owed)
                    lot[1] -= take
                    owed -= take
        expected = sum(left for age, left in lots if age >= cutoff_days)
        available = ledger.account(sess, member.id, K.available)
        assert settlement.expiring_amount(sess, available, utcnow() - timedelta(days=cutoff_days)) == expected
        sess.rollback()


@pytest.mark.parametrize(("text", "hundredths"), [("12.5", 1_250), ("-3", -300), ("0.01", 1), ("2000", 200_000), (" 7.10 ", 710)])
def test_parse_points_is_exact(text, hundredths):
    assert settlement.parse_points(text) == hundredths


@pytest.mark.parametrize("text", ["12.345", "0.001", "abc", "NaN", "Infinity", "0", "1e9", ""])
def test_parse_points_refuses(text):
    with pytest.raises(ValueError):
        settlement.parse_points(text)
