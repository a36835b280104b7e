"""The member's points in the zone: balances and entries, settlement statements, the redemption shop
and what they redeemed. The same services as the mini-program's ``/api/v1/points`` routes."""
from __future__ import annotations

import secrets
from typing import Any

import pydantic
from flask import redirect, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from server import db
from server.accounts.models import Member
from server.errors import AppError, ValidationError
from server.memberzone.routes import Pager, add_section, bp, member_error, page, page_arg, zone_view
from server.points import redemption as services
from server.points.models import AccountKind, ItemKind, Redemption
from server.points.queries import member_balances, statement_lines
from server.points.routes import RedeemBody, serialize_redemptions

#: The accounts a member can filter entries by, with their names.
ENTRY_TABS = (("", "全部"), ("available", "可用"), ("pending", "待结算"), ("debt", "待抵扣"))
CONTACT_FIELDS = ("name", "phone", "address")


@bp.get("/points")
@zone_view
def points(member: Member) -> Any:
    sess = db.session()
    account_arg = request.args.get("account", "")
    account = AccountKind(account_arg) if account_arg in {"available", "pending", "debt"} else None
    pager = Pager(page_arg(), 0)
    lines, total = services.member_entries(sess, member.id, account=account, offset=pager.offset, limit=pager.size)
    return page(
        "memberzone/points.html",
        tab="points",
        balances=member_balances(sess, member.id),
        lines=lines,
        account=account.value if account else "",
        tabs=ENTRY_TABS,
        pager=Pager(pager.page, total),
    )


@bp.get("/statements")
@zone_view
def statements(member: Member) -> Any:
    pager = Pager(page_arg(), 0)
    rows, total = services.member_statements(db.session(), member.id, offset=pager.offset, limit=pager.size)
    return page("memberzone/statements.html", tab="points", rows=rows, pager=Pager(pager.page, total))


@bp.get("/statements/<statement_id>")
def statement(statement_id: str) -> Any:
    # Any text is a page address here: what cannot be a statement is the zone's "not found" card, before sign-in.
    if not (statement_id.isascii() and statement_id.isdigit() and 0 < int(statement_id) < 2**63):
        raise services.StatementNotFoundError()
    return _statement(int(statement_id))


@zone_view
def _statement(member: Member, statement_id: int) -> Any:
    sess = db.session()
    row, run = services.member_statement(sess, member.id, statement_id)
    return page("memberzone/statement.html", tab="points", row=row, run=run, lines=statement_lines(sess, [row])[row.id])


# -- the redemption shop ---------------------------------------------------------------------------


def _shop(member: Member, status: int = 200, error: str = "", form: dict[str, str] | None = None) -> Any:
    sess = db.session()
    pager = Pager(page_arg(), 0)
    items, total = services.list_items(sess, active=True, offset=pager.offset, limit=pager.size)
    # One key per form shown: submitting the same form twice (a double tap, a resend) redeems once.
    keys = {item.id: secrets.token_hex(16) for item in items}
    if form and form.get("item_id", "").isdigit() and int(form["item_id"]) in keys:
        keys[int(form["item_id"])] = form.get("idempotency_key", "")
    return page(
        "memberzone/shop.html",
        status,
        tab="shop",
        items=items,
        keys=keys,
        balances=member_balances(sess, member.id),
        pager=Pager(pager.page, total),
        error=error,
        form=form or {},
        goods=ItemKind.goods,
    )


@bp.get("/shop")
@zone_view
def shop(member: Member) -> Any:
    return _shop(member)


def _redeem_body(form: dict[str, str]) -> RedeemBody:
    contact = {name: form.get(name, "").strip() for name in CONTACT_FIELDS}
    raw: dict[str, Any] = {"item_id": form.get("item_id", ""), "quantity": form.get("quantity", "1") or "1"}
    if any(contact.values()):
        raw["contact"] = contact
    return RedeemBody.model_validate(raw, strict=False)


@bp.post("/shop")
@zone_view
def redeem(member: Member) -> Response | Any:
    """Spend points on an item; the form's key makes a second submission return the first redemption."""
    form = {k: v for k, v in request.form.items() if k != "form_token"}
    try:
        key = services.check_idempotency_key(form.get("idempotency_key"))
    except services.IdempotencyKeyRequiredError:
        return _shop(member, 400, "页面已过期，请重新选择。")
    try:
        body = _redeem_body(form)
    except (pydantic.ValidationError, ValidationError):
        return _shop(member, 422, "请检查兑换数量和收货信息（姓名、手机号）。", form)
    try:
        result = services.redeem(
            db.session(),
            member.id,
            item_id=body.item_id,
            quantity=body.quantity,
            idempotency_key=key,
            contact=body.contact.model_dump() if body.contact else None,
        )
    except AppError as error:
        db.session().rollback()
        # The one refusal of the body the form could not already catch: goods need the consignee.
        message = "请填写完整的收货信息（收货人、手机号、地址）。" if isinstance(error, ValidationError) else member_error(error)
        return _shop(member, error.http_status, message, form)
    return redirect(url_for("memberzone.redemptions", done=result.redemption.id), code=303)


@bp.get("/redemptions")
@zone_view
def redemptions(member: Member) -> Any:
    sess = db.session()
    pager = Pager(page_arg(), 0)
    stmt = select(Redemption).where(Redemption.member_id == member.id)
    rows, total = db.paginate(sess, stmt, offset=pager.offset, limit=pager.size, order_by=(Redemption.id.desc(),))
    done = request.args.get("done", "")
    return page(
        "memberzone/redemptions.html",
        tab="shop",
        rows=serialize_redemptions(list(rows)),
        times={row.id: row.created_at for row in rows},
        pager=Pager(pager.page, total),
        notice="兑换成功，我们会尽快为你处理。" if done.isdigit() else "",
    )


add_section("memberzone.points", "积分明细", "可用、待结算与每一笔记录")
add_section("memberzone.statements", "结算单", "每期结算的积分")
add_section("memberzone.shop", "积分商城", "用积分兑换好物")
add_section("memberzone.redemptions", "我的兑换", "兑换记录与发货进度")
