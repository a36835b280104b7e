"""The domain events that notify a member, each turned into the sources its template draws on.

Each handler runs in the sender's unit of work and only writes outbox rows (``queue_message``, ``queue_messages``);
the message goes out after the commit.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import per_transaction, utcnow
from server.notifications.fields import amount_value, points_value, time_value
from server.notifications.models import NotifyEvent
from server.notifications.services import queue_message, queue_messages, record_follow
from server.orders.models import Order, OrderItem, OrderStatus, Refund, RefundStatus
from server.points.models import OrderReward, Redemption, RedemptionItem
from server.settings.services import get_setting

#: What a refund's end says, as a ``phrase`` (at most five Chinese characters).
REFUND_RESULTS = {RefundStatus.succeeded: "退款成功", RefundStatus.failed: "退款失败", RefundStatus.rejected: "退款被拒"}
#: Distributor decisions a member hears about.
DECISIONS = {"approve": "已通过", "reject": "未通过"}
TIERS = {1: "一级推广员", 2: "二级推广员"}


def _product(sess: Session, order_id: int) -> str:
    """The order's first item, and how many others there are (read once per transaction: an order's two rewards ask twice)."""
    titles = per_transaction(
        sess, f"notifications.titles.{order_id}", lambda: list(sess.scalars(select(OrderItem.title).where(OrderItem.order_id == order_id).order_by(OrderItem.id)))
    )
    if not titles:
        return "订单"
    return titles[0] + (f"等{len(titles)}件" if len(titles) > 1 else "")


def on_points_credited(sess: Session, *, reward: OrderReward, order: Order) -> None:
    """Handler of ``events.points_credited``: pending points from an order the member brought in."""
    queue_message(sess, NotifyEvent.points_pending, f"reward:{reward.id}", reward.member_id, {
        "points": points_value(reward.amount),
        "order_no": order.out_trade_no,
        "product": _product(sess, order.id),
        "level": "直接邀请" if reward.level == 1 else "间接邀请",
        "status": "待结算",
        "note": "订单完成并过售后期后可用",
        "time": time_value(utcnow()),
    })


def on_points_settled(sess: Session, *, run: Any, statements: list[Any]) -> None:
    """Handler of ``events.points_settled``: each member of the run hears their matured points became available (one bulk write)."""
    at = time_value(utcnow())
    queue_messages(sess, NotifyEvent.points_available, (
        (f"statement:{s.statement_id}", s.member_id, {
            "points": points_value(s.credited),
            "balance": points_value(max(s.available_after, 0)),
            "period": str(run.period),
            "status": "已到账",
            "note": "积分已可兑换" if s.credited > 0 else "积分已用于抵扣欠分",
            "time": at,
        })
        for s in statements
    ))


def on_order_status_changed(sess: Session, *, order: Order, status: OrderStatus) -> None:
    """Handler of ``events.order_status_changed``: the buyer hears that their order shipped."""
    if status != OrderStatus.shipped:
        return
    queue_message(sess, NotifyEvent.order_shipped, f"order:{order.id}", order.member_id, {
        "order_no": order.out_trade_no,
        "product": _product(sess, order.id),
        "amount": amount_value(order.total_fee),
        "status": "已发货",
        "time": time_value(utcnow()),
    })


def _refund_reason(refund: Refund) -> str:
    """Why a refund ended as it did, in words the buyer can read: WeChat's, or the staff's rejection."""
    if refund.status == RefundStatus.rejected and "rejected: " in refund.reason:
        return refund.reason.rsplit("rejected: ", 1)[1] or "—"
    return refund.failure_reason or ("退款已原路退回" if refund.status == RefundStatus.succeeded else refund.reason) or "—"


def on_refund_ended(sess: Session, *, refund: Refund, order: Order) -> None:
    """Handler of ``events.refund_ended``: the buyer hears how their refund ended."""
    result = REFUND_RESULTS.get(refund.status)
    if result is None:
        return
    queue_message(sess, NotifyEvent.refund_result, f"refund:{refund.id}:{refund.status.value}", order.member_id, {
        "order_no": order.out_trade_no,
        "product": _product(sess, order.id),
        "amount": amount_value(refund.amount_fen),
        "result": result,
        "reason": _refund_reason(refund),
        "time": time_value(utcnow()),
    })


def on_distributor_decided(sess: Session, *, distributor: Any, action: str) -> None:
    """Handler of ``events.distributor_decided``: an applicant hears whether they were approved."""
    result = DECISIONS.get(action)
    if result is None:
        return
    queue_message(sess, NotifyEvent.distributor_decided, f"distributor:{distributor.id}:{action}:{distributor.decided_at:%Y%m%d%H%M%S}",
                  distributor.member_id, {
        "result": result,
        "reason": distributor.status_reason or ("欢迎加入推广计划" if action == "approve" else "—"),
        "name": distributor.real_name,
        "tier": TIERS.get(distributor.tier, "推广员"),
        "time": time_value(utcnow()),
    })


def on_lead_marked_valid(sess: Session, *, lead: Any) -> None:
    """Handler of ``events.lead_marked_valid``: the sharer hears that their lead counted."""
    if lead.sharer_id is None or lead.partner_id is not None:
        return
    queue_message(sess, NotifyEvent.lead_valid, f"lead:{lead.id}", lead.sharer_id, {
        "points": points_value(int(get_setting(sess, "valid_lead_points"))),
        "lead": f"线索 #{lead.id}" + (f"（{lead.content}）" if lead.content else ""),
        "status": "有效",
        "time": time_value(utcnow()),
    })


def on_redemption_fulfilled(sess: Session, *, redemption: Redemption) -> None:
    """Handler of ``events.redemption_fulfilled``: the member hears that their redemption was delivered."""
    item = sess.get(RedemptionItem, redemption.item_id)
    queue_message(sess, NotifyEvent.redemption_fulfilled, f"redemption:{redemption.id}", redemption.member_id, {
        "item": item.title if item is not None else "兑换商品",
        "points": points_value(redemption.total),
        "quantity": str(redemption.quantity),
        "status": "已发放",
        "note": redemption.staff_note or "—",
        "time": time_value(utcnow()),
    })


def on_oa_follow_changed(sess: Session, *, oa_openid: str, unionid: str | None, following: bool) -> None:
    """Handler of ``events.oa_follow_changed``: who follows the account, for template messages."""
    record_follow(sess, oa_openid, unionid, following)
