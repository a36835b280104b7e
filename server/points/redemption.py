"""Spending points: the redemption catalog, redeeming, fulfilment and cancellation, invite codes,
staff adjustments, and the member's and staff's view of the ledger.

A redemption is one unit of work inside one savepoint: stock is reserved with a
conditional UPDATE, the points move available → redemption through
``ledger.post`` (whose guarded UPDATE keeps the balance from going below zero),
and the Redemption row (with one scene per invite code) is written. A refusal at
any step leaves no trace.

Everything here that changes one member's points first locks that member's available
account, so their redemptions, cancellations and adjustments run one at a time:
the per-member limit and the idempotency check are then read after the previous
one committed. It is the ledger's one lock order (``ledger``'s docstring): a
member's available account, then their debt account (a cancellation or a credit
pays debt first), then item stock (the merchant's accounts take no row lock). Settlements,
reversals and credits lock a member's available account before their debt account
too, so none of them can deadlock another.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import events
from server.accounts.models import Member
from server.accounts.services import record_audit
from server.db import paginate, rowcount, utcnow
from server.errors import BadRequestError, ConflictError, NotFoundError, ValidationError
from server.orders.models import Order
from server.points import ledger
from server.points.errors import (
    DuplicateRequestError,
    LedgerError,
    OutOfStockError,
    RedemptionItemNotFoundError,
    RedemptionNotFoundError,
)
from server.points.models import (
    Account,
    AccountKind,
    Entry,
    InviteCode,
    ItemKind,
    LedgerTransaction,
    OrderReward,
    Redemption,
    RedemptionItem,
    RedemptionStatus,
    SettlementRun,
    Statement,
    TxKind,
)
from server.points.settlement import Grant, grant_points
from server.referral.models import Channel, Scene
from server.referral.services import create_scene, revoke_scene
from server.settings.services import SettingSpec, get_setting, lock_named, register

K = AccountKind
S = RedemptionStatus

#: Far above any real price, far below overflow of price × quantity.
MAX_PRICE = 10_000_000_000
#: Most an invite code may cost, in points: a typo guard.
MAX_INVITE_CODE_POINTS = 100_000
#: What an Idempotency-Key header may be: visible ASCII, as many clients generate (UUIDs, ULIDs).
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,64}")

def _goods_stay_above(sess: Session, value: int) -> None:
    """A new minimum may not leave goods on sale below it: reprice or deactivate them first."""
    cheaper = sess.scalars(
        select(RedemptionItem.id).where(RedemptionItem.kind == ItemKind.goods, RedemptionItem.active.is_(True), RedemptionItem.price < value).order_by(RedemptionItem.id)
    ).all()
    if cheaper:
        raise ValueError(f"active goods cost less (items {', '.join(map(str, cheaper))}); reprice or deactivate them first")


def _reprice_invite_codes(sess: Session, points: int) -> None:
    """Every invite-code item costs exactly the setting, so a new value reprices them all at once."""
    sess.execute(
        update(RedemptionItem).where(RedemptionItem.kind == ItemKind.invite_code).values(price=points * 100).execution_options(synchronize_session="fetch")
    )


register(
    SettingSpec(
        "min_goods_price",
        int,
        200_000,
        "Lowest price of a goods item in the points shop, in hundredths of a point (200000 = 2,000 points = ¥2,000). "
        "Checked when an item is created or repriced; it cannot be raised above an active goods item's price.",
        minimum=1,
        maximum=MAX_PRICE,
        extra_checks=(_goods_stay_above,),
    ),
    SettingSpec(
        "invite_code_points",
        int,
        100,
        "What one invite code costs, in whole points (seed 003: 100 points = 1 invite code). Every invite-code item "
        "costs exactly this; changing it reprices them.",
        minimum=1,
        maximum=MAX_INVITE_CODE_POINTS,
        after_change=(_reprice_invite_codes,),
    ),
)


def invite_code_price(sess: Session) -> int:
    """What an invite code costs, in hundredths of a point."""
    return int(get_setting(sess, "invite_code_points")) * 100

TRANSITIONS: dict[RedemptionStatus, frozenset[RedemptionStatus]] = {
    S.placed: frozenset({S.fulfilled, S.cancelled}),
    S.fulfilled: frozenset(),
    S.cancelled: frozenset(),
}


# -- errors of redemption (the ones shared with the ledger are in server.points.errors) -------


class IdempotencyKeyRequiredError(BadRequestError):
    code, message = 40040, "send an Idempotency-Key header of 1 to 64 visible ASCII characters: a new value per request, the same value to retry it"


class StatementNotFoundError(NotFoundError):
    code, message = 40442, "no such statement"


class RedemptionLimitError(ConflictError):
    code, message = 40944, "you have reached this item's limit per member"


class IllegalRedemptionTransitionError(ConflictError):
    code, message = 40945, "the redemption cannot make this move now"


class InviteCodeUsedError(ConflictError):
    code, message = 40946, "an invite code of this redemption has already been used, so it cannot be cancelled"


class ItemInUseError(ConflictError):
    code, message = 40947, "members have redeemed this item; deactivate it instead of deleting it"


def points_text(hundredths: int) -> str:
    """Hundredths of a point as people read them: 1250 → "12.50", -5 → "-0.05"."""
    sign = "-" if hundredths < 0 else ""
    whole, cents = divmod(abs(hundredths), 100)
    return f"{sign}{whole}.{cents:02d}"


def check_idempotency_key(value: str | None) -> str:
    """The client's Idempotency-Key, or 400 when it is missing or malformed."""
    value = (value or "").strip()
    if not IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise IdempotencyKeyRequiredError()
    return value


def _lock_available(sess: Session, member_id: int) -> Account:
    # Taken first by every unit of work here that touches the member's points (see the module docstring).
    acct = ledger.account(sess, member_id, K.available)
    sess.refresh(acct, with_for_update=True)
    return acct


# -- the catalog -----------------------------------------------------------------------


def _price_error(message: str) -> ValidationError:
    return ValidationError(message, data={"errors": [{"field": "price", "error": message}]})


def _check_price(sess: Session, kind: ItemKind, price: int) -> None:
    if kind == ItemKind.goods:
        minimum = int(get_setting(sess, "min_goods_price"))
        if price < minimum:
            raise _price_error(f"goods cost at least {points_text(minimum)} points (setting min_goods_price)")
    if kind == ItemKind.invite_code and price != (fixed := invite_code_price(sess)):
        raise _price_error(f"an invite code costs exactly {points_text(fixed)} points (setting invite_code_points)")


def list_items(sess: Session, *, active: bool | None = None, kind: ItemKind | None = None, offset: int = 0, limit: int = 20) -> tuple[list[RedemptionItem], int]:
    """Items in catalog order (``sort``, then oldest first); ``active`` None lists both."""
    stmt = select(RedemptionItem)
    if active is not None:
        stmt = stmt.where(RedemptionItem.active.is_(active))
    if kind is not None:
        stmt = stmt.where(RedemptionItem.kind == kind)
    return paginate(sess, stmt, offset=offset, limit=limit, order_by=(RedemptionItem.sort, RedemptionItem.id))


def get_item(sess: Session, item_id: int, *, active_only: bool = False) -> RedemptionItem:
    """An item; with ``active_only``, a deactivated one counts as missing."""
    item = sess.get(RedemptionItem, item_id)
    if item is None or (active_only and not item.active):
        raise RedemptionItemNotFoundError()
    return item


def create_item(
    sess: Session,
    *,
    kind: ItemKind,
    title: str,
    price: int | None = None,
    description: str = "",
    image_url: str = "",
    stock: int | None = None,
    per_member_limit: int | None = None,
    active: bool = True,
    sort: int = 0,
    staff_id: int | None = None,
) -> RedemptionItem:
    """A new catalog item; goods are refused below ``min_goods_price``, invite codes cost exactly ``invite_code_points``.
    Audited when ``staff_id`` (the staff member who made it) is given."""
    if price is None:
        if kind != ItemKind.invite_code:
            raise _price_error("a price is required")
        price = invite_code_price(sess)
    _check_price(sess, kind, price)
    item = RedemptionItem(
        kind=kind,
        title=title,
        description=description,
        image_url=image_url,
        price=price,
        stock=stock,
        per_member_limit=per_member_limit,
        active=active,
        sort=sort,
    )
    sess.add(item)
    sess.flush()
    if staff_id is not None:
        record_audit(sess, staff_id, "redemption_item.create", f"redemption_item:{item.id}", {"title": item.title, "kind": item.kind.value, "price": item.price})
    return item


def update_item(sess: Session, item_id: int, requested: dict[str, Any], *, staff_id: int | None = None) -> RedemptionItem:
    """Change an item; ``stock_delta`` adds to (or takes from) a finite stock without overwriting concurrent redemptions.
    Audited, with the changes as requested, when ``staff_id`` is given."""
    item = get_item(sess, item_id)
    changes = dict(requested)
    delta = changes.pop("stock_delta", None)
    if "price" in changes or (changes.get("active") and not item.active):
        # Repriced, or back on sale after the minimum may have risen: goods stay at or above it.
        _check_price(sess, item.kind, changes.get("price", item.price))
    for key, value in changes.items():
        setattr(item, key, value)
    if delta:
        if item.stock is None:
            raise ValidationError(data={"errors": [{"field": "stock_delta", "error": "this item's stock is unlimited"}]})
        result = sess.execute(
            update(RedemptionItem)
            .where(RedemptionItem.id == item.id, RedemptionItem.stock + delta >= 0)
            .values(stock=RedemptionItem.stock + delta)
            .execution_options(synchronize_session=False)
        )
        if rowcount(result) != 1:
            raise ValidationError(data={"errors": [{"field": "stock_delta", "error": "would take the stock below zero"}]})
    sess.flush()
    sess.refresh(item)
    if staff_id is not None:
        record_audit(sess, staff_id, "redemption_item.update", f"redemption_item:{item.id}", requested)
    return item


def delete_item(sess: Session, item_id: int, *, staff_id: int | None = None) -> None:
    """Delete an item nobody has redeemed; one with redemptions stays, for their history. Audited when ``staff_id`` is given."""
    item = get_item(sess, item_id)
    if sess.scalar(select(Redemption.id).where(Redemption.item_id == item.id).limit(1)) is not None:
        raise ItemInUseError()
    try:
        with sess.begin_nested():
            sess.delete(item)
    except IntegrityError:
        # Redeemed between the check and the delete; the foreign key refused it.
        raise ItemInUseError() from None
    if staff_id is not None:
        record_audit(sess, staff_id, "redemption_item.delete", f"redemption_item:{item_id}")


# -- redeeming -------------------------------------------------------------------------


@dataclass(frozen=True)
class Redeemed:
    redemption: Redemption
    #: False when the Idempotency-Key had redeemed before: nothing was charged this time.
    new: bool


def redeemed_quantity(sess: Session, member_id: int, item_id: int) -> int:
    """Units of ``item_id`` the member holds: every redemption not cancelled."""
    stmt = select(func.coalesce(func.sum(Redemption.quantity), 0)).where(
        Redemption.member_id == member_id, Redemption.item_id == item_id, Redemption.status != S.cancelled
    )
    return int(sess.scalar(stmt) or 0)


def redeem(
    sess: Session,
    member_id: int,
    *,
    item_id: int,
    quantity: int,
    idempotency_key: str,
    contact: dict[str, Any] | None = None,
) -> Redeemed:
    """Spend points on ``quantity`` of an item, once per idempotency key.

    The same key with the same request returns the first redemption; with a
    different request it is DuplicateRequestError. Not enough points, stock or
    allowance raises and changes nothing.
    """
    available = _lock_available(sess, member_id)
    existing = sess.scalar(select(Redemption).where(Redemption.member_id == member_id, Redemption.idempotency_key == idempotency_key))
    if existing is not None:
        if (existing.item_id, existing.quantity, existing.contact) != (item_id, quantity, contact):
            raise DuplicateRequestError(data={"redemption_id": existing.id})
        return Redeemed(existing, False)

    item = get_item(sess, item_id, active_only=True)
    if item.kind == ItemKind.goods and not contact:
        raise ValidationError("goods are shipped: contact is required", data={"errors": [{"field": "contact", "error": "required for goods"}]})
    if item.per_member_limit is not None:
        held = redeemed_quantity(sess, member_id, item.id)
        if held + quantity > item.per_member_limit:
            raise RedemptionLimitError(data={"limit": item.per_member_limit, "redeemed": held})
    total = item.price * quantity
    redemption_account = ledger.account(sess, None, K.redemption)

    with sess.begin_nested():
        _reserve_stock(sess, item, quantity)
        redemption = Redemption(
            member_id=member_id, item_id=item.id, quantity=quantity, total=total, idempotency_key=idempotency_key, contact=contact
        )
        sess.add(redemption)
        sess.flush()
        posted = ledger.post(
            sess,
            key=redeem_key(member_id, idempotency_key),
            kind=TxKind.redeem,
            legs=[(available, -total), (redemption_account, total)],
            reason=f"Redeemed {quantity} × {item.title} (redemption #{redemption.id}) for {points_text(total)} points",
            member_id=member_id,
            actor=f"member:{member_id}",
            detail={"redemption_id": redemption.id, "item_id": item.id, "quantity": quantity},
        )
        if not posted.new:
            # The key is only ever posted together with its Redemption row, which did not exist.
            raise LedgerError(f"redemption key {idempotency_key!r} posted without a redemption")
        if item.kind == ItemKind.invite_code:
            _issue_invite_codes(sess, redemption)
    events.redemption_placed.send(sess, redemption=redemption)
    return Redeemed(redemption, True)


def redeem_key(member_id: int, idempotency_key: str) -> str:
    """The ledger key of a redemption: the client's key is only unique per member."""
    return f"redeem:{member_id}:{idempotency_key}"


def _reserve_stock(sess: Session, item: RedemptionItem, quantity: int) -> None:
    if item.stock is None:
        return
    result = sess.execute(
        update(RedemptionItem)
        .where(RedemptionItem.id == item.id, RedemptionItem.stock >= quantity)
        .values(stock=RedemptionItem.stock - quantity)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise OutOfStockError(data={"item_id": item.id})
    sess.refresh(item)


def _issue_invite_codes(sess: Session, redemption: Redemption) -> list[InviteCode]:
    codes = []
    for _ in range(redemption.quantity):
        scene = create_scene(sess, channel=Channel.invite_code, sharer_id=redemption.member_id)
        # Share scenes may lapse after scene_ttl_days; a code paid for with points lasts until it is used or cancelled.
        scene.expires_at = None
        code = InviteCode(scene_code=scene.code, owner_id=redemption.member_id, redemption_id=redemption.id)
        sess.add(code)
        codes.append(code)
    sess.flush()
    return codes


def mark_invite_code_used(sess: Session, scene_code: str, member_id: int) -> bool:
    """Record that ``member_id`` bound through invite code ``scene_code`` and retire it: one code, one invitee.

    To be called where a binding is made, after it succeeded. False when the
    scene is not an invite code or the code had been used already.
    """
    result = sess.execute(
        update(InviteCode)
        .where(InviteCode.scene_code == scene_code, InviteCode.used_by.is_(None))
        .values(used_by=member_id, used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        return False
    revoke_scene(sess, scene_code)
    return True


def on_member_bound(sess: Session, *, member: Member, inviter_id: int, channel: Channel, scene_code: str) -> None:
    """Handler of ``events.member_bound``: a binding through an invite code uses the code up."""
    if channel == Channel.invite_code:
        mark_invite_code_used(sess, scene_code, member.id)


# -- fulfilment and cancellation ---------------------------------------------------------


def get_redemption(sess: Session, redemption_id: int, *, member_id: int | None = None) -> Redemption:
    """A redemption; with ``member_id``, only if it is theirs."""
    row = sess.get(Redemption, redemption_id)
    if row is None or (member_id is not None and row.member_id != member_id):
        raise RedemptionNotFoundError()
    return row


def _transition(sess: Session, redemption: Redemption, to: RedemptionStatus, *, staff_id: int, note: str) -> None:
    current = redemption.status
    if to not in TRANSITIONS[current]:
        raise IllegalRedemptionTransitionError(f"a {current.value} redemption cannot become {to.value}", data={"from": current.value, "to": to.value})
    result = sess.execute(
        update(Redemption)
        .where(Redemption.id == redemption.id, Redemption.status == current)
        .values(status=to, decided_at=utcnow(), decided_by=staff_id, staff_note=note)
        .execution_options(synchronize_session=False)
    )
    sess.refresh(redemption)
    if rowcount(result) != 1:
        raise IllegalRedemptionTransitionError(f"the redemption is now {redemption.status.value}", data={"from": redemption.status.value, "to": to.value})


def fulfil_redemption(sess: Session, redemption_id: int, *, staff_id: int, note: str = "") -> Redemption:
    """Staff delivered it (shipped the goods, granted the access); placed → fulfilled. Audited as ``staff_id``'s action."""
    redemption = get_redemption(sess, redemption_id)
    _transition(sess, redemption, S.fulfilled, staff_id=staff_id, note=note)
    record_audit(sess, staff_id, "redemption.fulfil", f"redemption:{redemption.id}", {"note": note})
    events.redemption_fulfilled.send(sess, redemption=redemption)
    return redemption


def cancel_redemption(sess: Session, redemption_id: int, *, staff_id: int, note: str = "") -> Redemption:
    """placed → cancelled: the stock goes back and the points return, paying the member's debt first.

    An invite-code redemption can only be cancelled while none of its codes has
    been used; its codes are revoked so nobody can bind with them afterwards.
    Audited as ``staff_id``'s action.
    """
    redemption = get_redemption(sess, redemption_id)
    _lock_available(sess, redemption.member_id)
    sess.refresh(redemption)
    if S.cancelled not in TRANSITIONS[redemption.status]:
        raise IllegalRedemptionTransitionError(
            f"a {redemption.status.value} redemption cannot become cancelled", data={"from": redemption.status.value, "to": S.cancelled.value}
        )
    item = get_item(sess, redemption.item_id)
    if item.kind == ItemKind.invite_code:
        # bind_member holds this lock while it binds (and marks the code used), so a use that
        # committed is read below and no bind through these codes commits halfway through this.
        lock_named(sess, "referral-chain")
        codes = sess.scalars(
            select(InviteCode).where(InviteCode.redemption_id == redemption.id).with_for_update().execution_options(populate_existing=True)
        ).all()
        used = [c.scene_code for c in codes if c.used_by is not None]
        if used:
            raise InviteCodeUsedError(data={"used_codes": used})
        for code in codes:
            revoke_scene(sess, code.scene_code)

    _transition(sess, redemption, S.cancelled, staff_id=staff_id, note=note)
    if item.stock is not None:
        sess.execute(
            update(RedemptionItem)
            .where(RedemptionItem.id == item.id, RedemptionItem.stock.is_not(None))
            .values(stock=RedemptionItem.stock + redemption.quantity)
            .execution_options(synchronize_session=False)
        )
        sess.refresh(item)
    key = f"redeem-cancel:{redemption.id}"
    ledger.credit_available(
        sess,
        redemption.member_id,
        redemption.total,
        source=K.redemption,
        key=key,
        kind=TxKind.redeem_cancel,
        reason=f"Redemption #{redemption.id} ({redemption.quantity} × {item.title}) cancelled: {points_text(redemption.total)} points returned",
        actor=f"staff:{staff_id}",
        detail={"redemption_id": redemption.id},
    )
    original = ledger.find(sess, redeem_key(redemption.member_id, redemption.idempotency_key))
    reversal = ledger.find(sess, key)
    if original is not None and reversal is not None and reversal.reverses_id is None:
        # Written in the same unit of work as the posting itself, before anyone can read it.
        reversal.reverses_id = original.id
        sess.flush()
    record_audit(sess, staff_id, "redemption.cancel", f"redemption:{redemption.id}", {"note": note, "total": redemption.total})
    return redemption


# -- staff adjustments -------------------------------------------------------------------


@dataclass(frozen=True)
class Adjusted:
    grant: Grant
    #: False when the Idempotency-Key had adjusted before: nothing moved this time.
    new: bool


def adjust_points(sess: Session, *, staff_id: int, member_id: int, amount: int, reason: str, idempotency_key: str) -> Adjusted:
    """The owner's correction, once per idempotency key: a credit from issuance (paying debt first) or a debit of
    available points. A new one is audited as ``staff_id``'s ``points.grant``; a repeat of the key writes nothing."""
    if amount == 0:
        raise ValidationError(data={"errors": [{"field": "amount", "error": "must not be zero"}]})
    if sess.get(Member, member_id) is None:
        raise ValidationError(data={"errors": [{"field": "member_id", "error": "no such member"}]})
    _lock_available(sess, member_id)
    key = f"adjust:{staff_id}:{idempotency_key}"
    existing = ledger.find(sess, key)
    if existing is not None:
        if (existing.member_id, existing.detail.get("granted"), existing.reason) != (member_id, amount, reason):
            raise DuplicateRequestError(data={"transaction_id": existing.id})
        repaid = int(existing.detail.get("debt_repaid", 0))
        return Adjusted(Grant(existing, amount, repaid, amount - repaid), False)
    grant = grant_points(sess, member_id, amount, reason=reason, key=key, actor=f"staff:{staff_id}")
    record_audit(
        sess,
        staff_id,
        "points.grant",
        f"member:{member_id}",
        {"amount": amount, "debt_repaid": grant.debt_repaid, "reason": reason, "key": grant.transaction.idempotency_key, "transaction_id": grant.transaction.id},
    )
    return Adjusted(grant, True)


def grant_from_cli(sess: Session, member_id: int, amount: int, *, reason: str, key: str) -> Grant:
    """The operator's grant from the command line (no staff member): audited as ``points.grant`` with no staff id."""
    grant = grant_points(sess, member_id, amount, reason=reason, key=key, actor="cli")
    record_audit(
        sess,
        None,
        "points.grant",
        f"member:{member_id}",
        {"amount": amount, "debt_repaid": grant.debt_repaid, "reason": reason, "key": key, "transaction_id": grant.transaction.id},
    )
    return grant


# -- reading the ledger ------------------------------------------------------------------


@dataclass(frozen=True)
class EntryLine:
    """One entry on a member's account with what explains it."""

    entry: Entry
    account: AccountKind
    member_id: int | None
    transaction: LedgerTransaction
    #: The order's out_trade_no, for entries about an order.
    out_trade_no: str | None
    #: The reward rule that priced it, for order rewards and what followed from them.
    rule: str | None


def _explain(sess: Session, rows: list[tuple[Entry, AccountKind, int | None, LedgerTransaction]]) -> list[EntryLine]:
    order_ids = {tx.order_id for *_, tx in rows if tx.order_id is not None}
    trade_nos: dict[int, str] = dict(sess.execute(select(Order.id, Order.out_trade_no).where(Order.id.in_(order_ids))).all()) if order_ids else {}
    rules: dict[tuple[int, int], str] = {}
    if order_ids:
        for order_id, level, applied in sess.execute(select(OrderReward.order_id, OrderReward.level, OrderReward.rule).where(OrderReward.order_id.in_(order_ids))):
            rules[(order_id, level)] = applied
    lines = []
    for entry, kind, owner, tx in rows:
        rule = rules.get((tx.order_id, tx.level)) if tx.order_id is not None and tx.level is not None else None
        lines.append(EntryLine(entry, kind, owner, tx, trade_nos.get(tx.order_id) if tx.order_id is not None else None, rule))
    return lines


def member_entries(sess: Session, member_id: int, *, account: AccountKind | None = None, offset: int = 0, limit: int = 20) -> tuple[list[EntryLine], int]:
    """The member's entries, newest first, each with its transaction's reason."""
    stmt = (
        select(Entry, Account.kind, Account.member_id, LedgerTransaction)
        .join(Account, Account.id == Entry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
        .where(Account.member_id == member_id)
    )
    if account is not None:
        stmt = stmt.where(Account.kind == account)
    rows, total = paginate(sess, stmt, offset=offset, limit=limit, order_by=(Entry.id.desc(),), count_column=Entry.id, scalars=False)
    return _explain(sess, rows), total


def transactions_page(
    sess: Session,
    *,
    member_id: int | None = None,
    kind: TxKind | None = None,
    transaction_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    offset: int = 0,
    limit: int = 20,
    count_cap: int | None = None,
) -> tuple[list[tuple[LedgerTransaction, list[EntryLine]]], int]:
    """Ledger transactions, newest first, each with all its entries; ``start`` ≤ created < ``end`` when given.
    ``count_cap`` is as for ``db.count``."""
    stmt = transactions_query(member_id=member_id, kind=kind, transaction_id=transaction_id, start=start, end=end)
    # Ids grow with time, so both orders are newest first; with dates the time leads, so the database walks
    # the created_at index from the period's end instead of the primary key from the newest transaction.
    newest_first = (LedgerTransaction.created_at.desc(), LedgerTransaction.id.desc()) if start or end else (LedgerTransaction.id.desc(),)
    txs, total = paginate(sess, stmt, offset=offset, limit=limit, order_by=newest_first, count_cap=count_cap)
    by_tx = transaction_entries(sess, [tx.id for tx in txs])
    return [(tx, by_tx[tx.id]) for tx in txs], total


def transactions_query(
    *,
    member_id: int | None = None,
    kind: TxKind | None = None,
    transaction_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Any:
    """Ledger transactions matching the filters (unordered); ``start`` ≤ created < ``end`` when given."""
    stmt = select(LedgerTransaction)
    if transaction_id is not None:
        stmt = stmt.where(LedgerTransaction.id == transaction_id)
    if member_id is not None:
        stmt = stmt.where(LedgerTransaction.member_id == member_id)
    if kind is not None:
        stmt = stmt.where(LedgerTransaction.kind == kind)
    if start is not None:
        stmt = stmt.where(LedgerTransaction.created_at >= start)
    if end is not None:
        stmt = stmt.where(LedgerTransaction.created_at < end)
    return stmt


def transaction_entries(sess: Session, transaction_ids: list[int]) -> dict[int, list[EntryLine]]:
    """Every entry of each transaction, in posting order, with what explains it."""
    by_tx: dict[int, list[EntryLine]] = {tx_id: [] for tx_id in transaction_ids}
    if transaction_ids:
        rows = sess.execute(
            select(Entry, Account.kind, Account.member_id, LedgerTransaction)
            .join(Account, Account.id == Entry.account_id)
            .join(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
            .where(Entry.transaction_id.in_(transaction_ids))
            .order_by(Entry.id)
        ).all()
        for line in _explain(sess, list(rows)):
            by_tx[line.transaction.id].append(line)
    return by_tx


def member_statements(sess: Session, member_id: int, *, offset: int = 0, limit: int = 20) -> tuple[list[tuple[Statement, SettlementRun]], int]:
    """The member's settlement statements, newest first, with the run each belongs to."""
    stmt = select(Statement, SettlementRun).join(SettlementRun, SettlementRun.id == Statement.run_id).where(Statement.member_id == member_id)
    total = sess.scalar(select(func.count()).select_from(Statement).where(Statement.member_id == member_id)) or 0
    rows = sess.execute(stmt.order_by(Statement.id.desc()).offset(offset).limit(limit)).all()
    return list(rows), total


def member_statement(sess: Session, member_id: int, statement_id: int) -> tuple[Statement, SettlementRun]:
    """One of the member's statements; another member's is StatementNotFoundError."""
    row = sess.execute(
        select(Statement, SettlementRun).join(SettlementRun, SettlementRun.id == Statement.run_id).where(Statement.id == statement_id, Statement.member_id == member_id)
    ).first()
    if row is None:
        raise StatementNotFoundError()
    return row


def invite_codes_page(sess: Session, owner_id: int, *, offset: int = 0, limit: int = 20) -> tuple[list[tuple[InviteCode, datetime | None]], int]:
    """The member's invite codes, newest first, each with its scene's revocation time."""
    total = sess.scalar(select(func.count()).select_from(InviteCode).where(InviteCode.owner_id == owner_id)) or 0
    stmt = select(InviteCode, Scene.revoked_at).join(Scene, Scene.code == InviteCode.scene_code).where(InviteCode.owner_id == owner_id)
    return list(sess.execute(stmt.order_by(InviteCode.id.desc()).offset(offset).limit(limit)).all()), total


def invite_codes_for(sess: Session, redemption_ids: list[int]) -> dict[int, list[tuple[InviteCode, datetime | None]]]:
    """The invite codes each of ``redemption_ids`` issued, with their scenes' revocation times."""
    found: dict[int, list[tuple[InviteCode, datetime | None]]] = {rid: [] for rid in redemption_ids}
    if redemption_ids:
        stmt = select(InviteCode, Scene.revoked_at).join(Scene, Scene.code == InviteCode.scene_code).where(InviteCode.redemption_id.in_(redemption_ids))
        for code, revoked_at in sess.execute(stmt.order_by(InviteCode.id)):
            found[code.redemption_id].append((code, revoked_at))
    return found
