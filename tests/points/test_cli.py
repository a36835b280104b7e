"""``python -m server settle`` and ``points grant``, through Flask's CLI runner."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry, Member
from server.points import ledger
from server.points.models import AccountKind, LedgerTransaction, SettlementRun, Statement, TxKind
from server.points.queries import member_balances
from tests.points import make_member, post_to

K = AccountKind


@pytest.fixture
def members(app):
    """Alice and Bob with matured points waiting for settlement."""
    with app.app_context():
        sess = db.session()
        alice, bob = make_member(sess, "alice"), make_member(sess, "bob")
        post_to(sess, alice, K.matured, 12_345)
        post_to(sess, bob, K.matured, 655)
        db.commit()
        return {"alice": alice.id, "bob": bob.id}


def test_settle_runs_now_with_a_progress_bar_and_a_summary(app, members):
    result = app.test_cli_runner().invoke(args=["settle", "--mode", "weekly"])
    assert result.exit_code == 0, result.output
    assert "settling manual:" in result.output and "2/2" in result.output and "100%" in result.output
    assert "(weekly): 2 members, 130.00 points settled" in result.output
    with app.app_context():
        sess = db.session()
        run = sess.scalars(select(SettlementRun)).one()
        assert run.period.startswith("manual:") and run.actor == "cli" and run.finished_at is not None
        assert member_balances(sess, members["alice"]).available == 12_345
        assert sess.scalar(select(func.count()).select_from(Statement)) == 2


def test_settle_uses_the_merchants_mode_by_default(app, members):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["settings", "set", "settlement_threshold", "1000"]).exit_code == 0
    assert runner.invoke(args=["settings", "set", "settlement_mode", "threshold"]).exit_code == 0
    result = runner.invoke(args=["settle"])
    assert result.exit_code == 0, result.output
    assert "(threshold): 1 members, 123.45 points settled" in result.output
    with app.app_context():
        assert member_balances(db.session(), members["bob"]).matured == 655


def test_settling_a_settled_period_exits_non_zero_and_changes_nothing(app, members):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["settle", "--period", "weekly:2026-W01"]).exit_code == 0
    with app.app_context():
        sess = db.session()
        post_to(sess, sess.get(Member, members["alice"]), K.matured, 100)
        db.commit()
    again = runner.invoke(args=["settle", "--period", "weekly:2026-W01"])
    assert again.exit_code == 1
    assert "period weekly:2026-W01 has already been settled; nothing was changed" in again.output
    with app.app_context():
        sess = db.session()
        assert sess.scalar(select(func.count()).select_from(SettlementRun)) == 1
        assert member_balances(sess, members["alice"]).matured == 100


def grant(app, member_id, points, reason="客服补偿"):
    return app.test_cli_runner().invoke(args=["points", "grant", "--member", str(member_id), "--points", points, "--reason", reason])


def test_grant_credits_available_exactly_and_is_audited(app, members):
    result = grant(app, members["alice"], "12.5")
    assert result.exit_code == 0, result.output
    assert f"member #{members['alice']}: +12.50 points; available now 12.50" in result.output
    with app.app_context():
        sess = db.session()
        assert member_balances(sess, members["alice"]).available == 1_250
        audit = sess.scalars(select(AuditEntry)).one()
        assert (audit.staff_id, audit.action, audit.target) == (None, "points.grant", f"member:{members['alice']}")
        assert audit.detail["amount"] == 1_250 and audit.detail["reason"] == "客服补偿" and audit.detail["key"].startswith("grant:cli:")
        tx = sess.get(LedgerTransaction, audit.detail["transaction_id"])
        assert (tx.kind, tx.actor, tx.idempotency_key, tx.reason) == (TxKind.adjust, "cli", audit.detail["key"], "客服补偿")
    # Each invocation is its own event: the same command twice grants twice.
    assert grant(app, members["alice"], "12.5").exit_code == 0
    with app.app_context():
        assert member_balances(db.session(), members["alice"]).available == 2_500


def test_a_grant_pays_debt_first(app, members):
    with app.app_context():
        sess = db.session()
        ledger.post(
            sess,
            key="test:debt",
            kind=TxKind.reversal,
            legs=[(ledger.account(sess, members["bob"], K.debt), -500), (ledger.account(sess, None, K.issuance), 500)],
            reason="test debt",
            member_id=members["bob"],
        )
        db.commit()
    result = grant(app, members["bob"], "8")
    assert result.exit_code == 0, result.output
    assert "(5.00 paid towards debt); available now 3.00, debt 0.00" in result.output
    with app.app_context():
        assert db.session().scalars(select(AuditEntry.detail)).one()["debt_repaid"] == 500


def test_a_negative_grant_takes_points_back_or_fails_cleanly(app, members):
    assert grant(app, members["alice"], "10").exit_code == 0
    short = grant(app, members["alice"], "-10.01")
    assert short.exit_code == 1
    assert "has only 10.00 points available; nothing was taken" in short.output and "Traceback" not in short.output
    taken = grant(app, members["alice"], "-4.5", reason="重复发放")
    assert taken.exit_code == 0, taken.output
    assert "-4.50 points; available now 5.50" in taken.output
    with app.app_context():
        sess = db.session()
        assert member_balances(sess, members["alice"]).available == 550
        assert [a["amount"] for a in sess.scalars(select(AuditEntry.detail).order_by(AuditEntry.id))] == [1_000, -450]


@pytest.mark.parametrize(("points", "message"), [("1.234", "at most two decimals"), ("ten", "not a number"), ("0", "zero")])
def test_grant_refuses_amounts_it_cannot_book_exactly(app, members, points, message):
    result = grant(app, members["alice"], points)
    assert result.exit_code == 2 and message in result.output
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_grant_to_an_unknown_member_fails(app):
    result = grant(app, 999_999, "1")
    assert result.exit_code == 1 and "no member #999999" in result.output
