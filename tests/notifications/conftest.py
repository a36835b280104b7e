"""Fixtures for messages to members: the merchant's templates in settings, members accepting them in the
sandbox and reporting it to the API, and what the sandbox accepted."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server import db
from server.notifications.models import OutboxMessage
from server.settings.services import set_setting
from tests.referral.conftest import scene_of  # noqa: F401  (a fixture these tests use too)
from wechat_sandbox import SandboxServer

#: The sandbox's templates (wechat_sandbox.messages) and a mapping of each event onto one.
TEMPLATES = {
    "points_pending": "SbxPointsPending0000000000000000000000001",
    "points_available": "SbxPointsAvailable000000000000000000000002",
    "order_shipped": "SbxOrderShipped00000000000000000000000003",
    "refund_result": "SbxRefundResult00000000000000000000000004",
    "distributor_decided": "SbxApplicationDecided00000000000000000005",
    "lead_valid": "SbxLeadValid000000000000000000000000000006",
    "redemption_fulfilled": "SbxRedemptionFulfilled0000000000000000007",
}
MAPPINGS = {
    "points_pending": "thing1=product number2=points phrase3=status date4=time character_string5=order_no page=pages/points/index",
    "points_available": "number1=points number2=balance thing3=note date4=time",
    "order_shipped": "character_string1=order_no thing2=product amount3=amount phrase4=status date5=time page=pages/orders/detail",
    "refund_result": "character_string1=order_no amount2=amount phrase3=result thing4=reason date5=time",
    "distributor_decided": "phrase1=result thing2=reason date3=time name4=name",
    "lead_valid": "thing1=lead number2=points phrase3=status time4=time",
    "redemption_fulfilled": "thing1=item number2=points phrase3=status date4=time thing5=note",
}
OA_NOTICE = "SbxOaNotice000000000000000000000000000001"


@dataclass
class Person:
    """A member signed in through the sandbox: their API headers, id and mini-program openid."""

    name: str
    id: int
    openid: str
    headers: dict[str, str]


class Sandbox:
    """The sandbox's message controls, over HTTP."""

    def __init__(self, server: SandboxServer) -> None:
        self.base = server.base_url.rstrip("/")
        self.server = server

    def accept(self, name: str, template_id: str, times: int = 1) -> str:
        """Play ``name`` accepting ``template_id`` in wx.requestSubscribeMessage; their openid."""
        response = requests.post(f"{self.base}/sandbox/subscriptions", json={"user": name, "template_ids": [template_id], "times": times}, timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["openid"])

    def messages(self, touser: str | None = None) -> list[dict[str, Any]]:
        params = {"touser": touser} if touser else {}
        return list(requests.get(f"{self.base}/sandbox/messages", params=params, timeout=10).json()["messages"])

    def calls(self, path: str) -> int:
        return int(self.server.app.extensions["sandbox_state"].calls[path])


@pytest.fixture
def sandbox_messages(sandbox: SandboxServer) -> Sandbox:
    """The sandbox's messages and allowances, forgotten before the test."""
    requests.delete(sandbox.base_url + "sandbox/messages", timeout=10)
    return Sandbox(sandbox)


@pytest.fixture
def notify(app: Flask) -> Callable[..., None]:
    """``notify("order_shipped")`` maps the event onto its sandbox template; ``notify(event, "off")`` switches it off;
    ``notify(event, oa="…")`` sets the official-account fallback."""

    def configure(event: str, text: str | None = None, oa: str | None = None) -> None:
        with app.app_context():
            sess = db.session()
            set_setting(sess, f"notify_{event}", text or f"{TEMPLATES[event]} {MAPPINGS[event]}", by="cli")
            if oa is not None:
                set_setting(sess, f"notify_{event}_oa", oa, by="cli")
            db.commit()

    return configure


@pytest.fixture
def person(wx_login: Callable[..., dict[str, Any]], sandbox_messages: Sandbox) -> Callable[..., Person]:
    """``person()`` signs a new member in (a fresh sandbox name each time, so tests never share an openid)."""

    def make(name: str | None = None, scene: str | None = None) -> Person:
        name = name or f"m{uuid.uuid4().hex[:12]}"
        data = wx_login(name, scene=scene)
        openid = sandbox_messages.server.app.extensions["sandbox_state"].openid(next(iter(sandbox_messages.server.app.extensions["sandbox_state"].apps)), name)
        return Person(name, data["user"]["id"], openid, data["headers"])

    return make


@pytest.fixture
def subscribe(client: FlaskClient, sandbox_messages: Sandbox) -> Callable[..., Any]:
    """``subscribe(person, event, times)``: the member accepts the event's template ``times`` times in WeChat
    and the mini-program reports each acceptance to the API."""

    def accept(who: Person, event: str, times: int = 1) -> None:
        template_id = TEMPLATES[event]
        for _ in range(times):
            sandbox_messages.accept(who.name, template_id)
            response = client.post("/api/v1/subscriptions", headers=who.headers, json={"results": [{"template_id": template_id, "result": "accept"}]})
            assert response.status_code == 200, response.get_json()

    return accept


def outbox(app: Flask, **where: Any) -> list[OutboxMessage]:
    """The outbox rows (detached), oldest first, optionally narrowed by column values."""
    with app.app_context():
        stmt = select(OutboxMessage).order_by(OutboxMessage.id)
        for column, value in where.items():
            stmt = stmt.where(getattr(OutboxMessage, column) == value)
        rows = list(db.session().scalars(stmt))
        db.session().expunge_all()
        return rows
