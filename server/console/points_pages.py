"""The console's points pages: the ledger, owner adjustments, settlement runs (run now, with progress),
reward rules with per-product and per-grade overrides, stage bonus rules, and the compliance report.

Each action calls the service the admin API (``server/points/routes.py``) or the ``settle`` command
calls; pages read through ``points_queries`` and the points services' own read functions.
"""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Mapping

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from server import db
from server.accounts.models import Member
from server.console import points_queries as pq
from server.console import queries
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, date_arg, field_errors, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import AppError, NotFoundError, ValidationError
from server.points import incentives, rules, settlement
from server.points import redemption as points
from server.points.compliance import GUARDS, active_rules, compliance_report
from server.points.errors import (
    DuplicateRequestError,
    InsufficientPointsError,
    RewardOverrideExistsError,
    SettlementRunningError,
)
from server.points.models import SettlementRun, Statement, TxKind
from server.points.routes import MAX_THRESHOLD_FEN
from server.points import queries as points_queries
from server.points.queries import member_balances
from server.settings.services import get_setting

#: The largest row id a form may name (BIGINT); anything longer is not an id.
MAX_ID_DIGITS = 18

#: The compliance guards of DESIGN §5, as the report page titles them.
GUARD_TITLES = {
    1: "最多两级奖励",
    2: "不按人头奖励：等级与奖励只看本人销售",
    3: "成为分销员无需付费或购买",
    4: "二级不高于一级；单笔订单积分不超过硬上限",
    5: "“仅直推”关闭二级奖励",
    6: "分享奖励默认关闭，且只在其他真实会员打开时发放",
    7: "本报告",
}
assert set(GUARD_TITLES) == set(GUARDS)


def id_value(raw: str) -> int | None:
    """A row id typed into a form or a filter, or None when it is not one."""
    raw = raw.strip()
    return int(raw) if raw.isdigit() and len(raw) <= MAX_ID_DIGITS and int(raw) > 0 else None


def new_form_key() -> str:
    """A fresh idempotency key for one rendering of a form: submitting that form twice posts once."""
    return uuid.uuid4().hex


# -- the ledger ------------------------------------------------------------------------------------


def _ledger_args(args: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The ledger's filters in ``args`` as ``transactions_query`` arguments, and their problems."""
    problems: list[str] = []
    member_arg = args.get("member", "").strip()
    member_id = id_value(member_arg) if member_arg else None
    if member_arg and member_id is None:
        problems.append("会员 ID 应为数字。")
    kind_arg = args.get("kind", "")
    kind = TxKind(kind_arg) if kind_arg in TxKind._value2member_map_ else None
    if kind_arg and kind is None:
        problems.append("未知的交易类型，已显示全部类型。")
    start_day, end_day = date_arg("from", problems, args), date_arg("to", problems, args)
    found = {
        "member_id": member_id,
        "kind": kind,
        "start": queries.day_start(start_day) if start_day else None,
        "end": queries.day_start(end_day + timedelta(days=1)) if end_day else None,
    }
    return found, problems


def ledger_filters(args: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The ledger's transactions for the filters in ``args``, and their problems."""
    found, problems = _ledger_args(args)
    return points.transactions_query(**found), problems


@bp.get("/points", endpoint="points")
@console_view("points")
def points_page(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """Ledger transactions with their entries, by member, kind and China-time dates; the owner's adjustment form."""
    sess = db.session()
    found, problems = _ledger_args(request.args)
    member_id = found["member_id"]
    page = int_arg("page", 1)
    rows, total = points.transactions_page(sess, **found, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, count_cap=COUNT_CAP)
    member = sess.get(Member, member_id) if member_id else None
    form = request.form if errors else {}
    return render_template(
        "console/points.html",
        rows=rows,
        members=pq.members_by_id(sess, {tx.member_id for tx, _ in rows if tx.member_id}),
        member=member,
        balances=member_balances(sess, member.id) if member else None,
        kinds=list(TxKind),
        args=request.args,
        problems=problems,
        pager=pages(total),
        errors=errors or {},
        form=form,
        form_key=form.get("idempotency_key") or new_form_key(),
    ), status


@bp.post("/points/adjustments")
@console_view("points.adjust")
def points_adjust() -> Any:
    """The owner credits or debits a member's available points with a reason, once per form (its idempotency key)."""
    errors: dict[str, str] = {}
    member_id = id_value(form_text("member_id", 32))
    if member_id is None:
        errors["member_id"] = "请输入会员 ID（数字）。"
    amount = 0
    try:
        amount = settlement.parse_points(form_text("points", 32))
    except ValueError:
        errors["points"] = f"请输入积分数：最多两位小数，非零，绝对值不超过 {settlement.MAX_GRANT // 100:,}；负数表示扣减。"
    reason = form_text("reason", 1000)
    if not reason or len(reason) > 255:
        errors["reason"] = "请填写原因（最多 255 字）。"
    try:
        key = points.check_idempotency_key(request.form.get("idempotency_key"))
    except AppError:
        errors["form"] = "表单缺少提交编号，请刷新页面后重试。"
        key = ""
    if errors:
        return points_page(errors=errors, status=422)
    assert member_id is not None
    try:
        result = points.adjust_points(db.session(), staff_id=current_staff().id, member_id=member_id, amount=amount, reason=reason, idempotency_key=key)
    except InsufficientPointsError:
        available = member_balances(db.session(), member_id).available
        return points_page(errors={"points": f"该会员可用积分只有 {available / 100:,.2f}，不能扣减这么多。"}, status=409)
    except DuplicateRequestError:
        return points_page(errors={"form": "这张表单已提交过另一笔调整，请刷新页面后重新填写。"}, status=409)
    except ValidationError as error:
        found = field_errors(error)
        message = "找不到该会员。" if "member_id" in found else "输入有误，请检查后重试。"
        return points_page(errors={"member_id" if "member_id" in found else "form": message}, status=422)
    if result.new:
        flash(f"已为会员 {member_id} {'增加' if amount > 0 else '扣减'} {abs(amount) / 100:,.2f} 积分。", "success")
    else:
        flash("这次调整已经提交过，没有重复记账。", "info")
    return redirect(url_for("console.points", member=member_id), 303)


# -- settlement ------------------------------------------------------------------------------------


@bp.get("/points/settlements")
@console_view("points.settlement")
def points_settlements(error: str = "", status: int = 200) -> Any:
    """Settlement runs, newest first; the owner starts one now and watches it until it is done."""
    sess = db.session()
    page = int_arg("page", 1)
    rows, total = db.paginate(sess, points_queries.runs_query(), offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(SettlementRun.id.desc(),), count_cap=COUNT_CAP)
    running = settlement.running_manual_settlement(sess)
    job_id = running.id if running else id_value(request.args.get("job", ""))
    job = settlement.manual_settlement(sess, job_id) if job_id else None
    return render_template(
        "console/points_settlements.html",
        rows=rows,
        pager=pages(total),
        job=job,
        running=running is not None,
        mode=get_setting(sess, "settlement_mode"),
        threshold=get_setting(sess, "settlement_threshold"),
        error=error,
    ), status


@bp.post("/points/settlements")
@console_view("points.settlement.run")
def points_settlement_start() -> Any:
    """Start a settlement in the merchant's mode, in the background; refused while one is running."""
    try:
        claim = settlement.start_manual_settlement(db.session(), staff_id=current_staff().id)
    except SettlementRunningError:
        return points_settlements(error="已有一次结算正在进行，请等它完成后再试。", status=409)
    flash("结算已开始。", "success")
    return redirect(url_for("console.points_settlements", job=claim.id), 303)


@bp.get("/points/settlements/jobs/<int:claim_id>")
@console_view("points.settlement")
def points_settlement_job(claim_id: int) -> Any:
    """The state of a settlement started by hand, as the fragment htmx polls until it is done."""
    job = settlement.manual_settlement(db.session(), claim_id)
    if job is None:
        raise NotFoundError("no such settlement")
    return render_template("console/_settlement_job.html", job=job)


@bp.get("/points/settlements/<int:run_id>")
@console_view("points.settlement")
def points_settlement(run_id: int) -> Any:
    """One run and its statements, one per member."""
    sess = db.session()
    run = sess.get(SettlementRun, run_id)
    if run is None:
        raise NotFoundError("no such settlement run")
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess, points_queries.statements_query(run.id), offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(Statement.member_id,), count_column=Statement.id, scalars=False,
        count_cap=COUNT_CAP,
    )
    lines = points_queries.statement_lines(sess, [statement for statement, _ in rows])
    return render_template("console/points_settlement.html", run=run, rows=rows, lines=lines, pager=pages(total))


# -- reward rules, overrides and stage rules -------------------------------------------------------

OVERRIDE_SCOPES = {"product": "商品", "grade": "分销等级"}


def _rate(name: str, errors: dict[str, str]) -> int | None:
    """A basis-point rate typed into a form; blank is None (the merchant's default applies)."""
    raw = form_text(name, 16)
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 5:
        errors[name] = "请输入 0 到 2000 之间的整数（基点，50 = 0.5%），或留空使用默认值。"
        return None
    return int(raw)


def _override_errors(error: ValidationError, cap: int) -> dict[str, str]:
    found: dict[str, str] = {}
    for field, message in field_errors(error).items():
        if field == "ref_id":
            found[field] = "找不到该商品或等级。"
        elif field == "level1_first_bp" and "at least one" in message:
            found[field] = "至少设置一个比例；要恢复默认请删除覆盖。"
        elif field in ("level1_first_bp", "level1_repeat_bp"):
            found[field] = f"比例须在 0 到订单积分上限 {cap} 基点之间（设置 reward_order_cap_bp）。"
        else:
            found[field] = message
    return found or {"form": "输入有误，请检查后重试。"}


@bp.get("/points/rules")
@console_view("points.rules")
def points_rules(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """The reward settings in force, per-product and per-grade overrides, and the stage bonus rules."""
    sess = db.session()
    overrides = rules.list_overrides(sess)
    return render_template(
        "console/points_rules.html",
        rules_in_force=active_rules(sess),
        overrides=overrides,
        targets=pq.override_targets(sess, overrides),
        scopes=OVERRIDE_SCOPES,
        grades=pq.grades(sess),
        stage_rules=incentives.list_stage_rules(sess),
        max_months=incentives.MAX_CONSECUTIVE_MONTHS,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.post("/points/overrides")
@console_view("points.rules")
def points_override_set() -> Any:
    """Set a product's or grade's level-1 rates: the existing override is changed, or one is created."""
    sess = db.session()
    errors: dict[str, str] = {}
    scope = request.form.get("scope", "")
    if scope not in OVERRIDE_SCOPES:
        errors["scope"] = "请选择商品或分销等级。"
    ref_id = id_value(form_text("ref_id", 32))
    if ref_id is None:
        errors["ref_id"] = "请输入商品或等级的 ID（数字）。"
    first, repeat = _rate("level1_first_bp", errors), _rate("level1_repeat_bp", errors)
    if errors:
        return points_rules(errors=errors, status=422)
    assert ref_id is not None
    existing = pq.override_for(sess, scope, ref_id)
    staff_id = current_staff().id
    try:
        if existing is None:
            rules.create_override(sess, scope=scope, ref_id=ref_id, level1_first_bp=first, level1_repeat_bp=repeat, staff_id=staff_id)
        else:
            rules.update_override(sess, existing.id, {"level1_first_bp": first, "level1_repeat_bp": repeat}, staff_id=staff_id)
    except ValidationError as error:
        cap = min(int(get_setting(sess, "reward_order_cap_bp")), rules.HARD_CAP_BP)
        return points_rules(errors=_override_errors(error, cap), status=error.http_status)
    except RewardOverrideExistsError:
        return points_rules(errors={"form": "该商品或等级刚刚已被设置覆盖，请刷新后再改。"}, status=409)
    flash(f"已保存{OVERRIDE_SCOPES[scope]} {ref_id} 的奖励比例。", "success")
    return redirect(url_for("console.points_rules") + "#overrides", 303)


@bp.post("/points/overrides/<int:override_id>/delete")
@console_view("points.rules")
def points_override_delete(override_id: int) -> Response:
    """Remove an override: the product or grade earns the default rates again."""
    rules.delete_override(db.session(), override_id, staff_id=current_staff().id)
    flash("已删除覆盖，恢复默认比例。", "success")
    return redirect(url_for("console.points_rules") + "#overrides", 303)


STAGE_FIELDS = {
    "name": "请填写名称（1–64 字）。",
    "min_monthly_sales_fen": "请输入每月本人销售额门槛（元，最多两位小数，大于 0）。",
    "bonus": "请输入奖励积分（最多两位小数，大于 0，最多 100,000）。",
    "consecutive_months": f"连续月数应为 1 到 {incentives.MAX_CONSECUTIVE_MONTHS}。",
}


def hundredths(raw: str, *, limit: int) -> int | None:
    """``"12.5"`` (yuan or points) as 1250 hundredths, within 1 … ``limit``; None for anything else."""
    raw = raw.strip()
    whole, _, cents = raw.partition(".")
    if not whole.isdigit() or len(whole) > 12 or (cents and (not cents.isdigit() or len(cents) > 2)):
        return None
    value = int(whole) * 100 + int(cents.ljust(2, "0") or 0)
    return value if 1 <= value <= limit else None


def _stage_form(errors: dict[str, str], *, partial: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    name = form_text("name", 200)
    if name or not partial:
        if not 1 <= len(name) <= 64:
            errors["name"] = STAGE_FIELDS["name"]
        values["name"] = name
    for field, limit in (("min_monthly_sales_fen", MAX_THRESHOLD_FEN), ("bonus", incentives.MAX_STAGE_BONUS)):
        raw = form_text(field, 32)
        if raw or not partial:
            value = hundredths(raw, limit=limit)
            if value is None:
                errors[field] = STAGE_FIELDS[field]
            values[field] = value
    raw = form_text("consecutive_months", 8) or ("" if partial else "1")
    if raw:
        months = int(raw) if raw.isdigit() and len(raw) <= 3 else 0
        if not 1 <= months <= incentives.MAX_CONSECUTIVE_MONTHS:
            errors["consecutive_months"] = STAGE_FIELDS["consecutive_months"]
        values["consecutive_months"] = months
    if "active" in request.form:
        values["active"] = request.form.get("active") == "1"
    return values


@bp.post("/points/stage-rules")
@console_view("points.rules")
def points_stage_rule_create() -> Any:
    """A stage bonus on own monthly sales (optionally N months running); never on headcount."""
    errors: dict[str, str] = {}
    values = _stage_form(errors, partial=False)
    if errors:
        return points_rules(errors={f"stage-new-{k}": v for k, v in errors.items()}, status=422)
    try:
        rule = incentives.create_stage_rule(db.session(), **values, staff_id=current_staff().id, audit=True)
    except ValidationError as error:
        return points_rules(errors={f"stage-new-{k}": STAGE_FIELDS.get(k, v) for k, v in field_errors(error).items()}, status=error.http_status)
    flash(f"已添加阶段奖励“{rule.name}”。", "success")
    return redirect(url_for("console.points_rules") + "#stage-rules", 303)


@bp.post("/points/stage-rules/<int:rule_id>")
@console_view("points.rules")
def points_stage_rule_update(rule_id: int) -> Any:
    """Change a stage rule, or switch it on or off (rules are never deleted: postings name them)."""
    errors: dict[str, str] = {}
    values = _stage_form(errors, partial=True)
    if errors:
        return points_rules(errors={f"stage-{rule_id}-{k}": v for k, v in errors.items()}, status=422)
    try:
        rule = incentives.update_stage_rule(db.session(), rule_id, values, staff_id=current_staff().id)
    except ValidationError as error:
        return points_rules(errors={f"stage-{rule_id}-{k}": STAGE_FIELDS.get(k, v) for k, v in field_errors(error).items()}, status=error.http_status)
    flash(f"已更新阶段奖励“{rule.name}”（{'启用' if rule.active else '停用'}）。", "success")
    return redirect(url_for("console.points_rules") + "#stage-rules", 303)


# -- compliance ------------------------------------------------------------------------------------

#: Violations shown on the page; the command ``compliance-report`` prints every one.
VIOLATIONS_SHOWN = 200


@bp.get("/points/compliance")
@console_view("points.compliance")
def points_compliance() -> Any:
    """The compliance report (guard 7): the rules in force and each guard's status, with what breaks it."""
    report = compliance_report(db.session()).as_dict()
    return render_template(
        "console/points_compliance.html",
        report=report,
        titles=GUARD_TITLES,
        violations=report["violations"][:VIOLATIONS_SHOWN],
    )
