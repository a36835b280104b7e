"""Fixtures for the referral chain: members with share scenes."""
from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.fixture
def scene_of(client) -> Callable[..., str]:
    """``scene_of(alice)`` is alice's mini-program code scene (the same one each time)."""

    def scene(member: dict[str, Any], channel: str = "miniprogram_code", **content: str) -> str:
        response = client.post("/api/v1/referral/scenes", headers=member["headers"], json={"channel": channel, **content})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]["scene"]

    return scene


@pytest.fixture
def set_setting(app) -> Callable[[str, Any], None]:
    from server import db
    from server.settings.services import set_setting as store

    def set_(key: str, value: Any) -> None:
        with app.app_context():
            store(db.session(), key, value, by="test")
            db.commit()

    return set_
