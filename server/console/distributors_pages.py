"""Distributor pages: the application queue and list, a distributor's record and decisions, appointing
a tier-1 distributor, and the tiers and grades (edited in place with htmx).

Every action calls the distribution service the admin API route calls, and its form is checked with
that route's request model (``server.distribution.routes``), so no limit or rule is written here twice.
"""
from __future__ import annotations

from typing import Any, Mapping

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from server import db
from server.accounts.models import Member
from server.console import distributors_queries as queries
from server.console.queries import audit_of
from server.console.roles import allowed
from server.console.forms import FIELD_LIMIT, checked, problems, whole_number
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.distribution import programme
from server.distribution import routes as api
from server.distribution import services
from server.distribution.queries import distributor_stats
from server.distribution.errors import GradeExistsError, GradeInUseError, IllegalTransitionError
from server.distribution.models import Distributor, DistributorStatus, Grade
from server.errors import NotFoundError, ValidationError

#: What staff see next to a field the request model or the service refused.
HINTS = {
    "member_id": "请输入一位在用会员的会员 ID（数字）。",
    "real_name": "请填写真实姓名（最多 32 字）。",
    "phone": "请填写 5–20 位数字的手机号。",
    "wechat_id": "微信号最多 64 个字符。",
    "intro": "简介最多 500 字。",
    "reason": "请填写原因（最多 255 字）。",
    "discount_bp": f"自购折扣应为 0 到 {services.MAX_DISCOUNT_BP} 之间的整数（基点，500 = 5%）。",
    "can_recruit": "只有一级分销员可以招募；二级不能再招募下级。",
    "max_recruits": "招募名额应为 0 到 1,000,000 之间的整数（0 为不限）。",
    "name": "请填写等级名称（最多 32 字）。",
    "min_sales_fen": "门槛应为不小于 0 的金额（元，最多两位小数）。",
    "perks": "权益说明最多 2000 字。",
    "sort": "排序应为 -1,000,000 到 1,000,000 之间的整数。",
}
#: The decisions' names in Chinese, for the flash message and the refusal.
DECISIONS = {"approve": "通过", "reject": "拒绝", "freeze": "冻结", "unfreeze": "解冻", "disable": "停用"}
#: Which decisions each status offers (the service's transition table decides; this only shows the buttons).
OFFERED = {
    DistributorStatus.pending: ("approve", "reject"),
    DistributorStatus.approved: ("freeze", "disable"),
    DistributorStatus.frozen: ("unfreeze", "disable"),
}


def fen_arg(value: str) -> int | str:
    """Yuan as typed ("1,200.5") in fen; anything that is not an amount stays text, which the model refuses."""
    text = value.strip().replace(",", "").replace("¥", "")
    whole, _, cents = text.partition(".")
    if whole.isdigit() and len(whole) <= 13 and (cents == "" or (cents.isdigit() and len(cents) <= 2)):
        return int(whole) * 100 + int(cents.ljust(2, "0") or 0)
    return text


# -- list and application queue ---------------------------------------------------------------


def _filters(args: Mapping[str, str]) -> dict[str, Any]:
    status_arg = args.get("status", "")
    tier_arg = args.get("tier", "")
    return {
        "status": DistributorStatus(status_arg) if status_arg in DistributorStatus._value2member_map_ else None,
        "tier": int(tier_arg) if tier_arg in ("1", "2") else None,
        "q": args.get("q", "").strip()[:64],
    }


def distributor_filters(args: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The distributor list's selection (newest application first) for the filters in ``args``, and its problems (none)."""
    found = _filters(args)
    return services.distributors_query(status=found["status"], tier=found["tier"], q=found["q"] or None), []


@bp.get("/distributors")
@console_view("distributors")
def distributors(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """Applications and distributors, filtered by status, tier and name; newest application first."""
    sess = db.session()
    found = _filters(request.args)
    stmt, _ = distributor_filters(request.args)
    page = int_arg("page", 1)
    rows, total = db.paginate(sess, stmt, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, scalars=False, count_cap=COUNT_CAP)
    member_ids = [member.id for _d, member in rows]
    return render_template(
        "console/distributors.html",
        rows=rows,
        sales=queries.own_sales(sess, member_ids),
        balances=queries.available_points(sess, member_ids),
        grades=queries.grade_names(sess),
        filters=found,
        statuses=list(DistributorStatus),
        pending=queries.pending_count(sess),
        pager=pages(total),
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.post("/distributors")
@console_view("distributors.appoint")
def distributors_appoint() -> Any:
    """Appoint an active member as a tier-1 distributor, approved at once (audited by the service)."""
    payload: dict[str, Any] = {k: form_text(k, FIELD_LIMIT) for k in ("real_name", "phone", "wechat_id", "intro", "reason")}
    payload["member_id"] = whole_number(form_text("member_id", 32))
    body, errors = checked(api.AppointBody, payload, HINTS)
    if body is None:
        return distributors(errors=errors, status=422)
    try:
        distributor = services.appoint(
            db.session(), body.member_id, real_name=body.real_name, phone=body.phone, wechat_id=body.wechat_id,
            intro=body.intro, reason=body.reason, staff=current_staff(),
        )
    except ValidationError as error:
        return distributors(errors=problems(error, HINTS), status=error.http_status)
    except IllegalTransitionError as error:
        return distributors(errors={"member_id": "该会员已是分销员或正在申请，不能再任命。"}, status=error.http_status)
    flash(f"已任命 {distributor.real_name} 为一级分销员。", "success")
    return redirect(url_for("console.distributors_record", distributor_id=distributor.id), 303)


# -- one distributor ------------------------------------------------------------------------------


def _distributor_or_404(distributor_id: int) -> Distributor:
    found = db.session().get(Distributor, distributor_id)
    if found is None:
        raise NotFoundError("no such distributor")
    return found


@bp.get("/distributors/<int:distributor_id>")
@console_view("distributors")
def distributors_record(distributor_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """A distributor's application, status, tier and grade, and their record (``distributor_stats``)."""
    sess = db.session()
    distributor = _distributor_or_404(distributor_id)
    return render_template(
        "console/distributor.html",
        d=distributor,
        member=sess.get(Member, distributor.member_id),
        recruiter=sess.get(Member, distributor.recruited_by_id) if distributor.recruited_by_id else None,
        grade=sess.get(Grade, distributor.grade_id) if distributor.grade_id else None,
        tier=services.get_tier(sess, distributor.tier),
        stats=distributor_stats(sess, distributor),
        acceptance=programme.latest_acceptance(sess, distributor.member_id),
        offered=OFFERED.get(distributor.status, ()),
        decisions=DECISIONS,
        reason_required=services.REASON_REQUIRED,
        audit=audit_of(sess, f"distributor:{distributor.id}") if allowed(current_staff().role, "audit") else None,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.post("/distributors/<int:distributor_id>/decisions")
@console_view("distributors.decide")
def distributors_decide(distributor_id: int) -> Any:
    """Approve, reject, freeze, unfreeze or disable; the service checks the move and requires a reason."""
    _distributor_or_404(distributor_id)
    action = request.form.get("action", "")
    body, errors = checked(api.DecisionBody, {"action": action[:16], "reason": form_text("reason", FIELD_LIMIT)}, HINTS)
    if body is None:
        errors = {"action": "请选择一项操作。"} if "action" in errors else errors
        return distributors_record(distributor_id, errors=errors, status=422)
    try:
        services.decide(db.session(), distributor_id, body.action, staff=current_staff(), reason=body.reason)
    except ValidationError as error:
        return distributors_record(distributor_id, errors=problems(error, HINTS), status=error.http_status)
    except IllegalTransitionError as error:
        message = f"该分销员当前的状态不能{DECISIONS[body.action]}。"
        return distributors_record(distributor_id, errors={"action": message}, status=error.http_status)
    flash(f"已{DECISIONS[body.action]}。", "success")
    if body.action in ("approve", "reject") and request.form.get("back") == "queue":
        return redirect(url_for("console.distributors", status="pending"), 303)
    return redirect(url_for("console.distributors_record", distributor_id=distributor_id), 303)


# -- tiers and grades -----------------------------------------------------------------------------


@bp.get("/distributors/tiers")
@console_view("distributors")
def distributors_tiers(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """The two tiers' permissions and the sales grades; the owner edits them in place."""
    sess = db.session()
    return render_template(
        "console/distributor_tiers.html",
        tiers=[services.get_tier(sess, t) for t in services.TIERS],
        audiences={t: services.tier_audiences(t) for t in services.TIERS},
        grades=sess.scalars(select(Grade).order_by(Grade.sort, Grade.min_sales_fen)).all(),
        holders=queries.grade_holders(sess),
        errors=errors or {},
        form=request.form if errors else {},
    ), status


def _tiers_again(errors: dict[str, str], status: int) -> Any:
    return distributors_tiers(errors=errors, status=status)


@bp.post("/distributors/tiers/<int:tier>")
@console_view("distributors.tiers")
def distributors_tier_update(tier: int) -> Any:
    """The owner changes a tier's own-purchase discount and recruiting rights (audited by the service)."""
    if tier not in services.TIERS:
        raise NotFoundError("no such tier")
    payload = {
        "discount_bp": whole_number(form_text("discount_bp", 32)),
        "can_recruit": request.form.get("can_recruit") == "1",
        "max_recruits": whole_number(form_text("max_recruits", 32)),
    }
    body, errors = checked(api.TierPatchBody, payload, HINTS)
    if body is None:
        return _tiers_again({f"tier{tier}-{k}": v for k, v in errors.items()}, 422)
    try:
        services.update_tier(db.session(), tier, api.patch_fields(body), staff=current_staff())
    except ValidationError as error:
        return _tiers_again({f"tier{tier}-{k}": v for k, v in problems(error, HINTS).items()}, error.http_status)
    flash(f"已保存{'一' if tier == 1 else '二'}级分销员的权限。", "success")
    return redirect(url_for("console.distributors_tiers") + f"#tier-{tier}", 303)


def _grade_payload() -> dict[str, Any]:
    return {
        "name": form_text("name", FIELD_LIMIT),
        "min_sales_fen": fen_arg(form_text("min_sales", 32)),
        "perks": form_text("perks", FIELD_LIMIT),
        "sort": whole_number(form_text("sort", 32) or "0"),
    }


def _grade_refusal(error: Exception, prefix: str) -> Any:
    if isinstance(error, GradeExistsError):
        return _tiers_again({f"{prefix}-name": "已有同名或同门槛的等级。"}, error.http_status)
    if isinstance(error, GradeInUseError):
        return _tiers_again({f"{prefix}-name": "仍有分销员处于该等级，不能删除。"}, error.http_status)
    assert isinstance(error, ValidationError)
    return _tiers_again({f"{prefix}-{k}": v for k, v in problems(error, HINTS).items()}, error.http_status)


@bp.post("/distributors/grades")
@console_view("distributors.grades")
def distributors_grade_create() -> Any:
    """A new sales grade (unique name and threshold); distributors are regraded by their own sales."""
    body, errors = checked(api.GradeBody, _grade_payload(), HINTS)
    if body is None:
        return _tiers_again({f"new-{k}": v for k, v in errors.items()}, 422)
    try:
        services.create_grade(db.session(), name=body.name, min_sales_fen=body.min_sales_fen, perks=body.perks, sort=body.sort, staff=current_staff())
    except (GradeExistsError, ValidationError) as error:
        return _grade_refusal(error, "new")
    flash(f"已新建等级 {body.name}。", "success")
    return redirect(url_for("console.distributors_tiers") + "#grades", 303)


@bp.post("/distributors/grades/<int:grade_id>")
@console_view("distributors.grades")
def distributors_grade_update(grade_id: int) -> Any:
    """Change a grade, or (``action=delete``) remove one nobody holds."""
    sess = db.session()
    services.get_grade(sess, grade_id)
    prefix = f"grade{grade_id}"
    try:
        if request.form.get("action") == "delete":
            services.delete_grade(sess, grade_id, staff=current_staff())
            flash("已删除等级。", "success")
            return redirect(url_for("console.distributors_tiers") + "#grades", 303)
        body, errors = checked(api.GradePatchBody, _grade_payload(), HINTS)
        if body is None:
            return _tiers_again({f"{prefix}-{k}": v for k, v in errors.items()}, 422)
        services.update_grade(sess, grade_id, api.patch_fields(body), staff=current_staff())
    except (GradeExistsError, GradeInUseError, ValidationError) as error:
        return _grade_refusal(error, prefix)
    flash("已保存等级。", "success")
    return redirect(url_for("console.distributors_tiers") + f"#grade-{grade_id}", 303)
