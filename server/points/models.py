"""The points ledger: double-entry, append-only, in integer hundredths of a point (1 unit = 1 fen of value).

Every transaction's entries sum to zero. A member account's cached ``balance`` always
equals the sum of its entries (``python -m server ledger-check`` proves it); the merchant's
accounts cache none (their ``balance`` stays 0) and their balance is the sum of their entries,
so the issuance account, a leg of every reward, is never a row every posting must lock.
Member accounts: pending (earned, order not finished), matured (order finished,
awaiting settlement), available (spendable) and debt (≤ 0: what the member owes
after a refund took back points already spent). Merchant accounts: issuance
(where points come from), redemption (where spent points go), expiry.
"""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class AccountKind(str, enum.Enum):
    pending = "pending"
    matured = "matured"
    available = "available"
    debt = "debt"
    issuance = "issuance"
    redemption = "redemption"
    expiry = "expiry"


MEMBER_KINDS = (AccountKind.pending, AccountKind.matured, AccountKind.available, AccountKind.debt)
MERCHANT_KINDS = (AccountKind.issuance, AccountKind.redemption, AccountKind.expiry)


class Account(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("member_id", "kind", name="member_kind"),
        # The database itself refuses a negative spendable balance or a positive debt.
        CheckConstraint("kind <> 'available' OR balance >= 0", name="available_nonneg"),
        CheckConstraint("kind NOT IN ('pending', 'matured') OR balance >= 0", name="held_nonneg"),
        CheckConstraint("kind <> 'debt' OR balance <= 0", name="debt_nonpos"),
        CheckConstraint("(member_id IS NULL) = (kind IN ('issuance', 'redemption', 'expiry'))", name="owner_matches_kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: Null for the merchant's own accounts.
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    kind: Mapped[AccountKind] = mapped_column(enum_column(AccountKind, "account_kind"))
    #: A member account's sum of entries, kept in step inside the same transaction; always 0 on the
    #: merchant's accounts, whose balance is read from their entries (``ledger.balance``).
    balance: Mapped[int] = mapped_column(BigInteger, default=0)


class TxKind(str, enum.Enum):
    order_reward = "order_reward"
    mature = "mature"
    settle = "settle"
    reversal = "reversal"
    lead_reward = "lead_reward"
    share_reward = "share_reward"
    stage_bonus = "stage_bonus"
    starter = "starter"
    redeem = "redeem"
    redeem_cancel = "redeem_cancel"
    adjust = "adjust"
    expire = "expire"


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="idempotency_key"),
        Index("ix_ledger_transactions_member", "member_id", "id"),
        # The console's ledger search by kind and by date, newest first, on a large merchant.
        Index("ix_ledger_transactions_kind", "kind", "id"),
        Index("ix_ledger_transactions_created", "created_at"),
        # An order's postings by level, with what ledger-check and the order-rewards comparison need of
        # them: they are summed per (order, level) from this index alone, never from the rows.
        Index("ix_ledger_transactions_order_level", "order_id", "level", "kind", "member_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: One business event, one key, e.g. "order:12:L1:reward"; a second posting of it is a no-op.
    idempotency_key: Mapped[str] = mapped_column(String(96))
    kind: Mapped[TxKind] = mapped_column(enum_column(TxKind, "tx_kind"))
    #: The member it concerns (for their statement), if any.
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"))
    #: 1 or 2 for order rewards.
    level: Mapped[int | None]
    #: The transaction this one corrects or continues.
    reverses_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_transactions.id"))
    #: A human reason: which order, which level, which rule.
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: "staff:<id>", "system", "cli" or "member:<id>".
    actor: Mapped[str] = mapped_column(String(64), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Entry(Base):
    """One leg of a transaction. Never updated, never deleted."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        # Both carry the amount, so a sum per account or per transaction (ledger-check, settlement's
        # statement lines) reads the index alone; a transaction's leg on one account is one look-up.
        Index("ix_ledger_entries_account_amount", "account_id", "id", "amount"),
        Index("ix_ledger_entries_transaction_account", "transaction_id", "account_id", "amount"),
        Index("ix_ledger_entries_account_time", "account_id", "created_at"),
        CheckConstraint("amount <> 0", name="nonzero"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_transactions.id"))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RewardState(str, enum.Enum):
    pending = "pending"
    matured = "matured"
    settled = "settled"
    reversed = "reversed"


class OrderReward(Base):
    """Where one level's reward on one order stands; the ledger holds the money, this the lifecycle."""

    __tablename__ = "order_rewards"
    __table_args__ = (
        UniqueConstraint("order_id", "level", name="order_level"),
        CheckConstraint("level IN (1, 2)", name="two_levels_only"),
        CheckConstraint("amount >= 0 AND reversed_amount >= 0 AND reversed_amount <= amount", name="amounts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    level: Mapped[int]
    #: Hundredths of a point credited.
    amount: Mapped[int] = mapped_column(BigInteger)
    reversed_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[RewardState] = mapped_column(enum_column(RewardState, "reward_state"), default=RewardState.pending)
    #: The rule that priced it, e.g. "level1 first order 50bp".
    rule: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    matured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SettlementRun(Base):
    """One settlement period, claimed by exactly one scheduler (the unique period key)."""

    __tablename__ = "settlement_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: e.g. "weekly:2026-W47", "monthly:2026-11", "threshold:2026-11-23T10", "manual:<uuid>".
    period: Mapped[str] = mapped_column(String(64), unique=True)
    mode: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    members: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    actor: Mapped[str] = mapped_column(String(64), default="scheduler")


class Statement(Base):
    """A member's settlement statement: what matured into available in one run.

    Its lines are the ledger's, read back by ``queries.statement_lines``: the matured entries its settle posting took.
    """

    __tablename__ = "point_statements"
    __table_args__ = (UniqueConstraint("run_id", "member_id", name="run_member"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(BigId, ForeignKey("settlement_runs.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    #: Matured points settled in this run.
    settled: Mapped[int] = mapped_column(BigInteger)
    #: Of which paid towards debt first.
    debt_repaid: Mapped[int] = mapped_column(BigInteger, default=0)
    #: What reached the available balance.
    credited: Mapped[int] = mapped_column(BigInteger)
    #: Balances after the run.
    available_after: Mapped[int] = mapped_column(BigInteger)
    debt_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobClaim(Base):
    """A scheduled job's period, claimed by one scheduler process before it runs."""

    __tablename__ = "job_claims"
    __table_args__ = (UniqueConstraint("job", "period", name="job_period"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(64))
    claimed_by: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RewardOverride(Base):
    """A level-1 rate for one product or one distributor grade, instead of the merchant's default."""

    __tablename__ = "reward_overrides"
    __table_args__ = (
        UniqueConstraint("scope", "ref_id", name="scope_ref"),
        CheckConstraint("scope IN ('product', 'grade')", name="scope_known"),
        CheckConstraint("level1_first_bp IS NULL OR (level1_first_bp >= 0 AND level1_first_bp <= 2000)", name="first_range"),
        CheckConstraint("level1_repeat_bp IS NULL OR (level1_repeat_bp >= 0 AND level1_repeat_bp <= 2000)", name="repeat_range"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: "product" (products.id) or "grade" (grades.id).
    scope: Mapped[str] = mapped_column(String(16))
    ref_id: Mapped[int] = mapped_column(BigId)
    level1_first_bp: Mapped[int | None]
    level1_repeat_bp: Mapped[int | None]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ItemKind(str, enum.Enum):
    goods = "goods"
    privilege = "privilege"
    invite_code = "invite_code"


class RedemptionItem(Base):
    """Something members can spend points on."""

    __tablename__ = "redemption_items"
    __table_args__ = (
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="stock_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[ItemKind] = mapped_column(enum_column(ItemKind, "item_kind"))
    title: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str] = mapped_column(String(512), default="")
    #: Hundredths of a point per unit (200000 = 2,000 points).
    price: Mapped[int] = mapped_column(BigInteger)
    #: Units left; null means unlimited (privileges, invite codes).
    stock: Mapped[int | None]
    #: Most units one member may redeem in total; null means no limit.
    per_member_limit: Mapped[int | None]
    active: Mapped[bool] = mapped_column(default=True)
    sort: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RedemptionStatus(str, enum.Enum):
    placed = "placed"
    fulfilled = "fulfilled"
    cancelled = "cancelled"


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (
        UniqueConstraint("member_id", "idempotency_key", name="member_key"),
        # The console's fulfilment queue: redemptions in one status, newest first.
        Index("ix_redemptions_status", "status", "id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("total > 0", name="total_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("redemption_items.id"))
    quantity: Mapped[int]
    #: Hundredths of a point charged.
    total: Mapped[int] = mapped_column(BigInteger)
    #: The client's Idempotency-Key header: the same key never redeems twice.
    idempotency_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[RedemptionStatus] = mapped_column(enum_column(RedemptionStatus, "redemption_status"), default=RedemptionStatus.placed)
    #: Shipping address or contact for goods, as the member gave it.
    contact: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    staff_note: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))


class InviteCode(Base):
    """A code bought with points; whoever signs in with it is bound to its owner, like a scene."""

    __tablename__ = "invite_codes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The scene the code is (channel invite_code); the code the member hands out.
    scene_code: Mapped[str] = mapped_column(String(32), ForeignKey("scenes.code"), unique=True)
    owner_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    redemption_id: Mapped[int] = mapped_column(BigId, ForeignKey("redemptions.id"), index=True)
    used_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ShareOpen(Base):
    """Another member opened a member's share: at most one share reward per sharer per day."""

    __tablename__ = "share_opens"
    __table_args__ = (UniqueConstraint("sharer_id", "day", name="sharer_day"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sharer_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    opener_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    scene_code: Mapped[str] = mapped_column(String(32))
    #: The China-time calendar day, "2026-11-23".
    day: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StageBonusRule(Base):
    """A bonus for a distributor's own monthly sales passing a threshold, optionally for N months running."""

    __tablename__ = "stage_bonus_rules"
    __table_args__ = (
        CheckConstraint("min_monthly_sales_fen > 0", name="threshold_positive"),
        CheckConstraint("consecutive_months >= 1", name="months_positive"),
        CheckConstraint("bonus > 0", name="bonus_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    #: The distributor's own attributed sales in one calendar month, in fen. Never a headcount.
    min_monthly_sales_fen: Mapped[int] = mapped_column(BigInteger)
    consecutive_months: Mapped[int] = mapped_column(default=1)
    #: Hundredths of a point.
    bonus: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(default=True)


class HoldState(str, enum.Enum):
    held = "held"
    released = "released"
    reversed = "reversed"


#: The hold's moves, each made by one conditional UPDATE from the state on the left.
HOLD_TRANSITIONS = {
    (HoldState.held, HoldState.released),
    (HoldState.held, HoldState.reversed),
    # Reopened by staff while the rewards are still pending (nothing matured since the release).
    (HoldState.released, HoldState.held),
}


class RewardHold(Base):
    """Rewards of one order or one lead kept pending until staff review them.

    Owned by points: the risk package (a layer above) writes the hold when it scores an event, and
    the maturing step reads it here, so points never imports risk. While a hold is ``held`` the
    order's rewards never mature (and a held lead's points stay pending); ``released`` lets them
    mature as usual; ``reversed`` took them back through the ledger's reversal postings.
    """

    __tablename__ = "reward_holds"
    __table_args__ = (
        UniqueConstraint("subject", "ref_id", name="subject_ref"),
        CheckConstraint("subject IN ('order', 'lead')", name="subject_known"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: "order" (orders.id) or "lead" (leads.id).
    subject: Mapped[str] = mapped_column(String(8))
    ref_id: Mapped[int] = mapped_column(BigId)
    state: Mapped[HoldState] = mapped_column(enum_column(HoldState, "hold_state"), default=HoldState.held)
    #: Why it was held, e.g. "risk review 12: score 80".
    reason: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
