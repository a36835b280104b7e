"""Referral API: binding, scenes, team, leads (/api/v1), the H5 landing (/s), and the console (/admin/api/v1)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, current_app, render_template, request
from pydantic import Field, StringConstraints, field_validator, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import func, select

from server import db, security
from server.accounts.auth import current_member, current_staff, member_required, staff_required
from server.accounts.models import Member, StaffRole
from server.api import Body, Instant, NonBlank, Page, client_address, iso, parse_body, parse_query, validate
from server.cache import enforce_rate_limit
from server.errors import NotFoundError, ValidationError, envelope
from server.referral import lead_work, payouts, services, sharing
from server.referral.errors import PartnerNotFoundError
from server.referral.models import (
    Binding,
    Channel,
    Lead,
    LeadFollowUp,
    LeadNote,
    LeadSource,
    LeadStatus,
    Partner,
    PartnerPayout,
    Scene,
    TouchEvent,
)
from server.referral.queries import LeadFilters, lead_pool
from server.settings.services import get_setting
from server.wechat.formats import SCENE_RE

bp = Blueprint("referral", __name__, url_prefix="/api/v1/referral")
landing_bp = Blueprint("landing", __name__, template_folder="templates")
admin_bp = Blueprint("referral_admin", __name__, url_prefix="/admin/api/v1")

SceneCode = Annotated[str, StringConstraints(pattern=SCENE_RE.pattern)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{5,20}$")]
ShortText = Annotated[str, StringConstraints(max_length=64)]


class BindBody(Body):
    scene: SceneCode


class SceneBody(Body):
    channel: Literal["miniprogram_code", "h5_link", "moments_poster"] = "h5_link"
    content_type: Annotated[str, StringConstraints(max_length=16, pattern=r"^[a-z_]*$")] = ""
    content_id: Annotated[str, StringConstraints(max_length=64)] = ""


class LeadBody(Body):
    contact_name: Annotated[NonBlank, StringConstraints(max_length=64)]
    phone: Phone
    note: Annotated[str, StringConstraints(max_length=500)] = ""
    scene: SceneCode | None = None


class TeamQuery(Page):
    level: Literal["direct", "indirect", "all"] = "all"
    #: A page's ``next_direct`` / ``next_indirect``: the page after it, read from the team index (for one level).
    cursor: Annotated[str, StringConstraints(max_length=40)] | None = None

    @field_validator("cursor")
    @classmethod
    def _ours(cls, value: str | None) -> str | None:
        if value is not None and services.TeamCursor.decode(value) is None:
            raise PydanticCustomError("cursor_unknown", "not a cursor this API gave")
        return value

    @model_validator(mode="after")
    def _one_level_per_cursor(self) -> TeamQuery:
        if self.cursor is not None and self.level == "all":
            raise PydanticCustomError("cursor_level", "a cursor continues one level: send level=direct or level=indirect with it")
        return self


class LeadListQuery(Page):
    status: LeadStatus | None = None
    follow_up: LeadFollowUp | None = None
    source: LeadSource | None = None
    #: 0 for the leads nobody is assigned.
    assignee_id: int | None = None
    channel: Annotated[str, StringConstraints(max_length=24)] | None = None
    sharer_id: int | None = None
    partner_id: int | None = None


class AssignBody(Body):
    #: The owner or operations account to follow the lead up; null for nobody.
    assignee_id: int | None = Field(ge=1)


class FollowUpBody(Body):
    #: The state the lead moves to; left out (or the current one) for a note that changes nothing.
    state: Literal["new", "contacted", "converted", "lost"] | None = None
    note: Annotated[NonBlank, StringConstraints(max_length=lead_work.NOTE_LIMIT)]


class LinkMemberBody(Body):
    member_id: int = Field(ge=1)


class ReviewBody(Body):
    status: Literal["valid", "invalid"]
    note: Annotated[str, StringConstraints(max_length=255)] = ""


class PartnerBody(Body):
    name: Annotated[NonBlank, StringConstraints(max_length=64)]
    platform: Annotated[str, StringConstraints(max_length=32)] = ""
    contact: Annotated[str, StringConstraints(max_length=128)] = ""
    commission_mode: Literal["per_lead", "per_deal"]
    per_lead_fen: int = Field(0, ge=0, le=10_000_000)
    deal_rate_bp: int = Field(0, ge=0, le=10_000)


class PartnerPatchBody(Body):
    platform: Annotated[str, StringConstraints(max_length=32)] | None = None
    contact: Annotated[str, StringConstraints(max_length=128)] | None = None
    per_lead_fen: int | None = Field(None, ge=0, le=10_000_000)
    deal_rate_bp: int | None = Field(None, ge=0, le=10_000)
    active: bool | None = None


class PartnerSceneBody(Body):
    content_type: Annotated[str, StringConstraints(max_length=16, pattern=r"^[a-z_]*$")] = ""
    content_id: Annotated[str, StringConstraints(max_length=64)] = ""


class PayoutBody(Body):
    start: Instant = Field(alias="from", strict=False)
    end: Instant = Field(alias="to", strict=False)
    #: The transfer or voucher number the partner was paid with.
    reference: Annotated[str, StringConstraints(max_length=64)] = ""


class StatementQuery(Body):
    start: Instant | None = Field(None, alias="from")
    end: Instant | None = Field(None, alias="to")

    model_config = Body.model_config | {"strict": False, "extra": "ignore"}


# -- serializers ------------------------------------------------------------------



def serialize_scene(scene: Scene) -> dict[str, Any]:
    base = current_app.config["PUBLIC_BASE_URL"]
    return {
        "scene": scene.code,
        "channel": scene.channel.value,
        "content_type": scene.content_type,
        "content_id": scene.content_id,
        "h5_url": f"{base}/s/{scene.code}",
        "created_at": scene.created_at.isoformat(),
        "expires_at": iso(scene.expires_at),
        "revoked": scene.revoked_at is not None,
    }


def serialize_event(event: TouchEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event": event.kind.value,
        "time": event.created_at.isoformat(),
        "actor": event.actor,
        "channel": event.channel,
        "scene": event.scene,
        "content": event.content,
        "detail": event.detail,
    }


def serialize_lead(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "source": lead.source.value,
        "status": lead.status.value,
        "member_id": lead.member_id,
        "sharer_id": lead.sharer_id,
        "partner_id": lead.partner_id,
        "scene": lead.scene_code,
        "channel": lead.channel,
        "content": lead.content,
        "contact_name": lead.contact_name,
        "contact_phone": lead.contact_phone_masked,
        "note": lead.note,
        "review_note": lead.review_note,
        "reviewed_by": lead.reviewed_by,
        "reviewed_at": iso(lead.reviewed_at),
        "assignee_id": lead.assignee_id,
        "follow_up": lead.follow_up.value,
        "follow_up_at": iso(lead.follow_up_at),
        "created_at": lead.created_at.isoformat(),
    }


def serialize_note(note: LeadNote) -> dict[str, Any]:
    return {
        "id": note.id,
        "lead_id": note.lead_id,
        "staff_id": note.staff_id,
        "follow_up": note.follow_up.value if note.follow_up else None,
        "note": note.body,
        "created_at": note.created_at.isoformat(),
    }


def serialize_payout(payout: PartnerPayout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "partner_id": payout.partner_id,
        "from": payout.period_start.isoformat(),
        "to": payout.period_end.isoformat(),
        "lines": payout.lines,
        "total_fen": payout.total_fen,
        "reference": payout.reference,
        "paid_by": payout.paid_by,
        "paid_at": payout.paid_at.isoformat(),
    }


def serialize_partner(partner: Partner) -> dict[str, Any]:
    return {
        "id": partner.id,
        "name": partner.name,
        "platform": partner.platform,
        "contact": partner.contact,
        "commission_mode": partner.commission_mode.value,
        "per_lead_fen": partner.per_lead_fen,
        "deal_rate_bp": partner.deal_rate_bp,
        "active": partner.active,
        "created_at": partner.created_at.isoformat(),
    }


def _team_item(member: services.TeamMember, stats: services.SalesStats) -> dict[str, Any]:
    return {
        "id": member.id,
        "nickname": security.mask(member.nickname),
        "avatar_url": member.avatar_url,
        "joined_at": member.bound_at.isoformat(),
        "orders": stats.orders,
        "amount_fen": stats.amount_fen,
    }


# -- member API ---------------------------------------------------------------------


@bp.post("/bind")
@member_required
def bind() -> Any:
    """Bind the signed-in member to a scene's sharer; a refusal is an answer with its reason."""
    body = parse_body(BindBody)
    sess = db.session()
    member = current_member()
    services.record_scan(sess, member, body.scene)
    result = services.bind_member(sess, member, body.scene)
    return envelope(result.as_dict(sess))


@bp.get("/scenes")
@member_required
def my_scenes() -> Any:
    sess = db.session()
    rows = sess.scalars(
        select(Scene).where(Scene.sharer_id == current_member().id).order_by(Scene.created_at.desc()).limit(100)
    ).all()
    return envelope({"items": [serialize_scene(s) for s in rows]})


@bp.post("/scenes")
@member_required
def create_scene() -> Any:
    """The member's share link for a channel and content (the same one again while it is live)."""
    body = parse_body(SceneBody)
    scene = services.scene_for_share(
        db.session(), current_member().id, Channel(body.channel), body.content_type, body.content_id
    )
    return envelope(serialize_scene(scene))


@bp.delete("/scenes/<code>")
@member_required
def revoke_scene(code: str) -> Any:
    scene = services.revoke_scene(db.session(), code, sharer_id=current_member().id)
    return envelope(serialize_scene(scene))


@bp.get("/team")
@member_required
def team() -> Any:
    """Direct (level 1) and indirect (level 2) invitees; nothing below level 2 exists."""
    query = parse_query(TeamQuery)
    sess = db.session()
    me = current_member().id
    after = services.TeamCursor.decode(query.cursor) if query.cursor else None
    data: dict[str, Any] = {"page": query.page, "page_size": query.page_size}
    for level, name in ((1, "direct"), (2, "indirect")):
        if query.level in (name, "all"):
            rows, total = services.team_page(sess, me, level, query.offset, query.page_size, after=after)
            stats = services.attributed_sales(sess, [m.id for m in rows])
            data[name] = [_team_item(m, stats[m.id]) for m in rows]
            data[f"total_{name}"] = total
            last = rows[-1] if len(rows) == query.page_size else None
            data[f"next_{name}"] = services.TeamCursor(last.bound_at, last.id).encode() if last else None
        else:
            data[name] = []
            data[f"total_{name}"] = None
            data[f"next_{name}"] = None
    return envelope(data)


@bp.post("/leads")
@member_required
def leave_lead() -> Any:
    """The member leaves contact details (e.g. asks for a quote): a lead for whoever shared with them."""
    body = parse_body(LeadBody)
    enforce_rate_limit(f"lead:member:{current_member().id}", 10, 3600)
    lead = services.leave_contact(
        db.session(), member=current_member(), scene_code=body.scene, contact_name=body.contact_name, phone=body.phone, note=body.note
    )
    return envelope({"id": lead.id, "status": lead.status.value}, status=201)


# -- the H5 landing ----------------------------------------------------------------------


def _visitor() -> str:
    fingerprint = f"{client_address()}|{request.headers.get('User-Agent', '')}"
    return f"visitor:{security.digest(fingerprint, 'visitor')[:16]}"


@landing_bp.get("/s/<code>")
def landing(code: str) -> Any:
    """Where links and Moments posters lead: records the visit and shows the share with a contact form."""
    enforce_rate_limit(f"landing:addr:{client_address()}", current_app.config["LANDING_RATE_LIMIT"], 60)
    sess = db.session()
    scene = services.record_visit(sess, code, visitor=_visitor()) if SCENE_RE.fullmatch(code) else None
    sharer = sess.get(Member, scene.sharer_id) if scene and scene.sharer_id else None
    # The sharer's own page: they want to be recognised (team lists are what mask names).
    sharer_name = sharer.nickname if sharer else None
    shop_name = get_setting(sess, "shop_name")
    # Commits here, by design: a visit to a dead scene is recorded, though the page answers 404;
    # and no transaction is open while WeChat makes the scene's mini-program links.
    db.commit()
    links = sharing.scene_links(scene.code) if scene else None
    page = render_template(
        "landing.html",
        scene=scene,
        sharer=sharer_name,
        shop_name=shop_name,
        sent=False,
        open_link=_open_link(links),
    )
    # The button's link depends on whether the page is opened inside WeChat.
    return page, 200 if scene else 404, {"Vary": "User-Agent"}


def _in_wechat() -> bool:
    return "MicroMessenger" in request.headers.get("User-Agent", "")


def _open_link(links: sharing.SceneLinks | None) -> str | None:
    """Where "打开小程序" leads: inside WeChat the URL Link opens the mini-program at once; a phone's
    browser hands the URL Scheme to WeChat."""
    if links is None:
        return None
    return links.url_link if _in_wechat() else links.scheme


@landing_bp.post("/s/<code>/lead")
def landing_lead(code: str) -> Any:
    """The landing page's contact form: an anonymous lead, attributed to the scene."""
    sess = db.session()
    enforce_rate_limit(f"lead:addr:{client_address()}", 10, 3600)
    form = {k: request.form.get(k, "") for k in ("contact_name", "phone", "note")}
    body = validate(LeadBody, {**form, "scene": code} if SCENE_RE.fullmatch(code) else form)
    services.leave_contact(
        sess, member=None, scene_code=body.scene, contact_name=body.contact_name, phone=body.phone, note=body.note, visitor=_visitor()
    )
    scene = sess.get(Scene, code) if body.scene else None
    return render_template("landing.html", scene=scene, sharer=None, shop_name=get_setting(sess, "shop_name"), sent=True)


# -- console ------------------------------------------------------------------------------


@admin_bp.get("/leads")
@staff_required(StaffRole.operations)
def list_leads() -> Any:
    """The lead pool, newest first, filtered by status, follow-up, source, assignee, channel, sharer or partner."""
    query = parse_query(LeadListQuery)
    stmt = lead_pool(
        LeadFilters(
            status=query.status,
            follow_up=query.follow_up,
            source=query.source,
            assignee_id=query.assignee_id,
            channel=query.channel,
            sharer_id=query.sharer_id,
            partner_id=query.partner_id,
        )
    )
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=(Lead.id.desc(),))
    return envelope({"items": [serialize_lead(lead) for lead in rows], "total": total, "page": query.page})


@admin_bp.get("/leads/<int:lead_id>")
@staff_required(StaffRole.operations)
def get_lead(lead_id: int) -> Any:
    sess = db.session()
    lead = lead_work.get_lead(sess, lead_id)
    events = services.timeline(sess, lead.member_id) if lead.member_id else []
    notes = lead_work.lead_notes(sess, lead.id)
    return envelope({**serialize_lead(lead), "timeline": [serialize_event(e) for e in events], "notes": [serialize_note(n) for n in notes]})


@admin_bp.post("/leads/<int:lead_id>/review")
@staff_required(StaffRole.operations)
def review_lead(lead_id: int) -> Any:
    body = parse_body(ReviewBody)
    sess = db.session()
    lead = services.review_lead(sess, lead_id, LeadStatus(body.status), staff=current_staff(), note=body.note)
    return envelope(serialize_lead(lead))


@admin_bp.post("/leads/<int:lead_id>/assign")
@staff_required(StaffRole.operations)
def assign_lead(lead_id: int) -> Any:
    """Give the lead to a staff member to follow up, or to nobody."""
    body = parse_body(AssignBody)
    lead = lead_work.assign_lead(db.session(), lead_id, body.assignee_id, staff_id=current_staff().id)
    return envelope(serialize_lead(lead))


@admin_bp.post("/leads/<int:lead_id>/follow-up")
@staff_required(StaffRole.operations)
def follow_up_lead(lead_id: int) -> Any:
    """A follow-up note, optionally moving the lead's follow-up state."""
    body = parse_body(FollowUpBody)
    note = lead_work.follow_up_lead(
        db.session(), lead_id, body.note, staff_id=current_staff().id, state=LeadFollowUp(body.state) if body.state else None
    )
    return envelope(serialize_note(note), status=201)


@admin_bp.post("/leads/<int:lead_id>/reveal-phone")
@staff_required(StaffRole.operations)
def reveal_lead_phone(lead_id: int) -> Any:
    """The lead's full phone number; each reveal is audited."""
    phone = lead_work.reveal_lead_phone(db.session(), lead_id, staff_id=current_staff().id)
    return envelope({"id": lead_id, "phone": phone})


@admin_bp.post("/leads/<int:lead_id>/member")
@staff_required(StaffRole.operations)
def link_lead_member(lead_id: int) -> Any:
    """Link an anonymous lead to the member who left it and signed in later."""
    body = parse_body(LinkMemberBody)
    lead = lead_work.link_lead_member(db.session(), lead_id, body.member_id, staff_id=current_staff().id)
    return envelope(serialize_lead(lead))


@admin_bp.get("/members/<int:member_id>/timeline")
@staff_required(StaffRole.operations)
def member_timeline(member_id: int) -> Any:
    sess = db.session()
    if sess.get(Member, member_id) is None:
        raise NotFoundError("no such member")
    return envelope({"items": [serialize_event(e) for e in services.timeline(sess, member_id)]})


@admin_bp.get("/members/<int:member_id>/referral")
@staff_required(StaffRole.operations)
def member_referral(member_id: int) -> Any:
    """A member's place in the chain: inviter, upline, and how many they brought (display only)."""
    sess = db.session()
    if sess.get(Member, member_id) is None:
        raise NotFoundError("no such member")
    inviter_id, upline_id = services.inviter_and_upline(sess, member_id)
    binding = sess.get(Binding, member_id)
    counts = {
        name: sess.scalar(select(func.count()).select_from(Binding).where(column == member_id))
        for name, column in (("direct", Binding.inviter_id), ("indirect", Binding.upline_id))
    }
    return envelope(
        {
            "member_id": member_id,
            "inviter_id": inviter_id,
            "upline_id": upline_id,
            "bound_at": iso(binding.bound_at) if binding else None,
            "scene": binding.scene_code if binding else None,
            "channel": binding.channel if binding else None,
            "rebind_count": binding.rebind_count if binding else 0,
            "team_direct": counts["direct"],
            "team_indirect": counts["indirect"],
        }
    )


@admin_bp.post("/scenes/<code>/revoke")
@staff_required(StaffRole.operations)
def admin_revoke_scene(code: str) -> Any:
    sess = db.session()
    scene = services.revoke_scene(sess, code, staff_id=current_staff().id)
    return envelope(serialize_scene(scene))


@admin_bp.get("/partners")
@staff_required(StaffRole.operations, StaffRole.finance)
def list_partners() -> Any:
    rows = db.session().scalars(select(Partner).order_by(Partner.id)).all()
    return envelope({"items": [serialize_partner(p) for p in rows]})


@admin_bp.post("/partners")
@staff_required(StaffRole.operations)
def create_partner() -> Any:
    body = parse_body(PartnerBody)
    partner = services.create_partner(db.session(), body.model_dump(), staff_id=current_staff().id)
    return envelope(serialize_partner(partner), status=201)


def _partner(partner_id: int) -> Partner:
    partner = db.session().get(Partner, partner_id)
    if partner is None:
        raise PartnerNotFoundError()
    return partner


@admin_bp.patch("/partners/<int:partner_id>")
@staff_required(StaffRole.operations)
def patch_partner(partner_id: int) -> Any:
    body = parse_body(PartnerPatchBody)
    partner = services.update_partner(db.session(), partner_id, body.model_dump(exclude_none=True), staff_id=current_staff().id)
    return envelope(serialize_partner(partner))


@admin_bp.post("/partners/<int:partner_id>/scenes")
@staff_required(StaffRole.operations)
def create_partner_scene(partner_id: int) -> Any:
    """A tracked link for a partner channel to publish; what it brings earns the partner, never members."""
    body = parse_body(PartnerSceneBody)
    partner = _partner(partner_id)
    if not partner.active:
        raise ValidationError("this partner is inactive")
    scene = services.create_scene(
        db.session(), channel=Channel.partner, partner_id=partner.id, content_type=body.content_type, content_id=body.content_id
    )
    return envelope(serialize_scene(scene), status=201)


@admin_bp.get("/partners/<int:partner_id>/statement")
@staff_required(StaffRole.operations, StaffRole.finance)
def partner_statement(partner_id: int) -> Any:
    """The partner's commission lines and total for a period (from inclusive, to exclusive)."""
    query = validate(StatementQuery, request.args.to_dict())
    start, end = query.start, query.end
    statement = services.partner_statement(db.session(), partner_id, start, end)
    return envelope(
        {
            "partner": serialize_partner(statement["partner"]),
            "from": iso(start),
            "to": iso(end),
            "leads": statement["leads"],
            "deals": statement["deals"],
            "total_fen": statement["total_fen"],
            "paid_fen": statement["paid_fen"],
            "lines": [
                {
                    "id": line.id,
                    "kind": line.kind,
                    "lead_id": line.lead_id,
                    "base_fen": line.base_fen,
                    "amount_fen": line.amount_fen,
                    "reference": line.idempotency_key,
                    "payout_id": line.payout_id,
                    "created_at": line.created_at.isoformat(),
                }
                for line in statement["lines"]
            ],
        }
    )


@admin_bp.get("/partners/<int:partner_id>/payouts")
@staff_required(StaffRole.operations, StaffRole.finance)
def list_partner_payouts(partner_id: int) -> Any:
    """The periods the partner was paid for, newest first."""
    query = parse_query(Page)
    partner = _partner(partner_id)
    rows = payouts.payouts_of(db.session(), partner.id, offset=query.offset, limit=query.page_size)
    return envelope({"items": [serialize_payout(p) for p in rows], "page": query.page})


@admin_bp.post("/partners/<int:partner_id>/payouts")
@staff_required(StaffRole.finance)
def mark_partner_period_paid(partner_id: int) -> Any:
    """Finance marks a past period's unpaid commission lines paid; the same period again answers the same payout."""
    body = parse_body(PayoutBody)
    payout, created = payouts.mark_period_paid(db.session(), partner_id, body.start, body.end, staff_id=current_staff().id, reference=body.reference)
    return envelope(serialize_payout(payout), status=201 if created else 200)
