"""Share opens for members (/api/v1/referral/share-opens) and the compliance report for the owner (/admin/api/v1/compliance)."""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint
from pydantic import StringConstraints

from server import db
from server.accounts.auth import current_member, member_required, staff_required
from server.accounts.models import StaffRole
from server.api import Body, parse_body
from server.errors import envelope
from server.points.compliance import compliance_report
from server.points.incentives import record_share_open
from server.wechat.formats import SCENE_RE

bp = Blueprint("share_opens", __name__, url_prefix="/api/v1/referral")
admin_bp = Blueprint("compliance_admin", __name__, url_prefix="/admin/api/v1")


class ShareOpenBody(Body):
    scene: Annotated[str, StringConstraints(pattern=SCENE_RE.pattern)]


@bp.post("/share-opens")
@member_required
def share_open() -> Any:
    """The signed-in member opened a page someone shared; the sharer may earn the daily share reward.

    Whether anything was credited is an answer, never an error: the page opens either way.
    """
    body = parse_body(ShareOpenBody)
    credited = record_share_open(db.session(), current_member(), body.scene)
    return envelope({"credited": credited})


@admin_bp.get("/compliance")
@staff_required(StaffRole.owner)
def compliance() -> Any:
    """The compliance report: the reward rules in force and every row breaking a guard."""
    return envelope(compliance_report(db.session()).as_dict())
