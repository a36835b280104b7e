"""What authenticating a request reads: the token's session and its member (or staff row) in one statement.

The counts are pinned: a change that adds a statement to every signed-in request fails here.
On MariaDB they are counted at the driver, with the pool's own pings and rollbacks.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from server import db, security
from server.accounts.models import AuthSession, Member, MemberStatus, SubjectType
from server.db import utcnow
from tests.statements import is_mysql, round_trips


def _me(client, headers):
    return client.get("/api/v1/me", headers=headers)


def test_me_reads_the_token_with_its_member_and_the_inviter_in_two_statements(app, client, wx_login):
    inviter = wx_login("inviter")
    scene = client.post("/api/v1/referral/posters", headers=inviter["headers"], json={}).get_json()["data"]["scene"]
    bob = wx_login("bob", scene)
    _me(client, bob["headers"])  # the pool's first connection is opened outside the count
    with round_trips(app) as sent:
        response = _me(client, bob["headers"])
    assert response.status_code == 200
    assert response.get_json()["data"]["inviter"] == {"id": inviter["user"]["id"], "nickname": "微信用户"}
    assert sent.count("SELECT") == 2, sent
    if is_mysql(app):
        # No ping before, no rollback after the commit: three round trips in all.
        assert sent == ["SELECT", "SELECT", "COMMIT"]


def test_me_without_an_inviter_is_answered_the_same_way(app, client, wx_login):
    alice = wx_login("alice")
    _me(client, alice["headers"])
    with round_trips(app) as sent:
        response = _me(client, alice["headers"])
    assert response.status_code == 200 and response.get_json()["data"]["inviter"] is None
    assert sent.count("SELECT") == 2, sent


def test_a_revoked_an_expired_and_a_disabled_members_token_are_each_refused_after_one_read(app, client, wx_login, staff_login):
    revoked, expired, disabled = wx_login("revoked"), wx_login("expired"), wx_login("disabled")
    for user in (revoked, expired, disabled):
        assert _me(client, user["headers"]).status_code == 200
    with app.app_context():
        sess = db.session()
        sess.execute(update(AuthSession).where(AuthSession.subject_id == revoked["user"]["id"]).values(revoked_at=utcnow()))
        sess.execute(update(AuthSession).where(AuthSession.subject_id == expired["user"]["id"]).values(expires_at=utcnow() - timedelta(seconds=1)))
        sess.execute(update(Member).where(Member.id == disabled["user"]["id"]).values(status=MemberStatus.disabled))
        db.commit()
    for user, code in ((revoked, 40101), (expired, 40101), (disabled, 40310)):
        with round_trips(app) as sent:
            response = _me(client, user["headers"])
        assert response.get_json()["code"] == code, user["user"]
        assert response.status_code in (401, 403)
        assert sent.count("SELECT") == 1, sent


def test_a_staff_session_inside_a_member_signed_token_is_refused(app, client, wx_login, staff_login):
    member = wx_login("alice")
    staff_login("owner")
    with app.app_context():
        sess = db.session()
        staff_sid = sess.scalar(select(AuthSession.id).where(AuthSession.subject_type == SubjectType.staff))
        # A staff session whose subject id is also a member's id.
        sess.execute(update(AuthSession).where(AuthSession.id == staff_sid).values(subject_id=member["user"]["id"]))
        db.commit()
    # Signed as a member token, but naming that staff session.
    with app.app_context():
        forged = security.sign_token({"sid": staff_sid}, SubjectType.member.value)
    response = _me(client, {"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and response.get_json()["code"] == 40101


def test_a_token_naming_no_session_is_refused(app, client):
    with app.app_context():
        forged = security.sign_token({"sid": "no-such-session"}, SubjectType.member.value)
        malformed = security.sign_token({"sid": 12}, SubjectType.member.value)
    assert _me(client, {"Authorization": f"Bearer {forged}"}).get_json()["code"] == 40101
    assert _me(client, {"Authorization": f"Bearer {malformed}"}).get_json()["code"] == 40101


def test_staff_are_read_with_their_session_in_one_statement_and_a_disabled_one_is_refused(app, client, staff_login):
    owner = staff_login("owner")
    assert client.get("/admin/api/v1/me", headers=owner).status_code == 200
    with round_trips(app) as sent:
        assert client.get("/admin/api/v1/me", headers=owner).status_code == 200
    assert sent.count("SELECT") == 1, sent
    from server.accounts.models import Staff

    with app.app_context():
        db.session().execute(update(Staff).values(active=False))
        db.commit()
    response = client.get("/admin/api/v1/me", headers=owner)
    assert response.status_code == 401 and response.get_json()["code"] == 40101
