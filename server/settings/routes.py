"""Merchant settings in the console: read by every staff role, changed by the owner."""
from __future__ import annotations

from typing import Any

from flask import Blueprint

from server import db
from server.accounts.auth import current_staff, staff_required
from server.accounts.models import StaffRole
from server.api import Body, parse_body
from server.errors import envelope
from server.settings import services

bp = Blueprint("settings_admin", __name__, url_prefix="/admin/api/v1/settings")


class SettingBody(Body):
    value: Any


def serialize(spec: services.SettingSpec, value: Any) -> dict[str, Any]:
    return {
        "key": spec.key,
        "value": value,
        "default": spec.default,
        "type": spec.type.__name__,
        "choices": list(spec.choices) or None,
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        "description": spec.description,
    }


@bp.get("")
@staff_required(StaffRole.operations, StaffRole.finance)
def list_settings() -> Any:
    values = services.all_settings(db.session())
    return envelope({"items": [serialize(spec, values[spec.key]) for spec in services.specs()]})


@bp.put("/<key>")
@staff_required(StaffRole.owner)
def put_setting(key: str) -> Any:
    spec = services.spec_for(key)
    body = parse_body(SettingBody)
    value = services.change_setting(db.session(), key, body.value, staff_id=current_staff().id)
    return envelope(serialize(spec, value))
