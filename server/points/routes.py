"""Points API: balances, entries, statements, the catalog and redemptions for members (/api/v1/points),
and the catalog, redemptions, adjustments and the ledger for staff (/admin/api/v1/points)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, request
from pydantic import AfterValidator, Field, StringConstraints
from sqlalchemy import select

from server import db
from server.accounts.auth import (
    current_member,
    current_staff,
    member_required,
    staff_required,
)
from server.accounts.models import Member, StaffRole
from server.api import (
    Body,
    LongText,
    NonBlank,
    Page,
    Query,
    iso,
    parse_body,
    parse_query,
)
from server.errors import NotFoundError, envelope
from server.points import incentives, rules, settlement
from server.points import queries as points_queries
from server.points import redemption as services
from server.points.models import (
    AccountKind,
    InviteCode,
    ItemKind,
    LedgerTransaction,
    Redemption,
    RedemptionItem,
    RedemptionStatus,
    RewardOverride,
    SettlementRun,
    StageBonusRule,
    Statement,
    TxKind,
)
from server.points.queries import member_balances
from server.points.settlement import MAX_GRANT

bp = Blueprint("points", __name__, url_prefix="/api/v1/points")
admin_bp = Blueprint("points_admin", __name__, url_prefix="/admin/api/v1/points")

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: A row id: BIGINT on MySQL, so anything larger cannot exist (and would overflow the driver).
RowId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Price = Annotated[int, Field(ge=1, le=services.MAX_PRICE)]
Stock = Annotated[int, Field(ge=0, le=10_000_000)]
Limit = Annotated[int, Field(ge=1, le=10_000)]
SortKey = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
Title = Annotated[NonBlank, StringConstraints(max_length=128)]
Description = LongText
Note = Annotated[str, StringConstraints(max_length=255)]
Kind = Literal["goods", "privilege", "invite_code"]


def _http_url(value: str) -> str:
    if value and not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value


Url = Annotated[str, StringConstraints(max_length=512), AfterValidator(_http_url)]


def _nonzero(value: int) -> int:
    if value == 0:
        raise ValueError("must not be zero")
    return value


class ItemBody(Body):
    kind: Kind
    title: Title
    description: Description = ""
    image_url: Url = ""
    #: Hundredths of a point; may be left out for an invite code (100 points).
    price: Price | None = None
    #: Null: unlimited.
    stock: Stock | None = None
    per_member_limit: Limit | None = None
    active: bool = True
    sort: SortKey = 0


class ItemPatchBody(Body):
    title: Title | None = None
    description: Description | None = None
    image_url: Url | None = None
    price: Price | None = None
    #: Null removes the limit; left out, it is unchanged.
    per_member_limit: Limit | None = None
    active: bool | None = None
    sort: SortKey | None = None
    #: Added to (or, negative, taken from) a finite stock; never below zero.
    stock_delta: Annotated[int, Field(ge=-10_000_000, le=10_000_000)] | None = None


class ContactBody(Body):
    name: Annotated[NonBlank, StringConstraints(max_length=32)]
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{5,20}$")]
    address: Annotated[str, StringConstraints(max_length=255)] = ""
    note: Note = ""


class RedeemBody(Body):
    item_id: RowId
    quantity: int = Field(1, ge=1, le=100)
    contact: ContactBody | None = None


class DecisionBody(Body):
    note: Note = ""


class AdjustmentBody(Body):
    member_id: RowId
    #: Hundredths of a point: positive credits, negative debits.
    amount: Annotated[int, Field(ge=-MAX_GRANT, le=MAX_GRANT), AfterValidator(_nonzero)]
    reason: Annotated[NonBlank, StringConstraints(max_length=255)]


class CatalogQuery(Page):
    kind: ItemKind | None = None


class AdminItemQuery(CatalogQuery):
    active: bool | None = None


class EntryQuery(Page):
    account: Literal["available", "pending", "matured", "debt"] | None = None


class RedemptionQuery(Page):
    status: RedemptionStatus | None = None


class AdminRedemptionQuery(RedemptionQuery):
    member_id: RowId | None = None
    item_id: RowId | None = None
    kind: ItemKind | None = None


class TransactionQuery(Page):
    member_id: RowId | None = None
    kind: TxKind | None = None


# -- serializers -------------------------------------------------------------------------



def _page(items: list[Any], total: int, query: Page) -> dict[str, Any]:
    return {"items": items, "total": total, "page": query.page}


def serialize_balances(member_id: int) -> dict[str, Any]:
    found = member_balances(db.session(), member_id)
    values = {"available": found.available, "pending": found.pending, "matured": found.matured, "debt": found.debt}
    return values | {"points": {k: services.points_text(v) for k, v in values.items()}}


def serialize_item(item: RedemptionItem, *, admin: bool = False) -> dict[str, Any]:
    data = {
        "id": item.id,
        "kind": item.kind.value,
        "title": item.title,
        "description": item.description,
        "image_url": item.image_url,
        "price": item.price,
        "price_points": services.points_text(item.price),
        "stock": item.stock,
        "per_member_limit": item.per_member_limit,
        "sort": item.sort,
    }
    if admin:
        data.update(active=item.active, created_at=iso(item.created_at))
    return data


def serialize_invite_code(code: InviteCode, revoked_at: datetime | None, *, admin: bool = False) -> dict[str, Any]:
    state = "used" if code.used_by is not None else "revoked" if revoked_at is not None else "unused"
    data: dict[str, Any] = {
        "code": code.scene_code,
        "redemption_id": code.redemption_id,
        "state": state,
        "used": code.used_by is not None,
        "used_at": iso(code.used_at),
        "created_at": iso(code.created_at),
    }
    if admin:
        data.update(owner_id=code.owner_id, used_by=code.used_by)
    return data


def serialize_redemptions(rows: list[Redemption], *, admin: bool = False) -> list[dict[str, Any]]:
    sess = db.session()
    items = {i.id: i for i in sess.scalars(select(RedemptionItem).where(RedemptionItem.id.in_({r.item_id for r in rows})))} if rows else {}
    codes = services.invite_codes_for(sess, [r.id for r in rows if items[r.item_id].kind == ItemKind.invite_code])
    out = []
    for row in rows:
        item = items[row.item_id]
        data: dict[str, Any] = {
            "id": row.id,
            "item": {"id": item.id, "kind": item.kind.value, "title": item.title, "image_url": item.image_url},
            "quantity": row.quantity,
            "total": row.total,
            "total_points": services.points_text(row.total),
            "status": row.status.value,
            "contact": row.contact,
            "note": row.staff_note,
            "created_at": iso(row.created_at),
            "decided_at": iso(row.decided_at),
            "invite_codes": [serialize_invite_code(c, revoked, admin=admin) for c, revoked in codes.get(row.id, [])],
        }
        if admin:
            data.update(member_id=row.member_id, idempotency_key=row.idempotency_key, decided_by=row.decided_by)
        out.append(data)
    return out


def serialize_redemption(row: Redemption, *, admin: bool = False) -> dict[str, Any]:
    return serialize_redemptions([row], admin=admin)[0]


def serialize_entry(line: services.EntryLine) -> dict[str, Any]:
    tx = line.transaction
    return {
        "id": line.entry.id,
        "amount": line.entry.amount,
        "amount_points": services.points_text(line.entry.amount),
        "account": line.account.value,
        "time": iso(line.entry.created_at),
        "transaction": {
            "id": tx.id,
            "kind": tx.kind.value,
            "reason": tx.reason,
            "out_trade_no": line.out_trade_no,
            "level": tx.level,
            "rule": line.rule,
        },
    }


def serialize_transaction(tx: LedgerTransaction, lines: list[services.EntryLine]) -> dict[str, Any]:
    out_trade_no = next((line.out_trade_no for line in lines if line.out_trade_no), None)
    rule = next((line.rule for line in lines if line.rule), None)
    return {
        "id": tx.id,
        "kind": tx.kind.value,
        "idempotency_key": tx.idempotency_key,
        "member_id": tx.member_id,
        "order_id": tx.order_id,
        "out_trade_no": out_trade_no,
        "level": tx.level,
        "rule": rule,
        "reverses_id": tx.reverses_id,
        "reason": tx.reason,
        "actor": tx.actor,
        "detail": tx.detail,
        "time": iso(tx.created_at),
        "entries": [{"id": line.entry.id, "account": line.account.value, "member_id": line.member_id, "amount": line.entry.amount} for line in lines],
    }


def serialize_statement(row: Statement, run: SettlementRun, *, lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    amounts = {"settled": row.settled, "debt_repaid": row.debt_repaid, "credited": row.credited, "available_after": row.available_after, "debt_after": row.debt_after}
    data: dict[str, Any] = {"id": row.id, "period": run.period, "mode": run.mode, **amounts}
    data["points"] = {k: services.points_text(v) for k, v in amounts.items()}
    data["created_at"] = iso(row.created_at)
    if lines is not None:
        data["lines"] = lines
    return data


def _idempotency_key() -> str:
    return services.check_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))


def _redemptions_page(stmt: Any, query: Page, *, admin: bool = False) -> dict[str, Any]:
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=(Redemption.id.desc(),))
    return _page(serialize_redemptions(rows, admin=admin), total, query)


# -- members -----------------------------------------------------------------------------


@bp.get("")
@member_required
def my_balances() -> Any:
    """Balances in hundredths of a point, and as people read them."""
    return envelope(serialize_balances(current_member().id))


@bp.get("/entries")
@member_required
def my_entries() -> Any:
    query = parse_query(EntryQuery)
    account = AccountKind(query.account) if query.account else None
    lines, total = services.member_entries(db.session(), current_member().id, account=account, offset=query.offset, limit=query.page_size)
    return envelope(_page([serialize_entry(line) for line in lines], total, query))


@bp.get("/statements")
@member_required
def my_statements() -> Any:
    query = parse_query(Page)
    rows, total = services.member_statements(db.session(), current_member().id, offset=query.offset, limit=query.page_size)
    return envelope(_page([serialize_statement(s, run) for s, run in rows], total, query))


@bp.get("/statements/<int:statement_id>")
@member_required
def my_statement(statement_id: int) -> Any:
    sess = db.session()
    row, run = services.member_statement(sess, current_member().id, statement_id)
    return envelope(serialize_statement(row, run, lines=points_queries.statement_lines(sess, [row])[row.id]))


@bp.get("/catalog")
def catalog() -> Any:
    """Active items in catalog order; no sign-in needed."""
    query = parse_query(CatalogQuery)
    items, total = services.list_items(db.session(), active=True, kind=query.kind, offset=query.offset, limit=query.page_size)
    return envelope(_page([serialize_item(i) for i in items], total, query))


@bp.post("/redemptions")
@member_required
def redeem() -> Any:
    """Spend points; the Idempotency-Key header makes a retry return the first redemption instead of paying twice."""
    key = _idempotency_key()
    body = parse_body(RedeemBody)
    result = services.redeem(
        db.session(),
        current_member().id,
        item_id=body.item_id,
        quantity=body.quantity,
        idempotency_key=key,
        contact=body.contact.model_dump() if body.contact else None,
    )
    return envelope(serialize_redemption(result.redemption), status=201 if result.new else 200)


@bp.get("/redemptions")
@member_required
def my_redemptions() -> Any:
    query = parse_query(RedemptionQuery)
    stmt = select(Redemption).where(Redemption.member_id == current_member().id)
    if query.status:
        stmt = stmt.where(Redemption.status == query.status)
    return envelope(_redemptions_page(stmt, query))


@bp.get("/redemptions/<int:redemption_id>")
@member_required
def my_redemption(redemption_id: int) -> Any:
    return envelope(serialize_redemption(services.get_redemption(db.session(), redemption_id, member_id=current_member().id)))


@bp.get("/invite-codes")
@member_required
def my_invite_codes() -> Any:
    """The member's invite codes: each is a scene to hand out; whoever signs in with it is bound to the member."""
    query = parse_query(Page)
    rows, total = services.invite_codes_page(db.session(), current_member().id, offset=query.offset, limit=query.page_size)
    return envelope(_page([serialize_invite_code(code, revoked) for code, revoked in rows], total, query))


# -- console: catalog --------------------------------------------------------------------


@admin_bp.get("/items")
@staff_required(StaffRole.operations)
def admin_list_items() -> Any:
    query = parse_query(AdminItemQuery)
    items, total = services.list_items(db.session(), active=query.active, kind=query.kind, offset=query.offset, limit=query.page_size)
    return envelope(_page([serialize_item(i, admin=True) for i in items], total, query))


@admin_bp.post("/items")
@staff_required(StaffRole.operations)
def admin_create_item() -> Any:
    body = parse_body(ItemBody)
    sess = db.session()
    item = services.create_item(sess, **(body.model_dump() | {"kind": ItemKind(body.kind)}), staff_id=current_staff().id)
    return envelope(serialize_item(item, admin=True), status=201)


@admin_bp.get("/items/<int:item_id>")
@staff_required(StaffRole.operations)
def admin_get_item(item_id: int) -> Any:
    return envelope(serialize_item(services.get_item(db.session(), item_id), admin=True))


@admin_bp.patch("/items/<int:item_id>")
@staff_required(StaffRole.operations)
def admin_patch_item(item_id: int) -> Any:
    body = parse_body(ItemPatchBody)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "per_member_limit"}
    sess = db.session()
    item = services.update_item(sess, item_id, changes, staff_id=current_staff().id)
    return envelope(serialize_item(item, admin=True))


@admin_bp.delete("/items/<int:item_id>")
@staff_required(StaffRole.operations)
def admin_delete_item(item_id: int) -> Any:
    sess = db.session()
    services.delete_item(sess, item_id, staff_id=current_staff().id)
    return envelope(None)


# -- console: redemptions ----------------------------------------------------------------


@admin_bp.get("/redemptions")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_list_redemptions() -> Any:
    query = parse_query(AdminRedemptionQuery)
    stmt = select(Redemption)
    for column, value in ((Redemption.status, query.status), (Redemption.member_id, query.member_id), (Redemption.item_id, query.item_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if query.kind is not None:
        stmt = stmt.join(RedemptionItem, RedemptionItem.id == Redemption.item_id).where(RedemptionItem.kind == query.kind)
    return envelope(_redemptions_page(stmt, query, admin=True))


@admin_bp.get("/redemptions/<int:redemption_id>")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_get_redemption(redemption_id: int) -> Any:
    return envelope(serialize_redemption(services.get_redemption(db.session(), redemption_id), admin=True))


@admin_bp.post("/redemptions/<int:redemption_id>/fulfil")
@staff_required(StaffRole.operations)
def admin_fulfil(redemption_id: int) -> Any:
    body = parse_body(DecisionBody)
    sess = db.session()
    row = services.fulfil_redemption(sess, redemption_id, staff_id=current_staff().id, note=body.note)
    return envelope(serialize_redemption(row, admin=True))


@admin_bp.post("/redemptions/<int:redemption_id>/cancel")
@staff_required(StaffRole.operations)
def admin_cancel(redemption_id: int) -> Any:
    """Cancel a placed redemption: stock released, points returned (debt paid first), unused invite codes revoked."""
    body = parse_body(DecisionBody)
    sess = db.session()
    row = services.cancel_redemption(sess, redemption_id, staff_id=current_staff().id, note=body.note)
    return envelope(serialize_redemption(row, admin=True))


# -- console: adjustments and the ledger ------------------------------------------------


@admin_bp.post("/adjustments")
@staff_required(StaffRole.owner)
def admin_adjust() -> Any:
    """The owner credits or debits a member's available points, once per Idempotency-Key; audited."""
    key = _idempotency_key()
    body = parse_body(AdjustmentBody)
    sess = db.session()
    staff = current_staff()
    result = services.adjust_points(sess, staff_id=staff.id, member_id=body.member_id, amount=body.amount, reason=body.reason, idempotency_key=key)
    grant = result.grant
    (tx, lines), = services.transactions_page(sess, transaction_id=grant.transaction.id)[0]
    data = {"transaction": serialize_transaction(tx, lines), "balances": serialize_balances(body.member_id)}
    return envelope(data, status=201 if result.new else 200)


@admin_bp.get("/members/<int:member_id>")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_member_points(member_id: int) -> Any:
    """A member's balances and most recent entries."""
    sess = db.session()
    if sess.get(Member, member_id) is None:
        raise NotFoundError("no such member")
    lines, total = services.member_entries(sess, member_id, limit=20)
    return envelope({"member_id": member_id, "balances": serialize_balances(member_id), "recent_entries": [serialize_entry(line) for line in lines], "entries_total": total})


@admin_bp.get("/transactions")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_transactions() -> Any:
    query = parse_query(TransactionQuery)
    rows, total = services.transactions_page(db.session(), member_id=query.member_id, kind=query.kind, offset=query.offset, limit=query.page_size)
    return envelope(_page([serialize_transaction(tx, lines) for tx, lines in rows], total, query))


# -- settlement runs -----------------------------------------------------------------------------


def serialize_run(run: SettlementRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "period": run.period,
        "mode": run.mode,
        "actor": run.actor,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "members": run.members,
        "total": run.total,
        "points": {"total": services.points_text(run.total)},
    }


def serialize_manual_settlement(job: settlement.ManualSettlement) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state,
        "started_by": job.started_by,
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "progress": job.progress,
        "run": serialize_run(job.run) if job.run else None,
    }


def serialize_run_statement(row: Statement, member: Member) -> dict[str, Any]:
    amounts = {"settled": row.settled, "debt_repaid": row.debt_repaid, "credited": row.credited, "available_after": row.available_after, "debt_after": row.debt_after}
    return {
        "id": row.id,
        "member": {"id": member.id, "nickname": member.nickname},
        **amounts,
        "points": {k: services.points_text(v) for k, v in amounts.items()},
        "created_at": iso(row.created_at),
    }


@admin_bp.get("/settlements")
@staff_required(StaffRole.finance)
def admin_settlement_runs() -> Any:
    """Settlement runs, newest first: scheduled, started by hand and from the command line."""
    query = parse_query(Page)
    rows, total = db.paginate(db.session(), points_queries.runs_query(), offset=query.offset, limit=query.page_size, order_by=(SettlementRun.id.desc(),))
    return envelope(_page([serialize_run(run) for run in rows], total, query))


@admin_bp.post("/settlements")
@staff_required(StaffRole.owner)
def admin_start_settlement() -> Any:
    """Settle now in the merchant's mode, in the background (409, 40949, while one started by hand runs); audited."""
    sess = db.session()
    claim = settlement.start_manual_settlement(sess, staff_id=current_staff().id)
    sess.flush()
    job = settlement.manual_settlement(sess, claim.id)
    assert job is not None  # the claim was made just now
    return envelope(serialize_manual_settlement(job), status=202)


@admin_bp.get("/settlements/jobs/<int:job_id>")
@staff_required(StaffRole.finance)
def admin_settlement_job(job_id: int) -> Any:
    """A settlement started by hand: running (with progress), done (with its run) or failed."""
    job = settlement.manual_settlement(db.session(), job_id)
    if job is None:
        raise NotFoundError("no such settlement job")
    return envelope(serialize_manual_settlement(job))


@admin_bp.get("/settlements/<int:run_id>")
@staff_required(StaffRole.finance)
def admin_settlement_run(run_id: int) -> Any:
    """One run with a page of its statements, one per member settled."""
    query = parse_query(Page)
    sess = db.session()
    run = sess.get(SettlementRun, run_id)
    if run is None:
        raise NotFoundError("no such settlement run")
    rows, total = db.paginate(
        sess, points_queries.statements_query(run.id), offset=query.offset, limit=query.page_size, order_by=(Statement.member_id,), count_column=Statement.id, scalars=False
    )
    return envelope(serialize_run(run) | {"statements": _page([serialize_run_statement(row, member) for row, member in rows], total, query)})


# -- console: reward overrides and stage bonus rules (owner only) ------------------------------------

Rate = Annotated[int, Field(ge=0, le=rules.HARD_CAP_BP)]
#: The largest monthly threshold a stage rule takes: one hundred million yuan, as for any amount.
MAX_THRESHOLD_FEN = 100_000_000_00


class OverrideQuery(Query):
    scope: Literal["product", "grade"] | None = None


class OverrideBody(Body):
    scope: Literal["product", "grade"]
    ref_id: RowId
    #: Null: the merchant's default applies to first orders.
    level1_first_bp: Rate | None = None
    #: Null: the merchant's default applies to repeat business.
    level1_repeat_bp: Rate | None = None


class OverridePatchBody(Body):
    #: A rate sent as null falls back to the default; one left out is unchanged.
    level1_first_bp: Rate | None = None
    level1_repeat_bp: Rate | None = None


class StageRuleBody(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    min_monthly_sales_fen: Annotated[int, Field(ge=1, le=MAX_THRESHOLD_FEN)]
    bonus: Annotated[int, Field(ge=1, le=incentives.MAX_STAGE_BONUS)]
    consecutive_months: Annotated[int, Field(ge=1, le=incentives.MAX_CONSECUTIVE_MONTHS)] = 1
    active: bool = True


class StageRulePatchBody(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = None
    min_monthly_sales_fen: Annotated[int, Field(ge=1, le=MAX_THRESHOLD_FEN)] | None = None
    bonus: Annotated[int, Field(ge=1, le=incentives.MAX_STAGE_BONUS)] | None = None
    consecutive_months: Annotated[int, Field(ge=1, le=incentives.MAX_CONSECUTIVE_MONTHS)] | None = None
    active: bool | None = None


def serialize_override(row: RewardOverride) -> dict[str, Any]:
    return {
        "id": row.id,
        "scope": row.scope,
        "ref_id": row.ref_id,
        "level1_first_bp": row.level1_first_bp,
        "level1_repeat_bp": row.level1_repeat_bp,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def serialize_stage_rule(rule: StageBonusRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "min_monthly_sales_fen": rule.min_monthly_sales_fen,
        "consecutive_months": rule.consecutive_months,
        "bonus": rule.bonus,
        "active": rule.active,
    }


@admin_bp.get("/reward-overrides")
@staff_required(StaffRole.owner)
def list_reward_overrides() -> Any:
    query = parse_query(OverrideQuery)
    return envelope({"items": [serialize_override(row) for row in rules.list_overrides(db.session(), scope=query.scope)]})


@admin_bp.post("/reward-overrides")
@staff_required(StaffRole.owner)
def create_reward_override() -> Any:
    body = parse_body(OverrideBody)
    row = rules.create_override(db.session(), **body.model_dump(), staff_id=current_staff().id)
    return envelope(serialize_override(row), status=201)


@admin_bp.patch("/reward-overrides/<int:override_id>")
@staff_required(StaffRole.owner)
def patch_reward_override(override_id: int) -> Any:
    body = parse_body(OverridePatchBody)
    row = rules.update_override(db.session(), override_id, body.model_dump(exclude_unset=True), staff_id=current_staff().id)
    return envelope(serialize_override(row))


@admin_bp.delete("/reward-overrides/<int:override_id>")
@staff_required(StaffRole.owner)
def delete_reward_override(override_id: int) -> Any:
    rules.delete_override(db.session(), override_id, staff_id=current_staff().id)
    return envelope(None)


@admin_bp.get("/stage-rules")
@staff_required(StaffRole.owner)
def list_stage_rules() -> Any:
    return envelope({"items": [serialize_stage_rule(rule) for rule in incentives.list_stage_rules(db.session())]})


@admin_bp.post("/stage-rules")
@staff_required(StaffRole.owner)
def create_stage_rule() -> Any:
    body = parse_body(StageRuleBody)
    rule = incentives.create_stage_rule(db.session(), **body.model_dump(), staff_id=current_staff().id, audit=True)
    return envelope(serialize_stage_rule(rule), status=201)


@admin_bp.patch("/stage-rules/<int:rule_id>")
@staff_required(StaffRole.owner)
def patch_stage_rule(rule_id: int) -> Any:
    body = parse_body(StageRulePatchBody)
    rule = incentives.update_stage_rule(db.session(), rule_id, body.model_dump(exclude_none=True), staff_id=current_staff().id)
    return envelope(serialize_stage_rule(rule))
