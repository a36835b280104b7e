"""Telling members what happened, within WeChat's rules: the merchant's settings per event, the
members' subscribe allowances, and the outbox rows events write (sent by ``delivery``).

A subscribe message goes to a member only while they have an allowance of its template left:
one per acceptance they reported from ``wx.requestSubscribeMessage``, used up one per message.
A notifying event writes an outbox row in its own unit of work (so a rollback takes the message
with it); the row is sent after the commit, and the scheduler sends whatever is still due.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import db, tasks
from server.accounts.models import Member, MemberStatus
from server.accounts.services import record_audit
from server.db import rowcount, utcnow
from server.notifications.delivery import deliver
from server.notifications.errors import NotificationNotFoundError, NotResendableError
from server.notifications.fields import SOURCES, KeywordMap, parse_mapping, render
from server.notifications.models import NotifyEvent, OAFollower, OutboxMessage, OutboxState, SubscriptionAllowance
from server.settings.services import SettingSpec, get_setting, register


logger = logging.getLogger(__name__)


# -- settings --------------------------------------------------------------------------------------

EVENT_TITLES = {
    NotifyEvent.points_pending: "points earned (pending) from an order a member brought in",
    NotifyEvent.points_available: "points settled into available",
    NotifyEvent.order_shipped: "the member's order shipped",
    NotifyEvent.refund_result: "the member's refund succeeded, failed or was rejected",
    NotifyEvent.distributor_decided: "the member's distributor application approved or rejected",
    NotifyEvent.lead_valid: "a lead the member brought marked valid",
    NotifyEvent.redemption_fulfilled: "the member's redemption fulfilled",
}


def setting_key(event: NotifyEvent, fallback: bool = False) -> str:
    """The setting mapping ``event`` to a template: ``notify_<event>``, or ``notify_<event>_oa`` for the official account."""
    return f"notify_{event.value}" + ("_oa" if fallback else "")


def _checker(event: NotifyEvent) -> Any:
    def check(_sess: Session, value: str) -> None:
        parse_mapping(event, value)

    return check


def _declare() -> None:
    for event, title in EVENT_TITLES.items():
        sources = ", ".join(SOURCES[event])
        register(
            SettingSpec(
                setting_key(event),
                str,
                "off",
                f"Subscribe message when {title}: off, or the template id then keyword=source pairs "
                f"(sources: {sources}) and optionally page=<mini-program page>.",
                max_length=500,
                extra_checks=(_checker(event),),
            ),
            SettingSpec(
                setting_key(event, fallback=True),
                str,
                "off",
                f"Official-account template message when {title} and the member, who follows the account, "
                "has no subscribe allowance left: off, or the template id then keyword=source pairs (as above).",
                max_length=500,
                extra_checks=(_checker(event),),
            ),
        )


_declare()


def mapping_for(sess: Session, event: NotifyEvent, fallback: bool = False) -> KeywordMap | None:
    """The merchant's mapping for ``event`` (or its official-account fallback); None when off, or when a
    stored value no longer parses (a message is never worth failing the event that triggers it)."""
    key = setting_key(event, fallback)
    try:
        return parse_mapping(event, str(get_setting(sess, key)))
    except ValueError as error:
        logger.warning("setting %s is not a valid mapping (%s); the event sends nothing", key, error)
        return None


# -- allowances --------------------------------------------------------------------------------------

ACCEPT = "accept"


def record_subscriptions(sess: Session, member_id: int, results: Iterable[tuple[str, str]]) -> dict[str, int]:
    """What the member answered in ``wx.requestSubscribeMessage``, as (template id, result): each
    ``accept`` adds one allowance of its template. Returns the allowances now left of each template."""
    reported = list(results)
    for template_id, result in reported:
        if result == ACCEPT:
            _add_allowance(sess, member_id, template_id)
    allowances = remaining_allowances(sess, member_id)
    return {template_id: allowances.get(template_id, 0) for template_id, _ in reported}


def _add_allowance(sess: Session, member_id: int, template_id: str) -> None:
    where = (SubscriptionAllowance.member_id == member_id, SubscriptionAllowance.template_id == template_id)
    grow = update(SubscriptionAllowance).where(*where).values(
        remaining=SubscriptionAllowance.remaining + 1, accepted=SubscriptionAllowance.accepted + 1, updated_at=utcnow()
    ).execution_options(synchronize_session=False)
    if rowcount(sess.execute(grow)) == 1:
        return
    try:
        with sess.begin_nested():
            sess.add(SubscriptionAllowance(member_id=member_id, template_id=template_id, remaining=1, accepted=1))
    except IntegrityError:
        sess.execute(grow)  # a concurrent report created the row first


def remaining_allowances(sess: Session, member_id: int) -> dict[str, int]:
    """The member's allowances left, by template id."""
    rows = sess.scalars(
        select(SubscriptionAllowance).where(SubscriptionAllowance.member_id == member_id).execution_options(populate_existing=True)
    )
    return {row.template_id: row.remaining for row in rows}


# -- the outbox ----------------------------------------------------------------------------------------


def queue_message(sess: Session, event: NotifyEvent, key: str, member_id: int, values: dict[str, str]) -> OutboxMessage | None:
    """Write the message ``event`` tells member ``member_id``, in the caller's unit of work, and send it
    after the commit. Nothing when the event is switched off, the member is disabled, or ``key`` was
    written before. A message whose values cannot be made to fit is kept, dropped, with the reason."""
    mapping = mapping_for(sess, event)
    if mapping is None:
        return None
    member = sess.get(Member, member_id)
    if member is None or member.status != MemberStatus.active:
        return None
    full_key = f"{event.value}:{key}"
    if sess.scalar(select(OutboxMessage.id).where(OutboxMessage.key == full_key)) is not None:
        return None
    row = OutboxMessage(**_message_fields(mapping, mapping_for(sess, event, fallback=True), event, full_key, member_id, values))
    try:
        with sess.begin_nested():
            sess.add(row)
    except IntegrityError:
        return None  # the same event, written concurrently
    if row.state == OutboxState.queued:
        tasks.defer(deliver, row.id)
    return row


#: Rows a bulk write reads or writes per statement.
BULK_CHUNK = 900
#: A key another writer inserted first is skipped, as ``queue_message`` skips it.
_QUEUE = insert(cast(Table, OutboxMessage.__table__)).prefix_with("OR IGNORE", dialect="sqlite").prefix_with("IGNORE", dialect="mysql")


def queue_messages(sess: Session, event: NotifyEvent, messages: Iterable[tuple[str, int, dict[str, str]]]) -> int:
    """``queue_message`` for many (key, member id, values) at once, in a few statements whatever their number
    (a settlement run tells thousands of members); ``messages`` is only read when the event is on. Returns the rows written."""
    mapping = mapping_for(sess, event)
    if mapping is None:
        return 0
    messages = list(messages)
    fallback_map = mapping_for(sess, event, fallback=True)
    written = 0
    for start in range(0, len(messages), BULK_CHUNK):
        chunk = messages[start : start + BULK_CHUNK]
        keys = [f"{event.value}:{key}" for key, _, _ in chunk]
        active = set(sess.scalars(select(Member.id).where(Member.id.in_({m for _, m, _ in chunk}), Member.status == MemberStatus.active)))
        seen = set(sess.scalars(select(OutboxMessage.key).where(OutboxMessage.key.in_(keys))))
        rows = [
            _message_fields(mapping, fallback_map, event, full_key, member_id, values)
            for full_key, (_, member_id, values) in zip(keys, chunk)
            if member_id in active and full_key not in seen
        ]
        if not rows:
            continue
        sess.execute(_QUEUE, [{"state": OutboxState.queued, "reason": ""} | row for row in rows])
        queued = sess.scalars(select(OutboxMessage.id).where(OutboxMessage.key.in_([row["key"] for row in rows]), OutboxMessage.state == OutboxState.queued).order_by(OutboxMessage.id))
        for outbox_id in queued:
            tasks.defer(deliver, outbox_id)
        written += len(rows)
    return written


def _message_fields(mapping: KeywordMap, fallback_map: KeywordMap | None, event: NotifyEvent, full_key: str, member_id: int, values: dict[str, str]) -> dict[str, Any]:
    """The outbox row of one message: the template's data fitted to its types, the official account's
    fallback if the merchant set one, dropped with the reason if it cannot fit."""
    rendered = render(mapping, values)
    fallback: dict[str, Any] | None = None
    if fallback_map is not None:
        fallback_rendered = render(fallback_map, values)
        if fallback_rendered.problem is None:
            fallback = {"template_id": fallback_map.template_id, "data": fallback_rendered.data, "page": fallback_map.page}
    fields: dict[str, Any] = {
        "key": full_key,
        "event": event,
        "member_id": member_id,
        "template_id": mapping.template_id,
        "data": rendered.data,
        "page": mapping.page,
        "fallback": fallback,
    }
    if rendered.problem is not None:
        fields |= {"state": OutboxState.dropped, "reason": db.fit(OutboxMessage.reason, rendered.problem)}
    return fields


def resend(sess: Session, outbox_id: int, *, staff_id: int) -> OutboxMessage:
    """Put a dropped or failed message back in the queue, as it was written (staff, once the member has an
    allowance again or the template is fixed); sent after the commit. Audited."""
    row = sess.get(OutboxMessage, outbox_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise NotificationNotFoundError()
    if row.state not in (OutboxState.dropped, OutboxState.failed):
        raise NotResendableError(data={"state": row.state.value})
    previous = {"state": row.state.value, "errcode": row.errcode, "reason": row.reason}
    row.state, row.next_attempt_at, row.attempts, row.lease_until = OutboxState.queued, utcnow(), 0, None
    row.errcode, row.reason, row.channel = None, "", None
    sess.flush()
    record_audit(sess, staff_id, "notification.resend", f"notification:{row.id}", previous)
    tasks.defer(deliver, row.id)
    return row


def record_follow(sess: Session, oa_openid: str, unionid: str | None, following: bool) -> None:
    """Remember whether an official-account user follows, and their unionid when WeChat gave it."""
    row = sess.get(OAFollower, oa_openid, with_for_update=True)
    if row is None:
        try:
            with sess.begin_nested():
                sess.add(OAFollower(oa_openid=oa_openid, unionid=unionid, following=following))
            return
        except IntegrityError:
            row = sess.get(OAFollower, oa_openid, with_for_update=True, populate_existing=True)
            assert row is not None
    row.following = following
    if unionid:
        row.unionid = unionid
    sess.flush()
