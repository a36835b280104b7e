"""The unit of work: side effects run after a commit, never after a commit that failed or a rollback
(of the session, or of the savepoint they were queued in)."""
from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from server import db
from server.accounts.models import Staff, StaffRole


def _staff(username: str) -> Staff:
    return Staff(username=username, password_hash="x", role=StaffRole.owner)


def test_side_effects_run_once_the_commit_succeeds(app: Flask) -> None:
    ran: list[str] = []
    with app.app_context():
        db.session().add(_staff("first-owner"))
        db.after_commit(lambda: ran.append("sent"))
        assert ran == []
        db.commit()
        assert ran == ["sent"]
        db.commit()  # a later commit does not run them again
        assert ran == ["sent"]


def test_a_failed_commit_drops_its_side_effects(app: Flask) -> None:
    ran: list[str] = []
    with app.app_context():
        db.session().add(_staff("same-name"))
        db.commit()
        db.session().add(_staff("same-name"))
        db.after_commit(lambda: ran.append("for the failed unit"))
        with pytest.raises(IntegrityError):
            db.commit()
        db.session().rollback()
        db.session().add(_staff("other-name"))
        db.commit()
    assert ran == []


def _count(app: Flask, username: str) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(Staff).where(Staff.username == username)) or 0


def test_a_side_effect_queued_in_a_savepoint_that_rolls_back_is_dropped(app: Flask) -> None:
    ran: list[str] = []
    with app.app_context():
        sess = db.session()
        db.after_commit(lambda: ran.append("before"))
        with pytest.raises(RuntimeError):
            with sess.begin_nested():
                sess.add(_staff("inside"))
                db.after_commit(lambda: ran.append("inside"))
                raise RuntimeError("undo the savepoint")
        db.after_commit(lambda: ran.append("after"))
        db.commit()
    assert ran == ["before", "after"]
    assert _count(app, "inside") == 0


def test_a_side_effect_queued_in_a_savepoint_that_commits_runs_after_the_outer_commit(app: Flask) -> None:
    ran: list[str] = []
    with app.app_context():
        sess = db.session()
        with sess.begin_nested():
            sess.add(_staff("kept-inside"))
            db.after_commit(lambda: ran.append("inside"))
        with pytest.raises(RuntimeError):
            with sess.begin_nested():
                with sess.begin_nested():
                    db.after_commit(lambda: ran.append("inner of a rolled-back outer"))
                raise RuntimeError("undo the outer savepoint")
        assert ran == []
        db.commit()
    assert ran == ["inside"]
    assert _count(app, "kept-inside") == 1


def test_a_rollback_of_the_session_drops_what_it_queued(app: Flask) -> None:
    ran: list[str] = []
    with app.app_context():
        db.session().add(_staff("rolled-back"))
        db.after_commit(lambda: ran.append("dropped"))
        db.session().rollback()
        db.after_commit(lambda: ran.append("kept"))
        db.commit()
    assert ran == ["kept"]


def test_a_capped_count_stops_past_the_cap(app: Flask) -> None:
    with app.app_context():
        sess = db.session()
        for n in range(7):
            sess.add(Staff(username=f"counted-{n}", password_hash="x", role=StaffRole.finance))
        sess.flush()
        stmt = select(Staff).where(Staff.username.like("counted-%"))
        assert db.count(sess, stmt) == 7
        assert db.count(sess, stmt, cap=10) == 7
        # Past the cap the answer is cap + 1, "more than cap", whatever the real number.
        assert db.count(sess, stmt, cap=3) == 4
        rows, total = db.paginate(sess, stmt, offset=0, limit=2, order_by=(Staff.id,), count_cap=3)
        assert len(rows) == 2 and total == 4
        sess.rollback()
