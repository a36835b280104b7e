"""Partner channels: the list, a partner with its scenes, terms, period statement and payouts, on the services the
admin API's partner routes call (``referral.services`` and ``referral.payouts``)."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from server import db
from server.console import queries
from server.console.labels import COMMISSION_MODE
from server.console.lead_pages import fen_value
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import ConflictError, ValidationError
from server.referral import payouts, services
from server.referral.errors import NothingToPayError, PartnerExistsError, PartnerNotFoundError
from server.referral.models import Channel, Partner, Scene

#: The longest period a statement covers on the page, in days.
MAX_PERIOD_DAYS = 3660


@bp.get("/partners")
@console_view("partners")
def partners(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    page = int_arg("page", 1)
    rows, total = db.paginate(db.session(), select(Partner), offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(Partner.id.desc(),), count_cap=COUNT_CAP)
    return render_template(
        "console/partners.html", rows=rows, modes=COMMISSION_MODE, pager=pages(total), errors=errors or {}, form=request.form if errors else {}
    ), status


def _partner_or_404(partner_id: int) -> Partner:
    found = db.session().get(Partner, partner_id)
    if found is None:
        raise PartnerNotFoundError()
    return found


def _terms(errors: dict[str, str]) -> dict[str, Any]:
    """The commission terms of the partner form: fen per lead and basis points of a deal."""
    terms: dict[str, Any] = {}
    per_lead = request.form.get("per_lead", "").strip()[:20]
    if per_lead in ("", "0"):
        terms["per_lead_fen"] = 0
    elif (fen := fen_value(per_lead)) is not None and fen <= 10_000_000:
        terms["per_lead_fen"] = fen
    else:
        errors["per_lead"] = "每条有效线索的佣金请填写 0 到 100000 元。"
    rate = request.form.get("deal_rate", "").strip()[:10]
    percent = fen_value(rate) if rate not in ("", "0") else 0
    if percent is None or percent > 10_000:
        errors["deal_rate"] = "成交佣金比例请填写 0 到 100（%），最多两位小数。"
    else:
        terms["deal_rate_bp"] = percent
    return terms


@bp.post("/partners")
@console_view("partners.edit")
def partner_create() -> Any:
    errors: dict[str, str] = {}
    name = form_text("name", 64)
    mode = request.form.get("commission_mode", "")
    if not name:
        errors["name"] = "请填写渠道名称。"
    if mode not in COMMISSION_MODE:
        errors["commission_mode"] = "请选择结算方式。"
    terms = _terms(errors)
    if errors:
        return partners(errors=errors, status=422)
    values = {"name": name, "platform": form_text("platform", 32), "contact": form_text("contact", 128), "commission_mode": mode, **terms}
    try:
        created = services.create_partner(db.session(), values, staff_id=current_staff().id)
    except PartnerExistsError:
        return partners(errors={"name": "已有同名渠道。"}, status=409)
    flash(f"已创建渠道 {created.name}。", "success")
    return redirect(url_for("console.partner", partner_id=created.id), 303)


def _period(problems: list[str]) -> tuple[date, date]:
    """The statement's days, [from, to] inclusive in China time; last month by default."""
    first_of_month = queries.today().replace(day=1)
    default_start = (first_of_month - timedelta(days=1)).replace(day=1)
    start, end = default_start, first_of_month - timedelta(days=1)
    for name, default in (("from", default_start), ("to", end)):
        raw = request.args.get(name, "").strip()[:20]
        if not raw:
            continue
        try:
            value = date.fromisoformat(raw)
        except ValueError:
            problems.append(f"日期格式应为 YYYY-MM-DD：{raw}")
            continue
        if name == "from":
            start = value
        else:
            end = value
    if end < start or (end - start).days > MAX_PERIOD_DAYS or start.year < 2000:
        problems.append("结束日期不能早于开始日期，期间最长 10 年。")
        start, end = default_start, first_of_month - timedelta(days=1)
    return start, end


@bp.get("/partners/<int:partner_id>")
@console_view("partners")
def partner(partner_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    sess = db.session()
    found = _partner_or_404(partner_id)
    problems: list[str] = []
    start, end = _period(problems)
    statement = services.partner_statement(sess, found.id, queries.day_start(start), queries.day_start(end + timedelta(days=1)))
    scenes = list(sess.scalars(select(Scene).where(Scene.partner_id == found.id).order_by(Scene.created_at.desc()).limit(50)))
    return render_template(
        "console/partner.html",
        partner=found,
        modes=COMMISSION_MODE,
        statement=statement,
        start=start,
        end=end,
        period_over=end < queries.today(),
        scenes=scenes,
        base_url=current_app.config["PUBLIC_BASE_URL"],
        payouts=payouts.payouts_of(sess, found.id, limit=50),
        staff={s.id: s for s in queries.staff_names(sess)},
        problems=problems,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


def _back(partner_id: int, message: str, **args: Any) -> Response:
    flash(message, "success")
    return redirect(url_for("console.partner", partner_id=partner_id, **args), 303)


@bp.post("/partners/<int:partner_id>")
@console_view("partners.edit")
def partner_update(partner_id: int) -> Any:
    """Change the partner's contact, terms, or whether it is active."""
    _partner_or_404(partner_id)
    errors: dict[str, str] = {}
    changes: dict[str, Any] = {"platform": form_text("platform", 32), "contact": form_text("contact", 128), **_terms(errors)}
    changes["active"] = request.form.get("active") == "1"
    if errors:
        return partner(partner_id, errors=errors, status=422)
    services.update_partner(db.session(), partner_id, changes, staff_id=current_staff().id)
    return _back(partner_id, "已保存渠道信息。")


@bp.post("/partners/<int:partner_id>/scenes")
@console_view("partners.edit")
def partner_scene(partner_id: int) -> Any:
    """A tracked link for the partner to publish."""
    found = _partner_or_404(partner_id)
    if not found.active:
        return partner(partner_id, errors={"scene": "渠道已停用，不能生成新的推广码。"}, status=422)
    content_id = form_text("content_id", 64)
    services.create_scene(db.session(), channel=Channel.partner, partner_id=found.id, content_type="campaign" if content_id else "", content_id=content_id)
    return _back(partner_id, "已生成推广链接。")


@bp.post("/partners/<int:partner_id>/payouts")
@console_view("partners.pay")
def partner_payout(partner_id: int) -> Any:
    """Finance marks the statement's period paid: once; the same period again changes nothing."""
    _partner_or_404(partner_id)
    try:
        start, end = date.fromisoformat(request.form.get("from", "")[:20]), date.fromisoformat(request.form.get("to", "")[:20])
    except ValueError:
        return partner(partner_id, errors={"payout": "期间日期格式应为 YYYY-MM-DD。"}, status=422)
    if end < start or (end - start).days > MAX_PERIOD_DAYS or start.year < 2000:
        return partner(partner_id, errors={"payout": "结束日期不能早于开始日期，期间最长 10 年。"}, status=422)
    try:
        payout, created = payouts.mark_period_paid(
            db.session(),
            partner_id,
            queries.day_start(start),
            queries.day_start(end + timedelta(days=1)),
            staff_id=current_staff().id,
            reference=form_text("reference", 64),
        )
    except ValidationError:
        return partner(partner_id, errors={"payout": "只能为已经结束的期间付款（结束日期须早于今天）。"}, status=422)
    except NothingToPayError:
        return partner(partner_id, errors={"payout": "该期间没有未付的佣金。"}, status=409)
    except ConflictError:
        return partner(partner_id, errors={"payout": "有人刚刚付了其中一部分，请刷新后重试。"}, status=409)
    message = f"已标记 {payout.lines} 笔佣金已付。" if created else "该期间此前已标记付款，未重复记录。"
    return _back(partner_id, message, **{"from": start.isoformat(), "to": end.isoformat()})
