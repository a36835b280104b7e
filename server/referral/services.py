"""Scenes, binding to the two-level chain, the team, the lead timeline and the lead pool.

The chain is stored as one row per bound member holding both the inviter and
the upline, so either is one primary-key read; binding keeps the uplines of
the member's own invitees in step. Nothing above level 2 is ever stored.
"""
from __future__ import annotations

import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Integer, bindparam, func, literal, or_, select, update
from sqlalchemy.orm import Session

from server import cache, events, security
from server.accounts.models import Member, Staff
from server.accounts.services import record_audit
from server.clock import CHINA
from server.db import after_commit, utcnow
from server.distribution.queries import sharer_refusal
from server.errors import NotFoundError, ValidationError
from server.orders import queries as order_queries
from server.referral.errors import (
    LeadAlreadyReviewedError,
    LeadNotQualifiedError,
    PartnerExistsError,
    PartnerNotFoundError,
    SceneNotFoundError,
    SceneQuotaError,
)
from server.referral.models import (
    Binding,
    Channel,
    CommissionMode,
    Lead,
    LeadSource,
    LeadStatus,
    Partner,
    PartnerCommission,
    Scene,
    TouchEvent,
    TouchKind,
)
from server.referral.queries import inviter_and_upline
from server.settings.services import SettingSpec, get_setting, lock_named, register

BINDING_POLICIES = ("first_touch", "protection_period", "last_touch")

register(
    SettingSpec(
        "binding_policy",
        str,
        "first_touch",
        "How a member's inviter is chosen: first_touch (the first scene wins for good), "
        "protection_period (a new scene may rebind after binding_protection_days), last_touch (the latest scene wins).",
        choices=BINDING_POLICIES,
    ),
    SettingSpec(
        "binding_protection_days",
        int,
        30,
        "With binding_policy=protection_period: days during which a binding cannot be replaced.",
        minimum=1,
        maximum=3650,
    ),
    SettingSpec("shop_name", str, "微信小店", "The shop's name, shown on H5 landing pages and posters.", max_length=64),
    SettingSpec(
        "scene_ttl_days",
        int,
        0,
        "Days a newly issued scene stays valid; 0 means until revoked.",
        minimum=0,
        maximum=3650,
    ),
    SettingSpec(
        "scene_daily_limit",
        int,
        50,
        "New share scenes (links, codes, posters for new content) one member may create in a day "
        "(China time); asking again for a live one is free.",
        minimum=1,
        maximum=10_000,
    ),
)

#: Days start at midnight in China, where the merchant and members are.

#: Scenes use letters and digits only: valid in every channel (mini-program scene, OA scene_str, URL path).
SCENE_ALPHABET = string.ascii_letters + string.digits
#: 16 characters of 62 is about 95 bits: unguessable, and well inside WeChat's 32.
SCENE_LENGTH = 16
#: Reasons a scene does not bind, as returned to the client.
REFUSALS = (
    "unknown_scene",
    "scene_revoked",
    "scene_expired",
    "self",
    "cycle",
    "sharer_disabled",
    "sharer_frozen",
    "already_bound",
    "protected",
    "partner_channel",
)


# -- scenes -------------------------------------------------------------------


def new_scene_code() -> str:
    return "".join(secrets.choice(SCENE_ALPHABET) for _ in range(SCENE_LENGTH))


def create_scene(
    sess: Session,
    *,
    channel: Channel,
    sharer_id: int | None = None,
    partner_id: int | None = None,
    content_type: str = "",
    content_id: str = "",
    expires_at: datetime | None = None,
    issued_since: tuple[datetime, int] | None = None,
) -> Scene:
    """Issue a new scene for a member (or a partner channel) and what they share.

    ``issued_since`` is what the caller counted under the member's lock: ``(moment, n)``, the sharer's
    scenes created since that moment, this one included. The event passes it on, so its handlers need
    not count the same rows again. It stays true until the transaction ends because every insert of a
    member's scene waits on the member's row: ``scene_for_share`` locks it, and any other insert takes a
    shared lock on it through the scenes' foreign key to members, which the lock held here refuses.
    """
    if (sharer_id is None) == (partner_id is None):
        raise ValueError("a scene belongs to exactly one member or one partner")
    if expires_at is None:
        ttl_days = get_setting(sess, "scene_ttl_days")
        expires_at = utcnow() + timedelta(days=ttl_days) if ttl_days else None
    scene = Scene(
        code=new_scene_code(),
        channel=channel,
        sharer_id=sharer_id,
        partner_id=partner_id,
        content_type=content_type,
        content_id=content_id,
        expires_at=expires_at,
    )
    sess.add(scene)
    sess.flush()
    if sharer_id is not None:
        events.scene_issued.send(sess, scene=scene, issued_since=issued_since)
    return scene


def scene_for_share(sess: Session, sharer_id: int, channel: Channel, content_type: str = "", content_id: str = "") -> Scene:
    """The member's live scene for this channel and content, issued on first use (so posters stay stable)."""
    now = utcnow()
    scene = sess.scalars(
        select(Scene)
        .where(
            Scene.sharer_id == sharer_id,
            Scene.channel == channel,
            Scene.content_type == content_type,
            Scene.content_id == content_id,
            Scene.revoked_at.is_(None),
            (Scene.expires_at.is_(None)) | (Scene.expires_at > now),
        )
        .order_by(Scene.created_at.desc())
        .limit(1)
    ).first()
    if scene is not None:
        return scene
    start, issued = _check_scene_quota(sess, sharer_id)
    return create_scene(
        sess, channel=channel, sharer_id=sharer_id, content_type=content_type, content_id=content_id, issued_since=(start, issued + 1)
    )


def day_start(now: datetime) -> datetime:
    """Midnight (China time) of the day ``now`` falls in, in UTC."""
    local = now.astimezone(CHINA)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(now.tzinfo)


def _check_scene_quota(sess: Session, sharer_id: int) -> tuple[datetime, int]:
    """Refuse a new scene once the member created ``scene_daily_limit`` of them today; else today's
    start and the scenes they created since.

    The member's row is locked first, so concurrent requests count one after another.
    """
    sess.execute(select(Member.id).where(Member.id == sharer_id).with_for_update())
    now = utcnow()
    start = day_start(now)
    created = sess.scalar(
        select(func.count()).select_from(Scene).where(Scene.sharer_id == sharer_id, Scene.created_at >= start)
    ) or 0
    limit = get_setting(sess, "scene_daily_limit")
    if created >= limit:
        retry = int((start + timedelta(days=1) - now).total_seconds())
        raise SceneQuotaError(data={"limit": limit, "retry_after_seconds": max(retry, 1)})
    return start, created


def scene_state(scene: Scene | None) -> str | None:
    """None for a live scene, else why it is not: unknown_scene, scene_revoked or scene_expired."""
    if scene is None:
        return "unknown_scene"
    if scene.revoked_at is not None:
        return "scene_revoked"
    if scene.expires_at is not None and scene.expires_at <= utcnow():
        return "scene_expired"
    return None


def revoke_scene(sess: Session, code: str, *, sharer_id: int | None = None, staff_id: int | None = None) -> Scene:
    """Stop a scene from binding anyone; a member may only revoke their own. Audited when ``staff_id``
    (the staff member revoking it) is given."""
    scene = sess.get(Scene, code)
    if scene is None or (sharer_id is not None and scene.sharer_id != sharer_id):
        raise SceneNotFoundError()
    if scene.revoked_at is None:
        scene.revoked_at = utcnow()
    sess.flush()
    if staff_id is not None:
        record_audit(sess, staff_id, "scene.revoke", f"scene:{code}")
    return scene


def content_label(scene: Scene) -> str:
    return f"{scene.content_type}:{scene.content_id}" if scene.content_type else ""


# -- the chain ------------------------------------------------------------------


def is_ancestor(sess: Session, candidate_id: int, of_member_id: int) -> bool:
    """Whether ``candidate_id`` is anywhere above ``of_member_id`` in the chain (a bind would close a cycle).

    Exact at any depth: a chain without a cycle is shorter than the number of members, which bounds
    the recursion (and would end it even if a cycle had got into the data). The database's own
    recursion limit is lifted for every connection (``db.make_engine``).
    """
    longest = int(sess.scalar(select(func.max(Member.id))) or 0)
    chain = (
        select(Binding.inviter_id.label("id"), literal(1).label("depth"))
        .where(Binding.member_id == of_member_id)
        .cte("chain", recursive=True)
    )
    chain = chain.union_all(
        select(Binding.inviter_id, chain.c.depth + 1)
        .join(chain, Binding.member_id == chain.c.id)
        .where(chain.c.depth <= longest)
    )
    return sess.scalar(select(chain.c.id).where(chain.c.id == candidate_id).limit(1)) is not None


@dataclass(frozen=True)
class BindResult:
    """What became of a scene the member arrived with."""

    bound: bool
    #: True when this call changed the member's inviter.
    changed: bool
    reason: str | None
    inviter_id: int | None
    scene: Scene | None

    def as_dict(self, sess: Session) -> dict[str, Any]:
        inviter = sess.get(Member, self.inviter_id) if self.inviter_id else None
        return {
            "bound": self.bound,
            "changed": self.changed,
            "reason": self.reason,
            "inviter": {"id": inviter.id, "nickname": inviter.nickname} if inviter else None,
        }


def touch(sess: Session, member_id: int | None, kind: TouchKind, scene: Scene | None, scene_code: str | None, **detail: Any) -> None:
    """Add one step to a person's timeline; ``detail`` may carry ``channel`` and ``actor``."""
    sess.add(
        TouchEvent(
            member_id=member_id,
            kind=kind,
            scene=scene_code,
            channel=scene.channel.value if scene else detail.pop("channel", ""),
            actor=detail.pop("actor", f"member:{member_id}" if member_id else "system"),
            content=content_label(scene) if scene else "",
            detail=detail,
        )
    )


def bind_member(sess: Session, member: Member, scene_code: str) -> BindResult:
    """Bind ``member`` to the sharer of ``scene_code`` if the merchant's policy and the guards allow it.

    Refusals are answers, not errors: signing in with a bad scene still signs in.
    """
    scene = sess.get(Scene, scene_code)
    refusal = scene_state(scene)
    current_inviter, _ = inviter_and_upline(sess, member.id)
    if refusal is None and scene is not None and scene.partner_id is not None:
        refusal = "partner_channel"
    if refusal is not None:
        return _refuse(sess, member, scene, scene_code, refusal, current_inviter)
    assert scene is not None and scene.sharer_id is not None

    # Binds change the shape of the chain; one at a time, or two concurrent binds could close a cycle.
    lock_named(sess, "referral-chain")
    sess.refresh(member)
    sess.refresh(scene)
    if (refusal := scene_state(scene)) is not None:
        # Revoked (or an invite code used up) while this bind waited for the lock.
        return _refuse(sess, member, scene, scene_code, refusal, current_inviter)
    binding = sess.get(Binding, member.id, populate_existing=True)
    sharer = sess.get(Member, scene.sharer_id)
    assert sharer is not None
    inviter_id = scene.sharer_id

    if inviter_id == member.id:
        refusal = "self"
    elif binding is not None and binding.inviter_id == inviter_id:
        return BindResult(True, False, None, inviter_id, scene)
    elif (refusal := sharer_refusal(sess, sharer.id)) is not None:
        pass
    elif binding is not None and (refusal := _policy_refusal(sess, binding)) is not None:
        pass
    elif is_ancestor(sess, member.id, inviter_id):
        refusal = "cycle"
    if refusal is not None:
        return _refuse(sess, member, scene, scene_code, refusal, binding.inviter_id if binding else None)

    upline_id, _ = inviter_and_upline(sess, inviter_id)
    previous = binding.inviter_id if binding else None
    # The member leaves one team and joins another, with their own invitees at level 2.
    forget_team_sizes([previous, binding.upline_id if binding else None, inviter_id, upline_id])
    if binding is None:
        binding = Binding(member_id=member.id, inviter_id=inviter_id, upline_id=upline_id)
        sess.add(binding)
    else:
        binding.inviter_id, binding.upline_id = inviter_id, upline_id
        binding.bound_at = utcnow()
        binding.rebind_count += 1
    binding.scene_code, binding.channel = scene.code, scene.channel.value
    sess.flush()
    # The member's own invitees now have a new level 2.
    sess.execute(update(Binding).where(Binding.inviter_id == member.id).values(upline_id=inviter_id))
    touch(sess, member.id, TouchKind.bind, scene, scene_code, inviter_id=inviter_id, previous_inviter_id=previous)
    events.member_bound.send(sess, member=member, inviter_id=inviter_id, channel=scene.channel, scene_code=scene.code)
    return BindResult(True, True, None, inviter_id, scene)


def _policy_refusal(sess: Session, binding: Binding) -> str | None:
    policy = get_setting(sess, "binding_policy")
    if policy == "first_touch":
        return "already_bound"
    if policy == "protection_period":
        days = get_setting(sess, "binding_protection_days")
        if utcnow() < binding.bound_at + timedelta(days=days):
            return "protected"
    return None


def _refuse(sess: Session, member: Member, scene: Scene | None, scene_code: str, reason: str, inviter_id: int | None) -> BindResult:
    if reason != "partner_channel":
        touch(sess, member.id, TouchKind.bind_refused, scene, scene_code, reason=reason)
    return BindResult(False, False, reason, inviter_id, scene)


def record_scan(sess: Session, member: Member, scene_code: str) -> None:
    """A signed-in member arrived with a scene (mini-program code, link, poster)."""
    touch(sess, member.id, TouchKind.scan, sess.get(Scene, scene_code), scene_code)


def bind_on_arrival(sess: Session, member: Member, scene_code: str, *, first_sign_in: bool) -> BindResult:
    """Bind after a scan, and open an arrival lead when the person is new to the shop.

    Called inside the sign-in unit of work; never raises for a bad scene.
    """
    result = bind_member(sess, member, scene_code)
    scene = result.scene
    if first_sign_in and scene is not None and scene_state(scene) is None:
        sharer_id = result.inviter_id if result.bound else None
        if sharer_id is not None or scene.partner_id is not None:
            _open_lead(
                sess,
                source=LeadSource.arrival,
                member_id=member.id,
                sharer_id=sharer_id,
                partner_id=scene.partner_id,
                scene=scene,
            )
    return result


def _open_lead(
    sess: Session,
    *,
    source: LeadSource,
    member_id: int | None,
    sharer_id: int | None,
    partner_id: int | None,
    scene: Scene | None,
    contact_name: str = "",
    phone: str | None = None,
    note: str = "",
    actor: str | None = None,
) -> Lead:
    lead = Lead(
        source=source,
        member_id=member_id,
        sharer_id=sharer_id,
        partner_id=partner_id,
        scene_code=scene.code if scene else None,
        channel=scene.channel.value if scene else "",
        content=content_label(scene) if scene else "",
        contact_name=contact_name,
        note=note,
        arrival_member_id=member_id if source == LeadSource.arrival else None,
    )
    if phone:
        lead.contact_phone_ciphertext = security.encrypt(phone, "phone")
        lead.contact_phone_masked = security.mask_phone(phone)
    sess.add(lead)
    sess.flush()
    extra = {"actor": actor} if actor else {}
    touch(sess, member_id, TouchKind.lead, scene, scene.code if scene else None, lead_id=lead.id, source=source.value, **extra)
    events.lead_opened.send(sess, lead=lead)
    return lead


def leave_contact(
    sess: Session,
    *,
    member: Member | None,
    scene_code: str | None,
    contact_name: str,
    phone: str,
    note: str,
    visitor: str = "",
) -> Lead:
    """Someone left contact details (H5 form or mini-program): a lead for the scene's sharer or partner."""
    scene = sess.get(Scene, scene_code) if scene_code else None
    if scene is not None and scene_state(scene) is not None:
        scene = None  # a dead scene still gives a lead, just not attributed
    sharer_id = scene.sharer_id if scene else None
    if member is not None and sharer_id is None and scene is None:
        sharer_id, _ = inviter_and_upline(sess, member.id)
    if member is not None and sharer_id == member.id:
        sharer_id = None  # nobody earns from their own contact details
    lead = _open_lead(
        sess,
        source=LeadSource.contact,
        member_id=member.id if member else None,
        sharer_id=sharer_id,
        partner_id=scene.partner_id if scene else None,
        scene=scene,
        contact_name=contact_name,
        phone=phone,
        note=note,
        actor=f"member:{member.id}" if member else visitor or "system",
    )
    return lead


def record_visit(sess: Session, scene_code: str, *, visitor: str, member_id: int | None = None) -> Scene | None:
    """An H5 or Moments visit to ``/s/<scene>``: a timeline event even when the scene is dead.

    Recorded once per visitor, scene and day (China time): reloads and repeated requests add
    nothing. A shared counter settles bursts at once; the timeline itself is checked too, so
    the rule holds when the counter was lost (a restart without Redis).
    """
    scene = sess.get(Scene, scene_code)
    now = utcnow()
    start = day_start(now)
    key = f"visit:{now.astimezone(CHINA).date().isoformat()}:{scene_code}:{visitor}"
    if cache.hit(key, 86400) == 1 and not _visited_since(sess, scene_code, visitor, start):
        touch(sess, member_id, TouchKind.visit, scene, scene_code, actor=visitor, state=scene_state(scene))
    return scene if scene_state(scene) is None else None


def _visited_since(sess: Session, scene_code: str, visitor: str, since: datetime) -> bool:
    return (
        sess.scalar(
            select(TouchEvent.id)
            .where(
                TouchEvent.scene == scene_code,
                TouchEvent.kind == TouchKind.visit,
                TouchEvent.actor == visitor,
                TouchEvent.created_at >= since,
            )
            .limit(1)
        )
        is not None
    )


#: Called inside the review's unit of work when a lead is marked valid (the points package credits the sharer).
def is_sales_lead(lead: Lead) -> bool:
    """A lead someone could sell to: a contact phone to call and a stated need (the note they left)."""
    return bool(lead.contact_phone_ciphertext) and bool(lead.note.strip())


def valid_lead_problems(lead: Lead) -> list[dict[str, str]]:
    """Why this lead may not be marked valid, as ``data.errors``; empty when it may.

    A lead whose sharer would earn valid-lead points must be a sales lead: a sign-in through a
    poster (an arrival) or a contact without a need is a head, and paying for heads is what
    guard 2 forbids. Partner leads earn their channel a contract commission, never points, and
    stay free to review.
    """
    if lead.sharer_id is None or lead.partner_id is not None or is_sales_lead(lead):
        return []
    problems = []
    if not lead.contact_phone_ciphertext:
        problems.append({"field": "status", "error": "the lead has no contact phone (an arrival is a sign-in, not a sales lead)"})
    if not lead.note.strip():
        problems.append({"field": "status", "error": "the lead states no need"})
    return problems


def review_lead(sess: Session, lead_id: int, status: LeadStatus, *, staff: Staff, note: str = "") -> Lead:
    """Operations marks a lead valid or invalid, once; a valid partner lead adds a commission line.

    Marking valid a lead whose sharer would earn points needs a sales lead (``valid_lead_problems``).
    Audited as ``staff``'s ``lead.valid`` or ``lead.invalid``.
    """
    if status == LeadStatus.new:
        raise ValidationError("a lead can only be marked valid or invalid")
    lead = sess.get(Lead, lead_id, with_for_update=True)
    if lead is None:
        raise NotFoundError("no such lead")
    if lead.status != LeadStatus.new:
        raise LeadAlreadyReviewedError(data={"status": lead.status.value})
    if status == LeadStatus.valid and (problems := valid_lead_problems(lead)):
        raise LeadNotQualifiedError(data={"errors": problems})
    lead.status, lead.reviewed_by, lead.reviewed_at, lead.review_note = status, staff.id, utcnow(), note
    sess.add(
        TouchEvent(
            member_id=lead.member_id,
            kind=TouchKind.lead_reviewed,
            scene=lead.scene_code,
            channel=lead.channel,
            actor=f"staff:{staff.id}",
            content=lead.content,
            detail={"lead_id": lead.id, "status": status.value, "note": note},
        )
    )
    if status == LeadStatus.valid and lead.partner_id is not None:
        partner = sess.get(Partner, lead.partner_id)
        if partner is not None and partner.commission_mode == CommissionMode.per_lead:
            _add_commission(sess, partner, kind="lead", key=f"lead:{lead.id}", amount_fen=partner.per_lead_fen, lead_id=lead.id)
    if status == LeadStatus.valid:
        events.lead_marked_valid.send(sess, lead=lead)
    sess.flush()
    record_audit(sess, staff.id, f"lead.{status.value}", f"lead:{lead.id}", {"note": note})
    return lead


# -- partners -------------------------------------------------------------------


def create_partner(sess: Session, values: dict[str, Any], *, staff_id: int) -> Partner:
    """A new partner channel; names are unique. Audited, with ``values`` as given, as ``staff_id``'s action."""
    if sess.scalar(select(Partner.id).where(Partner.name == values["name"])) is not None:
        raise PartnerExistsError()
    partner = Partner(**values | {"commission_mode": CommissionMode(values["commission_mode"])})
    sess.add(partner)
    sess.flush()
    record_audit(sess, staff_id, "partner.create", f"partner:{partner.id}", values)
    return partner


def update_partner(sess: Session, partner_id: int, changes: dict[str, Any], *, staff_id: int) -> Partner:
    """Change a partner channel's terms or contact; audited as ``staff_id``'s action."""
    partner = sess.get(Partner, partner_id)
    if partner is None:
        raise PartnerNotFoundError()
    for key, value in changes.items():
        setattr(partner, key, value)
    record_audit(sess, staff_id, "partner.update", f"partner:{partner.id}", changes)
    return partner


def _add_commission(sess: Session, partner: Partner, *, kind: str, key: str, amount_fen: int, base_fen: int = 0, lead_id: int | None = None) -> PartnerCommission:
    existing = sess.scalar(select(PartnerCommission).where(PartnerCommission.idempotency_key == key))
    if existing is not None:
        return existing
    line = PartnerCommission(partner_id=partner.id, lead_id=lead_id, kind=kind, base_fen=base_fen, amount_fen=amount_fen, idempotency_key=key)
    sess.add(line)
    sess.flush()
    return line


def record_partner_deal(sess: Session, partner_id: int, deal_reference: str, amount_fen: int) -> PartnerCommission | None:
    """A deal a partner channel brought closed: its per-deal commission, floored to the fen, once per deal."""
    partner = sess.get(Partner, partner_id)
    if partner is None:
        raise PartnerNotFoundError()
    if partner.commission_mode != CommissionMode.per_deal:
        return None
    commission = amount_fen * partner.deal_rate_bp // 10_000
    return _add_commission(sess, partner, kind="deal", key=f"deal:{deal_reference}", amount_fen=commission, base_fen=amount_fen)


def partner_statement(sess: Session, partner_id: int, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """A partner's commission lines in [start, end) with totals (and what of it is paid), for paying them by contract."""
    partner = sess.get(Partner, partner_id)
    if partner is None:
        raise PartnerNotFoundError()
    stmt = select(PartnerCommission).where(PartnerCommission.partner_id == partner_id)
    if start is not None:
        stmt = stmt.where(PartnerCommission.created_at >= start)
    if end is not None:
        stmt = stmt.where(PartnerCommission.created_at < end)
    lines = sess.scalars(stmt.order_by(PartnerCommission.id)).all()
    return {
        "partner": partner,
        "lines": lines,
        "leads": sum(1 for line in lines if line.kind == "lead"),
        "deals": sum(1 for line in lines if line.kind == "deal"),
        "total_fen": sum(line.amount_fen for line in lines),
        #: Of the total, what payouts already paid (``payouts.mark_period_paid``).
        "paid_fen": sum(line.amount_fen for line in lines if line.payout_id is not None),
    }


# -- the team and the timeline ----------------------------------------------------


#: A team cursor counts microseconds of UTC from here.
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class TeamCursor:
    """Where a page of a team ends: the last invitee's binding time and member id (newest first)."""

    bound_at: datetime
    member_id: int

    def encode(self) -> str:
        return f"{(self.bound_at - _EPOCH) // timedelta(microseconds=1)}.{self.member_id}"

    @classmethod
    def decode(cls, text: str) -> TeamCursor | None:
        """The cursor ``encode`` wrote, or None for anything else."""
        micros, dot, member_id = text.partition(".")
        if not (dot and micros.isascii() and micros.isdigit() and member_id.isascii() and member_id.isdigit()):
            return None
        if len(micros) > 17 or len(member_id) > 19 or int(member_id) >= 2**63:
            return None
        try:
            return cls(_EPOCH + timedelta(microseconds=int(micros)), int(member_id))
        except OverflowError:
            return None


@dataclass(frozen=True)
class TeamMember:
    """An invitee as the team lists show them."""

    id: int
    nickname: str
    avatar_url: str
    bound_at: datetime


@dataclass(frozen=True)
class _TeamStatements:
    """The team statements of one level, built once (``_team_statements``)."""

    #: The team's size.
    counted: Any
    #: A page from a cursor and from an offset, each row with the team's size as its last column.
    after_counted: Any
    at_counted: Any
    #: The same pages without the size, for when the cache has it.
    after: Any
    at: Any


def _team_statements(column: Any) -> _TeamStatements:
    """The team statements of one level: the size, and a page from a cursor or an offset, with or without the size.

    A page comes from the team index alone (a covering range scan: MariaDB reads 20 entries from the
    cursor, or skips the offset's entries, without reading their members), then its members by primary
    key, with the team's size (counted once, from the same index) in the same statement when it is needed.
    """
    counted = select(func.count()).select_from(Binding).where(column == bindparam("member_id"))
    ids = select(Binding.member_id, Binding.bound_at).where(column == bindparam("member_id"))
    newest_first = (Binding.bound_at.desc(), Binding.member_id.desc())
    # The first condition is the index range; the second drops the cursor's own time's earlier ids.
    after = ids.where(
        Binding.bound_at <= bindparam("bound_at"), or_(Binding.bound_at < bindparam("bound_at"), Binding.member_id < bindparam("after_id"))
    ).order_by(*newest_first).limit(bindparam("limit", type_=Integer))
    at = ids.order_by(*newest_first).limit(bindparam("limit", type_=Integer)).offset(bindparam("offset", type_=Integer))

    def page(of: Any, *size: Any) -> Any:
        found = of.subquery()
        return select(Member.id, Member.nickname, Member.avatar_url, found.c.bound_at, *size).join(found, found.c.member_id == Member.id)

    size = counted.scalar_subquery()
    return _TeamStatements(counted, page(after, size), page(at, size), page(after), page(at))


_TEAM = {1: _team_statements(Binding.inviter_id), 2: _team_statements(Binding.upline_id)}
#: Seconds a team's size stays in the cache. Binds and inviter changes forget the sizes they change when
#: they commit (``forget_team_sizes``); this bounds what is left behind by a forget that could not reach
#: Redis, or by a count read just before a bind committed and stored just after its forget.
TEAM_SIZE_TTL = 60


def _team_size_key(member_id: int, level: int) -> str:
    return f"team-size:{level}:{member_id}"


def forget_team_sizes(member_ids: Iterable[int | None]) -> None:
    """Once the commit succeeds, these members' team sizes (both levels) are counted again on their next page."""
    keys = [_team_size_key(m, level) for m in sorted({m for m in member_ids if m is not None}) for level in (1, 2)]
    if keys:
        after_commit(lambda: cache.forget_values(*keys))


def team_page(
    sess: Session, member_id: int, level: int, offset: int, limit: int, *, after: TeamCursor | None = None
) -> tuple[list[TeamMember], int]:
    """The member's direct (level 1) or indirect (level 2) invitees, newest binding first, and how many
    there are. Nothing deeper exists.

    ``after`` continues from a page's last invitee (keyset: the team index is read from there, however
    deep the page); without it, ``offset`` counts from the newest. The size is counted with the page and
    then kept in the cache for ``TEAM_SIZE_TTL`` seconds (a large team's count is most of a page's time)."""
    level = 1 if level == 1 else 2
    statements, key = _TEAM[level], _team_size_key(member_id, level)
    size = cache.get_value(key)
    if after is not None:
        stmt = statements.after if size is not None else statements.after_counted
        rows = sess.execute(stmt, {"member_id": member_id, "bound_at": after.bound_at, "after_id": after.member_id, "limit": limit}).all()
    else:
        stmt = statements.at if size is not None else statements.at_counted
        rows = sess.execute(stmt, {"member_id": member_id, "limit": limit, "offset": offset}).all()
    if size is None:
        # Past the end, or no team: no row carried the count.
        size = int(rows[0][4]) if rows else int(sess.scalar(statements.counted, {"member_id": member_id}) or 0)
        cache.set_value(key, size, TEAM_SIZE_TTL)
    # The join's order is the database's to choose: put the page back in the team's order.
    team = sorted((TeamMember(*row[:4]) for row in rows), key=lambda m: (m.bound_at, m.id), reverse=True)
    return team, int(size)


@dataclass(frozen=True)
class SalesStats:
    """Orders a member placed that count for their inviter: how many were paid, and their amount net of refunds."""

    orders: int
    amount_fen: int


def attributed_sales(sess: Session, member_ids: list[int]) -> dict[int, SalesStats]:
    """For each member: their paid orders and amount, as the team list shows them."""
    found = order_queries.attributed_sales(sess, member_ids) if member_ids else {}
    return {mid: SalesStats(*found.get(mid, (0, 0))) for mid in member_ids}


def timeline(sess: Session, member_id: int) -> list[TouchEvent]:
    """Every touch of one person, oldest first."""
    return list(
        sess.scalars(select(TouchEvent).where(TouchEvent.member_id == member_id).order_by(TouchEvent.created_at, TouchEvent.id))
    )

