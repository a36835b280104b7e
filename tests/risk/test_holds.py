"""Held rewards never mature; a release lets them mature, a reversal takes them back through the ledger;
each decision moves the review once, and the ledger stays balanced throughout."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server.accounts.models import AuditEntry, StaffRole
from server.accounts.services import create_staff
from server.distribution import services as distribution
from server.distribution.models import Distributor, DistributorStatus
from server.orders import services as orders
from server.orders.models import Order, OrderStatus
from server.points import services as points
from server.points.checks import check_ledger
from server.points.errors import HoldStateError
from server.points.models import HoldState, OrderReward, RewardHold, RewardState
from server.points.queries import member_balances
from server.referral import services as referral
from server.referral.models import Lead, LeadStatus
from server.risk import services as risk
from server.risk.errors import NotFreezableError, ReviewDecidedError
from server.risk.models import ReviewState, RiskEvent, RiskReview


@pytest.fixture
def staff(builder):
    return create_staff(builder.sess, username="ops", password="correct-horse", role=StaffRole.operations)


def held_order(builder, inject) -> tuple[Order, RiskReview]:
    case = inject("shared_phone")
    review = builder.sess.scalar(select(RiskReview).where(RiskReview.member_id == case.member_id, RiskReview.event == RiskEvent.payment))
    assert review is not None and review.held
    order = builder.sess.get(Order, review.ref_id)
    return order, review


def finish(sess, order: Order) -> None:
    for target in (OrderStatus.shipped, OrderStatus.received, OrderStatus.completed):
        orders.move(sess, order, target, actor="test")
    points.process_order(sess, order)


def test_held_rewards_stay_pending_when_the_order_completes(builder, inject):
    sess = builder.sess
    order, _ = held_order(builder, inject)
    finish(sess, order)
    points.process_order(sess, order)
    assert member_balances(sess, order.inviter_id).pending > 0
    assert member_balances(sess, order.inviter_id).matured == 0
    assert {r.state for r in sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id))} == {RewardState.pending}


def test_release_lets_them_mature_and_is_audited(builder, inject, staff):
    sess = builder.sess
    order, review = held_order(builder, inject)
    finish(sess, order)
    pending = member_balances(sess, order.inviter_id).pending
    risk.decide_review(sess, review.id, "release", staff=staff, note="查过了，是一家人")
    assert review.state == ReviewState.released and review.decided_by == staff.id
    assert member_balances(sess, order.inviter_id).matured == pending
    assert sess.scalar(select(RewardHold.state).where(RewardHold.ref_id == order.id)) == HoldState.released
    audit = sess.scalar(select(AuditEntry).where(AuditEntry.action == "risk_review.release"))
    assert audit is not None and audit.detail["points_moved"] == pending and audit.target == f"risk_review:{review.id}"
    with pytest.raises(ReviewDecidedError):
        risk.decide_review(sess, review.id, "release", staff=staff)
    assert check_ledger(sess).ok, check_ledger(sess).violations


def test_reverse_posts_reversals_once_and_the_order_can_no_longer_mature(builder, inject, staff):
    sess = builder.sess
    order, review = held_order(builder, inject)
    inviter = order.inviter_id
    credited = member_balances(sess, inviter).pending
    risk.decide_review(sess, review.id, "reverse", staff=staff, note="自买自返")
    assert member_balances(sess, inviter).pending == 0
    rows = sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id)).all()
    assert all(r.state == RewardState.reversed and r.reversed_amount == r.amount for r in rows)
    assert sum(r.reversed_amount for r in rows if r.member_id == inviter) == credited
    finish(sess, order)
    assert member_balances(sess, inviter).matured == 0
    with pytest.raises(ReviewDecidedError):
        risk.decide_review(sess, review.id, "reverse", staff=staff)
    # A refund after the reversal takes nothing more.
    refund = orders.request_refund(sess, order, None, "退货", actor="staff:1", approved=True)
    orders.finish_refund(sess, order, refund, succeeded=True, actor="wechat", refund_id="503000000099")
    points.process_order(sess, order)
    assert member_balances(sess, inviter).debt == 0
    assert check_ledger(sess).ok, check_ledger(sess).violations


def test_reopen_holds_released_rewards_again_until_they_mature(builder, inject, staff):
    sess = builder.sess
    order, review = held_order(builder, inject)
    risk.decide_review(sess, review.id, "false_positive", staff=staff)
    risk.decide_review(sess, review.id, "reopen", staff=staff, note="又发现同一地址")
    assert review.state == ReviewState.open
    finish(sess, order)
    assert member_balances(sess, order.inviter_id).matured == 0
    risk.decide_review(sess, review.id, "release", staff=staff)
    assert member_balances(sess, order.inviter_id).matured > 0
    # Matured now: reopening would take back what the ledger already moved, so it is refused and nothing changes.
    with pytest.raises(HoldStateError):
        risk.decide_review(sess, review.id, "reopen", staff=staff)
    assert review.state == ReviewState.released
    assert check_ledger(sess).ok, check_ledger(sess).violations


def test_a_review_decided_by_someone_else_first_is_refused(builder, inject, staff):
    sess = builder.sess
    order, review = held_order(builder, inject)
    # Another staff member's decision committed between this one's read and its update.
    sess.execute(RiskReview.__table__.update().where(RiskReview.id == review.id).values(state=ReviewState.false_positive))
    with pytest.raises(ReviewDecidedError):
        risk.decide_review(sess, review.id, "reverse", staff=staff)
    assert sess.scalar(select(RewardHold.state).where(RewardHold.ref_id == order.id)) == HoldState.held
    assert member_balances(sess, order.inviter_id).pending > 0


def test_a_held_lead_earns_into_pending_until_released(builder, inject, staff):
    sess = builder.sess
    case = inject("lead_burst")
    review = sess.scalar(select(RiskReview).where(RiskReview.member_id == case.member_id, RiskReview.event == RiskEvent.lead))
    lead = sess.get(Lead, review.ref_id)
    referral.review_lead(sess, lead.id, LeadStatus.valid, staff=staff)
    balances = member_balances(sess, case.member_id)
    assert (balances.pending, balances.available) == (1_000, 0)
    risk.decide_review(sess, review.id, "release", staff=staff)
    balances = member_balances(sess, case.member_id)
    assert (balances.pending, balances.available) == (0, 1_000)
    assert check_ledger(sess).ok, check_ledger(sess).violations


def test_a_reversed_lead_earns_nothing_when_marked_valid_later(builder, inject, staff):
    sess = builder.sess
    case = inject("lead_burst")
    review = sess.scalar(select(RiskReview).where(RiskReview.member_id == case.member_id, RiskReview.event == RiskEvent.lead))
    risk.decide_review(sess, review.id, "reverse", staff=staff)
    referral.review_lead(sess, review.ref_id, LeadStatus.valid, staff=staff)
    balances = member_balances(sess, case.member_id)
    assert (balances.pending, balances.available) == (0, 0)


def test_a_reversed_held_lead_points_go_back_to_issuance(builder, inject, staff):
    sess = builder.sess
    case = inject("lead_burst")
    review = sess.scalar(select(RiskReview).where(RiskReview.member_id == case.member_id, RiskReview.event == RiskEvent.lead))
    referral.review_lead(sess, review.ref_id, LeadStatus.valid, staff=staff)
    risk.decide_review(sess, review.id, "reverse", staff=staff)
    balances = member_balances(sess, case.member_id)
    assert (balances.pending, balances.available) == (0, 0)
    assert check_ledger(sess).ok, check_ledger(sess).violations


def test_freeze_uses_the_distributor_decision_and_keeps_the_hold(builder, inject, staff):
    sess = builder.sess
    order, review = held_order(builder, inject)
    distribution.appoint(sess, order.inviter_id, real_name="王伟", phone="13800000001", staff=staff)
    risk.decide_review(sess, review.id, "freeze", staff=staff, note="同一手机号自买")
    distributor = sess.scalar(select(Distributor).where(Distributor.member_id == order.inviter_id))
    assert distributor.status == DistributorStatus.frozen and distributor.status_reason == "同一手机号自买"
    assert review.state == ReviewState.frozen
    assert sess.scalar(select(RewardHold.state).where(RewardHold.ref_id == order.id)) == HoldState.held
    actions = set(sess.scalars(select(AuditEntry.action)))
    assert {"distributor.freeze", "risk_review.freeze"} <= actions
    risk.decide_review(sess, review.id, "reverse", staff=staff)
    assert review.state == ReviewState.reversed


def test_freezing_a_member_who_is_no_distributor_changes_nothing(builder, inject, staff):
    sess = builder.sess
    _, review = held_order(builder, inject)
    with pytest.raises(NotFreezableError):
        risk.decide_review(sess, review.id, "freeze", staff=staff)
    assert review.state == ReviewState.open
    assert sess.scalar(select(AuditEntry).where(AuditEntry.action == "risk_review.freeze")) is None


def test_nothing_held_means_nothing_to_reverse(builder, inject, staff):
    sess = builder.sess
    case = inject("bind_burst")
    review = sess.scalar(select(RiskReview).where(RiskReview.member_id == case.member_id))
    with pytest.raises(ReviewDecidedError):
        risk.decide_review(sess, review.id, "reverse", staff=staff)
    risk.decide_review(sess, review.id, "false_positive", staff=staff)
    assert review.state == ReviewState.false_positive


def test_rewards_reversed_before_they_were_credited_are_never_credited(builder, staff):
    """The payment is scored and held in its notification; its points are credited after the commit. A
    reversal in between leaves nothing for that credit to give."""
    sess = builder.sess
    sharer = builder.member(phone="18600000001")
    buyer = builder.member(phone="18600000001")
    builder.bind(buyer, sharer, days_ago=3)
    order = orders.place_order(sess, buyer, [orders.LineRequest(builder.sku.id, 1)], address=builder.address())
    orders.apply_payment(sess, out_trade_no=order.out_trade_no, transaction_id="4200000000000777", amount_fen=order.total_fee, api="v3")
    review = sess.scalar(select(RiskReview).where(RiskReview.subject == "order", RiskReview.ref_id == order.id))
    assert review is not None and review.held
    risk.decide_review(sess, review.id, "reverse", staff=staff)
    points.process_order(sess, order)  # the deferred credit runs late
    finish(sess, order)
    assert sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id)).all() == []
    assert member_balances(sess, sharer.id) == member_balances(sess, buyer.id)
    assert member_balances(sess, sharer.id).pending == member_balances(sess, sharer.id).matured == 0
    assert check_ledger(sess).ok, check_ledger(sess).violations


def test_a_review_whose_hold_fails_is_not_stored_at_all_and_the_payment_goes_on(builder, inject, monkeypatch):
    """The review, its signals and the hold are written in one savepoint: a hold that fails takes the
    review and its signals with it, and the order is paid as if nothing had been found."""
    from server.points import holds
    from server.risk.models import RiskSignal

    def broken(*args, **kwargs):
        raise RuntimeError("the hold broke")

    monkeypatch.setattr(holds, "hold_rewards", broken)
    case = inject("shared_phone")
    sess = builder.sess
    payment_reviews = select(RiskReview.id).where(RiskReview.member_id == case.member_id, RiskReview.event == RiskEvent.payment)
    assert sess.scalars(payment_reviews).all() == []
    assert sess.scalars(select(RiskSignal).where(RiskSignal.review_id.not_in(select(RiskReview.id)))).all() == []
    assert sess.scalars(select(RewardHold)).all() == []
    paid = sess.scalars(select(Order).where(Order.inviter_id == case.member_id)).all()
    assert paid and all(order.paid_at is not None for order in paid)
