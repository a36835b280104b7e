"""Distributor API: applying, my distributor record, materials (/api/v1), and the console (/admin/api/v1)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import AfterValidator, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import db, security
from server.accounts.auth import (
    current_member,
    current_staff,
    member_required,
    staff_required,
)
from server.accounts.models import Member, StaffRole
from server.api import TEXT_BYTES, Body, NonBlank, Page, Utf8Bytes, client_address, iso, parse_body, parse_query
from server.clock import month_start
from server.distribution import programme, queries, services
from server.distribution.errors import LeaderboardOffError
from server.distribution.models import (
    Distributor,
    DistributorStatus,
    DistributorTier,
    Grade,
    Material,
    MaterialKind,
    ProgrammeRules,
    RulesAcceptance,
)
from server.errors import NotFoundError, envelope
from server.orders import queries as order_queries
from server.settings.services import get_setting

bp = Blueprint("distribution", __name__, url_prefix="/api/v1")
admin_bp = Blueprint("distribution_admin", __name__, url_prefix="/admin/api/v1")


def _http_url(value: str) -> str:
    if value and not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value


RealName = Annotated[NonBlank, StringConstraints(max_length=32)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{5,20}$")]
WechatId = Annotated[str, StringConstraints(max_length=64)]
Intro = Annotated[str, StringConstraints(max_length=500)]
Reason = Annotated[str, StringConstraints(max_length=255)]
Url = Annotated[str, StringConstraints(max_length=512), AfterValidator(_http_url)]
Title = Annotated[NonBlank, StringConstraints(max_length=64)]
Summary = Annotated[str, StringConstraints(max_length=255)]
#: Fits MySQL's 64 KiB TEXT even if every character takes utf8mb4's four bytes.
MaterialText = Annotated[str, StringConstraints(max_length=16_000)]
GradeName = Annotated[NonBlank, StringConstraints(max_length=32)]
Perks = Annotated[str, StringConstraints(max_length=2000)]
SalesFen = Annotated[int, Field(ge=0, le=10**15)]
SortKey = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
#: A row id; the upper bound is the BIGINT check every Body applies (server.api).
RowId = Annotated[int, Field(ge=1)]
#: A strict int, not Literal[1, 2, 3]: Literal would take true for 1.
Audience = Annotated[int, Field(ge=1, le=3)]
Kind = Literal["image_text", "video", "poster"]


class ApplyBody(Body):
    real_name: RealName
    phone: Phone
    wechat_id: WechatId = ""
    intro: Intro = ""
    #: The number of the programme rules version the member read and accepts (required once one is published).
    rules_version: int | None = Field(None, ge=1, le=2**31 - 1)


class AppointBody(Body):
    member_id: RowId
    #: Only tier 1 is appointed; a tier-2 distributor is always someone's recruit.
    tier: int = Field(1, ge=1, le=1)
    real_name: RealName
    phone: Phone
    wechat_id: WechatId = ""
    intro: Intro = ""
    reason: Reason = ""


class DecisionBody(Body):
    action: Literal["approve", "reject", "freeze", "unfreeze", "disable"]
    reason: Reason = ""


RulesTitle = Annotated[NonBlank, StringConstraints(max_length=64)]
#: The rules' text: 20,000 characters, and no more bytes than a TEXT column holds.
RulesText = Annotated[NonBlank, StringConstraints(max_length=20_000), Utf8Bytes(TEXT_BYTES)]


class RulesBody(Body):
    title: RulesTitle
    body: RulesText


class RulesPatchBody(Body):
    title: RulesTitle | None = None
    body: RulesText | None = None


class DistributorListQuery(Page):
    status: DistributorStatus | None = None
    tier: int | None = Field(None, ge=1, le=2)
    q: str | None = None


class TierPatchBody(Body):
    discount_bp: int | None = Field(None, ge=0, le=services.MAX_DISCOUNT_BP)
    can_recruit: bool | None = None
    max_recruits: int | None = Field(None, ge=0, le=1_000_000)


class GradeBody(Body):
    name: GradeName
    min_sales_fen: SalesFen
    perks: Perks = ""
    sort: SortKey = 0


class GradePatchBody(Body):
    name: GradeName | None = None
    min_sales_fen: SalesFen | None = None
    perks: Perks | None = None
    sort: SortKey | None = None


class MaterialBody(Body):
    kind: Kind
    title: Title
    summary: Summary = ""
    body: MaterialText = ""
    url: Url = ""
    cover_url: Url = ""
    poster_template_id: RowId | None = None
    audience: Audience = 3
    active: bool = True
    sort: SortKey = 0


class MaterialPatchBody(Body):
    kind: Kind | None = None
    title: Title | None = None
    summary: Summary | None = None
    body: MaterialText | None = None
    url: Url | None = None
    cover_url: Url | None = None
    #: Null clears it (when a poster becomes another kind); left out, it is unchanged.
    poster_template_id: RowId | None = None
    audience: Audience | None = None
    active: bool | None = None
    sort: SortKey | None = None


class MaterialQuery(Page):
    kind: MaterialKind | None = None


class AdminMaterialQuery(Page):
    kind: MaterialKind | None = None
    audience: int | None = Field(None, ge=1, le=3)
    active: bool | None = None
    q: str | None = None


def patch_fields(body: Body, *, nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields a PATCH body sets: a null means unchanged, except for the ``nullable`` ones."""
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k in nullable}


def material_fields(fields: dict[str, Any]) -> dict[str, Any]:
    if "kind" in fields:
        fields["kind"] = MaterialKind(fields["kind"])
    return fields


# -- serializers ------------------------------------------------------------------



def serialize_tier(row: DistributorTier) -> dict[str, Any]:
    return {
        "tier": row.tier,
        "discount_bp": row.discount_bp,
        "material_audiences": list(services.tier_audiences(row.tier)),
        "can_recruit": row.can_recruit,
        "max_recruits": row.max_recruits,
        "updated_at": iso(row.updated_at),
    }


def serialize_grade(grade: Grade) -> dict[str, Any]:
    return {
        "id": grade.id,
        "name": grade.name,
        "min_sales_fen": grade.min_sales_fen,
        "perks": grade.perks,
        "sort": grade.sort,
    }


def _member_brief(member: Member | None) -> dict[str, Any] | None:
    return {"id": member.id, "nickname": member.nickname, "avatar_url": member.avatar_url} if member else None


def serialize_distributor(distributor: Distributor, member: Member, *, staff_view: bool) -> dict[str, Any]:
    """A distributor as they see themselves, or (``staff_view``) as the console does; the phone is masked in both."""
    sess = db.session()
    recruiter = sess.get(Member, distributor.recruited_by_id) if distributor.recruited_by_id else None
    grade = sess.get(Grade, distributor.grade_id) if distributor.grade_id else None
    data = {
        "id": distributor.id,
        "member": _member_brief(member),
        "tier": distributor.tier,
        "status": distributor.status.value,
        "status_reason": distributor.status_reason,
        "real_name": distributor.real_name,
        "phone": distributor.phone_masked,
        "wechat_id": distributor.wechat_id,
        "intro": distributor.intro,
        "recruited_by": _member_brief(recruiter),
        "grade": serialize_grade(grade) if grade else None,
        "applied_at": distributor.applied_at.isoformat(),
        "decided_at": iso(distributor.decided_at),
    }
    if staff_view:
        data["decided_by"] = distributor.decided_by
    return data


def serialize_material(material: Material, *, staff_view: bool = False) -> dict[str, Any]:
    data = {
        "id": material.id,
        "kind": material.kind.value,
        "title": material.title,
        "summary": material.summary,
        "body": material.body,
        "url": material.url,
        "cover_url": material.cover_url,
        "poster_template_id": material.poster_template_id,
        "audience": material.audience,
        "sort": material.sort,
        "updated_at": material.updated_at.isoformat(),
    }
    if staff_view:
        data["active"] = material.active
        data["created_at"] = material.created_at.isoformat()
    return data


def serialize_acceptance(found: tuple[RulesAcceptance, ProgrammeRules] | None, *, staff_view: bool) -> dict[str, Any] | None:
    """Which version of the programme rules the member accepted, and when (staff also see from where)."""
    if found is None:
        return None
    acceptance, rules = found
    data = {"rules_id": rules.id, "rules_version": rules.number, "title": rules.title, "accepted_at": acceptance.accepted_at.isoformat()}
    if staff_view:
        data["client_address"] = acceptance.client_address
    return data


def _detail(distributor: Distributor, *, staff_view: bool) -> dict[str, Any]:
    sess = db.session()
    member = sess.get(Member, distributor.member_id)
    assert member is not None
    data = serialize_distributor(distributor, member, staff_view=staff_view)
    data["permissions"] = serialize_tier(services.get_tier(sess, distributor.tier))
    data["record"] = queries.distributor_stats(sess, distributor)
    data["rules_acceptance"] = serialize_acceptance(programme.latest_acceptance(sess, distributor.member_id), staff_view=staff_view)
    return data


def serialize_rendered(rendered: programme.Rendered) -> dict[str, Any]:
    return {
        "text": rendered.text,
        "html": str(rendered.html),
        "rates": [{"key": r.key, "label": r.label, "value": r.value} for r in rendered.rates],
    }


def serialize_rules(rules: ProgrammeRules, *, staff_view: bool, current_id: int | None = None, rendered: bool = True) -> dict[str, Any]:
    """A version of the programme rules; with ``rendered``, its text with the live rates filled in."""
    data: dict[str, Any] = {
        "id": rules.id,
        "number": rules.number,
        "title": rules.title,
        "published_at": iso(rules.published_at),
    }
    if staff_view:
        data |= {
            "status": rules.status.value,
            "current": rules.id == current_id,
            "body": rules.body,
            "created_at": rules.created_at.isoformat(),
            "created_by": rules.created_by,
            "updated_at": rules.updated_at.isoformat(),
            "published_by": rules.published_by,
        }
    if rendered:
        data["rendered"] = serialize_rendered(programme.render_text(db.session(), rules.body))
    return data


# -- mini-program ---------------------------------------------------------------------


@bp.post("/distributors/apply")
@member_required
def apply() -> Any:
    """Apply to become a distributor (free; no purchase needed)."""
    body = parse_body(ApplyBody)
    distributor = services.apply(
        db.session(),
        current_member(),
        real_name=body.real_name,
        phone=body.phone,
        wechat_id=body.wechat_id,
        intro=body.intro,
        rules_version=body.rules_version,
        client_address=client_address(),
    )
    return envelope(_detail(distributor, staff_view=False), status=201)


@bp.get("/distributors/rules")
@member_required
def get_current_rules() -> Any:
    """The current programme rules with the live rates; null before any version is published."""
    rules = programme.current_rules(db.session())
    return envelope(serialize_rules(rules, staff_view=False) if rules is not None else None)


@bp.get("/distributors/me")
@member_required
def get_my_distributor() -> Any:
    distributor = services.my_distributor(db.session(), current_member().id)
    return envelope(_detail(distributor, staff_view=False))


def serialize_recruits(sess: Session, distributor: Distributor, offset: int, limit: int) -> dict[str, Any]:
    """The tier-2 distributors a distributor recruited (masked), each with their own attributed sales,
    and the recruiter's own recruiting limit. Recruits' teams and sales never count for the recruiter."""
    rows, total = queries.recruits_page(sess, distributor.member_id, offset, limit)
    sales = order_queries.sales_by_inviters(sess, [d.member_id for d, _ in rows])
    items = [
        {
            "id": recruit.id,
            "nickname": security.mask(member.nickname),
            "avatar_url": member.avatar_url,
            "tier": recruit.tier,
            "status": recruit.status.value,
            "applied_at": recruit.applied_at.isoformat(),
            "decided_at": iso(recruit.decided_at),
            "sales_fen": sales.get(recruit.member_id, 0),
        }
        for recruit, member in rows
    ]
    return {"items": items, "total": total, "limit": queries.recruiting_limit(sess, distributor)}


@bp.get("/distributors/me/recruits")
@member_required
def list_my_recruits() -> Any:
    """A tier-1 distributor's recruits (tier 2) with their own sales, and how many places are left."""
    query = parse_query(Page)
    sess = db.session()
    distributor = services.my_distributor(sess, current_member().id)
    data = serialize_recruits(sess, distributor, query.offset, query.page_size)
    return envelope(data | {"page": query.page, "page_size": query.page_size})


@bp.get("/materials")
@member_required
def list_my_materials() -> Any:
    query = parse_query(MaterialQuery)
    rows, total = services.visible_materials(
        db.session(), current_member().id, kind=query.kind, offset=query.offset, limit=query.page_size
    )
    return envelope({"items": [serialize_material(m) for m in rows], "total": total, "page": query.page})


class LeaderboardQuery(Body):
    #: ``month``: orders paid since the 1st of this China-time month; ``all``: every order.
    period: Literal["month", "all"] = "month"


#: How many places the leaderboard lists.
LEADERBOARD_SIZE = 20


@bp.get("/leaderboard")
@member_required
def leaderboard() -> Any:
    """The sales leaderboard: members ranked by their own attributed sales (never by team size), with
    masked nicknames, and the asking member's own place."""
    sess = db.session()
    if not get_setting(sess, "leaderboard"):
        raise LeaderboardOffError()
    query = parse_query(LeaderboardQuery)
    start = month_start(db.utcnow()) if query.period == "month" else None
    ranking = order_queries.sales_ranking(sess, start, None, LEADERBOARD_SIZE)
    members = {m.id: m for m in sess.scalars(select(Member).where(Member.id.in_([member_id for member_id, _ in ranking])))}
    items, rank, previous = [], 0, None
    for place, (member_id, sales) in enumerate(ranking, start=1):
        rank = rank if sales == previous else place  # equal sales share a place: 1, 2, 2, 4
        previous = sales
        member = members[member_id]
        items.append({"rank": rank, "nickname": security.mask(member.nickname), "avatar_url": member.avatar_url, "sales_fen": sales})
    my_rank, my_sales = order_queries.sales_rank(sess, current_member().id, start, None)
    return envelope({"period": query.period, "since": iso(start), "items": items, "me": {"rank": my_rank, "sales_fen": my_sales}})


# -- console: distributors -------------------------------------------------------------


@admin_bp.get("/distributors")
@staff_required(StaffRole.operations)
def list_distributors() -> Any:
    query = parse_query(DistributorListQuery)
    stmt = services.distributors_query(status=query.status, tier=query.tier, q=query.q)
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, scalars=False)
    items = [serialize_distributor(d, m, staff_view=True) for d, m in rows]
    return envelope({"items": items, "total": total, "page": query.page})


@admin_bp.post("/distributors")
@staff_required(StaffRole.operations)
def appoint_distributor() -> Any:
    body = parse_body(AppointBody)
    distributor = services.appoint(
        db.session(),
        body.member_id,
        real_name=body.real_name,
        phone=body.phone,
        wechat_id=body.wechat_id,
        intro=body.intro,
        reason=body.reason,
        staff=current_staff(),
    )
    return envelope(_detail(distributor, staff_view=True), status=201)


def _distributor(distributor_id: int) -> Distributor:
    distributor = db.session().get(Distributor, distributor_id)
    if distributor is None:
        raise NotFoundError("no such distributor")
    return distributor


@admin_bp.get("/distributors/<int:distributor_id>")
@staff_required(StaffRole.operations)
def get_distributor(distributor_id: int) -> Any:
    return envelope(_detail(_distributor(distributor_id), staff_view=True))


@admin_bp.post("/distributors/<int:distributor_id>/decisions")
@staff_required(StaffRole.operations)
def decide_distributor(distributor_id: int) -> Any:
    body = parse_body(DecisionBody)
    distributor = services.decide(db.session(), distributor_id, body.action, staff=current_staff(), reason=body.reason)
    return envelope(_detail(distributor, staff_view=True))


# -- console: tiers and grades ---------------------------------------------------------------


@admin_bp.get("/distributor-tiers")
@staff_required(StaffRole.operations)
def list_tiers() -> Any:
    sess = db.session()
    return envelope({"items": [serialize_tier(services.get_tier(sess, t)) for t in services.TIERS]})


@admin_bp.patch("/distributor-tiers/<int:tier>")
@staff_required(StaffRole.owner)
def patch_tier(tier: int) -> Any:
    body = parse_body(TierPatchBody)
    row = services.update_tier(db.session(), tier, patch_fields(body), staff=current_staff())
    return envelope(serialize_tier(row))


@admin_bp.get("/grades")
@staff_required(StaffRole.operations)
def list_grades() -> Any:
    rows = db.session().scalars(select(Grade).order_by(Grade.sort, Grade.min_sales_fen)).all()
    return envelope({"items": [serialize_grade(g) for g in rows]})


@admin_bp.post("/grades")
@staff_required(StaffRole.owner)
def create_grade() -> Any:
    body = parse_body(GradeBody)
    grade = services.create_grade(
        db.session(), name=body.name, min_sales_fen=body.min_sales_fen, perks=body.perks, sort=body.sort, staff=current_staff()
    )
    return envelope(serialize_grade(grade), status=201)


@admin_bp.patch("/grades/<int:grade_id>")
@staff_required(StaffRole.owner)
def patch_grade(grade_id: int) -> Any:
    body = parse_body(GradePatchBody)
    grade = services.update_grade(db.session(), grade_id, patch_fields(body), staff=current_staff())
    return envelope(serialize_grade(grade))


@admin_bp.delete("/grades/<int:grade_id>")
@staff_required(StaffRole.owner)
def delete_grade(grade_id: int) -> Any:
    services.delete_grade(db.session(), grade_id, staff=current_staff())
    return envelope(None)


# -- console: materials -------------------------------------------------------------------


@admin_bp.get("/materials")
@staff_required(StaffRole.operations)
def list_materials() -> Any:
    query = parse_query(AdminMaterialQuery)
    stmt = services.materials_query(kind=query.kind, audience=query.audience, active=query.active, q=query.q)
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=services.MATERIAL_ORDER)
    return envelope({"items": [serialize_material(m, staff_view=True) for m in rows], "total": total, "page": query.page})


@admin_bp.post("/materials")
@staff_required(StaffRole.operations)
def create_material() -> Any:
    body = parse_body(MaterialBody)
    material = services.create_material(db.session(), material_fields(body.model_dump()), staff=current_staff())
    return envelope(serialize_material(material, staff_view=True), status=201)


@admin_bp.get("/materials/<int:material_id>")
@staff_required(StaffRole.operations)
def get_material(material_id: int) -> Any:
    return envelope(serialize_material(services.get_material(db.session(), material_id), staff_view=True))


@admin_bp.patch("/materials/<int:material_id>")
@staff_required(StaffRole.operations)
def patch_material(material_id: int) -> Any:
    body = parse_body(MaterialPatchBody)
    material = services.update_material(
        db.session(), material_id, material_fields(patch_fields(body, nullable=("poster_template_id",))), staff=current_staff()
    )
    return envelope(serialize_material(material, staff_view=True))


@admin_bp.delete("/materials/<int:material_id>")
@staff_required(StaffRole.operations)
def deactivate_material(material_id: int) -> Any:
    material = services.deactivate_material(db.session(), material_id, staff=current_staff())
    return envelope(serialize_material(material, staff_view=True))


# -- console: programme rules ------------------------------------------------------------------


@admin_bp.get("/distributor-rules")
@staff_required(StaffRole.operations)
def list_rules() -> Any:
    """Every version, newest first, without rendering (the list is for choosing one)."""
    sess = db.session()
    current = programme.current_rules(sess)
    current_id = current.id if current else None
    rows = programme.list_rules(sess)
    return envelope({"items": [serialize_rules(r, staff_view=True, current_id=current_id, rendered=False) for r in rows], "current_id": current_id})


@admin_bp.post("/distributor-rules")
@staff_required(StaffRole.operations)
def create_rules() -> Any:
    body = parse_body(RulesBody)
    rules = programme.create_draft(db.session(), title=body.title, body=body.body, staff_id=current_staff().id)
    return envelope(_staff_rules(rules), status=201)


def _staff_rules(rules: ProgrammeRules) -> dict[str, Any]:
    current = programme.current_rules(db.session())
    return serialize_rules(rules, staff_view=True, current_id=current.id if current else None)


@admin_bp.get("/distributor-rules/<int:rules_id>")
@staff_required(StaffRole.operations)
def get_rules(rules_id: int) -> Any:
    return envelope(_staff_rules(programme.get_rules(db.session(), rules_id)))


@admin_bp.patch("/distributor-rules/<int:rules_id>")
@staff_required(StaffRole.operations)
def patch_rules(rules_id: int) -> Any:
    body = parse_body(RulesPatchBody)
    rules = programme.update_draft(db.session(), rules_id, patch_fields(body), staff_id=current_staff().id)
    return envelope(_staff_rules(rules))


@admin_bp.post("/distributor-rules/<int:rules_id>/publish")
@staff_required(StaffRole.operations)
def publish_rules(rules_id: int) -> Any:
    rules = programme.publish(db.session(), rules_id, staff_id=current_staff().id)
    return envelope(_staff_rules(rules))
