"""The console's redemption pages: the fulfilment queue (goods shipped with carrier and tracking,
privileges granted, cancellations that return the points), the catalog, and the invite codes.

Actions call the services of ``server/points/redemption.py`` exactly as the admin API
(``server/points/routes.py``) calls them; pages read through ``points_queries``.
"""
from __future__ import annotations

from typing import Any, Mapping

from flask import flash, redirect, render_template, request, url_for

from server import db
from server.console import points_queries as pq
from server.console.points_pages import hundredths, id_value
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import ValidationError
from server.points import redemption as points
from server.points.models import (
    InviteCode,
    ItemKind,
    Redemption,
    RedemptionStatus,
)
from server.points.redemption import (
    IllegalRedemptionTransitionError,
    InviteCodeUsedError,
)

#: The note the service keeps on a decision: the admin API's limit.
NOTE_LIMIT = 255


def enum_arg(args: Mapping[str, str], name: str, enum: Any, problems: list[str], what: str) -> Any:
    raw = args.get(name, "")
    if raw and raw not in enum._value2member_map_:
        problems.append(f"未知的{what}，已显示全部。")
        return None
    return enum(raw) if raw else None


# -- the fulfilment queue --------------------------------------------------------------------------


def redemption_filters(args: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The redemption queue's selection ((redemption, item) rows) for the filters in ``args``, and their problems."""
    problems: list[str] = []
    state = enum_arg(args, "status", RedemptionStatus, problems, "状态")
    kind = enum_arg(args, "kind", ItemKind, problems, "类型")
    member_arg = args.get("member", "").strip()
    member_id = id_value(member_arg) if member_arg else None
    if member_arg and member_id is None:
        problems.append("会员 ID 应为数字。")
    return pq.redemptions_query(status=state, kind=kind, member_id=member_id), problems


@bp.get("/redemptions")
@console_view("redemptions")
def redemptions(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """Redemptions, newest first, by status, kind and member; placed ones are fulfilled or cancelled here."""
    sess = db.session()
    stmt, problems = redemption_filters(request.args)
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess,
        stmt,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
        order_by=(Redemption.id.desc(),),
        count_column=Redemption.id,
        scalars=False,
        count_cap=COUNT_CAP,
    )
    return render_template(
        "console/redemptions.html",
        rows=rows,
        members=pq.members_by_id(sess, {r.member_id for r, _ in rows}),
        codes=points.invite_codes_for(sess, [r.id for r, item in rows if item.kind == ItemKind.invite_code]),
        statuses=list(RedemptionStatus),
        kinds=list(ItemKind),
        args=request.args,
        problems=problems,
        pager=pages(total),
        errors=errors or {},
        form=request.form if errors else {},
    ), status


def _back() -> str:
    """The queue as it was filtered when the form was posted (only our own path is followed)."""
    target = request.form.get("back", "")
    return target if target.startswith("/console/redemptions") and "//" not in target and "\\" not in target else url_for("console.redemptions")


@bp.post("/redemptions/<int:redemption_id>/fulfil")
@console_view("redemptions.fulfil")
def redemptions_fulfil(redemption_id: int) -> Any:
    """Mark a placed redemption delivered: goods with their carrier and tracking number (kept in the note)."""
    sess = db.session()
    row = points.get_redemption(sess, redemption_id)
    item = points.get_item(sess, row.item_id)
    note = form_text("note", 1000)
    if item.kind == ItemKind.goods:
        carrier, tracking = form_text("carrier", 64), form_text("tracking_no", 64)
        if not carrier or not tracking:
            return redemptions(errors={f"row-{redemption_id}": "发货请填写快递公司和运单号。"}, status=422)
        note = f"{carrier} {tracking}" + (f"；{note}" if note else "")
    if len(note) > NOTE_LIMIT:
        return redemptions(errors={f"row-{redemption_id}": f"备注最多 {NOTE_LIMIT} 字。"}, status=422)
    try:
        points.fulfil_redemption(sess, redemption_id, staff_id=current_staff().id, note=note)
    except IllegalRedemptionTransitionError:
        return redemptions(errors={f"row-{redemption_id}": "该兑换已处理过，不能再发放。"}, status=409)
    flash(f"兑换 {redemption_id} 已{'发货' if item.kind == ItemKind.goods else '发放'}。", "success")
    return redirect(_back(), 303)


@bp.post("/redemptions/<int:redemption_id>/cancel")
@console_view("redemptions.cancel")
def redemptions_cancel(redemption_id: int) -> Any:
    """Cancel a placed redemption: stock released, points returned (debt first), unused invite codes revoked."""
    note = form_text("note", 1000)
    if len(note) > NOTE_LIMIT:
        return redemptions(errors={f"row-{redemption_id}": f"原因最多 {NOTE_LIMIT} 字。"}, status=422)
    try:
        row = points.cancel_redemption(db.session(), redemption_id, staff_id=current_staff().id, note=note)
    except IllegalRedemptionTransitionError:
        return redemptions(errors={f"row-{redemption_id}": "该兑换已处理过，不能取消。"}, status=409)
    except InviteCodeUsedError:
        return redemptions(errors={f"row-{redemption_id}": "其中的邀请码已被使用，不能取消。"}, status=409)
    flash(f"兑换 {redemption_id} 已取消，{row.total / 100:,.2f} 积分已退回。", "success")
    return redirect(_back(), 303)


# -- the catalog ----------------------------------------------------------------------------------

#: Bounds of the admin API's item body (``ItemBody``), for the form's messages.
MAX_STOCK, MAX_LIMIT, MAX_SORT = 10_000_000, 10_000, 1_000_000


def _optional_int(name: str, lo: int, hi: int, errors: dict[str, str], message: str) -> int | None:
    raw = form_text(name, 16).lstrip("+")
    if not raw:
        return None
    digits = raw[1:] if raw.startswith("-") else raw
    if not digits.isdigit() or len(digits) > 9 or not lo <= int(raw) <= hi:
        errors[name] = message
        return None
    return int(raw)


def _item_form(errors: dict[str, str], *, creating: bool) -> dict[str, Any]:
    """The item form's fields as the service takes them; each bad field gets its message in ``errors``."""
    values: dict[str, Any] = {}
    title = form_text("title", 400)
    if not title or len(title) > 128:
        errors["title"] = "请填写名称（最多 128 字）。"
    values["title"] = title
    description = request.form.get("description", "").strip()
    if len(description) > 5000:
        errors["description"] = "说明最多 5000 字。"
    values["description"] = description[:5000]
    image_url = form_text("image_url", 1000)
    if image_url and (len(image_url) > 512 or not image_url.startswith(("https://", "http://"))):
        errors["image_url"] = "图片地址应以 https:// 或 http:// 开头，最多 512 字符。"
    values["image_url"] = image_url
    raw_price = form_text("price", 32)
    if raw_price:
        price = hundredths(raw_price, limit=points.MAX_PRICE)
        if price is None:
            errors["price"] = "请输入价格（积分，最多两位小数，大于 0）。"
        values["price"] = price
    elif creating and request.form.get("kind") != ItemKind.invite_code.value:
        errors["price"] = "请输入价格（积分）。"
    limit = _optional_int("per_member_limit", 1, MAX_LIMIT, errors, f"每人限兑应为 1 到 {MAX_LIMIT:,}，留空不限。")
    values["per_member_limit"] = limit
    sort = _optional_int("sort", -MAX_SORT, MAX_SORT, errors, "排序应为整数。")
    values["sort"] = sort or 0
    if creating:
        values["stock"] = _optional_int("stock", 0, MAX_STOCK, errors, f"库存应为 0 到 {MAX_STOCK:,}，留空不限。")
    else:
        delta = _optional_int("stock_delta", -MAX_STOCK, MAX_STOCK, errors, "库存增减应为整数（负数为减少）。")
        if delta:
            values["stock_delta"] = delta
    return values


def _price_message(error: ValidationError) -> dict[str, str]:
    """The catalog service's refusals in Chinese, by field."""
    found: dict[str, str] = {}
    data = error.data if isinstance(error.data, dict) else {}
    for item in data.get("errors", []):
        field, message = str(item.get("field")), str(item.get("error"))
        if field == "price" and "at least" in message:
            found[field] = f"实物商品价格不能低于最低兑换价（设置 min_goods_price）：{message.split('at least ')[-1].split(' points')[0]} 积分。"
        elif field == "price" and "exactly" in message:
            found[field] = f"邀请码的价格固定为设置 invite_code_points：{message.split('exactly ')[-1].split(' points')[0]} 积分。"
        elif field == "stock_delta":
            found[field] = "该商品库存不限，不能增减。" if "unlimited" in message else "库存不能减到 0 以下。"
        else:
            found[field] = message
    return found or {"form": "输入有误，请检查后重试。"}


@bp.get("/redemptions/items")
@console_view("redemptions.catalog")
def redemptions_items(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """The catalog in its order (sort, then oldest), by kind and on sale or not; a form to add an item."""
    sess = db.session()
    problems: list[str] = []
    kind = enum_arg(request.args, "kind", ItemKind, problems, "类型")
    active_arg = request.args.get("active", "")
    active = {"1": True, "0": False}.get(active_arg)
    page = int_arg("page", 1)
    items, total = points.list_items(sess, active=active, kind=kind, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    return render_template(
        "console/redemption_items.html",
        items=items,
        kinds=list(ItemKind),
        args=request.args,
        problems=problems,
        pager=pages(total),
        invite_price=points.invite_code_price(sess),
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.post("/redemptions/items")
@console_view("redemptions.catalog")
def redemptions_item_create() -> Any:
    errors: dict[str, str] = {}
    kind_raw = request.form.get("kind", "")
    if kind_raw not in ItemKind._value2member_map_:
        errors["kind"] = "请选择类型。"
    values = _item_form(errors, creating=True)
    values["active"] = request.form.get("active", "1") == "1"
    if errors:
        return redemptions_items(errors=errors, status=422)
    try:
        item = points.create_item(db.session(), kind=ItemKind(kind_raw), **values, staff_id=current_staff().id)
    except ValidationError as error:
        return redemptions_items(errors=_price_message(error), status=error.http_status)
    flash(f"已添加“{item.title}”。", "success")
    return redirect(url_for("console.redemptions_items"), 303)


@bp.get("/redemptions/items/<int:item_id>")
@console_view("redemptions.catalog")
def redemptions_item(item_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    item = points.get_item(db.session(), item_id)
    return render_template("console/redemption_item.html", item=item, errors=errors or {}, form=request.form if errors else {}), status


@bp.post("/redemptions/items/<int:item_id>")
@console_view("redemptions.catalog")
def redemptions_item_update(item_id: int) -> Any:
    """Edit an item (stock is added to or taken from, never overwritten), or put it on or off sale."""
    sess = db.session()
    points.get_item(sess, item_id)
    errors: dict[str, str] = {}
    toggle = request.form.get("action") == "toggle"
    if toggle:
        # The catalog's on/off switch.
        changes: dict[str, Any] = {"active": request.form.get("active") == "1"}
    else:
        changes = _item_form(errors, creating=False)
        if changes.get("price") is None:
            changes.pop("price", None)
        if errors:
            return redemptions_item(item_id, errors=errors, status=422)
    try:
        item = points.update_item(sess, item_id, changes, staff_id=current_staff().id)
    except ValidationError as error:
        problems = _price_message(error)
        if toggle:
            return redemptions_items(errors={f"item-{item_id}": next(iter(problems.values()))}, status=error.http_status)
        return redemptions_item(item_id, errors=problems, status=error.http_status)
    if toggle:
        flash(f"“{item.title}”已{'上架' if item.active else '下架'}。", "success")
        return redirect(_back_items(), 303)
    flash(f"已保存“{item.title}”。", "success")
    return redirect(url_for("console.redemptions_item", item_id=item_id), 303)


def _back_items() -> str:
    target = request.form.get("back", "")
    return target if target.startswith("/console/redemptions/items") and "//" not in target and "\\" not in target else url_for("console.redemptions_items")


# -- invite codes ----------------------------------------------------------------------------------


@bp.get("/redemptions/invite-codes")
@console_view("redemptions")
def redemptions_invite_codes() -> Any:
    """Invite codes bought with points: who owns each, and who used it when."""
    sess = db.session()
    problems: list[str] = []
    used = {"1": True, "0": False}.get(request.args.get("used", ""))
    owner_arg = request.args.get("owner", "").strip()
    owner_id = id_value(owner_arg) if owner_arg else None
    if owner_arg and owner_id is None:
        problems.append("会员 ID 应为数字。")
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess,
        pq.invite_codes_query(used=used, owner_id=owner_id),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
        order_by=(InviteCode.id.desc(),),
        count_column=InviteCode.id,
        scalars=False,
        count_cap=COUNT_CAP,
    )
    people = {c.owner_id for c, _ in rows} | {c.used_by for c, _ in rows if c.used_by}
    return render_template(
        "console/invite_codes.html", rows=rows, members=pq.members_by_id(sess, people), args=request.args, problems=problems, pager=pages(total)
    )
