"""WeChat Pay for orders: prepay, notifications, refunds and reconciliation.

``server.wechat.pay`` speaks WeChat's formats; this module decides what they mean for an
order, through ``server.orders.services`` (one state machine, one place where money moves).
Like every service it only flushes. Every status change is announced as
``events.order_status_changed``; whatever is slow (points, messages) is deferred by its handler
to a background task after the commit (``server.tasks``), so a notify URL answers WeChat
without waiting for it.
"""
from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from server import db
from server.accounts.models import Member
from server.accounts.services import record_audit
from server.db import rowcount, utcnow
from server.errors import ConflictError, UpstreamError
from server.orders.errors import (
    AmountMismatchError,
    IllegalTransitionError,
    OrderNotFoundError,
    PaymentNotConfiguredError,
    PayWindowTooShortError,
)
from server.orders.models import (
    Order,
    OrderEvent,
    OrderKind,
    OrderStatus,
    Refund,
    RefundStatus,
)
from server.orders.services import (
    REFUND_ABNORMAL,
    REFUND_CLOSED,
    REFUND_SUCCESS,
    abnormal_refund_for_retry,
    abnormal_refund_refused,
    add_event,
    apply_payment,
    apply_refund_notice,
    close_unpaid,
    due_for_close,
    end_refund,
    finish_refund,
    lock_order,
    mark_refund_resent,
)
from server.settings.services import SettingSpec, get_setting, register
from server.wechat import wechat_pay
from server.wechat.client import WeChatError
from server.wechat.pay import (
    ORDER_CLOSED_CODES,
    ORDER_NOT_FOUND_CODES,
    ORDER_PAID_CODES,
    SAFE_MIN_PAY_WINDOW,
    PayNotConfiguredError,
    PayNotice,
    QueryResult,
    RefundNotice,
    WeChatPayError,
    WeChatPayGateway,
)
from server.wechat.pay import (
    PayWindowTooShortError as WindowRefusedError,
)

#: Where WeChat Pay posts its notifications, below PUBLIC_BASE_URL. v3 sends payments and refunds to one URL.
V2_PAY_NOTIFY_PATH = "/wechat/pay/notify"
V2_REFUND_NOTIFY_PATH = "/wechat/pay/refund-notify"
V3_NOTIFY_PATH = "/wechat/pay/v3/notify"

#: WeChat keeps a prepay_id usable for two hours.
PREPAY_ID_LIFETIME = timedelta(hours=2)
#: A prepay_id is reused only with this much of its life left, so the buyer has time to finish paying.
PREPAY_REUSE_MARGIN = timedelta(minutes=10)
#: An order is given at least this much time to pay when it is prepaid: what the adapter accepts
#: (``SAFE_MIN_PAY_WINDOW``: WeChat's five minutes, which it refuses exactly, plus a margin for the
#: trip and the clocks) and a minute more, so the order's own time never runs into the adapter's check.
PAY_WINDOW_FLOOR = SAFE_MIN_PAY_WINDOW + timedelta(minutes=1)
#: An approved refund WeChat has not accepted after this long is sent again.
REFUND_RETRY_AFTER = timedelta(minutes=1)
#: Each further retry waits twice as long as the one before, up to this.
REFUND_RETRY_MAX_WAIT = timedelta(hours=6)
#: Refunds one retry run follows up at most (the rest wait for the next run).
REFUND_RETRY_BATCH = 100
#: A refund WeChat accepted whose notification has not come after this long is asked about.
REFUND_QUERY_AFTER = timedelta(minutes=10)
#: Refund-API refusals that a later call can overcome: WeChat asks for a retry, or the merchant's
#: balance at WeChat is short until the next settlement or a top-up (v2 NOTENOUGH, v3 NOT_ENOUGH).
#: Every other refusal (amount larger than refundable, order not found, parameters, …) is final.
#: So can a refusal of our own credentials (a key or certificate being fixed): it is retried, backing off,
#: and its words stay on the refund for staff to see.
REFUND_RETRY_CODES = frozenset(
    {"SYSTEMERROR", "SYSTEM_ERROR", "BIZERR_NEED_RETRY", "FREQUENCY_LIMITED", "NOTENOUGH", "NOT_ENOUGH", "SIGN_ERROR", "SIGNERROR", "FAIL", "NO_AUTH"}
)
#: Refund notifications' statuses in both APIs, mapped onto how they end a refund here.
REFUND_ENDINGS = {
    "SUCCESS": REFUND_SUCCESS,
    "ABNORMAL": REFUND_ABNORMAL,  # v3
    "CHANGE": REFUND_ABNORMAL,  # v2's word for the same
    "CLOSED": REFUND_CLOSED,  # v3
    "REFUNDCLOSE": REFUND_CLOSED,  # v2
}
#: How many recent orders one disagreement check asks WeChat about.
DISAGREEMENT_LIMIT = 200
RECONCILE_ACTOR = "reconcile"

register(
    SettingSpec(
        "extend_short_pay_window",
        bool,
        True,
        "A buyer who starts paying in the last minutes of an order's time to pay gets seven minutes from then "
        "(WeChat Pay refuses a window of five or less); off: such a payment is refused and the buyer orders again.",
    ),
)

def notify_url(api: str, kind: str) -> str:
    """The notify URL WeChat Pay is given for ``kind`` ("pay" or "refund") through ``api``."""
    if api == "v3":
        path = V3_NOTIFY_PATH
    else:
        path = V2_PAY_NOTIFY_PATH if kind == "pay" else V2_REFUND_NOTIFY_PATH
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + path


def _pay_error(error: WeChatError, order: Order, what: str) -> Exception:
    """The client-facing error for a failed WeChat Pay call."""
    if isinstance(error, PayNotConfiguredError):
        return PaymentNotConfiguredError()
    if isinstance(error, WindowRefusedError):
        return PayWindowTooShortError(data={"expires_at": error.time_expire.isoformat()})
    if isinstance(error, WeChatPayError):
        if error.code in ORDER_PAID_CODES:
            return IllegalTransitionError("WeChat Pay has this order as paid; the payment is on its way", data={"status": order.status.value})
        if error.code in ORDER_CLOSED_CODES:
            return IllegalTransitionError("WeChat Pay has closed this order", data={"status": order.status.value})
        current_app.logger.warning("WeChat Pay refused %s for order %s: %s", what, order.id, error.code)
        return UpstreamError(data={"code": error.code})
    return UpstreamError()


# -- prepay ---------------------------------------------------------------------------------


def _reusable_prepay_id(sess: Session, order: Order, api: str, now: datetime) -> str | None:
    if not order.prepay_id or order.pay_api != api:
        return None
    issued = sess.scalar(select(OrderEvent.created_at).where(OrderEvent.order_id == order.id, OrderEvent.event == "prepay").order_by(OrderEvent.id.desc()).limit(1))
    if issued is None or now - issued >= PREPAY_ID_LIFETIME - PREPAY_REUSE_MARGIN:
        return None
    return order.prepay_id


def _payer_ip(client_ip: str) -> str:
    try:
        return str(ipaddress.ip_address(client_ip))
    except ValueError:
        # WeChat wants the buyer's address but refuses the call without a well-formed one.
        return "127.0.0.1"


@dataclass(frozen=True)
class PrepayCall:
    """Everything one prepay call sends, read from the order before the transaction ends."""

    order_id: int
    api: str
    out_trade_no: str
    total_fee: int
    openid: str
    description: str
    notify_url: str
    client_ip: str
    time_expire: datetime | None


def plan_prepay(sess: Session, pay: WeChatPayGateway, order: Order, member: Member, client_ip: str, now: datetime) -> PrepayCall | dict[str, str]:
    """What paying ``order`` needs: the ``wx.requestPayment`` parameters when a prepay_id can be reused,
    else the prepay call to make. Flushes only; an order in the last minutes of its time to pay gets
    ``PAY_WINDOW_FLOOR`` from now (setting ``extend_short_pay_window``) or PayWindowTooShortError."""
    if order.member_id != member.id:
        raise OrderNotFoundError()
    if order.kind != OrderKind.online or order.status != OrderStatus.created:
        raise IllegalTransitionError(f"a {order.status.value} order cannot be paid", data={"status": order.status.value})
    if order.expires_at is not None and order.expires_at <= now:
        raise IllegalTransitionError("the time to pay this order has run out", data={"status": order.status.value, "expires_at": order.expires_at.isoformat()})
    api = pay.default_api
    prepay_id = _reusable_prepay_id(sess, order, api, now)
    if prepay_id is not None:
        return _jsapi_params(pay, api, prepay_id, order)
    if order.expires_at is not None and order.expires_at - now < PAY_WINDOW_FLOOR:
        if not get_setting(sess, "extend_short_pay_window"):
            raise PayWindowTooShortError(data={"expires_at": order.expires_at.isoformat()})
        extended = now + PAY_WINDOW_FLOOR
        moved = rowcount(sess.execute(
            update(Order).where(Order.id == order.id, Order.status == OrderStatus.created).values(expires_at=extended).execution_options(synchronize_session=False)
        ))
        if not moved:
            sess.refresh(order)
            raise IllegalTransitionError(f"a {order.status.value} order cannot be paid", data={"status": order.status.value})
        add_event(sess, order, "pay_window_extended", f"member:{member.id}", expires_at=extended.isoformat(), was=order.expires_at.isoformat())
        sess.refresh(order)
    return PrepayCall(
        order_id=order.id,
        api=api,
        out_trade_no=order.out_trade_no,
        total_fee=order.total_fee,
        openid=member.openid,
        description=order.title or order.out_trade_no,
        notify_url=notify_url(api, "pay"),
        client_ip=_payer_ip(client_ip),
        time_expire=order.expires_at,
    )


def _jsapi_params(pay: WeChatPayGateway, api: str, prepay_id: str, order: Order) -> dict[str, str]:
    try:
        return pay.jsapi_params(api, prepay_id)
    except WeChatError as error:
        raise _pay_error(error, order, "a prepay") from None


def record_prepay(sess: Session, call: PrepayCall, prepay_id: str, actor: str) -> None:
    """Keep the prepay_id WeChat gave for ``call`` on its order, unless the order was paid, closed or
    cancelled while WeChat answered (then IllegalTransitionError: that order can no longer be paid)."""
    moved = rowcount(sess.execute(
        update(Order)
        .where(Order.id == call.order_id, Order.status == OrderStatus.created)
        .values(pay_api=call.api, prepay_id=prepay_id)
        .execution_options(synchronize_session=False)
    ))
    order = sess.get(Order, call.order_id, populate_existing=True)
    assert order is not None
    if not moved:
        raise IllegalTransitionError(f"a {order.status.value} order cannot be paid", data={"status": order.status.value})
    add_event(sess, order, "prepay", actor, api=call.api)
    sess.flush()


def prepay_order(sess: Session, pay: WeChatPayGateway, order: Order, member: Member, client_ip: str) -> dict[str, str]:
    """The ``wx.requestPayment`` parameters for ``order``: ``timeStamp``, ``nonceStr``, ``package``, ``signType``, ``paySign``.

    Prepays through the merchant's default API (``WECHAT_PAY_API``) and keeps ``pay_api`` and
    ``prepay_id`` on the order; a prepay_id of the same API younger than two hours is reused.
    Only an unpaid online order still within its time to pay can be paid.

    Commits early, by design: ``sess`` must be the unit of work's session (``db.session()``). What
    the plan wrote is committed and the transaction ended before WeChat is called, so no row or
    (on SQLite) database lock is held while WeChat answers; the answer is then recorded after
    checking the order again, and left for the caller to commit.
    """
    plan = plan_prepay(sess, pay, order, member, client_ip, utcnow())
    if isinstance(plan, dict):
        return plan
    db.commit()
    try:
        prepay_id = pay.prepay(
            plan.api,
            out_trade_no=plan.out_trade_no,
            total_fee=plan.total_fee,
            openid=plan.openid,
            description=plan.description,
            notify_url=plan.notify_url,
            client_ip=plan.client_ip,
            time_expire=plan.time_expire,
        )
    except WeChatError as error:
        raise _pay_error(error, sess.get(Order, plan.order_id) or order, "a prepay") from None
    record_prepay(sess, plan, prepay_id, f"member:{member.id}")
    return _jsapi_params(pay, plan.api, prepay_id, order)


# -- notifications ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeOutcome:
    """What a notification did to its order."""

    order_id: int | None
    #: This notification paid the order (False for a repeat, or one whose payment failed).
    paid: bool = False
    #: Money went back to the buyer (this refund, or refunds that were waiting for this payment).
    refunded: bool = False


def handle_pay_notice(sess: Session, notice: PayNotice) -> NoticeOutcome:
    """A verified payment notification: pays the order once, however often and concurrently it comes.

    OrderNotFoundError / AmountMismatchError refuse it (the caller rolls back and answers failure).
    """
    if not notice.succeeded:
        return NoticeOutcome(None)
    result = apply_payment(
        sess, out_trade_no=notice.out_trade_no, transaction_id=notice.transaction_id, amount_fen=notice.total_fee, api=notice.api, payer_openid=notice.openid
    )
    refunded = result.applied and result.order.refunded_fee > 0
    return NoticeOutcome(result.order.id, paid=result.applied, refunded=refunded)


def handle_refund_notice(sess: Session, notice: RefundNotice) -> NoticeOutcome:
    """A verified refund notification; one that beats its payment notification is kept and applied with it."""
    ending = REFUND_ENDINGS.get(notice.status)
    if ending is None:
        raise ConflictError(f"a refund notification with status {notice.status!r} ends nothing")
    order = sess.scalar(select(Order).where(Order.out_trade_no == notice.out_trade_no))
    if order is not None and notice.total_fee is not None and notice.total_fee != order.total_fee:
        raise AmountMismatchError(data={"expected": order.total_fee, "got": notice.total_fee})
    ours = sess.scalar(select(Refund).where(Refund.out_refund_no == notice.out_refund_no))
    if ours is not None and (order is None or ours.order_id != order.id):
        raise ConflictError("the refund notification names another order than the refund's")
    before = order.refunded_fee if order is not None else 0
    recorded = apply_refund_notice(
        sess,
        out_trade_no=notice.out_trade_no,
        out_refund_no=notice.out_refund_no,
        refund_id=notice.refund_id,
        amount_fen=notice.refund_fee,
        ending=ending,
        api=notice.api,
    )
    if order is None:
        return NoticeOutcome(None)
    sess.refresh(order)
    return NoticeOutcome(order.id, refunded=recorded and order.refunded_fee > before)


# -- refunds ------------------------------------------------------------------------------------


def refund_retry_wait(attempts: int) -> timedelta:
    """How long an approved refund waits after its ``attempts``-th unanswered call: 1, 2, 4 … minutes, at most six hours."""
    return min(REFUND_RETRY_AFTER * (2 ** max(attempts - 1, 0)), REFUND_RETRY_MAX_WAIT)


def submit_refund(app: Flask, refund_id: int, now: datetime | None = None) -> bool:
    """Send an approved refund to WeChat Pay, in units of work of its own around the call (call it after
    the commit that approved it, e.g. from ``db.after_commit``).

    True when WeChat accepted it: the refund is ``processing`` with WeChat's ``refund_id`` and the
    refund notification (or, failing that, a refund query after ``REFUND_QUERY_AFTER``) will end it.
    When WeChat refuses it for good (``REFUND_RETRY_CODES`` aside), the refund ends ``failed`` with
    WeChat's reason and the order returns to where it was if nothing else is open. When WeChat cannot
    be reached or asks for a retry, the refund stays ``approved`` with its next attempt backed off, and
    ``retry_refunds`` sends it again (WeChat treats the same ``out_refund_no`` as the same refund, so a
    retry never refunds twice). False in every case but acceptance.
    """
    now = now or utcnow()
    with db.unit_of_work(app) as sess:
        refund = sess.get(Refund, refund_id)
        order = sess.get(Order, refund.order_id) if refund is not None else None
        if refund is None or order is None or refund.status != RefundStatus.approved:
            return False
        if order.kind != OrderKind.online or order.transaction_id is None:
            return False  # not paid through WeChat Pay: nothing there to refund
        pay = wechat_pay()
        api = order.pay_api or pay.default_api
        call = functools.partial(
            pay.refund,
            api,
            out_trade_no=order.out_trade_no,
            out_refund_no=refund.out_refund_no,
            total_fee=order.total_fee,
            refund_fee=refund.amount_fen,
            notify_url=notify_url(api, "refund"),
            reason=refund.reason,
        )
        order_id = order.id
        # Hold nothing while WeChat answers: on SQLite an open transaction keeps every writer waiting.
        sess.rollback()
        try:
            wechat_refund_id = call()
        except WeChatPayError as error:
            if error.code in REFUND_RETRY_CODES:
                _refund_waits(sess, refund_id, error.errmsg, now)
            else:
                _refund_refused(sess, refund_id, order_id, error)
            db.commit()
            return False
        except WeChatError as error:
            app.logger.warning("refund %s not answered by WeChat Pay, left approved for a retry: %s", refund_id, error.errmsg)
            _refund_waits(sess, refund_id, error.errmsg, now)
            db.commit()
            return False
        order = sess.get(Order, order_id)
        assert order is not None
        lock_order(sess, order)  # the order first, as every refund path locks, so a notice never deadlocks with this
        moved = rowcount(sess.execute(
            update(Refund)
            .where(Refund.id == refund_id, Refund.status == RefundStatus.approved)
            .values(
                status=RefundStatus.processing,
                refund_id=wechat_refund_id,
                attempts=Refund.attempts + 1,
                next_attempt_at=now + REFUND_QUERY_AFTER,
                failure_reason="",
            )
            .execution_options(synchronize_session=False)
        ))
        if moved:
            add_event(sess, order, "refund_submitted", "system", refund_id=refund_id, api=api)
        db.commit()
        return True


def submit_refund_after_commit(refund_id: int) -> None:
    """Queue ``submit_refund`` for an approved refund: the refund API call is a side effect that runs
    once the request's commit has stored the refund (never inside the transaction)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # current_app is typed as the Flask it proxies

    def submit() -> None:
        submit_refund(app, refund_id)

    db.after_commit(submit)


def _refund_waits(sess: Session, refund_id: int, why: str, now: datetime) -> None:
    """An approved refund WeChat did not take this time: count the attempt and back the next one off."""
    refund = sess.get(Refund, refund_id, populate_existing=True)
    if refund is None or refund.status != RefundStatus.approved:
        return
    attempts = refund.attempts + 1
    sess.execute(
        update(Refund)
        .where(Refund.id == refund_id, Refund.status == RefundStatus.approved)
        .values(attempts=Refund.attempts + 1, next_attempt_at=now + refund_retry_wait(attempts), failure_reason=why[:255])
        .execution_options(synchronize_session=False)
    )


def _refund_refused(sess: Session, refund_id: int, order_id: int, error: WeChatPayError) -> None:
    """WeChat refused the refund for good: it ends failed with WeChat's words, for staff to see, unless
    another submit of the same refund got it accepted meanwhile (checked under the order's lock)."""
    current_app.logger.warning("WeChat Pay refused refund %s for good: %s", refund_id, error.code)
    order, refund = sess.get(Order, order_id), sess.get(Refund, refund_id)
    assert order is not None and refund is not None
    finish_refund(sess, order, refund, succeeded=False, actor="wechat", ending=RefundStatus.failed, reason=error.errmsg, only_from=RefundStatus.approved)


def query_refund(app: Flask, refund_id: int, now: datetime | None = None) -> str | None:
    """Ask WeChat Pay how a ``processing`` refund whose notification has not come ended, and apply it.

    Returns WeChat's status (None when there was nothing to ask or WeChat did not answer); a refund
    still PROCESSING at WeChat is asked again after ``REFUND_QUERY_AFTER``. Nothing is held while
    WeChat answers, and the answer goes through the same state machine as a notification.
    """
    now = now or utcnow()
    with db.unit_of_work(app) as sess:
        refund = sess.get(Refund, refund_id)
        order = sess.get(Order, refund.order_id) if refund is not None else None
        if refund is None or order is None or refund.status != RefundStatus.processing:
            return None
        pay = wechat_pay()
        api, out_refund_no, order_id = order.pay_api or pay.default_api, refund.out_refund_no, order.id
        sess.rollback()
        try:
            result = pay.query_refund(api, out_refund_no)
        except WeChatError as error:
            app.logger.info("refund query for refund %s not answered: %s", refund_id, error.errmsg)
            _query_later(sess, refund_id, now)
            db.commit()
            return None
        ending = REFUND_ENDINGS.get(result.status)
        order, refund = sess.get(Order, order_id), sess.get(Refund, refund_id)
        assert order is not None and refund is not None
        if ending is None:
            _query_later(sess, refund_id, now)  # PROCESSING: not ended yet
        elif result.refund_fee is not None and result.refund_fee != refund.amount_fen:
            app.logger.error("WeChat Pay has refund %s for %s fen, not %s: left for a person", refund_id, result.refund_fee, refund.amount_fen)
            _query_later(sess, refund_id, now)
        else:
            lock_order(sess, order)
            sess.refresh(refund)
            if refund.status == RefundStatus.processing:
                end_refund(sess, order, refund, ending, refund_id=result.refund_id, actor=RECONCILE_ACTOR)
        db.commit()
        return result.status


def _query_later(sess: Session, refund_id: int, now: datetime) -> None:
    sess.execute(
        update(Refund)
        .where(Refund.id == refund_id, Refund.status == RefundStatus.processing)
        .values(next_attempt_at=now + REFUND_QUERY_AFTER)
        .execution_options(synchronize_session=False)
    )


def resend_abnormal_refund(
    refund_id: int,
    *,
    target: str,
    bank_type: str | None = None,
    bank_account: str | None = None,
    real_name: str | None = None,
    actor: str,
    staff_id: int | None = None,
) -> Refund:
    """Ask WeChat Pay to pay an ``abnormal`` refund into another account (``target``: "user_bank_card" with
    the buyer's card, or "merchant_bank_card"); the refund is ``processing`` again, for its notification
    (or a refund query) to end.

    Works in the current unit of work and commits early, by design. The refund is checked and claimed
    (``processing``) under the order's lock and committed before WeChat is called with nothing held,
    so nobody can settle it offline meanwhile. A definite refusal puts it back to ``abnormal`` (and is
    the caller's error); when WeChat does not answer it stays claimed, and the refund query finds out
    whether WeChat took it. Only v3 has this call; a v2 refund is settled in the merchant platform and
    then offline (IllegalTransitionError says so). The card number and name go to WeChat encrypted
    and are never stored; when ``staff_id`` is given, the audit entry of an accepted resend keeps only
    the card's last four digits, never the name.
    """
    sess = db.session()
    refund, order = abnormal_refund_for_retry(sess, refund_id)
    pay = wechat_pay()
    if order.pay_api != "v3" or pay.v3 is None:
        raise IllegalTransitionError(
            "WeChat Pay v2 has no call for abnormal refunds: pay it out in the merchant platform, then settle it offline",
            data={"status": refund.status.value},
        )
    wechat_refund_id, out_refund_no = refund.refund_id, refund.out_refund_no
    assert wechat_refund_id is not None
    mark_refund_resent(sess, order, refund, target=target, actor=actor, next_query_at=utcnow() + REFUND_QUERY_AFTER)
    db.commit()
    try:
        pay.v3_client().apply_abnormal_refund(
            wechat_refund_id, out_refund_no, target.upper(), bank_type=bank_type, bank_account=bank_account, real_name=real_name
        )
    except WeChatPayError as error:
        abnormal_refund_refused(sess, refund_id, reason=error.errmsg, actor=actor)
        db.commit()
        raise _pay_error(error, order, "an abnormal refund") from None
    except WeChatError as error:
        current_app.logger.warning("abnormal refund %s not answered by WeChat Pay; the refund query will tell: %s", refund_id, error.errmsg)
        raise _pay_error(error, order, "an abnormal refund") from None
    resent = sess.get(Refund, refund_id)
    assert resent is not None
    if staff_id is not None:
        detail = {"target": target, "bank_type": bank_type, "bank_account": f"****{bank_account[-4:]}" if bank_account else None}
        record_audit(sess, staff_id, "refund.resend", f"refund:{resent.id}", detail)
    return resent


def retry_refunds(app: Flask, now: datetime) -> tuple[int, int]:
    """The refund follow-ups that are due: approved refunds are sent again, and processing ones whose
    notification has not come are asked about. Returns (sends accepted, sends not accepted)."""
    with db.unit_of_work(app) as sess:
        due = sess.execute(
            select(Refund.id, Refund.status)
            .join(Order, Order.id == Refund.order_id)
            .where(
                Refund.status.in_((RefundStatus.approved, RefundStatus.processing)),
                Refund.next_attempt_at <= now,
                Order.kind == OrderKind.online,
                Order.transaction_id.is_not(None),
            )
            .order_by(Refund.next_attempt_at, Refund.id)
            .limit(REFUND_RETRY_BATCH)
        ).all()
        sess.rollback()
    accepted = sent = 0
    for refund_id, status in due:
        try:
            if status == RefundStatus.approved:
                sent += 1
                accepted += submit_refund(app, refund_id, now)
            else:
                query_refund(app, refund_id, now)
        except Exception:
            # One refund's failure (a lost connection, a deadlock) never stops the others.
            app.logger.exception("refund follow-up of refund %s failed", refund_id)
    return accepted, sent - accepted


# -- reconciliation -----------------------------------------------------------------------------


@dataclass
class ReconcileSummary:
    """Which unpaid orders past their time one run paid, closed, left waiting, or failed on."""

    paid: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    #: Still payable at WeChat (the buyer is paying), or WeChat could not be reached: next run.
    waiting: list[int] = field(default_factory=list)
    #: WeChat's answer made no sense for the order (amount, missing ids): logged for a person.
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    def add(self, order_id: int, outcome: str) -> None:
        getattr(self, outcome).append(order_id)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("paid", "closed", "waiting", "failed", "skipped")}


def _apply_queried_payment(sess: Session, order: Order, result: QueryResult, api: str) -> str:
    if not result.transaction_id:
        current_app.logger.error("WeChat Pay has order %s as %s but gives no transaction_id", order.id, result.trade_state)
        return "failed"
    amount = result.total_fee if result.total_fee is not None else order.total_fee
    try:
        outcome = apply_payment(sess, out_trade_no=order.out_trade_no, transaction_id=result.transaction_id, amount_fen=amount, api=api, actor=RECONCILE_ACTOR)
    except AmountMismatchError:
        current_app.logger.error("WeChat Pay has order %s paid with %s fen, not %s: left for a person", order.id, amount, order.total_fee)
        return "failed"
    return "paid" if outcome.applied or outcome.order.status != OrderStatus.created else "skipped"


def _ask_wechat(pay: WeChatPayGateway, order_id: int, api: str, out_trade_no: str) -> tuple[str, QueryResult | None]:
    """What WeChat says of an unpaid order, asked with no transaction open, and closed there if it may be:
    ("paid", result), ("close", result or None), or ("waiting" | "failed", None)."""
    result: QueryResult | None
    try:
        result = pay.query(api, out_trade_no)
    except WeChatPayError as error:
        if error.code not in ORDER_NOT_FOUND_CODES:
            current_app.logger.warning("order query for order %s refused: %s", order_id, error.code)
            return "failed", None
        result = None
    except WeChatError as error:
        current_app.logger.info("order query for order %s not answered: %s", order_id, error.errmsg)
        return "waiting", None
    if result is not None and result.trade_state in ("SUCCESS", "REFUND"):
        return "paid", result
    if result is not None and result.trade_state in ("USERPAYING", "ACCEPT"):
        return "waiting", None
    if result is not None and result.trade_state != "CLOSED":
        try:
            pay.close_order(api, out_trade_no)
        except WeChatPayError as error:
            if error.code in ORDER_PAID_CODES:
                return "waiting", None  # paid since the query: the notification or the next run settles it
            if error.code not in ORDER_CLOSED_CODES | ORDER_NOT_FOUND_CODES:
                current_app.logger.warning("closeorder for order %s refused: %s", order_id, error.code)
                return "failed", None
        except WeChatError as error:
            current_app.logger.info("closeorder for order %s not answered: %s", order_id, error.errmsg)
            return "waiting", None
    return "close", result


def reconcile_order(pay: WeChatPayGateway, order_id: int) -> str:
    """One unpaid order past its time: paid at WeChat means paid here (actor "reconcile"); otherwise it is
    closed at WeChat first, so nobody can still pay it, then here (stock released).

    Works in the current app context and commits: the order is read and the transaction ended before
    WeChat is asked, and what WeChat answered is applied in a short unit of work of its own, after
    checking the order again. Returns "paid", "closed", "waiting", "failed" or "skipped" (nothing to do).
    """
    sess = db.session()
    order = sess.get(Order, order_id)
    if order is None or order.status != OrderStatus.created:
        sess.rollback()
        return "skipped"
    if order.pay_api is None:
        # Never prepaid: WeChat has no such order to ask about or to close.
        outcome = "closed" if close_unpaid(sess, order, actor=RECONCILE_ACTOR, reason="payment timeout") else "skipped"
        db.commit()
        return outcome
    api, out_trade_no = order.pay_api, order.out_trade_no
    sess.rollback()  # nothing held while WeChat answers
    verdict, result = _ask_wechat(pay, order_id, api, out_trade_no)
    if verdict in ("waiting", "failed"):
        return verdict
    order = sess.get(Order, order_id)
    assert order is not None
    if verdict == "paid":
        assert result is not None
        outcome = _apply_queried_payment(sess, order, result, api)
    else:
        outcome = "closed" if close_unpaid(sess, order, actor=RECONCILE_ACTOR, reason="payment timeout") else "skipped"
    db.commit()
    return outcome


def reconcile_unpaid(pay: WeChatPayGateway, now: datetime | None = None) -> ReconcileSummary:
    """Reconcile every online order still ``created`` past its ``expires_at`` (``reconcile_order``), in the
    current app context; each order is committed on its own, so one order's failure never loses another's work."""
    sess = db.session()
    due = [order.id for order in due_for_close(sess, now or utcnow())]
    sess.rollback()
    summary = ReconcileSummary()
    for order_id in due:
        try:
            summary.add(order_id, reconcile_order(pay, order_id))
        except Exception:
            db.session().rollback()
            current_app.logger.exception("reconciliation of order %s failed", order_id)
            summary.add(order_id, "failed")
    return summary


@dataclass(frozen=True)
class Disagreement:
    """An order whose state here and at WeChat Pay do not match."""

    order_id: int
    out_trade_no: str
    status: str
    #: WeChat's trade_state, or ORDER_NOT_EXIST.
    trade_state: str
    problem: str


def _refund_under_way(sess: Session, order_id: int) -> bool:
    return bool(sess.scalar(select(exists().where(Refund.order_id == order_id, Refund.status.in_((RefundStatus.processing, RefundStatus.abnormal, RefundStatus.succeeded))))))


def _disagreement(sess: Session, order: Order, result: QueryResult | None) -> str | None:
    state = result.trade_state if result is not None else "ORDER_NOT_EXIST"
    paid_here = order.paid_at is not None
    paid_there = state in ("SUCCESS", "REFUND")
    if paid_there and not paid_here:
        return "WeChat Pay has a payment this order lacks"
    if paid_here and not paid_there:
        return "the order is paid here but not at WeChat Pay"
    if paid_here and result is not None:
        if result.transaction_id != order.transaction_id:
            return "the transaction ids differ"
        if result.total_fee is not None and result.total_fee != order.paid_fee:
            return "the paid amounts differ"
        refunding_here = _refund_under_way(sess, order.id)
        if state == "REFUND" and not refunding_here:
            return "WeChat Pay has a refund this order lacks"
        if state == "SUCCESS" and refunding_here:
            return "the order has a refund WeChat Pay lacks"
    if order.status == OrderStatus.created and state == "CLOSED":
        return "WeChat Pay closed an order still open here"
    return None


def check_disagreements(sess: Session, pay: WeChatPayGateway, since: datetime, *, limit: int = DISAGREEMENT_LIMIT) -> list[Disagreement]:
    """Recent prepaid online orders (created since ``since``) whose state WeChat's order query contradicts.

    Reports only; changes nothing. Orders WeChat could not be asked about are left out.
    """
    asks = sess.execute(
        select(Order.id, Order.pay_api, Order.out_trade_no)
        .where(Order.kind == OrderKind.online, Order.pay_api.is_not(None), Order.created_at >= since)
        .order_by(Order.id.desc())
        .limit(limit)
    ).all()
    sess.rollback()  # nothing held while WeChat answers; each order is read afresh after its answer
    found: list[Disagreement] = []
    for order_id, api, out_trade_no in asks:
        assert api is not None  # the query keeps only orders with a pay_api
        try:
            result: QueryResult | None = pay.query(api, out_trade_no)
        except WeChatPayError as error:
            if error.code not in ORDER_NOT_FOUND_CODES:
                continue
            result = None
        except WeChatError:
            continue
        order = sess.get(Order, order_id)
        assert order is not None
        problem = _disagreement(sess, order, result)
        status = order.status.value
        sess.rollback()
        if problem:
            state = result.trade_state if result is not None else "ORDER_NOT_EXIST"
            found.append(Disagreement(order_id, out_trade_no, status, state, problem))
    return found

