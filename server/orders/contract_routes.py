"""Offline contracts in the console (/admin/api/v1): operations opens and cancels, finance records money."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Annotated, Any, TypeVar

from flask import Blueprint, request
from pydantic import Field, StringConstraints, field_validator
from sqlalchemy import select

from server import db
from server.accounts.auth import current_staff, staff_required
from server.accounts.models import StaffRole
from server.api import Body, Instant, NonBlank, Page, iso, parse_body, parse_query
from server.db import utcnow
from server.errors import envelope
from server.orders import contracts
from server.orders.models import Installment, Order, OrderKind, OrderStatus
from server.orders.routes import MAX_FEN, serialize_order

admin_bp = Blueprint("contracts_admin", __name__, url_prefix="/admin/api/v1")

B = TypeVar("B", bound=Body)
#: Monthly payments over five years; more than that is a data-entry mistake.
MAX_INSTALLMENTS = 60
#: Clock drift tolerated between the clerk's machine and ours for a receipt time.
RECEIPT_CLOCK_SKEW = timedelta(minutes=5)


class InstallmentBody(Body):
    amount_fen: int = Field(ge=1, le=MAX_FEN)
    #: A calendar day ("2025-03-31"); JSON has no date type, so this one field parses text.
    due_date: date | None = Field(None, strict=False)


class ContractBody(Body):
    lead_id: int = Field(ge=1)
    title: Annotated[NonBlank, StringConstraints(max_length=128)]
    amount_fen: int = Field(ge=1, le=MAX_FEN)
    #: In payment order; the last one is the final payment (尾款).
    installments: list[InstallmentBody] = Field(min_length=1, max_length=MAX_INSTALLMENTS)
    #: The earlier contract this one continues (phase 2, 3, …).
    parent_order_id: int | None = Field(None, ge=1)


class ReceiveBody(Body):
    #: When the money arrived (bank statement time); now if omitted; no offset means UTC.
    received_at: Instant | None = Field(None, strict=False)
    note: Annotated[str, StringConstraints(max_length=255)] = ""

    @field_validator("received_at")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value > utcnow() + RECEIPT_CLOCK_SKEW:
            raise ValueError("a payment cannot be received in the future")
        return value


class CancelBody(Body):
    reason: Annotated[str, StringConstraints(max_length=255)] = ""


class ContractListQuery(Page):
    status: OrderStatus | None = None
    member_id: int | None = None
    lead_id: int | None = None


def _optional_body(model: type[B]) -> B:
    """Bodies whose fields are all optional may be left out altogether."""
    return parse_body(model) if request.get_data() else model()


def _due(day: date | None) -> datetime | None:
    return datetime.combine(day, time(), tzinfo=timezone.utc) if day else None


# -- serializers ---------------------------------------------------------------------


def serialize_installment(installment: Installment, last_seq: int) -> dict[str, Any]:
    return {
        "seq": installment.seq,
        "amount_fen": installment.amount_fen,
        "due_date": installment.due_date.date().isoformat() if installment.due_date else None,
        "received_at": iso(installment.received_at),
        "recorded_by": installment.recorded_by,
        "note": installment.note,
        "final": installment.seq == last_seq,
    }


def serialize_contract(order: Order, progress: tuple[int, int], *, detail: bool = False) -> dict[str, Any]:
    received, count = progress
    return serialize_order(order, detail=detail) | {
        "member_id": order.member_id,
        "inviter_id": order.inviter_id,
        "upline_id": order.upline_id,
        "lead_id": order.lead_id,
        "partner_id": order.partner_id,
        "parent_order_id": order.parent_order_id,
        "finance_confirmed_at": iso(order.finance_confirmed_at),
        "finance_confirmed_by": order.finance_confirmed_by,
        "installments_received": received,
        "installments_total": count,
    }


def serialize_contract_detail(order: Order) -> dict[str, Any]:
    sess = db.session()
    installments = contracts.installments_of(sess, order.id)
    last_seq = installments[-1].seq if installments else 0
    progress = (sum(1 for i in installments if i.received_at is not None), len(installments))
    phases = contracts.contract_phases(sess, order)
    return serialize_contract(order, progress, detail=True) | {
        "installments": [serialize_installment(i, last_seq) for i in installments],
        "phases": [
            {
                "phase": phase,
                "id": o.id,
                "out_trade_no": o.out_trade_no,
                "title": o.title,
                "status": o.status.value,
                "total_fee": o.total_fee,
                "repeat_business": o.repeat_business,
                "parent_order_id": o.parent_order_id,
                "created_at": o.created_at.isoformat(),
            }
            for o, phase in phases
        ],
    }


def _contract_page(rows: list[Order], total: int, page: int) -> dict[str, Any]:
    progress = contracts.installment_progress(db.session(), [o.id for o in rows])
    return {"items": [serialize_contract(o, progress.get(o.id, (0, 0))) for o in rows], "total": total, "page": page}


# -- routes ---------------------------------------------------------------------------


@admin_bp.post("/contracts")
@staff_required(StaffRole.operations)
def create_contract() -> Any:
    """A valid lead signed: open its contract and the installment plan."""
    body = parse_body(ContractBody)
    sess = db.session()
    staff = current_staff()
    order = contracts.create_contract(
        sess,
        lead_id=body.lead_id,
        title=body.title,
        amount_fen=body.amount_fen,
        installments=[contracts.InstallmentPlan(i.amount_fen, _due(i.due_date)) for i in body.installments],
        parent_order_id=body.parent_order_id,
        staff_id=staff.id,
    )
    return envelope(serialize_contract_detail(order), status=201)


@admin_bp.get("/contracts")
@staff_required(StaffRole.operations, StaffRole.finance)
def list_contracts() -> Any:
    query = parse_query(ContractListQuery)
    sess = db.session()
    stmt = select(Order).where(Order.kind == OrderKind.contract)
    for column, value in ((Order.status, query.status), (Order.member_id, query.member_id), (Order.lead_id, query.lead_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    rows, total = db.paginate(sess, stmt, offset=query.offset, limit=query.page_size, order_by=(Order.id.desc(),))
    return envelope(_contract_page(rows, total, query.page))


@admin_bp.get("/contracts/<int:order_id>")
@staff_required(StaffRole.operations, StaffRole.finance)
def get_contract(order_id: int) -> Any:
    return envelope(serialize_contract_detail(contracts.get_contract(db.session(), order_id)))


@admin_bp.post("/contracts/<int:order_id>/installments/<int:seq>/receive")
@staff_required(StaffRole.finance)
def receive_installment(order_id: int, seq: int) -> Any:
    """Finance records one installment as received; the first one makes the contract paid."""
    body = _optional_body(ReceiveBody)
    sess = db.session()
    staff = current_staff()
    order, _ = contracts.receive_installment(sess, order_id, seq, staff_id=staff.id, received_at=body.received_at, note=body.note)
    return envelope(serialize_contract_detail(order))


@admin_bp.post("/contracts/<int:order_id>/confirm-final")
@staff_required(StaffRole.finance)
def confirm_final(order_id: int) -> Any:
    """Finance confirms the final payment (尾款到账): the contract completes."""
    sess = db.session()
    staff = current_staff()
    order = contracts.confirm_final_payment(sess, order_id, staff_id=staff.id)
    return envelope(serialize_contract_detail(order))


@admin_bp.post("/contracts/<int:order_id>/cancel")
@staff_required(StaffRole.operations)
def cancel_contract(order_id: int) -> Any:
    """Withdraw a contract before any installment arrived."""
    body = _optional_body(CancelBody)
    sess = db.session()
    staff = current_staff()
    order = contracts.cancel_contract(sess, order_id, staff_id=staff.id, reason=body.reason)
    return envelope(serialize_contract_detail(order))


@admin_bp.get("/finance/confirmations")
@staff_required(StaffRole.finance)
def finance_confirmations() -> Any:
    """Finance's to-do list: final payments that arrived and wait for confirmation, oldest first."""
    query = parse_query(Page)
    rows, total = contracts.confirmation_queue(db.session(), offset=query.offset, limit=query.page_size)
    return envelope(_contract_page(rows, total, query.page))
