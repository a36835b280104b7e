"""The owner changes or clears a member's inviter: guarded like a scan, audited, placed orders untouched."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask
from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry, Member
from server.orders.models import Order
from server.referral.models import Binding, TouchEvent
from tests.console.conftest import Console
from tests.console.test_pages import demo  # noqa: F401  (fixture)


def _ids(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {m.openid.removeprefix("demo-"): m.id for m in db.session().scalars(select(Member))}


def _binding(app: Flask, member_id: int) -> tuple[int | None, int | None]:
    with app.app_context():
        row = db.session().get(Binding, member_id)
        return (row.inviter_id, row.upline_id) if row else (None, None)


def _owner(app: Flask) -> Console:
    browser = Console(app.test_client())
    assert browser.login("owner", "demo-pass-2026").status_code == 303
    return browser


def test_owner_moves_a_member_and_their_team_follows(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ids, owner = _ids(app), _owner(app)
    with app.app_context():
        stamped = [(o.id, o.inviter_id, o.upline_id) for o in db.session().scalars(select(Order).where(Order.member_id == ids["dave"]))]
    # bob (invited by alice; inviter of dave and eve) moves under grace.
    response = owner.post(f"/console/members/{ids['bob']}/inviter", {"inviter_id": str(ids["grace"]), "reason": "客户申诉，核实后改绑"})
    assert response.status_code == 303
    assert _binding(app, ids["bob"]) == (ids["grace"], None)
    assert _binding(app, ids["dave"]) == (ids["bob"], ids["grace"])
    with app.app_context():
        sess = db.session()
        assert [(o.id, o.inviter_id, o.upline_id) for o in sess.scalars(select(Order).where(Order.member_id == ids["dave"]))] == stamped
        entry = sess.scalars(select(AuditEntry).where(AuditEntry.action == "member.inviter_change")).one()
        assert entry.target == f"member:{ids['bob']}" and entry.detail["old_inviter_id"] == ids["alice"] and entry.detail["reason"] == "客户申诉，核实后改绑"
        assert sess.scalars(select(TouchEvent).where(TouchEvent.member_id == ids["bob"], TouchEvent.channel == "console")).one().detail["by_staff"]
    assert "客户申诉" in owner.get(f"/console/members/{ids['bob']}").text


def test_owner_clears_an_inviter(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ids, owner = _ids(app), _owner(app)
    assert owner.post(f"/console/members/{ids['bob']}/inviter", {"action": "clear", "reason": "误绑"}).status_code == 303
    assert _binding(app, ids["bob"]) == (None, None)
    assert _binding(app, ids["dave"]) == (ids["bob"], None)
    again = owner.post(f"/console/members/{ids['bob']}/inviter", {"action": "clear", "reason": "误绑"})
    assert again.status_code == 422 and "没有邀请人" in again.text


@pytest.mark.parametrize("case,message", [
    ("self", "不能把会员设为自己的邀请人"),
    ("cycle", "会形成循环"),
    ("unchanged", "已经是此人"),
    ("unknown", "找不到该会员"),
    ("not_a_number", "请输入新邀请人的会员 ID"),
    ("no_reason", "请填写原因"),
])
def test_refusals_change_nothing(app: Flask, demo: dict[str, Any], case: str, message: str) -> None:  # noqa: F811
    ids, owner = _ids(app), _owner(app)
    target = {
        "self": str(ids["alice"]),
        "cycle": str(ids["dave"]),  # dave is alice's downline (level 2)
        "unchanged": str(ids["alice"]),
        "unknown": "999999",
        "not_a_number": "abc",
        "no_reason": str(ids["grace"]),
    }[case]
    member = ids["bob"] if case == "unchanged" else ids["alice"]
    before = (_binding(app, member), _binding(app, ids["dave"]))
    response = owner.post(f"/console/members/{member}/inviter", {"inviter_id": target, "reason": "" if case == "no_reason" else "测试"})
    assert response.status_code == 422 and message in response.text
    assert (_binding(app, member), _binding(app, ids["dave"])) == before
    with app.app_context():
        assert db.session().scalars(select(AuditEntry).where(AuditEntry.action.startswith("member.inviter"))).all() == []


def test_a_frozen_distributor_cannot_become_an_inviter(app: Flask, demo: dict[str, Any], staff_login: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    ids, owner = _ids(app), _owner(app)
    with app.app_context():
        from server.distribution.models import Distributor

        alice_distributor = db.session().scalars(select(Distributor.id).where(Distributor.member_id == ids["alice"])).one()
    ops = staff_login("operations")
    frozen = owner.client.post(f"/admin/api/v1/distributors/{alice_distributor}/decisions", json={"action": "freeze", "reason": "核查"}, headers=ops)
    assert frozen.status_code == 200, frozen.get_json()
    response = owner.post(f"/console/members/{ids['grace']}/inviter", {"inviter_id": str(ids["alice"]), "reason": "测试"})
    assert response.status_code == 422 and "冻结" in response.text
