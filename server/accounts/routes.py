"""Member tokens and profile (/api/v1), staff sign-in and accounts (/admin/api/v1).

Signing in with a wx.login code is referral's (``server/referral/signin_routes.py``): it records the scene.
"""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, request
from pydantic import AfterValidator, Field, StringConstraints
from sqlalchemy import select

from server import db
from server.accounts import services
from server.accounts.auth import (
    bearer_token,
    current_member,
    current_staff,
    member_required,
    staff_required,
)
from server.accounts.models import Member, MemberStatus, Staff, StaffRole, SubjectType
from server.api import Body, NonBlank, Page, client_address, parse_body, parse_query
from server.errors import NotFoundError, envelope
from server.referral.queries import inviter_shown
from server.wechat import miniprogram

bp = Blueprint("accounts", __name__, url_prefix="/api/v1")
admin_bp = Blueprint("accounts_admin", __name__, url_prefix="/admin/api/v1")


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value


def _http_url_or_empty(value: str) -> str:
    return value and _http_url(value)


Nickname = Annotated[NonBlank, StringConstraints(max_length=32)]
#: An http(s) URL; "" clears the avatar.
AvatarUrl = Annotated[str, StringConstraints(max_length=512), AfterValidator(_http_url_or_empty)]


class ProfileBody(Body):
    """Fields left out or null are unchanged; ``avatar_url: ""`` removes the avatar."""

    nickname: Nickname | None = None
    avatar_url: AvatarUrl | None = None


class PhoneBody(Body):
    code: Annotated[NonBlank, StringConstraints(max_length=128)]


class StaffLoginBody(Body):
    username: Annotated[NonBlank, StringConstraints(max_length=64)]
    password: Annotated[NonBlank, StringConstraints(max_length=256)]


class CreateStaffBody(Body):
    username: Annotated[NonBlank, StringConstraints(max_length=64)]
    password: Annotated[NonBlank, StringConstraints(max_length=256)]
    role: StaffRole = Field(json_schema_extra={"enum": [r.value for r in StaffRole]})

    model_config = Body.model_config | {"strict": False}


class StaffPatchBody(Body):
    active: bool


class MemberPatchBody(Body):
    status: MemberStatus

    model_config = Body.model_config | {"strict": False}


class MemberListQuery(Page):
    q: str | None = None


def _inviter(member: Member) -> dict[str, Any] | None:
    inviter = inviter_shown(db.session(), member.id)
    return {"id": inviter[0], "nickname": inviter[1]} if inviter else None


def serialize_member(member: Member) -> dict[str, Any]:
    """The member as they see themselves, with who invited them."""
    return {
        "id": member.id,
        "openid": member.openid,
        "nickname": member.nickname,
        "avatar_url": member.avatar_url,
        "phone": member.phone_masked,
        "status": member.status.value,
        "inviter": _inviter(member),
        "created_at": member.created_at.isoformat(),
    }


def serialize_staff(staff: Staff) -> dict[str, Any]:
    return {
        "id": staff.id,
        "username": staff.username,
        "role": staff.role.value,
        "active": staff.active,
        "created_at": staff.created_at.isoformat(),
        "last_login_at": staff.last_login_at.isoformat() if staff.last_login_at else None,
    }


@bp.post("/auth/logout")
@member_required
def logout() -> Any:
    services.revoke_token(db.session(), bearer_token(), SubjectType.member)
    return envelope(None)


@bp.get("/me")
@member_required
def get_me() -> Any:
    return envelope(serialize_member(current_member()))


@bp.patch("/me")
@member_required
def patch_me() -> Any:
    body = parse_body(ProfileBody)
    member = services.update_profile(db.session(), current_member(), nickname=body.nickname, avatar_url=body.avatar_url)
    return envelope(serialize_member(member))


@bp.post("/me/phone")
@member_required
def bind_phone() -> Any:
    body = parse_body(PhoneBody)
    # Commits early, by design: the sign-in check's transaction ends before WeChat is asked.
    db.commit()
    number = services.phone_from_wechat(miniprogram(), body.code)
    member = services.bind_phone(db.session(), current_member(), number)
    return envelope(serialize_member(member))


@admin_bp.post("/auth/login")
def staff_login() -> Any:
    body = parse_body(StaffLoginBody)
    staff, token, ttl = services.sign_in_staff(
        db.session(),
        username=body.username,
        password=body.password,
        client_address=client_address(),
        user_agent=request.headers.get("User-Agent", ""),
    )
    return envelope({"token": token, "expires_in": ttl, "staff": serialize_staff(staff)})


@admin_bp.post("/auth/logout")
@staff_required()
def staff_logout() -> Any:
    services.revoke_token(db.session(), bearer_token(), SubjectType.staff)
    return envelope(None)


@admin_bp.get("/me")
@staff_required()
def staff_me() -> Any:
    return envelope(serialize_staff(current_staff()))


@admin_bp.get("/staff")
@staff_required(StaffRole.owner)
def list_staff() -> Any:
    rows = db.session().scalars(select(Staff).order_by(Staff.id)).all()
    return envelope({"items": [serialize_staff(s) for s in rows]})


@admin_bp.post("/staff")
@staff_required(StaffRole.owner)
def create_staff() -> Any:
    body = parse_body(CreateStaffBody)
    staff = services.create_staff(
        db.session(), username=body.username, password=body.password, role=body.role, created_by=current_staff().id
    )
    return envelope(serialize_staff(staff), status=201)


@admin_bp.patch("/staff/<int:staff_id>")
@staff_required(StaffRole.owner)
def patch_staff(staff_id: int) -> Any:
    body = parse_body(StaffPatchBody)
    staff = db.session().get(Staff, staff_id)
    if staff is None:
        raise NotFoundError("no such staff account")
    services.set_staff_active(db.session(), staff, body.active, by=current_staff())
    return envelope(serialize_staff(staff))


def serialize_member_admin(member: Member) -> dict[str, Any]:
    """The member as staff see them: with unionid and last sign-in, phone still masked."""
    data = serialize_member(member)
    data["unionid"] = member.unionid
    data["last_login_at"] = member.last_login_at.isoformat() if member.last_login_at else None
    return data


@admin_bp.get("/members")
@staff_required(StaffRole.operations)
def list_members() -> Any:
    query = parse_query(MemberListQuery)
    stmt = select(Member)
    if query.q:
        stmt = stmt.where(Member.nickname.contains(query.q, autoescape=True) | Member.phone_masked.contains(query.q, autoescape=True))
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=(Member.id.desc(),))
    return envelope({"items": [serialize_member_admin(m) for m in rows], "total": total, "page": query.page})


@admin_bp.get("/members/<int:member_id>")
@staff_required(StaffRole.operations)
def get_member(member_id: int) -> Any:
    member = db.session().get(Member, member_id)
    if member is None:
        raise NotFoundError("no such member")
    return envelope(serialize_member_admin(member))


@admin_bp.patch("/members/<int:member_id>")
@staff_required(StaffRole.operations)
def patch_member(member_id: int) -> Any:
    body = parse_body(MemberPatchBody)
    sess = db.session()
    member = sess.get(Member, member_id)
    if member is None:
        raise NotFoundError("no such member")
    services.set_member_status(sess, member, body.status, by=current_staff())
    return envelope(serialize_member_admin(member))
