"""Offline contract orders: a valid lead becomes a contract paid in installments, closed by finance.

A contract is an ``Order`` of kind ``contract`` and goes through the same state
machine as an online order, with its own meaning for each move:

* ``created``: signed, nothing received yet; operations may still cancel it (``closed``).
* ``paid``: the first installment arrived. This is the moment an online order is paid,
  so the points package credits pending points here for both kinds alike.
* ``completed``: every installment arrived *and* finance confirmed the final payment (尾款).
  Points of a contract mature only after this (seed 003, 3.1).

Phase 2+ contracts (项目二期/三期) are repeat business, rewarded at the repeat rate:

* with ``parent_order_id``: the parent must be a contract of the same member that is
  paid or completed. Operations is stating that this continues a project already under
  way, and phase 2 is often signed while phase 1's final payment is still outstanding.
* without a parent: repeat only if the member already has a *completed* contract. A
  contract that is merely paid may still be cancelled or refunded, so without someone
  saying so it does not yet make its member a returning customer.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.accounts.services import record_audit
from server.db import paginate, rowcount, utcnow
from server.errors import ValidationError
from server.orders.errors import (
    ContractNotFoundError,
    FinalPaymentConfirmedError,
    IllegalTransitionError,
    InstallmentAlreadyReceivedError,
    InstallmentNotFoundError,
    InstallmentsMismatchError,
    InstallmentsOutstandingError,
    LeadNotValidError,
    LeadWithoutMemberError,
    ParentContractError,
)
from server.orders.models import Installment, Order, OrderKind, OrderStatus
from server.orders.services import add_event, close_unpaid, move, new_out_trade_no, stamp_referrers, transition
from server.referral.models import Lead, LeadStatus, TouchEvent, TouchKind
from server.referral.services import record_partner_deal

S = OrderStatus
#: A contract may take money only while it is open: not cancelled, refunded or finished.
RECEIVABLE = (S.created, S.paid)
#: Statuses in which an earlier contract may be named as the parent of a new phase.
PARENT_STATUSES = frozenset({S.paid, S.completed})
#: The longest chain of phases walked when looking for the first one.
MAX_PHASES = 100


@dataclass(frozen=True)
class InstallmentPlan:
    amount_fen: int
    due_date: datetime | None = None


def _field_errors(field: str, error: str) -> dict[str, list[dict[str, str]]]:
    return {"errors": [{"field": field, "error": error}]}


def get_contract(sess: Session, order_id: int) -> Order:
    """The contract with this id; an online order is not one."""
    order = sess.get(Order, order_id)
    if order is None or order.kind != OrderKind.contract:
        raise ContractNotFoundError()
    return order


def _parent_contract(sess: Session, parent_order_id: int, member_id: int) -> Order:
    parent = sess.get(Order, parent_order_id)
    if parent is None or parent.kind != OrderKind.contract or parent.member_id != member_id or parent.status not in PARENT_STATUSES:
        status = parent.status.value if parent is not None and parent.kind == OrderKind.contract else None
        raise ParentContractError(data=_field_errors("parent_order_id", ParentContractError.message) | {"parent_status": status})
    return parent


def has_completed_contract(sess: Session, member_id: int) -> bool:
    """Whether the member already finished a contract with us, which makes any new one repeat business."""
    return bool(
        sess.scalar(
            select(exists().where(Order.member_id == member_id, Order.kind == OrderKind.contract, Order.status == S.completed))
        )
    )


def create_contract(
    sess: Session,
    *,
    lead_id: int,
    title: str,
    amount_fen: int,
    installments: list[InstallmentPlan],
    parent_order_id: int | None,
    staff_id: int,
) -> Order:
    """Open a contract for a valid lead's member, with its installments; the last one is the final payment.
    Audited as ``staff_id``'s action, like every write here."""
    planned = sum(plan.amount_fen for plan in installments)
    if not installments or planned != amount_fen:
        raise InstallmentsMismatchError(
            data=_field_errors("installments", f"they add up to {planned} fen, the contract is {amount_fen} fen")
            | {"amount_fen": amount_fen, "installments_fen": planned}
        )
    lead = sess.get(Lead, lead_id)
    if lead is None:
        raise ValidationError(data=_field_errors("lead_id", "no such lead"))
    if lead.status != LeadStatus.valid:
        raise LeadNotValidError(data=_field_errors("lead_id", LeadNotValidError.message) | {"status": lead.status.value})
    if lead.member_id is None or sess.get(Member, lead.member_id) is None:
        raise LeadWithoutMemberError(data=_field_errors("lead_id", LeadWithoutMemberError.message))
    member_id = lead.member_id
    if parent_order_id is not None:
        _parent_contract(sess, parent_order_id, member_id)
        repeat = True
    else:
        repeat = has_completed_contract(sess, member_id)
    inviter_id, upline_id = stamp_referrers(sess, member_id)
    actor = f"staff:{staff_id}"
    order = Order(
        out_trade_no=new_out_trade_no("C"),
        kind=OrderKind.contract,
        member_id=member_id,
        total_fee=amount_fen,
        inviter_id=inviter_id,
        upline_id=upline_id,
        scene_code=lead.scene_code,
        partner_id=lead.partner_id,
        repeat_business=repeat,
        parent_order_id=parent_order_id,
        lead_id=lead.id,
        title=title,
    )
    sess.add(order)
    sess.flush()
    for seq, plan in enumerate(installments, start=1):
        sess.add(Installment(order_id=order.id, seq=seq, amount_fen=plan.amount_fen, due_date=plan.due_date))
    add_event(
        sess,
        order,
        "created",
        actor,
        to_status=S.created,
        total_fee=amount_fen,
        installments=len(installments),
        lead_id=lead.id,
        parent_order_id=parent_order_id,
        repeat_business=repeat,
        inviter_id=inviter_id,
        upline_id=upline_id,
    )
    sess.add(
        TouchEvent(
            member_id=member_id,
            kind=TouchKind.order,
            scene=lead.scene_code,
            channel="order",
            actor=actor,
            content=f"order:{order.id}",
            detail={"kind": OrderKind.contract.value, "out_trade_no": order.out_trade_no, "total_fee": amount_fen, "lead_id": lead.id},
        )
    )
    sess.flush()
    record_audit(
        sess,
        staff_id,
        "contract.create",
        f"order:{order.id}",
        {
            "lead_id": lead_id,
            "amount_fen": amount_fen,
            "installments": [plan.amount_fen for plan in installments],
            "parent_order_id": parent_order_id,
            "repeat_business": order.repeat_business,
        },
    )
    return order


def installments_of(sess: Session, order_id: int) -> list[Installment]:
    return list(sess.scalars(select(Installment).where(Installment.order_id == order_id).order_by(Installment.seq)))


def receive_installment(sess: Session, order_id: int, seq: int, *, staff_id: int, received_at: datetime | None = None, note: str = "") -> tuple[Order, Installment]:
    """Finance records that installment ``seq`` arrived; the first one makes the contract paid.

    Both writes are conditional UPDATEs, so two clerks recording the same payment at
    once (or two installments at once) count the money exactly once: the installment
    is claimed only while unreceived, and ``paid_fee`` only grows while the contract
    is open and never past the contract amount.
    """
    order = get_contract(sess, order_id)
    installment = sess.scalar(select(Installment).where(Installment.order_id == order.id, Installment.seq == seq))
    if installment is None:
        raise InstallmentNotFoundError(data={"seq": seq})
    if installment.received_at is not None:
        raise InstallmentAlreadyReceivedError(data={"seq": seq, "received_at": installment.received_at.isoformat()})
    if order.status not in RECEIVABLE:
        raise IllegalTransitionError(f"a {order.status.value} contract takes no more payments", data={"status": order.status.value})
    # Whole seconds, as MySQL's DATETIME keeps them, so every backend returns the same time.
    when = received_at.replace(microsecond=0) if received_at else utcnow()
    with sess.begin_nested():  # either both writes stay or neither, whatever the caller does with the error
        claimed = sess.execute(
            update(Installment)
            .where(Installment.id == installment.id, Installment.received_at.is_(None))
            .values(received_at=when, recorded_by=staff_id, note=note)
            .execution_options(synchronize_session=False)
        )
        if rowcount(claimed) != 1:
            raise InstallmentAlreadyReceivedError(data={"seq": seq})
        counted = sess.execute(
            update(Order)
            .where(Order.id == order.id, Order.status.in_(RECEIVABLE), Order.paid_fee + installment.amount_fen <= Order.total_fee)
            .values(paid_fee=Order.paid_fee + installment.amount_fen, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if rowcount(counted) != 1:
            # Cancelled (or otherwise closed) between our read and our write.
            status = sess.scalar(select(Order.status).where(Order.id == order.id)) or order.status
            raise IllegalTransitionError(f"a {status.value} contract takes no more payments", data={"status": status.value})
    sess.refresh(order)
    sess.refresh(installment)
    actor = f"staff:{staff_id}"
    assert installment.received_at is not None
    add_event(
        sess,
        order,
        "installment_received",
        actor,
        seq=seq,
        amount_fen=installment.amount_fen,
        received_at=installment.received_at.isoformat(),
        paid_fee=order.paid_fee,
        final=order.paid_fee == order.total_fee,
        note=note,
    )
    if order.status == S.created:
        # False only if another installment's receipt made the move first, which is just as good.
        transition(sess, order, S.paid, actor=actor, expected=S.created, first_installment=seq, amount_fen=installment.amount_fen)
    sess.flush()
    record_audit(
        sess,
        staff_id,
        "contract.installment_receive",
        f"order:{order.id}",
        {"seq": seq, "amount_fen": installment.amount_fen, "received_at": installment.received_at.isoformat(), "note": note},
    )
    return order, installment


def outstanding_installments(sess: Session, order_id: int) -> list[int]:
    """Numbers of the installments not received yet."""
    return list(sess.scalars(select(Installment.seq).where(Installment.order_id == order_id, Installment.received_at.is_(None)).order_by(Installment.seq)))


def confirm_final_payment(sess: Session, order_id: int, *, staff_id: int) -> Order:
    """Finance confirms the final payment: the contract completes and a partner's per-deal commission is due."""
    order = get_contract(sess, order_id)
    if order.finance_confirmed_at is not None:
        raise FinalPaymentConfirmedError(data={"finance_confirmed_at": order.finance_confirmed_at.isoformat()})
    if order.status not in RECEIVABLE:
        raise IllegalTransitionError(f"a {order.status.value} contract cannot be confirmed", data={"status": order.status.value})
    outstanding = outstanding_installments(sess, order.id)
    if outstanding:
        raise InstallmentsOutstandingError(data={"outstanding": outstanding})
    confirmed = sess.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == S.paid, Order.finance_confirmed_at.is_(None), Order.paid_fee == Order.total_fee)
        .values(finance_confirmed_at=utcnow(), finance_confirmed_by=staff_id)
        .execution_options(synchronize_session=False)
    )
    sess.refresh(order)
    if rowcount(confirmed) != 1:
        if order.finance_confirmed_at is not None:
            raise FinalPaymentConfirmedError(data={"finance_confirmed_at": order.finance_confirmed_at.isoformat()})
        raise IllegalTransitionError(f"a {order.status.value} contract cannot be confirmed", data={"status": order.status.value})
    move(sess, order, S.completed, actor=f"staff:{staff_id}", final_payment_confirmed=True, paid_fee=order.paid_fee)
    if order.partner_id is not None:
        record_partner_deal(sess, order.partner_id, f"contract:{order.out_trade_no}", order.total_fee)
    sess.flush()
    record_audit(sess, staff_id, "contract.confirm_final", f"order:{order.id}", {"total_fee": order.total_fee, "partner_id": order.partner_id})
    return order


def cancel_contract(sess: Session, order_id: int, *, staff_id: int, reason: str = "") -> Order:
    """Operations withdraws a contract before any money arrived; once an installment is in, it is paid and stays."""
    order = get_contract(sess, order_id)
    if order.status != S.created or not close_unpaid(sess, order, actor=f"staff:{staff_id}", reason=reason or "cancelled"):
        raise IllegalTransitionError(f"a {order.status.value} contract cannot be cancelled", data={"status": order.status.value})
    record_audit(sess, staff_id, "contract.cancel", f"order:{order.id}", {"reason": reason})
    return order


def confirmation_queue(sess: Session, *, offset: int = 0, limit: int = 100) -> tuple[list[Order], int]:
    """What waits for finance to confirm its final payment, oldest first, and how much waits.

    Today these are contracts with every installment received. Online orders that the
    merchant wants confirmed (``require_finance_confirmation``) belong here as well once
    points maturing depends on it.
    """
    unreceived = select(Installment.id).where(Installment.order_id == Order.id, Installment.received_at.is_(None))
    stmt = select(Order).where(Order.kind == OrderKind.contract, Order.status == S.paid, Order.finance_confirmed_at.is_(None), ~exists(unreceived))
    return paginate(sess, stmt, offset=offset, limit=limit, order_by=(Order.id,))


def installment_progress(sess: Session, order_ids: list[int]) -> dict[int, tuple[int, int]]:
    """For each contract: (installments received, installments in all)."""
    if not order_ids:
        return {}
    rows = sess.execute(
        select(Installment.order_id, func.count(Installment.received_at), func.count())
        .where(Installment.order_id.in_(order_ids))
        .group_by(Installment.order_id)
    ).all()
    return {order_id: (int(received), int(count)) for order_id, received, count in rows}


def contract_phases(sess: Session, order: Order) -> list[tuple[Order, int]]:
    """Every contract of the project ``order`` belongs to, with its phase number (1 = the first)."""
    root = order
    for _ in range(MAX_PHASES):
        if root.parent_order_id is None:
            break
        parent = sess.get(Order, root.parent_order_id)
        if parent is None:
            break
        root = parent
    phases = [(root, 1)]
    level, depth = [root.id], 1
    while level and depth < MAX_PHASES:
        depth += 1
        children = sess.scalars(
            select(Order).where(Order.parent_order_id.in_(level), Order.kind == OrderKind.contract).order_by(Order.id)
        ).all()
        phases.extend((child, depth) for child in children)
        level = [child.id for child in children]
    return phases
