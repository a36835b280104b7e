"""A team read page by page: offset pages and cursor pages list every invitee once, newest binding first,
ties on the binding time broken by member id; a cursor the API did not give is refused."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from server import db
from server.accounts.models import Member
from server.referral.models import Binding
from server.referral.services import TeamCursor


def _team(client, member, **params):
    response = client.get("/api/v1/referral/team", headers=member["headers"], query_string=params)
    return response.status_code, response.get_json()


@pytest.fixture
def big_team(app, wx_login):
    """alice with 45 direct invitees (some bound in the same microsecond) and 30 indirect ones."""
    alice = wx_login("alice")
    with app.app_context():
        sess = db.session()
        now = db.utcnow().replace(microsecond=0)
        sess.execute(insert(Member), [{"openid": f"team-d{i}", "nickname": f"直推{i}"} for i in range(45)])
        direct = sess.scalars(select(Member.id).where(Member.openid.like("team-d%")).order_by(Member.id)).all()
        # Three invitees per second: ties that only the member id orders.
        sess.execute(insert(Binding), [{"member_id": mid, "inviter_id": alice["user"]["id"], "channel": "t", "bound_at": now - timedelta(seconds=i // 3)} for i, mid in enumerate(direct)])
        sess.execute(insert(Member), [{"openid": f"team-i{i}", "nickname": f"间推{i}"} for i in range(30)])
        indirect = sess.scalars(select(Member.id).where(Member.openid.like("team-i%")).order_by(Member.id)).all()
        sess.execute(insert(Binding), [{"member_id": mid, "inviter_id": direct[i % 45], "upline_id": alice["user"]["id"], "channel": "t", "bound_at": now - timedelta(minutes=i)} for i, mid in enumerate(indirect)])
        db.commit()
        expected = {
            "direct": [m for _, m in sorted(((now - timedelta(seconds=i // 3), mid) for i, mid in enumerate(direct)), reverse=True)],
            "indirect": [m for _, m in sorted(((now - timedelta(minutes=i), mid) for i, mid in enumerate(indirect)), reverse=True)],
        }
    return alice, expected


@pytest.mark.parametrize("level", ["direct", "indirect"])
def test_cursor_pages_list_everyone_once_in_order_like_offset_pages(client, big_team, level):
    alice, expected = big_team
    by_offset, page = [], 1
    while True:
        status, body = _team(client, alice, level=level, page_size=10, page=page)
        assert status == 200
        if not body["data"][level]:
            break
        by_offset += [m["id"] for m in body["data"][level]]
        page += 1
    by_cursor, cursor, pages = [], None, 0
    while True:
        params = {"level": level, "page_size": 10} | ({"cursor": cursor} if cursor else {})
        status, body = _team(client, alice, **params)
        assert status == 200, body
        by_cursor += [m["id"] for m in body["data"][level]]
        assert body["data"][f"total_{level}"] == len(expected[level])
        pages += 1
        cursor = body["data"][f"next_{level}"]
        if cursor is None:
            break
    assert by_offset == by_cursor == expected[level]
    assert pages == len(expected[level]) // 10 + 1  # the last page is short, so it names no next one


def test_all_levels_answer_no_cursor_with_a_short_page(client, big_team):
    alice, _ = big_team
    status, body = _team(client, alice, page_size=100)
    assert status == 200 and body["data"]["next_direct"] is None and body["data"]["next_indirect"] is None
    status, body = _team(client, alice, level="indirect", page_size=5)
    assert body["data"]["next_direct"] is None and body["data"]["next_indirect"] is not None


@pytest.mark.parametrize("cursor", ["", "x", "1.2.3", "-1.5", "1.", ".1", "999999999999999999.1", "1.99999999999999999999", "１.1", "1 .2"])
def test_a_cursor_the_api_did_not_give_is_refused(client, wx_login, cursor):
    alice = wx_login("alice")
    status, body = _team(client, alice, level="direct", cursor=cursor)
    assert status == 422 and body["code"] == 42200
    assert any(error["field"] == "cursor" for error in body["data"]["errors"])


def test_a_cursor_continues_one_level_only(client, wx_login):
    alice = wx_login("alice")
    good = TeamCursor(db.utcnow(), 5).encode()
    status, body = _team(client, alice, cursor=good)
    assert status == 422
    status, body = _team(client, alice, level="direct", cursor=good)
    assert status == 200 and body["data"]["direct"] == []


def test_cursor_round_trips_to_the_microsecond():
    moment = db.utcnow().replace(microsecond=123_457)
    assert TeamCursor.decode(TeamCursor(moment, 42).encode()) == TeamCursor(moment, 42)


def test_a_page_past_the_end_still_counts_the_team(client, big_team):
    alice, expected = big_team
    status, body = _team(client, alice, level="direct", page_size=10, page=50)
    assert status == 200 and body["data"]["direct"] == [] and body["data"]["total_direct"] == len(expected["direct"])


def test_a_team_page_is_one_read_of_the_page_and_its_count_then_the_sales(app, client, big_team):
    from tests.statements import is_mysql, round_trips

    alice, expected = big_team
    _, first = _team(client, alice, level="indirect", page_size=10)
    with round_trips(app) as sent:
        status, body = _team(client, alice, level="indirect", page_size=10, cursor=first["data"]["next_indirect"])
    assert status == 200 and [m["id"] for m in body["data"]["indirect"]] == expected["indirect"][10:20]
    assert body["data"]["total_indirect"] == len(expected["indirect"])
    # The token with its member, the page with its members (the team's size was kept from the first page), the page's sales.
    assert sent.count("SELECT") == 3, sent
    if is_mysql(app):
        assert sent == ["SELECT", "SELECT", "SELECT", "COMMIT"]


def test_a_teams_size_is_counted_once_then_kept_until_its_team_changes(app, client, wx_login, scene_of, make_staff):
    """The size comes from the cache after the first page; a bind, a rebind, a staff change and a clearing
    forget the sizes they change as they commit, so every total is right at once."""
    from server.referral.inviter_changes import change_inviter
    from tests.statements import statements_sent

    def totals(member):
        status, body = _team(client, member, page_size=5)
        assert status == 200
        return body["data"]["total_direct"], body["data"]["total_indirect"]

    alice, grace = wx_login("alice"), wx_login("grace")
    bob = wx_login("bob", scene=scene_of(alice))
    wx_login("carol", scene=scene_of(bob))
    assert totals(alice) == (1, 1) and totals(bob) == (1, 0) and totals(grace) == (0, 0)
    with statements_sent(app) as sent:
        assert totals(alice) == (1, 1)
    assert not [s for s in sent if "FROM referral_bindings" in s and "count(" in s.lower()], sent
    # A new invitee of bob: alice's level 2 and bob's level 1.
    wx_login("dave", scene=scene_of(bob))
    assert totals(alice) == (1, 2) and totals(bob) == (2, 0)
    # Staff move bob (with carol and dave below him) from alice to grace, then clear him.
    staff = make_staff("owner").id
    with app.app_context():
        change_inviter(db.session(), bob["user"]["id"], grace["user"]["id"], reason="改绑", staff_id=staff)
        db.commit()
    assert totals(alice) == (0, 0) and totals(grace) == (1, 2) and totals(bob) == (2, 0)
    with app.app_context():
        change_inviter(db.session(), bob["user"]["id"], None, reason="误绑", staff_id=staff)
        db.commit()
    assert totals(grace) == (0, 0) and totals(bob) == (2, 0)
    # bob binds to alice again by her scene.
    wx_login("bob", scene=scene_of(alice))
    assert totals(alice) == (1, 2) and totals(grace) == (0, 0)
