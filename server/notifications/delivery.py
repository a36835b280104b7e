"""Sending outbox rows. Each send is its own unit of work, committed in three steps so no transaction
is open while WeChat answers: a sender claims the row with a conditional UPDATE (and the allowance
it uses with another) and commits, calls WeChat, then records the outcome in a new transaction,
conditional on its claim still being the row's latest. Two senders racing for a row: one claims it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from server import db, metrics
from server.accounts.models import Member
from server.db import rowcount, utcnow
from server.notifications.models import MessageChannel, OAFollower, OutboxMessage, OutboxState, SubscriptionAllowance
from server.wechat import miniprogram, official_account
from server.wechat.client import WeChatError, WeChatUnavailableError

#: WeChat errcodes worth trying again later: busy, our token refused, call quotas reached.
TRANSIENT_ERRCODES = frozenset({-1, 40001, 40014, 42001, 45009, 45011})
#: The member has no acceptance of the template left.
NO_SUBSCRIPTION = 43101
#: The member does not follow the official account.
NOT_FOLLOWING = 43004
#: The reason a message is counted as dropped before any send: no allowance left, and no fallback that reaches the member.
NO_ALLOWANCE = "no_allowance"
#: A claimed row is the claimant's this long; after it another sender may take it again.
LEASE = timedelta(minutes=5)
#: Sends tried before a message that WeChat keeps turning away for now is given up (``failed``).
MAX_ATTEMPTS = 8
#: The longest wait between two tries.
MAX_BACKOFF = timedelta(hours=6)
#: Rows one drain looks at.
DRAIN_BATCH = 500


@dataclass(frozen=True)
class Claim:
    """A row a sender holds, and what to send."""

    id: int
    attempts: int
    channel: MessageChannel
    openid: str
    template_id: str
    data: dict[str, str]
    page: str


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th try failed for now: 1, 2, 4 … minutes, at most ``MAX_BACKOFF``."""
    return min(timedelta(minutes=2 ** min(max(attempts - 1, 0), 16)), MAX_BACKOFF)


def _due(now: datetime) -> Any:
    return or_(
        and_(OutboxMessage.state == OutboxState.queued, OutboxMessage.next_attempt_at <= now),
        and_(OutboxMessage.state == OutboxState.sending, OutboxMessage.lease_until < now),
    )


def _follower_openid(sess: Session, member_id: int) -> str | None:
    """The official-account openid of the member, if they follow the account."""
    member = sess.get(Member, member_id)
    if member is None or not member.unionid:
        return None
    return sess.scalars(
        select(OAFollower.oa_openid).where(OAFollower.unionid == member.unionid, OAFollower.following.is_(True)).limit(1)
    ).first()


def claim(sess: Session, outbox_id: int, now: datetime) -> Claim | None:
    """Take the row if it is due and nobody holds it, and the allowance it uses; commits. None if not ours.

    No allowance left and no fallback: the row is dropped here, without asking WeChat (which would answer 43101).
    """
    taken = sess.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id, _due(now))
        .values(state=OutboxState.sending, lease_until=now + LEASE, attempts=OutboxMessage.attempts + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(taken) != 1:
        return None
    row = sess.scalars(select(OutboxMessage).where(OutboxMessage.id == outbox_id).execution_options(populate_existing=True)).one()
    member = sess.get(Member, row.member_id)
    used = rowcount(sess.execute(
        update(SubscriptionAllowance)
        .where(
            SubscriptionAllowance.member_id == row.member_id,
            SubscriptionAllowance.template_id == row.template_id,
            SubscriptionAllowance.remaining > 0,
        )
        .values(remaining=SubscriptionAllowance.remaining - 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )) == 1
    plan: Claim | None = None
    if used and member is not None:
        plan = Claim(row.id, row.attempts, MessageChannel.subscribe, member.openid, row.template_id, dict(row.data), row.page)
    elif row.fallback:
        oa_openid = _follower_openid(sess, row.member_id)
        if oa_openid is not None:
            fallback = row.fallback
            plan = Claim(row.id, row.attempts, MessageChannel.template, oa_openid, fallback["template_id"], dict(fallback["data"]), fallback.get("page") or "")
    if plan is None:
        row.state, row.lease_until = OutboxState.dropped, None
        row.reason = "no subscription left for the template" + (" and the member does not follow the official account" if row.fallback else "")
        row.errcode = None
    else:
        row.channel = plan.channel
    db.commit()
    if plan is None:
        metrics.count_notification("dropped", NO_ALLOWANCE)
    return plan


def _give_back(sess: Session, member_id: int, template_id: str, now: datetime) -> None:
    """Return an allowance a send that WeChat turned down did not use."""
    sess.execute(
        update(SubscriptionAllowance)
        .where(SubscriptionAllowance.member_id == member_id, SubscriptionAllowance.template_id == template_id)
        .values(remaining=SubscriptionAllowance.remaining + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )


_RID = re.compile(r"\s*(?:rid|hint):.*$")


def _reason(error: WeChatError) -> str:
    words = _RID.sub("", error.errmsg) if error.errmsg else ""
    return db.fit(OutboxMessage.reason, f"{error.errcode}: {words}" if error.errcode is not None else words or "WeChat did not answer")


def record_outcome(sess: Session, plan: Claim, error: WeChatError | None, msgid: int | None, now: datetime) -> bool:
    """Record how the send of ``plan`` went, if the claim is still the row's latest; commits.
    True when the row should be tried again at once (the allowance ran out at WeChat and a fallback may do)."""
    row = sess.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.id == plan.id, OutboxMessage.state == OutboxState.sending, OutboxMessage.attempts == plan.attempts)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        db.commit()
        return False
    subscribe = plan.channel == MessageChannel.subscribe
    again = False
    # How the send is counted when not by the state it leaves the row in (sent, dropped, failed).
    outcome: str | None = None
    row.lease_until, row.updated_at = None, now
    if error is None:
        row.state, row.sent_at, row.msgid, row.errcode, row.reason = OutboxState.sent, now, msgid, None, ""
    elif isinstance(error, WeChatUnavailableError) or error.errcode in TRANSIENT_ERRCODES or error.errcode is None:
        if subscribe:
            _give_back(sess, row.member_id, plan.template_id, now)
        row.errcode, row.reason = error.errcode, _reason(error)
        if row.attempts >= MAX_ATTEMPTS:
            row.state = OutboxState.failed
        else:
            row.state, row.next_attempt_at = OutboxState.queued, now + backoff(row.attempts)
            outcome = "retried"
    elif subscribe and error.errcode == NO_SUBSCRIPTION:
        # WeChat knows better: the member has none left (refused, or used elsewhere).
        sess.execute(
            update(SubscriptionAllowance)
            .where(SubscriptionAllowance.member_id == row.member_id, SubscriptionAllowance.template_id == plan.template_id)
            .values(remaining=0, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        row.errcode, row.reason = error.errcode, _reason(error)
        if row.fallback:
            row.state, row.next_attempt_at = OutboxState.queued, now
            again = True
            outcome = "retried"
        else:
            row.state = OutboxState.dropped
    else:
        if subscribe:
            _give_back(sess, row.member_id, plan.template_id, now)
        if not subscribe and error.errcode == NOT_FOLLOWING:
            sess.execute(update(OAFollower).where(OAFollower.oa_openid == plan.openid).values(following=False, updated_at=now))
        row.state, row.errcode, row.reason = OutboxState.dropped, error.errcode, _reason(error)
    db.commit()
    metrics.count_notification(outcome or row.state.value, error.metrics_label if error is not None else "none")
    return again


def _send(plan: Claim) -> int | None:
    if plan.channel == MessageChannel.subscribe:
        return miniprogram().send_subscribe_message(
            plan.openid, plan.template_id, plan.data, page=plan.page or None, miniprogram_state=current_app.config["WECHAT_MINIPROGRAM_STATE"]
        )
    pagepath = (miniprogram().appid, plan.page) if plan.page else None
    return official_account().send_template_message(plan.openid, plan.template_id, plan.data, miniprogram=pagepath)


def deliver(outbox_id: int, now: datetime | None = None) -> str | None:
    """Send one outbox row if it is due and free: claim and commit, ask WeChat, record the outcome.
    Runs in a unit of work of its own (a background task or a drain); returns the row's state, or None if it was not ours."""
    sess = db.session()
    for _ in range(2):
        at = now or utcnow()
        plan = claim(sess, outbox_id, at)
        if plan is None:
            break
        error: WeChatError | None = None
        msgid: int | None = None
        try:
            msgid = _send(plan)
        except WeChatError as exc:
            error = exc
        if not record_outcome(sess, plan, error, msgid, now or utcnow()):
            break
    state = sess.scalar(select(OutboxMessage.state).where(OutboxMessage.id == outbox_id))
    db.commit()
    return state.value if state is not None else None


def drain(app: Flask, now: datetime, limit: int = DRAIN_BATCH) -> dict[str, int]:
    """Send every row that is due (queued and past its wait, or claimed by a sender whose lease ran out)."""
    with db.unit_of_work(app) as sess:
        ids = list(sess.scalars(select(OutboxMessage.id).where(_due(now)).order_by(OutboxMessage.id).limit(limit)))
    counts: dict[str, int] = {}
    for outbox_id in ids:
        with db.unit_of_work(app):
            try:
                state = deliver(outbox_id, now)
            except Exception:
                current_app.logger.exception("notification %s not sent; the next drain tries again", outbox_id)
                state = "error"
        if state is not None:
            counts[state] = counts.get(state, 0) + 1
    return counts


