"""Catalog, orders with their state machine and timeline, payments, refunds and offline contracts.

Money is integer fen everywhere; every amount column has a CHECK that keeps it sane.
"""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class ProductStatus(str, enum.Enum):
    on_sale = "on_sale"
    off_sale = "off_sale"


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(String(128))
    subtitle: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    cover_url: Mapped[str] = mapped_column(String(512), default="")
    status: Mapped[ProductStatus] = mapped_column(enum_column(ProductStatus, "product_status"), default=ProductStatus.on_sale)
    #: A pre-sale item: paid now, shipped from ship_date on.
    presale: Mapped[bool] = mapped_column(default=False)
    ship_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sort: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Sku(Base):
    """One purchasable variant; ``stock`` is what can still be reserved."""

    __tablename__ = "skus"
    __table_args__ = (
        CheckConstraint("price_fen > 0", name="price_positive"),
        CheckConstraint("stock >= 0", name="stock_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey("products.id"), index=True)
    #: The variant's label, e.g. "红色 / L".
    name: Mapped[str] = mapped_column(String(64), default="")
    price_fen: Mapped[int] = mapped_column(BigInteger)
    #: Units not yet reserved by an order; decremented atomically when an order reserves them.
    stock: Mapped[int] = mapped_column(default=0)
    active: Mapped[bool] = mapped_column(default=True)


class OrderStatus(str, enum.Enum):
    created = "created"
    paid = "paid"
    shipped = "shipped"
    received = "received"
    completed = "completed"
    closed = "closed"
    refunding = "refunding"
    refunded = "refunded"


class OrderKind(str, enum.Enum):
    #: Bought in the mini-program and paid with WeChat Pay.
    online = "online"
    #: An offline contract from a lead, paid in installments, confirmed by finance.
    contract = "contract"


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total_fee > 0", name="total_positive"),
        CheckConstraint("paid_fee >= 0 AND paid_fee <= total_fee", name="paid_range"),
        CheckConstraint("refunded_fee >= 0 AND refunded_fee <= paid_fee", name="refunded_range"),
        CheckConstraint("upline_id IS NULL OR inviter_id IS NOT NULL", name="upline_needs_inviter"),
        CheckConstraint("discount_bp >= 0 AND discount_bp <= 5000", name="discount_range"),
        CheckConstraint("discount_fen >= 0", name="discount_nonneg"),
        Index("ix_orders_member_created", "member_id", "created_at"),
        Index("ix_orders_status_expires", "status", "expires_at"),
        # The console: orders per day, paid amount per day (covering), the contract queues.
        Index("ix_orders_created", "created_at"),
        Index("ix_orders_paid", "paid_at", "paid_fee"),
        Index("ix_orders_kind_status", "kind", "status"),
        # The console's orders by status, newest first.
        Index("ix_orders_status_id", "status", "id"),
        # The report rollups find the days that late payments and refunds changed.
        Index("ix_orders_updated", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: Our order number towards WeChat Pay: ≤32 letters and digits, unique.
    out_trade_no: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[OrderKind] = mapped_column(enum_column(OrderKind, "order_kind"), default=OrderKind.online)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    status: Mapped[OrderStatus] = mapped_column(enum_column(OrderStatus, "order_status"), default=OrderStatus.created)
    #: The status a refund interrupted, to return to when the refund is partial or rejected.
    status_before_refund: Mapped[OrderStatus | None] = mapped_column(enum_column(OrderStatus, "order_status"))
    #: What the buyer pays: the sum of the items' (discounted) price × quantity.
    total_fee: Mapped[int] = mapped_column(BigInteger)
    #: The buyer's distributor-tier discount when the order was placed, in basis points; 0 for everyone else.
    discount_bp: Mapped[int] = mapped_column(default=0)
    #: Fen the discount took off the catalog prices: sum of (list price − price) × quantity.
    discount_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_fee: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_fee: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Level-1 inviter when the order was created; later rebinding never moves it.
    inviter_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    #: Level-2 inviter when the order was created.
    upline_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    #: The scene the order was placed from, for the timeline (attribution is the binding's).
    scene_code: Mapped[str | None] = mapped_column(String(32))
    #: A partner channel that brought the deal (contract orders), for its commission.
    partner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partners.id"))
    #: Phase 2+ of a contract, or a member's repeat purchase: rewarded at the repeat rate.
    repeat_business: Mapped[bool] = mapped_column(default=False)
    #: The earlier contract this one continues (phase 2, 3, …).
    parent_order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"))
    #: The lead a contract came from.
    lead_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("leads.id"))
    title: Mapped[str] = mapped_column(String(128), default="")
    address: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    remark: Mapped[str] = mapped_column(String(255), default="")
    #: "v2" or "v3": which WeChat Pay API the prepay went through.
    pay_api: Mapped[str | None] = mapped_column(String(4))
    prepay_id: Mapped[str | None] = mapped_column(String(64))
    transaction_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    carrier: Mapped[str] = mapped_column(String(32), default="")
    tracking_no: Mapped[str] = mapped_column(String(64), default="")
    #: Finance confirmed the final payment (contracts; online orders when the merchant requires it).
    finance_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finance_confirmed_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: An unpaid order closes (and releases its stock) at this time.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("price_fen > 0", name="price_positive"),
        CheckConstraint("list_price_fen >= price_fen", name="discount_not_markup"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey("products.id"))
    sku_id: Mapped[int] = mapped_column(BigId, ForeignKey("skus.id"))
    #: Title and variant as they were when ordered.
    title: Mapped[str] = mapped_column(String(128))
    sku_name: Mapped[str] = mapped_column(String(64), default="")
    #: The unit price the buyer pays: the catalog price less the order's discount, floored to the fen.
    price_fen: Mapped[int] = mapped_column(BigInteger)
    #: The SKU's catalog unit price when ordered, before any discount.
    list_price_fen: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int]


class OrderEvent(Base):
    """The order's timeline: one row per state change or notable act. Append-only."""

    __tablename__ = "order_events"
    __table_args__ = (Index("ix_order_events_order", "order_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    #: created, paid, shipped, received, completed, closed, refund_requested, refunded, …
    event: Mapped[str] = mapped_column(String(32))
    #: "member:<id>", "staff:<id>", "wechat" or "system".
    actor: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RefundStatus(str, enum.Enum):
    #: A member asked; staff have not decided.
    requested = "requested"
    #: Staff started or approved it; the refund API has not accepted it yet.
    approved = "approved"
    #: WeChat Pay accepted it; the refund notification will end it.
    processing = "processing"
    succeeded = "succeeded"
    rejected = "rejected"
    #: WeChat Pay refused it for good (see ``failure_reason``), or closed it; the money never left.
    failed = "failed"
    #: WeChat Pay took it but could not pay it into the buyer's account (v3 ABNORMAL, v2 CHANGE): the money
    #: sits at WeChat until staff resolve it (another account through WeChat Pay, or settled offline).
    abnormal = "abnormal"


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        Index("ix_refunds_status_next_attempt", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    #: Our refund number towards WeChat Pay, unique.
    out_refund_no: Mapped[str] = mapped_column(String(64), unique=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[RefundStatus] = mapped_column(enum_column(RefundStatus, "refund_status"), default=RefundStatus.requested)
    #: WeChat's refund id once the refund API accepted it.
    refund_id: Mapped[str | None] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64))
    #: Why it failed or is abnormal, in WeChat's words where WeChat gave them; "" otherwise.
    failure_reason: Mapped[str] = mapped_column(String(255), default="")
    #: Calls to the refund API that WeChat could not answer or asked to repeat.
    attempts: Mapped[int] = mapped_column(default=0)
    #: When an approved refund is next sent to WeChat Pay (retries back off); None: a minute after creation.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PaymentNotice(Base):
    """Every verified pay or refund notification, once (WeChat resends until we answer)."""

    __tablename__ = "payment_notices"
    __table_args__ = (UniqueConstraint("kind", "reference", name="kind_reference"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: "pay" or "refund".
    kind: Mapped[str] = mapped_column(String(8))
    #: transaction_id for a payment, refund_id for a refund: WeChat's own unique id.
    reference: Mapped[str] = mapped_column(String(64))
    out_trade_no: Mapped[str] = mapped_column(String(32), index=True)
    out_refund_no: Mapped[str | None] = mapped_column(String(64))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    #: "v2" or "v3".
    api: Mapped[str] = mapped_column(String(4))
    #: False while a refund notice waits for its payment notice.
    applied: Mapped[bool] = mapped_column(default=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Installment(Base):
    """One agreed payment of a contract order, recorded by finance."""

    __tablename__ = "installments"
    __table_args__ = (
        UniqueConstraint("order_id", "seq", name="order_seq"),
        CheckConstraint("amount_fen > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    #: 1, 2, …; the last one is the final payment (尾款).
    seq: Mapped[int]
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recorded_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    note: Mapped[str] = mapped_column(String(255), default="")
