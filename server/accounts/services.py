"""Sign-in, bearer tokens, member profiles and staff accounts.

Services take a session and plain arguments, ``flush()`` and never commit.
"""
from __future__ import annotations

import functools
import re
import secrets
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from server import events, security
from server.accounts.errors import (
    BadCredentialsError,
    InvalidLoginCodeError,
    InvalidPhoneCodeError,
    MemberDisabledError,
    RoleRequiredError,
    StaffExistsError,
)
from server.accounts.models import (
    AuditEntry,
    AuthSession,
    Member,
    MemberStatus,
    Staff,
    StaffRole,
    SubjectType,
)
from server.cache import enforce_rate_limit
from server.db import rowcount, utcnow
from server.errors import InvalidTokenError, UpstreamError, ValidationError
from server.wechat.client import MiniProgram, WeChatError, WeChatUnavailableError

#: WeChat's own default nickname for users who have not set one in our app.
DEFAULT_NICKNAME = "微信用户"
#: jscode2session / phone errors that mean the code itself is bad, not that WeChat failed.
_BAD_CODE_ERRORS = {40029, 40163, 40226, 41008}
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
MIN_PASSWORD_LENGTH = 8
#: The subject a token signs in: Member or Staff.
T = TypeVar("T", Member, Staff)


@functools.cache
def _dummy_hash() -> str:
    """A hash of nothing anyone knows, checked when the username does not exist."""
    return generate_password_hash(secrets.token_urlsafe(16))


def _issue_token(sess: Session, subject_type: SubjectType, subject_id: int, client_address: str, user_agent: str) -> tuple[str, int]:
    ttl = current_app.config["TOKEN_TTL_SECONDS"]
    row = AuthSession(
        id=secrets.token_urlsafe(16),
        subject_type=subject_type,
        subject_id=subject_id,
        expires_at=utcnow() + timedelta(seconds=ttl),
        client_address=client_address[:64],
        user_agent=user_agent[:255],
    )
    sess.add(row)
    sess.flush()
    return security.sign_token({"sid": row.id}, subject_type.value), ttl


def _session_for(sess: Session, token: str, subject_type: SubjectType) -> AuthSession:
    row = sess.get(AuthSession, _token_sid(token, subject_type))
    if row is None or row.subject_type != subject_type or not _live(row.revoked_at, row.expires_at):
        raise InvalidTokenError()
    return row


def _token_sid(token: str, subject_type: SubjectType) -> str:
    """The session id a token signed for ``subject_type`` names; InvalidTokenError when it names none."""
    payload = security.load_token(token, subject_type.value, current_app.config["TOKEN_TTL_SECONDS"])
    sid = payload.get("sid") if payload else None
    if not isinstance(sid, str):
        raise InvalidTokenError()
    return sid


def _live(revoked_at: datetime | None, expires_at: datetime) -> bool:
    return revoked_at is None and expires_at > utcnow()


def _subject_read(model: type[T], subject_type: SubjectType) -> Select[T, datetime | None, datetime]:
    return (
        select(model, AuthSession.revoked_at, AuthSession.expires_at)
        .join(AuthSession, AuthSession.subject_id == model.id)
        .where(AuthSession.id == bindparam("sid"), AuthSession.subject_type == subject_type)
    )


# Built once: every signed-in request runs one of them.
_SUBJECT_READS: dict[SubjectType, Select[Any, datetime | None, datetime]] = {
    SubjectType.member: _subject_read(Member, SubjectType.member),
    SubjectType.staff: _subject_read(Staff, SubjectType.staff),
}


def _subject_of(sess: Session, token: str, subject_type: SubjectType) -> Any:
    """The member or staff row a live token of ``subject_type`` belongs to, read with its session in one statement.

    InvalidTokenError when the token is forged, names no session, its session is revoked or expired,
    or its subject is gone.
    """
    row = sess.execute(_SUBJECT_READS[subject_type], {"sid": _token_sid(token, subject_type)}).first()
    if row is None or not _live(row.revoked_at, row.expires_at):
        raise InvalidTokenError()
    return row[0]


def _wechat_call(fn: Any, *args: Any, bad_code_error: type[Exception]) -> Any:
    """Call the WeChat adapter; a bad code is the client's fault, anything else is WeChat's."""
    try:
        return fn(*args)
    except WeChatUnavailableError:
        raise UpstreamError() from None
    except WeChatError as error:
        if error.errcode in _BAD_CODE_ERRORS:
            raise bad_code_error() from None
        current_app.logger.warning("WeChat refused a call: errcode=%s", error.errcode)
        raise UpstreamError(data={"errcode": error.errcode}) from None


def _get_or_create_member(sess: Session, openid: str) -> tuple[Member, bool]:
    member = sess.scalar(select(Member).where(Member.openid == openid))
    if member is not None:
        return member, False
    try:
        with sess.begin_nested():
            member = Member(openid=openid, nickname=DEFAULT_NICKNAME)
            sess.add(member)
    except IntegrityError:
        # A concurrent first sign-in of the same person created the row first.
        member = sess.scalars(select(Member).where(Member.openid == openid)).one()
        return member, False
    return member, True


def member_for_code(sess: Session, mp: MiniProgram, *, code: str, client_address: str) -> tuple[Member, bool]:
    """The member behind a wx.login ``code`` (created on first sign-in), with their session key stored.

    Rate-limited per client address and per openid. Returns the member and whether they are new.
    """
    cfg = current_app.config
    limit, window = cfg["LOGIN_RATE_LIMIT"], cfg["LOGIN_RATE_WINDOW"]
    enforce_rate_limit(f"login:addr:{client_address}", limit, window)
    info = _wechat_call(mp.code_to_session, code, bad_code_error=InvalidLoginCodeError)
    enforce_rate_limit(f"login:openid:{info.openid}", limit, window)

    member, created = _get_or_create_member(sess, info.openid)
    if member.status != MemberStatus.active:
        raise MemberDisabledError()
    if info.unionid:
        member.unionid = info.unionid
    member.session_key_ciphertext = security.encrypt(info.session_key, "session_key")
    member.last_login_at = utcnow()
    sess.flush()
    return member, created


def issue_member_token(sess: Session, member: Member, *, client_address: str, user_agent: str = "") -> tuple[str, int]:
    """A new bearer token for the member and its lifetime in seconds."""
    return _issue_token(sess, SubjectType.member, member.id, client_address, user_agent)


def authenticate_member(sess: Session, token: str) -> Member:
    """The active member a bearer token belongs to; InvalidTokenError otherwise."""
    member: Member = _subject_of(sess, token, SubjectType.member)
    if member.status != MemberStatus.active:
        raise MemberDisabledError()
    return member


def revoke_token(sess: Session, token: str, subject_type: SubjectType) -> None:
    """Sign out: the token stops working at once."""
    row = _session_for(sess, token, subject_type)
    row.revoked_at = utcnow()
    sess.flush()


def revoke_all_tokens(sess: Session, subject_type: SubjectType, subject_id: int) -> int:
    """Sign a member or staff member out everywhere; returns how many tokens were live."""
    result = sess.execute(
        update(AuthSession)
        .where(
            AuthSession.subject_type == subject_type,
            AuthSession.subject_id == subject_id,
            AuthSession.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    return rowcount(result) or 0


def update_profile(sess: Session, member: Member, *, nickname: str | None, avatar_url: str | None) -> Member:
    """Change the nickname and/or avatar the member chose in the mini-program.

    None leaves a field as it is; an empty ``avatar_url`` removes the avatar.
    """
    changed = (nickname is not None and nickname != member.nickname) or (avatar_url is not None and avatar_url != member.avatar_url)
    if nickname is not None:
        member.nickname = nickname
    if avatar_url is not None:
        member.avatar_url = avatar_url
    sess.flush()
    if changed:
        events.member_profile_changed.send(sess, member=member)
    return member


def phone_from_wechat(mp: MiniProgram, code: str) -> str:
    """The phone number WeChat vouches for with a getPhoneNumber ``code``: ``1…`` in China, ``+<cc><number>`` elsewhere.

    Touches no database: call it with no transaction open.
    """
    info = _wechat_call(mp.get_phone_number, code, bad_code_error=InvalidPhoneCodeError)
    return info.pure_phone_number if info.country_code in ("86", "") else f"+{info.country_code}{info.pure_phone_number}"


def bind_phone(sess: Session, member: Member, number: str) -> Member:
    """Store ``number`` (from ``phone_from_wechat``) on the member, encrypted, with its digest and mask."""
    member.phone_ciphertext = security.encrypt(number, "phone")
    member.phone_digest = security.digest(number, "phone")
    member.phone_masked = security.mask_phone(number)
    sess.flush()
    return member


def set_member_status(sess: Session, member: Member, status: MemberStatus, *, by: Staff) -> Member:
    """Disable or re-enable a member; disabling signs them out everywhere."""
    member.status = status
    if status != MemberStatus.active:
        revoke_all_tokens(sess, SubjectType.member, member.id)
    record_audit(sess, by.id, f"member.{status.value}", f"member:{member.id}")
    sess.flush()
    return member


def record_audit(sess: Session, staff_id: int | None, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
    """Append an audit entry for a staff or operator action."""
    sess.add(AuditEntry(staff_id=staff_id, action=action, target=target, detail=detail or {}))


def create_staff(sess: Session, *, username: str, password: str, role: StaffRole, created_by: int | None = None) -> Staff:
    """A new staff account; usernames are unique, passwords at least 8 characters."""
    errors = []
    if not USERNAME_RE.match(username):
        errors.append({"field": "username", "error": "3-64 letters, digits, '_', '.' or '-'"})
    if len(password) < MIN_PASSWORD_LENGTH:
        errors.append({"field": "password", "error": f"at least {MIN_PASSWORD_LENGTH} characters"})
    if errors:
        raise ValidationError(data={"errors": errors})
    if sess.scalar(select(Staff.id).where(Staff.username == username)) is not None:
        raise StaffExistsError()
    staff = Staff(username=username, password_hash=generate_password_hash(password), role=role)
    try:
        with sess.begin_nested():
            sess.add(staff)
    except IntegrityError:
        raise StaffExistsError() from None
    record_audit(sess, created_by, "staff.create", f"staff:{staff.id}", {"username": username, "role": role.value})
    return staff


def set_staff_active(sess: Session, staff: Staff, active: bool, *, by: Staff) -> Staff:
    """Enable or disable a staff account; disabling signs it out everywhere."""
    if staff.id == by.id and not active:
        raise RoleRequiredError("you cannot disable your own account")
    staff.active = active
    if not active:
        revoke_all_tokens(sess, SubjectType.staff, staff.id)
    record_audit(sess, by.id, "staff.enable" if active else "staff.disable", f"staff:{staff.id}")
    sess.flush()
    return staff


def sign_in_staff(sess: Session, *, username: str, password: str, client_address: str, user_agent: str = "") -> tuple[Staff, str, int]:
    """Password sign-in to the console, rate-limited per client address and per username at that address.

    Not per username alone: guessing from elsewhere would then lock the real staff member out.
    """
    cfg = current_app.config
    limit, window = cfg["LOGIN_RATE_LIMIT"], cfg["LOGIN_RATE_WINDOW"]
    enforce_rate_limit(f"staff-login:addr:{client_address}", limit, window)
    enforce_rate_limit(f"staff-login:user-addr:{username.lower()}|{client_address}", cfg["STAFF_LOGIN_RATE_LIMIT"], window)
    staff = sess.scalar(select(Staff).where(Staff.username == username))
    # Hash even for an unknown username, so the response time does not tell which usernames exist.
    valid = check_password_hash(staff.password_hash if staff else _dummy_hash(), password)
    if staff is None or not staff.active or not valid:
        raise BadCredentialsError()
    staff.last_login_at = utcnow()
    token, ttl = _issue_token(sess, SubjectType.staff, staff.id, client_address, user_agent)
    return staff, token, ttl


def authenticate_staff(sess: Session, token: str, roles: tuple[StaffRole, ...] = ()) -> Staff:
    """The active staff member behind a token, who must hold one of ``roles`` (owner always may)."""
    staff: Staff = _subject_of(sess, token, SubjectType.staff)
    if not staff.active:
        raise InvalidTokenError()
    if roles and staff.role != StaffRole.owner and staff.role not in roles:
        raise RoleRequiredError()
    return staff
