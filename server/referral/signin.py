"""Signing in with the scene a member arrived by: the referral flow around a mini-program sign-in.

``accounts`` knows members and tokens; what a scene means (a scan, a binding, a pending scene from
the official account) is referral's, so the whole flow lives here.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from server import events
from server.accounts import services as accounts
from server.accounts.models import Member
from server.referral import services as referral
from server.referral.models import TouchEvent, TouchKind
from server.referral.official_account import take_pending_scene
from server.referral.services import BindResult
from server.wechat.client import MiniProgram


@dataclass(frozen=True)
class SignIn:
    member: Member
    token: str
    expires_in: int
    created: bool
    #: What became of the scene the member arrived with; None without a scene.
    binding: BindResult | None


def sign_in_member(
    sess: Session,
    mp: MiniProgram,
    *,
    code: str,
    scene: str | None,
    client_address: str,
    user_agent: str = "",
) -> SignIn:
    """Exchange a wx.login code for a member and a bearer token; record the scene they came with."""
    member, created = accounts.member_for_code(sess, mp, code=code, client_address=client_address)
    # Someone who followed the official account through a member's QR code before using the
    # mini-program arrives with that scene; their own scene wins, and either way it is used up.
    pending = take_pending_scene(sess, member.unionid) if member.unionid else None
    if scene:
        referral.record_scan(sess, member, scene)
    else:
        scene = pending  # its scan was recorded when they followed
    sess.add(
        TouchEvent(
            member_id=member.id,
            kind=TouchKind.sign_in,
            scene=scene,
            channel="miniprogram",
            actor=f"member:{member.id}",
            detail={"first_sign_in": created},
        )
    )
    binding = referral.bind_on_arrival(sess, member, scene, first_sign_in=created) if scene else None
    token, ttl = accounts.issue_member_token(sess, member, client_address=client_address, user_agent=user_agent)
    events.member_signed_in.send(sess, member=member, client_address=client_address, created=created)
    return SignIn(member=member, token=token, expires_in=ttl, created=created, binding=binding)
