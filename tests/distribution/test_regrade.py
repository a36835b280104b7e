"""Grades are re-evaluated for everyone when grades change, daily as a backstop, and on demand with a progress bar."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from server import db
from server.distribution import services
from server.distribution.models import Distributor
from server.orders.models import Order
from server.points.models import JobClaim
from server.scheduler import SCHEDULES, regrade_job


def _sold(sess, distributor_member_id: int, buyer_id: int, fen: int) -> None:
    """A paid order of ``fen`` stamped with the distributor as inviter (as place_order and payment would leave it)."""
    now = datetime.now(timezone.utc)
    sess.add(Order(out_trade_no=f"T{distributor_member_id}x{fen}x{buyer_id}", member_id=buyer_id, total_fee=fen, paid_fee=fen, inviter_id=distributor_member_id, paid_at=now))
    db.commit()


def _grade_of(sess, distributor_id):
    grade_id = sess.get(Distributor, distributor_id, populate_existing=True).grade_id
    return services.get_grade(sess, grade_id).name if grade_id else None


def test_a_new_or_changed_grade_regrades_everyone_at_once(client, distributor, wx_login, owner, sess):
    alice, bob = distributor("alice"), distributor("bob")
    carol = wx_login("carol")
    with sess() as s:
        _sold(s, alice["user"]["id"], carol["user"]["id"], 150_000)
        _sold(s, bob["user"]["id"], carol["user"]["id"], 50_000)
    silver = client.post("/admin/api/v1/grades", json={"name": "银牌", "min_sales_fen": 100_000}, headers=owner).get_json()["data"]
    with sess() as s:
        assert (_grade_of(s, alice["distributor"]["id"]), _grade_of(s, bob["distributor"]["id"])) == ("银牌", None)
    assert client.patch(f"/admin/api/v1/grades/{silver['id']}", json={"min_sales_fen": 40_000}, headers=owner).status_code == 200
    with sess() as s:
        assert _grade_of(s, bob["distributor"]["id"]) == "银牌"
    client.patch(f"/admin/api/v1/grades/{silver['id']}", json={"min_sales_fen": 200_000}, headers=owner)
    with sess() as s:
        assert (_grade_of(s, alice["distributor"]["id"]), _grade_of(s, bob["distributor"]["id"])) == (None, None)
    me = client.get("/api/v1/distributors/me", headers=alice["headers"]).get_json()["data"]
    assert me["grade"] is None


def test_many_distributors_are_regraded_in_the_background(client, distributor, wx_login, owner, sess, monkeypatch):
    monkeypatch.setattr(services, "REGRADE_INLINE_LIMIT", 0)
    alice = distributor("alice")
    with sess() as s:
        _sold(s, alice["user"]["id"], wx_login("carol")["user"]["id"], 150_000)
    calls = []
    real = services.regrade_all
    monkeypatch.setattr(services, "regrade_all", lambda s, **kw: (calls.append(1), real(s, **kw))[1])
    created = client.post("/admin/api/v1/grades", json={"name": "银牌", "min_sales_fen": 100_000}, headers=owner)
    assert created.status_code == 201
    assert calls == [1]  # a queued job (tests drain the queue inline, after the commit)
    with sess() as s:
        assert _grade_of(s, alice["distributor"]["id"]) == "银牌"


def test_the_daily_job_regrades_once_a_day(app, distributor, wx_login, sess):
    alice = distributor("alice")
    with sess() as s:
        _sold(s, alice["user"]["id"], wx_login("carol")["user"]["id"], 150_000)
        s.add(services.Grade(name="银牌", min_sales_fen=100_000))  # written around the service: nobody regraded
        db.commit()
        assert _grade_of(s, alice["distributor"]["id"]) is None
    assert "regrade" in {schedule.name for schedule in SCHEDULES}
    now = datetime(2026, 12, 1, 18, 15, tzinfo=timezone.utc)
    assert regrade_job(app, now) == {"distributors": 1, "changed": 1}
    assert regrade_job(app, now) is None  # claimed for the day
    with sess() as s:
        assert _grade_of(s, alice["distributor"]["id"]) == "银牌"
        assert s.scalar(select(JobClaim.period).where(JobClaim.job == "regrade")) == "2026-12-02"


def test_the_cli_regrades_with_a_progress_bar(app, distributor, wx_login, sess, monkeypatch):
    monkeypatch.setattr(services, "REGRADE_BATCH", 1)
    members = [distributor(name) for name in ("alice", "bob", "dan")]
    with sess() as s:
        for member in members[:2]:
            _sold(s, member["user"]["id"], wx_login("carol")["user"]["id"], 150_000)
        s.add(services.Grade(name="银牌", min_sales_fen=100_000))
        db.commit()
    result = app.test_cli_runner().invoke(args=["regrade"])
    assert result.exit_code == 0, result.output
    assert "3 distributors graded, 2 changed grade" in result.output
    assert "regrading" in result.output and "3/3" in result.output
    with sess() as s:
        assert [_grade_of(s, m["distributor"]["id"]) for m in members] == ["银牌", "银牌", None]


@pytest.mark.parametrize("sales", [0, 99_999, 100_000])
def test_regrading_matches_grading_one_by_one(distributor, wx_login, sess, sales):
    alice = distributor("alice")
    with sess() as s:
        if sales:
            _sold(s, alice["user"]["id"], wx_login("carol")["user"]["id"], sales)
        s.add_all([services.Grade(name="铜牌", min_sales_fen=1), services.Grade(name="银牌", min_sales_fen=100_000)])
        db.commit()
        services.regrade_all(s)
        expected = services.grade_for_sales(s, sales)
        assert _grade_of(s, alice["distributor"]["id"]) == (expected.name if expected else None)
