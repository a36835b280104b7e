"""Each signal fires on its kind of fraud, at the event where it happens; honest members are not touched."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import func, select

from server import db
from server.accounts.services import bind_phone
from server.errors import ValidationError
from server.orders.models import Order, OrderStatus
from server.points.models import HoldState, RewardHold
from server.risk import signals
from server.risk.models import RiskEvent, RiskReview, RiskSignal
from server.settings.services import set_setting
from tests.risk.generate import KINDS

#: The event each kind is caught at, and whether it holds rewards (an order's or a lead's at the hold score).
CAUGHT_AT = {
    "shared_phone": (RiskEvent.payment, True),
    "shared_address": (RiskEvent.payment, True),
    "shared_payer": (RiskEvent.payment, True),
    "address_cluster": (RiskEvent.payment, False),
    "client_cluster": (RiskEvent.sign_in, False),
    "bind_burst": (RiskEvent.bind, False),
    "refund_pattern": (RiskEvent.payment, True),
    "quick_first_order": (RiskEvent.payment, False),
    "lead_burst": (RiskEvent.lead, True),
    "redemption_velocity": (RiskEvent.redemption, False),
    "scene_requests": (RiskEvent.scene, False),
}


def reviews_with(sess, member_id: int, signal: str) -> list[RiskReview]:
    return list(sess.scalars(
        select(RiskReview).join(RiskSignal, RiskSignal.review_id == RiskReview.id).where(RiskReview.member_id == member_id, RiskSignal.signal == signal)
    ))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_of_fraud_opens_a_review_with_its_signal(builder, inject, kind):
    case = inject(kind)
    found = reviews_with(builder.sess, case.member_id, case.signal)
    event, holds = CAUGHT_AT[kind]
    assert any(r.event == event for r in found), [(r.event, r.reasons) for r in found]
    review = next(r for r in found if r.event == event)
    assert review.score >= 30 and review.held is holds
    if holds:
        hold = builder.sess.scalar(select(RewardHold).where(RewardHold.subject == review.subject, RewardHold.ref_id == review.ref_id))
        assert hold is not None and hold.state == HoldState.held


def test_one_step_below_each_threshold_nothing_is_recorded(builder):
    """Two refunds, two quick buyers, three leads alike: each one short of its setting."""
    sess = builder.sess
    sharer = builder.member()
    buyer = builder.member()
    builder.bind(buyer, sharer, days_ago=3)
    builder.refund(builder.order(buyer))
    builder.order(buyer)  # one refunded order before: the setting asks for two
    name = builder.name()
    for _ in range(3):
        builder.lead(sharer, name=name)
    for _ in range(4):
        builder.redeem(buyer)
    for _ in range(4):
        builder.bind(builder.member(), sharer)
    assert sess.scalar(select(func.count()).select_from(RiskReview)) == 0


def test_an_honest_member_pays_and_nothing_changes(builder):
    sess = builder.sess
    sharer = builder.member()
    buyer = builder.member()
    builder.bind(buyer, sharer, days_ago=10)
    builder.sign_in(buyer, "10.1.2.3")
    order = builder.order(buyer)
    assert sess.scalar(select(func.count()).select_from(RiskReview)) == 0
    assert sess.scalar(select(func.count()).select_from(RewardHold)) == 0
    assert order.status == OrderStatus.paid


def test_addresses_are_compared_after_folding_width_case_and_spaces():
    assert signals.normalise(" 上海市 浦东新区\t幸福路１２号 Room Ａ ") == signals.normalise("上海市浦东新区幸福路12号room a")
    assert signals.normalise("幸福路12号") != signals.normalise("幸福路13号")


def test_the_merchant_settings_move_the_thresholds(builder):
    sess = builder.sess
    set_setting(sess, "risk_redemptions_per_day", 2, by="test")
    member = builder.member()
    builder.redeem(member)
    builder.redeem(member)
    assert reviews_with(sess, member.id, "redemption_velocity")
    set_setting(sess, "risk_enabled", False, by="test")
    sharer = builder.member()
    buyer = builder.member(phone="13912345678")
    builder.bind(buyer, sharer, days_ago=3)
    bind_phone(sess, sharer, "13912345678")
    builder.order(buyer)
    assert not reviews_with(sess, sharer.id, "shared_identity")


def test_a_scoring_error_is_logged_and_the_payment_goes_on(builder, monkeypatch, caplog):
    sess = builder.sess
    sharer = builder.member()
    buyer = builder.member()
    builder.bind(buyer, sharer, days_ago=3)

    def broken(*args, **kwargs):
        raise RuntimeError("scoring broke")

    monkeypatch.setattr(signals, "refund_pattern", broken)
    with caplog.at_level(logging.ERROR, logger="server.risk"):
        order = builder.order(buyer)
    assert order.status == OrderStatus.paid and order.paid_at is not None
    assert any("risk scoring of payment" in r.getMessage() for r in caplog.records)
    # No review was written (a review is written whole, in its own savepoint, or not at all); the order's own rows stay.
    assert sess.scalar(select(func.count()).select_from(RiskReview)) == 0
    assert sess.get(Order, order.id).status == OrderStatus.paid
    db.commit()


def test_a_sharer_has_one_open_review_per_event_which_takes_on_new_signals(builder):
    sess = builder.sess
    sharer = builder.member()
    for _ in range(8):
        builder.bind(builder.member(), sharer)  # the eighth is a burst
    twin = builder.member(phone="17700000001")
    bind_phone(sess, sharer, "17700000001")
    builder.bind(twin, sharer)  # still a burst, and now the phone is shared too
    reviews = sess.scalars(select(RiskReview).where(RiskReview.member_id == sharer.id, RiskReview.event == RiskEvent.bind)).all()
    assert len(reviews) == 1
    assert [r["signal"] for r in reviews[0].reasons] == ["bind_burst", "shared_identity"] and reviews[0].score == 100
    assert sorted(sess.scalars(select(RiskSignal.signal).where(RiskSignal.review_id == reviews[0].id))) == ["bind_burst", "shared_identity"]


def test_the_hold_score_cannot_go_below_the_review_score(builder):
    sess = builder.sess
    with pytest.raises(ValidationError):
        set_setting(sess, "risk_hold_score", 20, by="test")
    with pytest.raises(ValidationError):
        set_setting(sess, "risk_review_score", 70, by="test")
    set_setting(sess, "risk_review_score", 60, by="test")
    set_setting(sess, "risk_hold_score", 60, by="test")


def test_a_deadlock_in_scoring_fails_the_payment_rather_than_letting_half_of_it_commit(builder, monkeypatch):
    """MariaDB answers a deadlock by rolling the whole transaction back, the payment's rows with it: going on
    would commit only what came after. The scoring's error is raised, and the unit of work rolls back."""
    from sqlalchemy.exc import OperationalError

    sess = builder.sess
    sharer = builder.member()
    buyer = builder.member()
    builder.bind(buyer, sharer, days_ago=3)

    def deadlocked(*args, **kwargs):
        raise OperationalError("SELECT …", {}, Exception(1213, "Deadlock found when trying to get lock; try restarting transaction"))

    monkeypatch.setattr(signals, "refund_pattern", deadlocked)
    with pytest.raises(OperationalError):
        builder.order(buyer)
    sess.rollback()


def test_the_days_scene_count_bounds_the_hours_only_when_the_day_began_an_hour_ago_or_more(app, builder):
    """``scene_issued`` carries what the quota check counted: the sharer's scenes since the day began. When the
    day began within the hour, the hour reaches into yesterday and its scenes are counted, whatever the day's say;
    at the signal's minimum they are counted too."""
    from datetime import timedelta

    from server.db import utcnow
    from tests.statements import statements_sent

    sess = builder.sess
    limits = signals.thresholds(sess)
    assert int(limits["risk_scene_minimum"]) == 10
    busy = builder.member()
    builder.scenes(busy, 12)  # twelve in the last hour: above the minimum and far above a month's average
    now = utcnow()
    with statements_sent(app) as sent:
        # The day began 30 minutes ago and saw 1 (the rest were yesterday's): the hour is counted, and is a signal.
        assert signals.scene_requests(sess, busy.id, limits, now, issued_since=(now - timedelta(minutes=30), 1)) is not None
    assert sent, "the hour's scenes were not counted"
    with statements_sent(app) as sent:
        # The day began exactly an hour ago and saw 12: at or above the minimum, so counted, and a signal.
        assert signals.scene_requests(sess, busy.id, limits, now, issued_since=(now - timedelta(hours=1), 12)) is not None
    assert sent

    steady = builder.member()
    builder.scenes(steady, 9)
    with statements_sent(app) as sent:
        # The day began an hour ago and saw 10, its last hour too: the minimum, so counted (it is no signal:
        # one bursty hour of 10 against no history is under ten times the floor of one an hour).
        signals.scene_requests(sess, steady.id, limits, now, issued_since=(now - timedelta(hours=1), 10))
    assert sent
    with statements_sent(app) as sent:
        # The day began two hours ago and saw 9: the hour saw 9 at most, under the minimum, and nothing is counted.
        assert signals.scene_requests(sess, steady.id, limits, now, issued_since=(now - timedelta(hours=2), 9)) is None
    assert sent == []


def test_a_scene_is_scored_on_the_quota_checks_count_without_counting_the_scenes_again(app, builder, monkeypatch):
    """Issuing a member's scene counts their scenes of the day (the quota, under their lock) once: the risk check
    takes that count, the new scene included, as its bound rather than counting the last hour over again; at
    the signal's minimum it counts, and the tenth scene of a sudden hour is still caught. The day is made to
    begin two hours ago, so the bound applies whatever the time of day."""
    from datetime import timedelta

    from server.referral import services as referral
    from tests.statements import statements_sent

    monkeypatch.setattr(referral, "day_start", lambda now: now - timedelta(hours=2))
    sess = builder.sess
    sharer = builder.member()
    builder.scenes(sharer, 3)
    with statements_sent(app) as sent:
        builder.scene(sharer, "fourth")
    counts = [s for s in sent if s.startswith("SELECT count(*)") and "FROM scenes" in s]
    assert len(counts) == 1, counts
    builder.scenes(sharer, 5)  # nine in all
    assert not reviews_with(sess, sharer.id, "scene_requests")
    with statements_sent(app) as sent:
        builder.scene(sharer, "tenth")
    counts = [s for s in sent if s.startswith("SELECT count(*)") and "FROM scenes" in s]
    assert len(counts) >= 2, counts
    assert reviews_with(sess, sharer.id, "scene_requests"), "the tenth scene of the hour was not scored"
