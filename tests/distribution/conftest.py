"""Fixtures for distributors: applying, staff decisions, share scenes and direct database access."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from server import db


@pytest.fixture
def sess(app: Flask) -> Callable[[], Any]:
    """``with sess() as s:`` gives a session in a fresh app context; commit what you change."""

    @contextmanager
    def open_session() -> Iterator[Session]:
        with app.app_context():
            yield db.session()

    return open_session


@pytest.fixture
def ops(staff_login: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return staff_login("operations")


@pytest.fixture
def owner(staff_login: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return staff_login("owner")


@pytest.fixture
def apply(client: FlaskClient) -> Callable[..., Any]:
    """``apply(alice, real_name=...)`` posts an application for the signed-in member; returns the response."""

    def do(member: dict[str, Any], **body: Any) -> Any:
        payload = {"real_name": "张三", "phone": "13800138000"} | body
        return client.post("/api/v1/distributors/apply", json=payload, headers=member["headers"])

    return do


@pytest.fixture
def decide(client: FlaskClient, ops: dict[str, str]) -> Callable[..., Any]:
    """``decide(distributor_id, "approve")`` takes a staff decision as operations; returns the response."""

    def do(distributor_id: int, action: str, reason: str = "", headers: dict[str, str] | None = None) -> Any:
        return client.post(
            f"/admin/api/v1/distributors/{distributor_id}/decisions",
            json={"action": action, "reason": reason},
            headers=headers or ops,
        )

    return do


@pytest.fixture
def distributor(wx_login: Callable[..., dict[str, Any]], apply: Callable[..., Any], decide: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    """``distributor("alice")`` signs alice in and makes her an approved distributor.

    Returns her sign-in data with ``distributor`` (her record as /distributors/me shows it).
    Pass ``scene=`` to sign in through someone's share first.
    """

    def make(name: str, scene: str | None = None, approve: bool = True) -> dict[str, Any]:
        member = wx_login(name, scene=scene)
        response = apply(member, real_name=name.title())
        assert response.status_code == 201, response.get_json()
        record = response.get_json()["data"]
        if approve and record["status"] == "pending":
            decided = decide(record["id"], "approve")
            assert decided.status_code == 200, decided.get_json()
            record = decided.get_json()["data"]
        member["distributor"] = record
        return member

    return make


@pytest.fixture
def share_scene(sess: Callable[[], Any]) -> Callable[[int], str]:
    """``share_scene(alice_id)`` is alice's mini-program code scene."""
    from server.referral.models import Channel
    from server.referral.services import scene_for_share

    def scene(member_id: int) -> str:
        with sess() as s:
            code = scene_for_share(s, member_id, Channel.miniprogram_code).code
            db.commit()
        return code

    return scene
