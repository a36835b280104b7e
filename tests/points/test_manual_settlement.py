"""A settlement started by hand: one at a time, run after the commit, its claim closed with the run's period or as failed."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry
from server.points import settlement
from server.points.errors import SettlementRunningError
from server.points.models import AccountKind, JobClaim, SettlementRun, Statement, TxKind
from server.points.queries import member_balances
from tests.points import make_member, post_to


def test_a_manual_settlement_runs_after_the_commit_and_closes_its_claim(app: Any, make_staff: Any) -> None:
    owner = make_staff("owner", username="settler")
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        post_to(sess, alice, AccountKind.matured, 700, tx_kind=TxKind.stage_bonus)
        db.commit()
        claim = settlement.start_manual_settlement(sess, staff_id=owner.id)
        assert claim.period == settlement.RUNNING and settlement.running_manual_settlement(sess) is claim
        # Nothing runs before the commit.
        assert sess.scalar(select(func.count()).select_from(SettlementRun)) == 0
        claim_id = claim.id
        db.commit()  # tests run background tasks inline, right after the commit
    with app.app_context():
        sess = db.session()
        row = sess.get(JobClaim, claim_id)
        assert row is not None and row.period.startswith("manual:") and row.finished_at is not None
        run = sess.scalars(select(SettlementRun).where(SettlementRun.period == row.period)).one()
        assert (run.members, run.total, run.actor) == (1, 700, f"staff:{owner.id}")
        assert sess.scalars(select(Statement.member_id)).all() == [alice.id]
        assert member_balances(sess, alice.id).available == 700
        assert settlement.manual_settlement_progress(claim_id) == {"done": 1, "total": 1}
        assert sess.scalars(select(AuditEntry.action).where(AuditEntry.target == f"job_claim:{claim_id}")).all() == ["settlement.start"]
        assert settlement.running_manual_settlement(sess) is None


def test_a_second_start_is_refused_while_one_runs(app: Any, make_staff: Any) -> None:
    owner = make_staff("owner", username="settler")
    with app.app_context():
        sess = db.session()
        sess.add(JobClaim(job=settlement.MANUAL_JOB, period=settlement.RUNNING, claimed_by="elsewhere"))
        db.commit()
        with pytest.raises(SettlementRunningError):
            settlement.start_manual_settlement(sess, staff_id=owner.id)


def test_a_failed_run_moves_nothing_and_frees_the_slot(app: Any, make_staff: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = make_staff("owner", username="settler")

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        post_to(sess, alice, AccountKind.matured, 700, tx_kind=TxKind.stage_bonus)
        db.commit()
        monkeypatch.setattr(settlement, "settle", broken)
        claim_id = settlement.start_manual_settlement(sess, staff_id=owner.id).id
        db.commit()
    with app.app_context():
        sess = db.session()
        row = sess.get(JobClaim, claim_id)
        assert row is not None and row.period == f"failed:{claim_id}" and row.finished_at is not None
        assert member_balances(sess, alice.id).matured == 700
        assert settlement.running_manual_settlement(sess) is None
