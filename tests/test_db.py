"""The unit of work: side effects run after a commit, and never after a commit that failed."""
from __future__ import annotations

import pytest
from flask import Flask
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
