"""Daily rollup tables behind the reports: one row per China-time day and dimension.

Each table is derived data. A day's rows are deleted and inserted again from the raw rows in one
statement per table (``rollups.refresh_day``), so refreshing a day any number of times gives the
same rows, and ``python -m server reports-rebuild`` can rebuild any range. No foreign keys: a rollup
row outlives nothing and is never the only record of anything.
"""
from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId


class DailyTotals(Base):
    """What the dashboard trend counts per day, one row per day."""

    __tablename__ = "report_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    #: Members whose account was created that day.
    new_members: Mapped[int] = mapped_column(default=0)
    #: Touch events of kind bind that day.
    bindings: Mapped[int] = mapped_column(default=0)
    #: Leads created that day, and of them those marked valid (as they stand at the refresh).
    leads: Mapped[int] = mapped_column(default=0)
    valid_leads: Mapped[int] = mapped_column(default=0)
    #: Orders created that day, paid or not.
    orders_created: Mapped[int] = mapped_column(default=0)


class OrdersDaily(Base):
    """Orders paid that day, by kind and by whether they are repeat business (phase 2+ or a repeat purchase)."""

    __tablename__ = "report_orders_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    #: "online" or "contract".
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    repeat_business: Mapped[bool] = mapped_column(primary_key=True)
    orders: Mapped[int] = mapped_column(default=0)
    #: Paid and (so far) refunded fen of the orders paid that day.
    paid_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)


class FunnelSteps:
    """The funnel's steps as columns: lead-timeline events counted towards each."""

    #: visit and scan events.
    visits: Mapped[int] = mapped_column(default=0)
    sign_ins: Mapped[int] = mapped_column(default=0)
    bindings: Mapped[int] = mapped_column(default=0)
    leads: Mapped[int] = mapped_column(default=0)
    orders: Mapped[int] = mapped_column(default=0)
    paid: Mapped[int] = mapped_column(default=0)
    completed: Mapped[int] = mapped_column(default=0)


class FunnelDaily(FunnelSteps, Base):
    """A day's lead-timeline events per funnel step, credited to a channel and content item."""

    __tablename__ = "report_funnel_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    #: "first" (credited to the member's first scene touch) or "last" (their latest scene touch before the event).
    view: Mapped[str] = mapped_column(String(8), primary_key=True)
    #: A Channel value, or "direct" when no scene touch came before the event.
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: The shared content item, e.g. "product:12"; "" for the shop itself.
    content: Mapped[str] = mapped_column(String(96), primary_key=True)


class FunnelMonthly(FunnelSteps, Base):
    """``FunnelDaily`` summed per calendar month, so a long period reads a row per month and item."""

    __tablename__ = "report_funnel_monthly"

    #: The month's first day.
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    view: Mapped[str] = mapped_column(String(8), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    content: Mapped[str] = mapped_column(String(96), primary_key=True)


class FunnelChannelDaily(FunnelSteps, Base):
    """``FunnelDaily`` summed over content items: the per-channel funnel reads a few rows a day, whatever the content."""

    __tablename__ = "report_funnel_channel_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    view: Mapped[str] = mapped_column(String(8), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)


class MemberFigures:
    """A member's own attributed figures: what a distributor report sums."""

    #: Orders paid whose inviter (level 1, stamped on the order) is this member.
    orders: Mapped[int] = mapped_column(default=0)
    #: Their paid fen less what has been refunded of them.
    sales_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Leads created from this member's share, and of them those marked valid.
    leads: Mapped[int] = mapped_column(default=0)
    valid_leads: Mapped[int] = mapped_column(default=0)
    #: Hundredths of a point issued to the member (what left the issuance account in their transactions).
    points_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Hundredths of a point the member spent, net of cancelled redemptions.
    points_redeemed: Mapped[int] = mapped_column(BigInteger, default=0)


class MemberDaily(MemberFigures, Base):
    """One member's own figures on one day (orders by paid day, leads by created day, points by posting day).

    Keyed member first, so one member's days are adjacent (clustered on MySQL): a distributor's
    figures over a period, and their latest day with a sale, are one short range each.
    """

    __tablename__ = "report_member_daily"
    __table_args__ = (Index("ix_report_member_daily_day", "day"),)

    member_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class MemberMonthly(MemberFigures, Base):
    """``MemberDaily`` summed per calendar month, so a year reads at most twelve rows per member."""

    __tablename__ = "report_member_monthly"
    __table_args__ = (Index("ix_report_member_monthly_month", "month"),)

    member_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    #: The month's first day.
    month: Mapped[date] = mapped_column(Date, primary_key=True)


class RegionDaily(Base):
    """Orders paid that day by the province and city of their address ("" when the order has none)."""

    __tablename__ = "report_region_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    province: Mapped[str] = mapped_column(String(64), primary_key=True)
    city: Mapped[str] = mapped_column(String(64), primary_key=True)
    orders: Mapped[int] = mapped_column(default=0)
    paid_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)


class ProductDaily(Base):
    """Order lines of the orders paid that day, per SKU."""

    __tablename__ = "report_product_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sku_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    product_id: Mapped[int] = mapped_column(BigId)
    #: Orders with a line of this SKU, and the units on those lines.
    orders: Mapped[int] = mapped_column(default=0)
    units: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Price × quantity of the lines, in fen.
    gross_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The order's refunded fen shared over its lines by their gross, each share floored to the fen.
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The same two for orders with an inviter (referred sales).
    referral_gross_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    referral_refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerDaily(Base):
    """Ledger entries of the transactions posted that day, by account kind and transaction kind."""

    __tablename__ = "report_ledger_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    account_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    tx_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: Sum of the positive entries, and of the negative entries (≤ 0), in hundredths of a point.
    credits: Mapped[int] = mapped_column(BigInteger, default=0)
    debits: Mapped[int] = mapped_column(BigInteger, default=0)


#: The tables keyed by day, refreshed a day at a time, and those keyed by month, summed from them.
ROLLUP_TABLES = (DailyTotals, OrdersDaily, FunnelDaily, FunnelChannelDaily, MemberDaily, RegionDaily, ProductDaily, LedgerDaily)
MONTHLY_TABLES = ((FunnelMonthly, FunnelDaily), (MemberMonthly, MemberDaily))
