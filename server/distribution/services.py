"""Distributor applications and staff decisions, tier permissions, sales grades and promotion materials.

Any member may share; a distributor is a member whose application was approved
(or whom the merchant appointed). Becoming one never requires a payment or a
purchase, and grades follow the distributor's own attributed sales only, never
the size of their team (compliance guards 2 and 3).

Services take a session and plain arguments, ``flush()`` and never commit.
"""
from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import events, security
from server.accounts.models import Member, MemberStatus, Staff
from server.accounts.services import record_audit
from server.db import paginate, rowcount, utcnow
from server.distribution import programme
from server.distribution.errors import (
    ApplicationBlockedError,
    ApplicationExistsError,
    GradeExistsError,
    GradeInUseError,
    IllegalTransitionError,
    NotADistributorError,
)
from server.distribution.models import (
    Distributor,
    DistributorStatus,
    DistributorTier,
    Grade,
    Material,
    MaterialKind,
)
from server.distribution.queries import (
    MAX_DISCOUNT_BP,
    TIER_DEFAULTS,
    TIERS,
    get_tier,
    live_recruits,
)
from server.errors import NotFoundError, ValidationError
from server.jobs import queue as jobs
from server.orders import queries as order_queries
from server.posters.models import PosterTemplate
from server.referral.queries import inviter_and_upline
from server.security import mask_phone
from server.settings.services import SettingSpec, get_setting, register

register(
    SettingSpec(
        "distributor_approval",
        str,
        "manual",
        "How applications of members recruited by a tier-1 distributor (tier 2) are decided: "
        "auto (approved at once) or manual (staff approve). Tier-1 applications always wait for staff.",
        choices=("auto", "manual"),
    ),
    SettingSpec(
        "leaderboard",
        bool,
        True,
        "Members see the sales leaderboard in the mini-program: ranked by their own attributed sales, "
        "never by how many people they brought.",
    ),
)

Status = DistributorStatus

#: Every legal status change, (from, to) → the decision that makes it; None is "never applied".
TRANSITIONS: dict[tuple[DistributorStatus | None, DistributorStatus], str] = {
    (None, Status.pending): "apply",
    (Status.rejected, Status.pending): "apply",
    (None, Status.approved): "appoint",
    (Status.rejected, Status.approved): "appoint",
    (Status.pending, Status.approved): "approve",
    (Status.pending, Status.rejected): "reject",
    (Status.approved, Status.frozen): "freeze",
    (Status.frozen, Status.approved): "unfreeze",
    (Status.approved, Status.disabled): "disable",
    (Status.frozen, Status.disabled): "disable",
}
#: Where each decision leads; every decision has exactly one target status.
TARGETS: dict[str, DistributorStatus] = {action: to for (_, to), action in TRANSITIONS.items()}
#: Decisions staff take on an existing distributor through the console.
STAFF_DECISIONS = ("approve", "reject", "freeze", "unfreeze", "disable")
#: Decisions the distributor is told the reason for, so staff must give one.
REASON_REQUIRED = frozenset({"reject", "freeze", "disable"})
#: Material audiences: 1 = tier-1 distributors, 2 = every approved distributor, 3 = every member.
AUDIENCES = (1, 2, 3)
EVERY_MEMBER = 3


# -- tiers --------------------------------------------------------------------------
def tier_audiences(tier: int) -> tuple[int, ...]:
    """The material audiences a tier sees: its own number and every wider one."""
    return tuple(a for a in AUDIENCES if a >= tier)


def _tier_values(row: DistributorTier) -> dict[str, Any]:
    return {"discount_bp": row.discount_bp, "can_recruit": row.can_recruit, "max_recruits": row.max_recruits}


def update_tier(sess: Session, tier: int, changes: dict[str, Any], *, staff: Staff) -> DistributorTier:
    """The owner changes a tier's discount or recruiting rights; audited with old and new values."""
    if tier not in TIERS:
        raise NotFoundError("no such tier")
    row = sess.get(DistributorTier, tier, with_for_update=True)
    if row is None:
        try:
            with sess.begin_nested():
                row = DistributorTier(tier=tier, **TIER_DEFAULTS[tier])
                sess.add(row)
        except IntegrityError:
            row = sess.get(DistributorTier, tier, with_for_update=True, populate_existing=True)
            assert row is not None
    old = _tier_values(row)
    new = old | {k: v for k, v in changes.items() if v is not None}
    errors = []
    if not 0 <= new["discount_bp"] <= MAX_DISCOUNT_BP:
        errors.append({"field": "discount_bp", "error": f"must be between 0 and {MAX_DISCOUNT_BP}"})
    if new["max_recruits"] < 0:
        errors.append({"field": "max_recruits", "error": "must be at least 0"})
    if tier != 1 and new["can_recruit"]:
        # Recruits are tier 2; a tier-2 recruiter would put a third tier under the first.
        errors.append({"field": "can_recruit", "error": "only tier 1 may recruit"})
    if errors:
        raise ValidationError(data={"errors": errors})
    row.discount_bp, row.can_recruit, row.max_recruits = new["discount_bp"], new["can_recruit"], new["max_recruits"]
    row.updated_at, row.updated_by = utcnow(), staff.id
    record_audit(sess, staff.id, "distributor_tier.update", f"distributor_tier:{tier}", {"old": old, "new": new})
    sess.flush()
    return row


# -- applications and decisions ----------------------------------------------------------


def distributor_of(sess: Session, member_id: int, *, for_update: bool = False) -> Distributor | None:
    stmt = select(Distributor).where(Distributor.member_id == member_id)
    return sess.scalar(stmt.with_for_update() if for_update else stmt)


def my_distributor(sess: Session, member_id: int) -> Distributor:
    """The member's own distributor record; NotADistributorError if they never applied."""
    distributor = distributor_of(sess, member_id)
    if distributor is None:
        raise NotADistributorError()
    return distributor

def _may_recruit(sess: Session, member_id: int | None) -> Distributor | None:
    """The distributor ``member_id`` if approved, of a tier that may recruit, with a place left.

    Their row is locked, so two applications at once cannot both take the last place.
    """
    if member_id is None:
        return None
    recruiter = distributor_of(sess, member_id, for_update=True)
    if recruiter is None or recruiter.status != Status.approved:
        return None
    rights = get_tier(sess, recruiter.tier)
    if not rights.can_recruit:
        return None
    if rights.max_recruits and live_recruits(sess, member_id) >= rights.max_recruits:
        return None
    return recruiter


def _placement(sess: Session, member_id: int) -> tuple[int, int | None]:
    """The tier this applicant applies for, and the member id of the distributor recruiting them.

    Tier 2 is recruited by tier 1, and nobody ranks above the distributor who brought them in:

    - invited by an approved tier-1 distributor who may recruit and has a place left: tier 2,
      recruited by them;
    - invited by an approved tier-2 distributor: tier 2 as well (a tier-2 recruit would be a
      third tier), recruited by the tier-1 distributor above them if that one may still
      recruit, else with no recruiter, and then staff decide;
    - anyone else: tier 1, which staff always decide.
    """
    inviter_id, _ = inviter_and_upline(sess, member_id)
    inviter = distributor_of(sess, inviter_id) if inviter_id is not None else None
    if inviter is not None and inviter.status == Status.approved and inviter.tier == 2:
        recruiter = _may_recruit(sess, inviter.recruited_by_id)
        return 2, recruiter.member_id if recruiter is not None else None
    recruiter = _may_recruit(sess, inviter_id)
    return (2, recruiter.member_id) if recruiter is not None else (1, None)


def _set_contact(distributor: Distributor, *, real_name: str, phone: str, wechat_id: str, intro: str) -> None:
    distributor.real_name = real_name
    distributor.phone_ciphertext = security.encrypt(phone, "phone")
    distributor.phone_digest = security.digest(phone, "phone")
    distributor.phone_masked = mask_phone(phone)
    distributor.wechat_id = wechat_id
    distributor.intro = intro


def _check_move(current: DistributorStatus | None, action: str) -> DistributorStatus:
    target = TARGETS[action]
    if TRANSITIONS.get((current, target)) != action:
        raise IllegalTransitionError(
            f"cannot {action} a distributor who is {current.value if current else 'not an applicant'}",
            data={"status": current.value if current else None, "action": action},
        )
    return target


def _audit(sess: Session, distributor: Distributor, action: str, previous: DistributorStatus | None, *, staff_id: int | None, **detail: Any) -> None:
    record_audit(
        sess,
        staff_id,
        f"distributor.{action}",
        f"distributor:{distributor.id}",
        {"member_id": distributor.member_id, "from": previous.value if previous else None, "to": distributor.status.value, **detail},
    )


def apply(
    sess: Session,
    member: Member,
    *,
    real_name: str,
    phone: str,
    wechat_id: str = "",
    intro: str = "",
    rules_version: int | None = None,
    client_address: str = "",
) -> Distributor:
    """A member applies to become a distributor. Free: no payment or purchase is ever asked for.

    Once a version of the programme rules is published, the member accepts the current one
    (``rules_version``, see ``programme.accept_current``); the acceptance is recorded with the
    application. The tier and recruiter follow ``_placement``. A tier-2 application with a recruiter
    is decided as the ``distributor_approval`` setting says; any other one waits for staff.
    """
    distributor = distributor_of(sess, member.id, for_update=True)
    current = distributor.status if distributor else None
    if TRANSITIONS.get((current, Status.pending)) != "apply":
        if current in (Status.frozen, Status.disabled):
            raise ApplicationBlockedError(data={"status": current.value})
        raise ApplicationExistsError(data={"status": current.value if current else None})
    programme.accept_current(sess, member.id, rules_version, client_address=client_address)
    tier, recruiter_id = _placement(sess, member.id)
    if distributor is None:
        distributor = Distributor(member_id=member.id)
    distributor.tier = tier
    distributor.recruited_by_id = recruiter_id
    distributor.status = Status.pending
    distributor.applied_at = utcnow()
    distributor.decided_at = distributor.decided_by = None
    distributor.status_reason = ""
    _set_contact(distributor, real_name=real_name, phone=phone, wechat_id=wechat_id, intro=intro)
    try:
        with sess.begin_nested():
            sess.add(distributor)
    except IntegrityError:
        # The same member's concurrent application got there first.
        raise ApplicationExistsError() from None
    if recruiter_id is not None and get_setting(sess, "distributor_approval") == "auto":
        _decide(sess, distributor, "approve", staff_id=None, reason="", automatic=True)
    sess.flush()
    return distributor


def _decide(sess: Session, distributor: Distributor, action: str, *, staff_id: int | None, reason: str, **detail: Any) -> Distributor:
    previous = distributor.status
    distributor.status = _check_move(previous, action)
    distributor.decided_at, distributor.decided_by = utcnow(), staff_id
    distributor.status_reason = reason
    sess.flush()
    _audit(sess, distributor, action, previous, staff_id=staff_id, reason=reason, **detail)
    if action == "approve":
        events.distributor_approved.send(sess, distributor=distributor)
    events.distributor_decided.send(sess, distributor=distributor, action=action)
    return distributor


def decide(sess: Session, distributor_id: int, action: str, *, staff: Staff, reason: str = "") -> Distributor:
    """Staff approve, reject, freeze, unfreeze or disable a distributor, if the status allows it; audited."""
    if action not in STAFF_DECISIONS:
        raise ValueError(f"not a staff decision: {action}")
    if action in REASON_REQUIRED and not reason.strip():
        raise ValidationError(data={"errors": [{"field": "reason", "error": f"a reason is required to {action}"}]})
    distributor = sess.get(Distributor, distributor_id, with_for_update=True)
    if distributor is None:
        raise NotFoundError("no such distributor")
    return _decide(sess, distributor, action, staff_id=staff.id, reason=reason)


def appoint(
    sess: Session,
    member_id: int,
    *,
    real_name: str,
    phone: str,
    wechat_id: str = "",
    intro: str = "",
    reason: str = "",
    staff: Staff,
) -> Distributor:
    """The merchant appoints a member as a tier-1 distributor directly, approved at once; audited."""
    member = sess.get(Member, member_id)
    if member is None or member.status != MemberStatus.active:
        problem = "no such member" if member is None else "the member is disabled"
        raise ValidationError(data={"errors": [{"field": "member_id", "error": problem}]})
    distributor = distributor_of(sess, member_id, for_update=True)
    previous = distributor.status if distributor else None
    _check_move(previous, "appoint")
    if distributor is None:
        distributor = Distributor(member_id=member_id)
    distributor.tier, distributor.recruited_by_id = 1, None
    distributor.applied_at = utcnow()
    _set_contact(distributor, real_name=real_name, phone=phone, wechat_id=wechat_id, intro=intro)
    distributor.status = Status.approved
    distributor.decided_at, distributor.decided_by, distributor.status_reason = utcnow(), staff.id, reason
    try:
        with sess.begin_nested():
            sess.add(distributor)
    except IntegrityError:
        # The member applied (or was appointed) concurrently; their row now decides what is legal.
        raise IllegalTransitionError(data={"status": None, "action": "appoint"}) from None
    _audit(sess, distributor, "appoint", previous, staff_id=staff.id, reason=reason)
    events.distributor_approved.send(sess, distributor=distributor)
    sess.flush()
    return distributor
def on_order_status_changed(sess: Session, *, order: Any, status: Any) -> None:
    """Handler of ``events.order_status_changed``: the inviter's grade follows their own sales (``regrade_inviter``)."""
    regrade_inviter(sess, order, status)


def regrade_inviter(sess: Session, order: Any, status: Any) -> None:
    """Order status listener: a paid or refunded order changes its inviter's own sales, so their grade."""
    if order.inviter_id is None or status.value not in ("paid", "refunded") and not order.refunded_fee:
        return
    distributor = distributor_of(sess, order.inviter_id)
    if distributor is not None and distributor.status == DistributorStatus.approved:
        assign_grade(sess, distributor, order_queries.sales_brought_by(sess, order.inviter_id))


def distributors_query(*, status: DistributorStatus | None, tier: int | None, q: str | None) -> Select[Distributor, Member]:
    """Distributors with their members, filtered for the console; newest application first."""
    stmt = select(Distributor, Member).join(Member, Member.id == Distributor.member_id)
    if status is not None:
        stmt = stmt.where(Distributor.status == status)
    if tier is not None:
        stmt = stmt.where(Distributor.tier == tier)
    if q:
        # autoescape: "%" and "_" in what staff type are searched for, not wildcards.
        stmt = stmt.where(Distributor.real_name.contains(q, autoescape=True) | Member.nickname.contains(q, autoescape=True))
    return stmt.order_by(Distributor.applied_at.desc(), Distributor.id.desc())


# -- grades ---------------------------------------------------------------------------


def grade_for_sales(sess: Session, sales_fen: int) -> Grade | None:
    """The grade with the highest threshold the sales reach; None below every threshold."""
    return sess.scalars(
        select(Grade).where(Grade.min_sales_fen <= sales_fen).order_by(Grade.min_sales_fen.desc()).limit(1)
    ).first()


def assign_grade(sess: Session, distributor: Distributor, sales_fen: int) -> Grade | None:
    """Grade a distributor by their own attributed sales (in fen), which the caller supplies."""
    if sales_fen < 0:
        raise ValueError("sales cannot be negative")
    grade = grade_for_sales(sess, sales_fen)
    distributor.grade_id = grade.id if grade else None
    sess.flush()
    return grade


#: Up to this many approved distributors, a grade change regrades them in its own request; above, in the background.
REGRADE_INLINE_LIMIT = 200
#: Distributors read and regraded per query while regrading everyone.
REGRADE_BATCH = 500


def regrade_all(sess: Session, *, progress: Callable[[int], Any] | None = None) -> tuple[int, int]:
    """Grade every approved distributor again by their own attributed sales; returns (looked at, changed).

    For grade changes and the daily backstop. ``progress(n)`` is told each batch of n done.
    Sales come from one grouped query per batch, never from anything about a team.
    """
    grades = sess.execute(select(Grade.id, Grade.min_sales_fen).order_by(Grade.min_sales_fen.desc())).all()

    def grade_id_for(sales_fen: int) -> int | None:
        return next((grade_id for grade_id, threshold in grades if threshold <= sales_fen), None)

    seen = changed = 0
    after = 0
    while True:
        batch = sess.execute(
            select(Distributor.id, Distributor.member_id, Distributor.grade_id)
            .where(Distributor.status == Status.approved, Distributor.id > after)
            .order_by(Distributor.id)
            .limit(REGRADE_BATCH)
        ).all()
        if not batch:
            break
        sales = order_queries.sales_by_inviters(sess, [row.member_id for row in batch])
        for row in batch:
            target = grade_id_for(sales.get(row.member_id, 0))
            if target != row.grade_id:
                # Conditional, so a sale regrading the same distributor meanwhile is not overwritten with older data.
                result = sess.execute(
                    update(Distributor)
                    .where(Distributor.id == row.id, Distributor.grade_id.is_(None) if row.grade_id is None else Distributor.grade_id == row.grade_id)
                    .values(grade_id=target)
                    .execution_options(synchronize_session="fetch")
                )
                changed += rowcount(result)
        seen += len(batch)
        after = batch[-1].id
        if progress is not None:
            progress(len(batch))
    sess.flush()
    return seen, changed


def approved_count(sess: Session) -> int:
    return int(sess.scalar(select(func.count()).select_from(Distributor).where(Distributor.status == Status.approved)) or 0)


#: The queued job that regrades every distributor (server/jobs); one waits at a time, however many grades change.
REGRADE_JOB = "regrade"


def regrade_job(sess: Session, _ref: str) -> None:
    """The queued regrade: everyone, in the job's own unit of work."""
    regrade_all(sess)


def regrade_after_grade_change(sess: Session) -> str:
    """After a grade is created, changed or removed: regrade everyone now if few, else once this commits.

    Returns "now" or "background" (a job queued with this change, so it is never lost).
    """
    if approved_count(sess) <= REGRADE_INLINE_LIMIT:
        regrade_all(sess)
        return "now"
    jobs.enqueue(sess, REGRADE_JOB, "all")
    return "background"


def _grade_values(grade: Grade) -> dict[str, Any]:
    return {"name": grade.name, "min_sales_fen": grade.min_sales_fen, "perks": grade.perks, "sort": grade.sort}


def _save_grade(sess: Session, grade: Grade, changes: dict[str, Any]) -> None:
    """Apply ``changes`` to ``grade`` and store it; GradeExistsError if its name or threshold is taken."""
    name = changes.get("name", grade.name)
    threshold = changes.get("min_sales_fen", grade.min_sales_fen)
    clash = select(Grade.id).where((Grade.name == name) | (Grade.min_sales_fen == threshold))
    if grade.id is not None:
        clash = clash.where(Grade.id != grade.id)
    if sess.scalar(clash) is not None:
        raise GradeExistsError()
    try:
        # Changes are made inside the savepoint, so a concurrent clash rolls back only them.
        with sess.begin_nested():
            for key, value in changes.items():
                setattr(grade, key, value)
            sess.add(grade)
    except IntegrityError:
        raise GradeExistsError() from None


def create_grade(sess: Session, *, name: str, min_sales_fen: int, perks: str = "", sort: int = 0, staff: Staff) -> Grade:
    """A new sales grade; names and thresholds are unique. Audited."""
    grade = Grade()
    _save_grade(sess, grade, {"name": name, "min_sales_fen": min_sales_fen, "perks": perks, "sort": sort})
    record_audit(sess, staff.id, "grade.create", f"grade:{grade.id}", _grade_values(grade))
    regrade_after_grade_change(sess)
    return grade


def get_grade(sess: Session, grade_id: int, *, for_update: bool = False) -> Grade:
    grade = sess.get(Grade, grade_id, with_for_update=True if for_update else None)
    if grade is None:
        raise NotFoundError("no such grade")
    return grade


def update_grade(sess: Session, grade_id: int, changes: dict[str, Any], *, staff: Staff) -> Grade:
    """Change a grade's name, threshold, perks or order; a new threshold regrades every distributor."""
    grade = get_grade(sess, grade_id, for_update=True)
    old = _grade_values(grade)
    _save_grade(sess, grade, changes)
    record_audit(sess, staff.id, "grade.update", f"grade:{grade.id}", {"old": old, "new": _grade_values(grade)})
    if grade.min_sales_fen != old["min_sales_fen"]:
        regrade_after_grade_change(sess)
    return grade


def delete_grade(sess: Session, grade_id: int, *, staff: Staff) -> None:
    """Remove a grade nobody holds; GradeInUseError while a distributor holds it."""
    grade = get_grade(sess, grade_id, for_update=True)
    holders = sess.scalar(select(func.count()).select_from(Distributor).where(Distributor.grade_id == grade_id))
    if holders:
        raise GradeInUseError(data={"distributors": holders})
    record_audit(sess, staff.id, "grade.delete", f"grade:{grade.id}", _grade_values(grade))
    sess.delete(grade)
    sess.flush()


# -- promotion materials ----------------------------------------------------------------


def audience_floor(sess: Session, member_id: int) -> int:
    """The narrowest audience this member sees: their tier while an approved distributor, else 3 (everyone)."""
    row = sess.execute(
        select(Distributor.tier, Distributor.status).where(Distributor.member_id == member_id)
    ).first()
    if row is not None and row.status == Status.approved:
        return row.tier
    return EVERY_MEMBER


def _template_exists(sess: Session, template_id: int) -> bool:
    # Not flushing first: the material being checked may not satisfy its constraints yet.
    with sess.no_autoflush:
        return sess.get(PosterTemplate, template_id) is not None


def _material_problems(sess: Session, material: Material) -> list[dict[str, str]]:
    """What is missing or superfluous for the material's kind."""
    problems = []
    if material.kind == MaterialKind.image_text and not material.body.strip():
        problems.append({"field": "body", "error": "an image_text material needs a body"})
    if material.kind == MaterialKind.video and not material.url:
        problems.append({"field": "url", "error": "a video material needs the video's url"})
    if material.kind == MaterialKind.poster:
        if material.poster_template_id is None:
            problems.append({"field": "poster_template_id", "error": "a poster material needs a poster template"})
        elif not _template_exists(sess, material.poster_template_id):
            problems.append({"field": "poster_template_id", "error": "no such poster template"})
    elif material.poster_template_id is not None:
        problems.append({"field": "poster_template_id", "error": "only a poster material has a poster template"})
    return problems


def _material_values(material: Material) -> dict[str, Any]:
    return {
        "kind": material.kind.value,
        "title": material.title,
        "audience": material.audience,
        "active": material.active,
        "poster_template_id": material.poster_template_id,
    }


def create_material(sess: Session, fields: dict[str, Any], *, staff: Staff) -> Material:
    """Operations add a promotion material; kind-specific fields are checked (422). Audited."""
    material = Material(**fields)
    if problems := _material_problems(sess, material):
        raise ValidationError(data={"errors": problems})
    sess.add(material)
    sess.flush()
    record_audit(sess, staff.id, "material.create", f"material:{material.id}", _material_values(material))
    return material


def get_material(sess: Session, material_id: int) -> Material:
    material = sess.get(Material, material_id)
    if material is None:
        raise NotFoundError("no such material")
    return material


def update_material(sess: Session, material_id: int, changes: dict[str, Any], *, staff: Staff) -> Material:
    """Change a material; the result is checked as a whole, so a kind change brings its own fields. Audited."""
    material = get_material(sess, material_id)
    old = _material_values(material)
    for key, value in changes.items():
        setattr(material, key, value)
    if problems := _material_problems(sess, material):
        raise ValidationError(data={"errors": problems})
    sess.flush()
    record_audit(sess, staff.id, "material.update", f"material:{material.id}", {"old": old, "new": _material_values(material), "fields": sorted(changes)})
    return material


def deactivate_material(sess: Session, material_id: int, *, staff: Staff) -> Material:
    """Hide a material from everyone; the row stays, so what was already shared still has its source."""
    material = get_material(sess, material_id)
    if material.active:
        material.active = False
        record_audit(sess, staff.id, "material.deactivate", f"material:{material.id}")
    sess.flush()
    return material


#: How materials are listed: by sort, then newest.
MATERIAL_ORDER = (Material.sort, Material.created_at.desc(), Material.id.desc())


def materials_query(*, kind: MaterialKind | None, audience: int | None, active: bool | None, q: str | None) -> Select[Material]:
    """Materials filtered for staff (kind, audience, shown or hidden, words in the title)."""
    stmt = select(Material)
    if kind is not None:
        stmt = stmt.where(Material.kind == kind)
    if audience is not None:
        stmt = stmt.where(Material.audience == audience)
    if active is not None:
        stmt = stmt.where(Material.active.is_(active))
    if q:
        stmt = stmt.where(Material.title.contains(q, autoescape=True))
    return stmt


def visible_materials(sess: Session, member_id: int, *, kind: MaterialKind | None, offset: int, limit: int) -> tuple[list[Material], int]:
    """The active materials this member may see, by sort then newest."""
    stmt = select(Material).where(Material.active.is_(True), Material.audience >= audience_floor(sess, member_id))
    if kind is not None:
        stmt = stmt.where(Material.kind == kind)
    return paginate(sess, stmt, offset=offset, limit=limit, order_by=MATERIAL_ORDER)
