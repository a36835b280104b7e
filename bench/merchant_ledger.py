"""The points side of the large merchant: the ledger replayed in memory, in time order, and written in batches.

``large_merchant.py`` hands over its orders, leads and distributors; this module posts what the
real services would have posted as each thing happened (``server/points/services.py``,
``settlement.py``, ``redemption.py``): a reward to pending when an order is paid, maturing when it
completes, monthly settlements into available (debt first) with a statement per member, reversals
after refunds from wherever the points then sat, valid-lead points, staff adjustments, redemptions
and their cancellations, and expiry of points credited more than ``EXPIRY_DAYS`` ago. Each posting
has the service's idempotency key, reason and legs; the members' cached balances are the sums of the entries (the merchant's accounts cache none).
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from bulk_insert import Sink
from tqdm import tqdm

from server.clock import local
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
    RewardState,
    SettlementRun,
    Statement,
    TxKind,
)
from server.points.redemption import points_text
from server.points.rules import split_rewards
from server.points.settlement import period_key
from server.referral.models import Channel, Scene

K = AccountKind
BATCH = 10_000
#: The merchant's settings this data follows (written to the settings table by the generator).
SETTINGS = {"settlement_mode": "monthly", "points_expiry_days": 180}
EXPIRY_DAYS = 180
FIRST_BP, REPEAT_BP, LEVEL2_SHARE_BP, CAP_BP = 50, 100, 1_000, 300
VALID_LEAD_POINTS = 1_000
NON_NEGATIVE = (K.pending, K.matured, K.available)
#: id, kind, title, price (hundredths of a point), stock.
ITEMS = [
    (1, ItemKind.goods, "保温杯", 200_000, 100_000),
    (2, ItemKind.goods, "蓝牙音箱", 500_000, 100_000),
    (3, ItemKind.privilege, "优先发货一年", 50_000, None),
    (4, ItemKind.invite_code, "邀请码", 10_000, None),
]


@dataclass
class PaidOrder:
    """What the ledger needs to know of one paid order with an inviter."""

    id: int
    out_trade_no: str
    total_fee: int
    repeat: bool
    inviter_id: int
    upline_id: int | None
    paid_at: datetime
    #: When the order was ready to mature (completed, and for a contract confirmed by finance).
    completed_at: datetime | None
    #: (finished at, refunded_fee after that refund), oldest first.
    refunds: list[tuple[datetime, int]] = field(default_factory=list)


@dataclass
class ValidLead:
    id: int
    sharer_id: int
    reviewed_at: datetime


@dataclass
class Reward:
    id: int
    order: PaidOrder
    member_id: int
    level: int
    amount: int
    rule: str
    created_at: datetime
    reversed_amount: int = 0
    state: RewardState = RewardState.pending
    matured_at: datetime | None = None


class Writer:
    """Rows of several tables, inserted in batches in the order their tables were first given."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.rows: dict[Any, list[dict[str, Any]]] = {}
        self.written: dict[str, int] = {}

    def add(self, table: Any, row: dict[str, Any]) -> None:
        rows = self.rows.setdefault(table, [])
        rows.append(row)
        if len(rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        for table, rows in self.rows.items():
            if rows:
                self.sink.insert(table, rows)
                self.written[table.name] = self.written.get(table.name, 0) + len(rows)
                rows.clear()
        self.sink.commit()


class Ledger:
    """Accounts and postings as ``server.points.ledger`` makes them: accounts opened on first use,
    legs in account-id order, the same guards on every balance."""

    def __init__(self, out: Writer) -> None:
        self.out = out
        #: (member id or None, kind) -> [account id, balance]
        self.accounts: dict[tuple[int | None, AccountKind], list[int]] = {}
        self.next_tx = 1
        self.next_entry = 1

    def account(self, member_id: int | None, kind: AccountKind) -> list[int]:
        found = self.accounts.get((member_id, kind))
        if found is None:
            found = self.accounts[(member_id, kind)] = [len(self.accounts) + 1, 0]
        return found

    def balance(self, member_id: int | None, kind: AccountKind) -> int:
        found = self.accounts.get((member_id, kind))
        return found[1] if found else 0

    def post(
        self,
        at: datetime,
        *,
        key: str,
        kind: TxKind,
        legs: list[tuple[AccountKind, int | None, int]],
        reason: str,
        member_id: int | None = None,
        order_id: int | None = None,
        level: int | None = None,
        reverses_id: int | None = None,
        actor: str = "system",
        detail: dict[str, Any] | None = None,
    ) -> int:
        """One balanced transaction; legs are (kind, account owner, amount), opened in the order given."""
        moves = [(self.account(owner, acct_kind), acct_kind, amount) for acct_kind, owner, amount in legs]
        moves = [move for move in moves if move[2] != 0]
        assert sum(amount for _, _, amount in moves) == 0, f"{key} does not balance"
        tx_id = self.next_tx
        self.next_tx += 1
        self.out.add(
            LedgerTransaction.__table__,
            {
                "id": tx_id,
                "idempotency_key": key,
                "kind": kind,
                "member_id": member_id,
                "order_id": order_id,
                "level": level,
                "reverses_id": reverses_id,
                "reason": reason,
                "detail": detail or {},
                "actor": actor,
                "created_at": at,
            },
        )
        for acct, acct_kind, amount in sorted(moves, key=lambda move: move[0][0]):
            acct[1] += amount
            assert not (acct_kind in NON_NEGATIVE and acct[1] < 0) and not (acct_kind == K.debt and acct[1] > 0), f"{key} breaks {acct_kind.value}"
            self.out.add(Entry.__table__, {"id": self.next_entry, "transaction_id": tx_id, "account_id": acct[0], "amount": amount, "created_at": at})
            self.next_entry += 1
        return tx_id

    def credit_available(
        self,
        at: datetime,
        member_id: int,
        amount: int,
        *,
        source: AccountKind,
        key: str,
        kind: TxKind,
        reason: str,
        actor: str = "system",
        detail: dict[str, Any] | None = None,
        reverses_id: int | None = None,
    ) -> tuple[int, int]:
        """``ledger.credit_available``: debt first, the rest to available. Returns (repaid, credited, transaction id)."""
        repay = min(-self.account(member_id, K.debt)[1], amount)
        owner = member_id if source in NON_NEGATIVE else None
        self.account(owner, source)
        self.account(member_id, K.available)
        legs = [(source, owner, -amount), (K.debt, member_id, repay), (K.available, member_id, amount - repay)]
        self.post(at, key=key, kind=kind, legs=legs, reason=reason, member_id=member_id, reverses_id=reverses_id, actor=actor, detail=(detail or {}) | {"debt_repaid": repay})
        return repay, amount - repay


def rewards_of(total_fee: int, *, repeat: bool, has_upline: bool) -> dict[int, tuple[int, str]]:
    """The merchant's default rates (no overrides): {level: (amount, rule)}."""
    label = "level 1, repeat" if repeat else "level 1, first order"
    found = split_rewards(
        total_fee,
        level1_bp=REPEAT_BP if repeat else FIRST_BP,
        label=label,
        level2_share_bp=LEVEL2_SHARE_BP,
        direct_only=False,
        has_upline=has_upline,
        cap_bp=CAP_BP,
    )
    return {r.level: (r.amount, r.rule) for r in found}


def settlement_times(start: datetime, now: datetime, rng: random.Random) -> list[datetime]:
    """Monthly settlements: the 1st of each month, just after 02:00 China time, from ``start`` to ``now``."""
    times: list[datetime] = []
    at = local(start).replace(day=1, hour=2, minute=0, second=0, microsecond=0)
    while True:
        at = (at + timedelta(days=32)).replace(day=1)
        run = at.astimezone(timezone.utc) + timedelta(seconds=rng.randint(5, 300))
        if run > now:
            return times
        times.append(run)


# Event kinds, in the order they happen when two share a second.
REWARD, REVERSE, MATURE, LEAD, ADJUST, SETTLE, EXPIRE, REDEEM, CANCEL = range(9)


def generate_points(
    sink: Sink,
    *,
    rng: random.Random,
    now: datetime,
    start: datetime,
    paid_orders: list[PaidOrder],
    valid_leads: list[ValidLead],
    eligible: Callable[[int, datetime], bool],
    adjustments: int,
    next_scene_id: Callable[[], str],
) -> dict[str, int]:
    """Replay the points side in time order and write it; returns rows written per table."""
    out = Writer(sink)
    ledger = Ledger(out)
    for item_id, kind, title, price, stock in ITEMS:
        out.add(RedemptionItem.__table__, {"id": item_id, "kind": kind, "title": title, "price": price, "stock": stock, "per_member_limit": None, "sort": item_id, "created_at": start})
    runs = settlement_times(start, now, rng)

    events: list[tuple[datetime, int, int, Any]] = []
    seq = 0

    def push(at: datetime, kind: int, payload: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, kind, seq, payload))

    for order in paid_orders:
        events.append((order.paid_at, REWARD, 0, order))
        if order.completed_at is not None:
            events.append((order.completed_at, MATURE, 0, order))
        for finished, refunded_fee in order.refunds:
            events.append((finished, REVERSE, 0, (order, refunded_fee)))
    for lead in valid_leads:
        events.append((lead.reviewed_at, LEAD, 0, lead))
    for n, at in enumerate(runs):
        events.append((at, SETTLE, 0, n))
        events.append((at + timedelta(minutes=3), EXPIRE, 0, None))
    for _ in range(adjustments):
        events.append((start + (now - start) * rng.random(), ADJUST, 0, None))
    events = [(at, kind, i, payload) for i, (at, kind, _, payload) in enumerate(events)]
    seq = len(events)
    heapq.heapify(events)

    rewards: dict[int, list[Reward]] = {}
    awaiting: dict[int, list[Reward]] = {}  # matured rewards per member, until the next settlement
    next_reward = 1
    #: Per member: available credits (time, amount) oldest first, how far the expiry cutoff has
    #: read them and their sum so far, and everything ever debited from available.
    credits: dict[int, list[tuple[datetime, int]]] = {}
    expiry_read: dict[int, list[int]] = {}
    debits: dict[int, int] = {}
    redemptions: list[dict[str, Any]] = []
    earners: list[int] = []
    seen_earners: set[int] = set()
    next_statement = next_invite_code = 1

    def credited(member_id: int, at: datetime, amount: int) -> None:
        if amount > 0:
            credits.setdefault(member_id, []).append((at, amount))

    def debited(member_id: int, amount: int) -> None:
        debits[member_id] = debits.get(member_id, 0) + amount

    def reward(at: datetime, order: PaidOrder) -> None:
        nonlocal next_reward
        if not eligible(order.inviter_id, at):
            return  # no level 1 means no level 2 either
        found = rewards_of(order.total_fee, repeat=order.repeat, has_upline=order.upline_id is not None)
        for level, (amount, rule) in sorted(found.items()):
            member_id = order.inviter_id if level == 1 else order.upline_id
            if member_id is None or amount <= 0 or not eligible(member_id, at):
                continue
            ledger.account(None, K.issuance)
            ledger.post(
                at,
                key=f"order:{order.id}:L{level}:reward",
                kind=TxKind.order_reward,
                legs=[(K.issuance, None, -amount), (K.pending, member_id, amount)],
                reason=f"Order {order.out_trade_no}: {rule} of ¥{order.total_fee / 100:.2f}",
                member_id=member_id,
                order_id=order.id,
                level=level,
            )
            rewards.setdefault(order.id, []).append(Reward(next_reward, order, member_id, level, amount, rule, at))
            next_reward += 1

    def mature(at: datetime, order: PaidOrder) -> None:
        for row in rewards.get(order.id, []):
            if row.state != RewardState.pending:
                continue
            amount = row.amount - row.reversed_amount
            if amount > 0:
                ledger.post(
                    at,
                    key=f"order:{order.id}:L{row.level}:mature",
                    kind=TxKind.mature,
                    legs=[(K.pending, row.member_id, -amount), (K.matured, row.member_id, amount)],
                    reason=f"Order {order.out_trade_no} finished: level {row.level} reward matured",
                    member_id=row.member_id,
                    order_id=order.id,
                    level=row.level,
                )
            row.state, row.matured_at = RewardState.matured, at
            awaiting.setdefault(row.member_id, []).append(row)

    def reverse(at: datetime, order: PaidOrder, refunded_fee: int) -> None:
        should = rewards_of(max(order.total_fee - refunded_fee, 0), repeat=order.repeat, has_upline=order.upline_id is not None)
        for row in sorted(rewards.get(order.id, []), key=lambda r: r.level):
            keep = min(should.get(row.level, (0, ""))[0], row.amount)
            delta = row.amount - row.reversed_amount - keep
            if delta <= 0:
                continue
            if row.state == RewardState.pending:
                legs = [(K.pending, row.member_id, -delta)]
            elif row.state == RewardState.matured:
                legs = [(K.matured, row.member_id, -delta)]
            else:
                take = min(ledger.balance(row.member_id, K.available), delta)
                legs = [(K.available, row.member_id, -take)]
                if delta > take:
                    legs.append((K.debt, row.member_id, -(delta - take)))
                debited(row.member_id, take)
            for acct_kind, owner, _ in legs:
                ledger.account(owner, acct_kind)
            ledger.post(
                at,
                key=f"order:{order.id}:L{row.level}:reverse:{refunded_fee}",
                kind=TxKind.reversal,
                legs=[(K.issuance, None, delta), *legs],
                reason=f"Order {order.out_trade_no} refunded ¥{refunded_fee / 100:.2f}: level {row.level} reward reduced",
                member_id=row.member_id,
                order_id=order.id,
                level=row.level,
                detail={"refunded_fee": refunded_fee},
            )
            row.reversed_amount += delta
            if row.reversed_amount >= row.amount:
                row.state = RewardState.reversed

    def lead_reward(at: datetime, lead: ValidLead) -> None:
        if not eligible(lead.sharer_id, at):
            return
        _, amount = ledger.credit_available(
            at,
            lead.sharer_id,
            VALID_LEAD_POINTS,
            source=K.issuance,
            key=f"lead:{lead.id}:reward",
            kind=TxKind.lead_reward,
            reason=f"Lead #{lead.id} marked valid by operations",
            detail={"lead_id": lead.id},
        )
        credited(lead.sharer_id, at, amount)

    def adjust(at: datetime) -> None:
        if not earners:
            return
        member_id = rng.choice(earners)
        amount = rng.choice((500, 1_000, 2_000, 5_000, 10_000))
        _, amount_credited = ledger.credit_available(
            at,
            member_id,
            amount,
            source=K.issuance,
            key=f"adjust:1:bench-{ledger.next_tx}",
            kind=TxKind.adjust,
            reason=rng.choice(["客服补偿：物流延误", "活动奖励补发", "积分误扣返还"]),
            actor="staff:1",
            detail={"granted": amount},
        )
        credited(member_id, at, amount_credited)

    def settle(at: datetime, n: int) -> None:
        nonlocal next_statement
        run_id = n + 1
        period = period_key("monthly", at)
        members = total = 0
        due = sorted(m for (m, kind), acct in ledger.accounts.items() if kind == K.matured and acct[1] >= 1 and m is not None)
        for member_id in due:
            amount = ledger.balance(member_id, K.matured)
            settled = [row for row in awaiting.pop(member_id, []) if row.state == RewardState.matured]
            repaid, amount_credited = ledger.credit_available(
                at,
                member_id,
                amount,
                source=K.matured,
                key=f"settle:{run_id}:{member_id}",
                kind=TxKind.settle,
                reason=f"Settlement {period}: {amount / 100:.2f} matured points",
                actor="scheduler",
                detail={"run_id": run_id, "period": period},
            )
            credited(member_id, at, amount_credited)
            for row in settled:
                row.state = RewardState.settled
            out.add(
                Statement.__table__,
                {
                    "id": next_statement,
                    "run_id": run_id,
                    "member_id": member_id,
                    "settled": amount,
                    "debt_repaid": repaid,
                    "credited": amount_credited,
                    "available_after": ledger.balance(member_id, K.available),
                    "debt_after": -ledger.balance(member_id, K.debt),
                    "created_at": at,
                },
            )
            next_statement += 1
            members += 1
            total += amount
            if member_id not in seen_earners:
                seen_earners.add(member_id)
                earners.append(member_id)
            available = ledger.balance(member_id, K.available)
            if available >= ITEMS[3][3] and rng.random() < 0.3:
                when = at + timedelta(hours=rng.uniform(1, 24 * 25))
                if when < now:
                    push(when, REDEEM, member_id)
        out.add(
            SettlementRun.__table__,
            {"id": run_id, "period": period, "mode": "monthly", "started_at": at, "finished_at": at + timedelta(milliseconds=4 * members + 200), "members": members, "total": total, "actor": "scheduler"},
        )

    def expire(at: datetime) -> None:
        cutoff = at - timedelta(days=EXPIRY_DAYS)
        day = f"{local(at):%Y-%m-%d}"
        for member_id in sorted(credits):
            items = credits[member_id]
            read = expiry_read.setdefault(member_id, [0, 0])
            while read[0] < len(items) and items[read[0]][0] <= cutoff:
                read[1] += items[read[0]][1]
                read[0] += 1
            amount = min(max(read[1] - debits.get(member_id, 0), 0), ledger.balance(member_id, K.available))
            if amount <= 0:
                continue
            ledger.account(None, K.expiry)
            ledger.post(
                at,
                key=f"expire:{member_id}:{day}",
                kind=TxKind.expire,
                legs=[(K.available, member_id, -amount), (K.expiry, None, amount)],
                reason=f"{amount / 100:.2f} points credited more than {EXPIRY_DAYS} days ago expired",
                member_id=member_id,
                detail={"cutoff": cutoff.isoformat(), "days": EXPIRY_DAYS},
            )
            debited(member_id, amount)

    def redeem(at: datetime, member_id: int) -> None:
        nonlocal next_invite_code
        available = ledger.balance(member_id, K.available)
        if available >= ITEMS[1][3] and rng.random() < 0.3:
            item = ITEMS[1]
        elif available >= ITEMS[0][3] and rng.random() < 0.5:
            item = ITEMS[0]
        elif available >= ITEMS[2][3] and rng.random() < 0.2:
            item = ITEMS[2]
        else:
            item = ITEMS[3]
        item_id, kind, title, price, _ = item
        if available < price:
            return
        quantity = rng.randint(1, min(3, available // price)) if kind == ItemKind.invite_code else 1
        total = price * quantity
        redemption_id = len(redemptions) + 1
        key = f"bench-{redemption_id:08d}"
        ledger.account(member_id, K.available)
        ledger.account(None, K.redemption)
        tx_id = ledger.post(
            at,
            key=f"redeem:{member_id}:{key}",
            kind=TxKind.redeem,
            legs=[(K.available, member_id, -total), (K.redemption, None, total)],
            reason=f"Redeemed {quantity} × {title} (redemption #{redemption_id}) for {points_text(total)} points",
            member_id=member_id,
            actor=f"member:{member_id}",
            detail={"redemption_id": redemption_id, "item_id": item_id, "quantity": quantity},
        )
        debited(member_id, total)
        row: dict[str, Any] = {
            "id": redemption_id,
            "member_id": member_id,
            "item_id": item_id,
            "quantity": quantity,
            "total": total,
            "idempotency_key": key,
            "status": RedemptionStatus.placed,
            "contact": {"name": "收件人", "phone": "13800000000", "address": "示例路 1 号"} if kind == ItemKind.goods else None,
            "staff_note": "",
            "created_at": at,
            "decided_at": None,
            "decided_by": None,
        }
        redemptions.append(row)
        decided = at + timedelta(hours=rng.uniform(2, 96))
        if kind == ItemKind.invite_code:
            for _ in range(quantity):
                code = next_scene_id()
                out.add(Scene.__table__, {"code": code, "sharer_id": member_id, "partner_id": None, "channel": Channel.invite_code, "content_type": "", "content_id": "", "created_at": at, "expires_at": None, "revoked_at": None})
                out.add(InviteCode.__table__, {"id": next_invite_code, "scene_code": code, "owner_id": member_id, "redemption_id": redemption_id, "used_by": None, "used_at": None, "created_at": at})
                next_invite_code += 1
        elif decided < now and rng.random() < 0.08:
            push(decided, CANCEL, (row, tx_id))
            return
        if decided < now:
            row.update(status=RedemptionStatus.fulfilled, decided_at=decided, decided_by=1)

    def cancel(at: datetime, payload: tuple[dict[str, Any], int]) -> None:
        row, original = payload
        row.update(status=RedemptionStatus.cancelled, decided_at=at, decided_by=1, staff_note="会员要求取消")
        title = ITEMS[row["item_id"] - 1][2]
        _, amount = ledger.credit_available(
            at,
            row["member_id"],
            row["total"],
            source=K.redemption,
            key=f"redeem-cancel:{row['id']}",
            kind=TxKind.redeem_cancel,
            reason=f"Redemption #{row['id']} ({row['quantity']} × {title}) cancelled: {points_text(row['total'])} points returned",
            actor="staff:1",
            detail={"redemption_id": row["id"]},
            reverses_id=original,
        )
        credited(row["member_id"], at, amount)

    with tqdm(total=len(events), desc="points", unit="events", mininterval=1.0) as bar:
        while events:
            at, what, _, payload = heapq.heappop(events)
            if what == REWARD:
                reward(at, payload)
            elif what == MATURE:
                mature(at, payload)
            elif what == REVERSE:
                reverse(at, *payload)
            elif what == LEAD:
                lead_reward(at, payload)
            elif what == ADJUST:
                adjust(at)
            elif what == SETTLE:
                settle(at, payload)
            elif what == EXPIRE:
                expire(at)
            elif what == REDEEM:
                redeem(at, payload)
            elif what == CANCEL:
                cancel(at, payload)
            bar.update(1)
            bar.total = max(bar.total or 0, bar.n + len(events))

    for row in redemptions:
        out.add(Redemption.__table__, row)
    for order_rewards in rewards.values():
        for r in order_rewards:
            out.add(
                OrderReward.__table__,
                {
                    "id": r.id,
                    "order_id": r.order.id,
                    "member_id": r.member_id,
                    "level": r.level,
                    "amount": r.amount,
                    "reversed_amount": r.reversed_amount,
                    "state": r.state,
                    "rule": r.rule,
                    "created_at": r.created_at,
                    "matured_at": r.matured_at,
                },
            )
    for (member_id, account_kind), (account_id, balance) in sorted(ledger.accounts.items(), key=lambda item: item[1][0]):
        # The merchant's accounts cache no balance (server/points/ledger.py): their entries are their balance.
        out.add(Account.__table__, {"id": account_id, "member_id": member_id, "kind": account_kind, "balance": 0 if member_id is None else balance})
    out.flush()
    return out.written
