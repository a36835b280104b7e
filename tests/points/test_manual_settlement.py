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


# -- the admin API -------------------------------------------------------------------------------


def test_the_owner_settles_through_the_api_and_finance_reads_the_run(app: Any, client: Any, staff_login: Any) -> None:
    owner, finance = staff_login("owner"), staff_login("finance")
    with app.app_context():
        sess = db.session()
        alice, bob = make_member(sess, "alice"), make_member(sess, "bob")
        post_to(sess, alice, AccountKind.matured, 700, tx_kind=TxKind.stage_bonus)
        post_to(sess, bob, AccountKind.matured, 250, tx_kind=TxKind.stage_bonus)
        db.commit()
        alice_id = alice.id

    started = client.post("/admin/api/v1/points/settlements", headers=owner)
    assert started.status_code == 202, started.get_json()
    job = started.get_json()["data"]
    # The response is written before the commit; the run starts after it.
    assert job["state"] == "running" and job["run"] is None and job["started_by"].startswith("staff:")

    done = client.get(f"/admin/api/v1/points/settlements/jobs/{job['id']}", headers=finance).get_json()["data"]
    assert done["state"] == "done" and done["finished_at"] is not None
    run = done["run"]
    assert (run["members"], run["total"], run["points"]["total"], run["mode"]) == (2, 950, "9.50", "weekly")

    listed = client.get("/admin/api/v1/points/settlements", headers=finance).get_json()["data"]
    assert listed["total"] == 1 and listed["items"][0] == run

    detail = client.get(f"/admin/api/v1/points/settlements/{run['id']}?page_size=1", headers=finance).get_json()["data"]
    assert detail["statements"]["total"] == 2 and len(detail["statements"]["items"]) == 1
    first = detail["statements"]["items"][0]
    assert first["member"]["id"] == alice_id and (first["settled"], first["credited"], first["available_after"]) == (700, 700, 700)


def test_only_the_owner_starts_a_settlement_and_operations_reads_none(client: Any, staff_login: Any) -> None:
    finance, operations = staff_login("finance"), staff_login("operations")
    assert client.post("/admin/api/v1/points/settlements", headers=finance).status_code == 403
    assert client.get("/admin/api/v1/points/settlements", headers=operations).status_code == 403
    assert client.get("/admin/api/v1/points/settlements", headers=finance).status_code == 200


def test_a_second_start_through_the_api_is_40949_with_the_running_job(app: Any, client: Any, staff_login: Any) -> None:
    owner = staff_login("owner")
    with app.app_context():
        sess = db.session()
        row = JobClaim(job=settlement.MANUAL_JOB, period=settlement.RUNNING, claimed_by="elsewhere")
        sess.add(row)
        db.commit()
        running_id = row.id
    refused = client.post("/admin/api/v1/points/settlements", headers=owner)
    assert refused.status_code == 409
    assert refused.get_json()["code"] == 40949 and refused.get_json()["data"] == {"job_id": running_id}
    job = client.get(f"/admin/api/v1/points/settlements/jobs/{running_id}", headers=owner).get_json()["data"]
    assert job["state"] == "running"


def test_unknown_runs_and_jobs_are_404(app: Any, client: Any, staff_login: Any) -> None:
    owner = staff_login("owner")
    with app.app_context():
        sess = db.session()
        # A claim of another job is not a settlement job.
        row = JobClaim(job="regrade", period="2026-12-01", claimed_by="scheduler")
        sess.add(row)
        db.commit()
        other_id = row.id
    assert client.get("/admin/api/v1/points/settlements/999", headers=owner).status_code == 404
    assert client.get(f"/admin/api/v1/points/settlements/jobs/{other_id}", headers=owner).status_code == 404
    assert client.get("/admin/api/v1/points/settlements?page=0", headers=owner).status_code == 422
