"""``POST /api/v1/auth/wx-login``: mini-program sign-in with the scene the member arrived by."""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, request
from pydantic import StringConstraints

from server import db
from server.accounts.routes import serialize_member
from server.api import Body, NonBlank, client_address, parse_body
from server.errors import envelope
from server.referral import signin
from server.wechat import miniprogram
from server.wechat.formats import SCENE_RE

bp = Blueprint("signin", __name__, url_prefix="/api/v1")

Scene = Annotated[str, StringConstraints(pattern=SCENE_RE.pattern)]


class WxLoginBody(Body):
    code: Annotated[NonBlank, StringConstraints(max_length=128)]
    scene: Scene | None = None


@bp.post("/auth/wx-login")
def wx_login() -> Any:
    """Sign in with the code of wx.login(), optionally with the scene the member arrived by."""
    body = parse_body(WxLoginBody)
    result = signin.sign_in_member(
        db.session(),
        miniprogram(),
        code=body.code,
        scene=body.scene,
        client_address=client_address(),
        user_agent=request.headers.get("User-Agent", ""),
    )
    return envelope(
        {
            "token": result.token,
            "expires_in": result.expires_in,
            "created": result.created,
            "user": serialize_member(result.member),
            "binding": result.binding.as_dict(db.session()) if result.binding else None,
        }
    )
