"""The compliance report (guard 7): the rules in force and every row that breaks a guard of DESIGN §5.

``python -m server compliance-report`` prints it and exits 1 when anything
breaks a guard; ``GET /admin/api/v1/compliance`` returns the same as JSON.

The guards are enforced where points are computed and posted; this report
exists for what those paths cannot see: rows written around the services (a
script, a hand-edited database, a migration), and the schema itself, which is
read back from the live database so that a column added behind the models'
back is caught too.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import and_, func, inspect, or_, select
from sqlalchemy.orm import Session, aliased

from server import db
from server.accounts.models import AuditEntry
from server.models import metadata
from server.orders.models import Order
from server.points import incentives, rules
from server.points.models import LedgerTransaction, OrderReward, ShareOpen, TxKind
from server.referral.models import Lead
from server.referral.services import is_sales_lead
from server.settings.models import Setting
from server.settings.services import get_setting, spec_for, specs

GUARDS: dict[int, str] = {
    1: "at most two reward levels",
    2: "no reward for headcount; grades and bonuses follow own sales only",
    3: "becoming a distributor never requires a payment or a purchase",
    4: "level 2 never above level 1; an order's points within the hard ceiling",
    5: "direct only turns level 2 off",
    6: "share rewards off by default; only for another real member's open",
    7: "this report",
}

#: Settings that decide who earns what and when, beyond those named by their prefix.
REWARD_SETTINGS = frozenset({"valid_lead_points", "require_finance_confirmation", "settlement_mode", "settlement_threshold", "points_expiry_days"})
REWARD_PREFIXES = ("reward_", "share_reward_", "stage_", "starter_")

#: Tables whose thresholds decide grades and bonuses: none of their columns may count people.
SALES_ONLY_TABLES = ("grades", "stage_bonus_rules")
HEADCOUNT_WORDS = re.compile(r"member|invite|recruit|team|downline|referr|headcount|people|person|fans|follower|count|size|bind|signup|regist")
#: Where money or points change hands; a distributor row must not link to any of them, nor they to it.
PAYMENT_TABLES = (
    "orders",
    "order_items",
    "refunds",
    "payment_notices",
    "installments",
    "products",
    "skus",
    "redemptions",
    "redemption_items",
    "ledger_transactions",
    "ledger_entries",
)
PAYMENT_WORDS = re.compile(r"fee|pay|price|deposit|purchase|order|amount|charge|cost|points")
#: Idempotency-key prefixes of postings that would pay for people rather than sales.
HEADCOUNT_KEY_PREFIXES = ("register", "registration", "signup", "sign_in", "signin", "bind", "binding", "team", "recruit", "invitee", "downline", "headcount")
LEAD_KEY_RE = re.compile(r"^lead:(\d+):reward$")
SHARE_KEY_RE = re.compile(r"^share:(\d+):(\d{4}-\d{2}-\d{2})$")

#: A setting's value before its history begins, when it was changed without an audit entry.
UNKNOWN = object()


@dataclass(frozen=True)
class Violation:
    guard: int
    #: A stable name for the check, for machines: "reward_level", "level2_above_level1", …
    check: str
    message: str
    #: The rows concerned, e.g. {"order_id": 3, "order_reward_id": 7}.
    ref: dict[str, Any] = field(default_factory=dict)


@dataclass
class ComplianceReport:
    rules: dict[str, Any]
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        by_guard: dict[int, int] = defaultdict(int)
        for violation in self.violations:
            by_guard[violation.guard] += 1
        return {
            "ok": self.ok,
            "rules": self.rules,
            "guards": [{"guard": n, "title": title, "ok": by_guard[n] == 0, "violations": by_guard[n]} for n, title in GUARDS.items()],
            "violations": [{"guard": v.guard, "check": v.check, "message": v.message, "ref": v.ref} for v in self.violations],
        }


def compliance_report(sess: Session) -> ComplianceReport:
    """The rules in force and every violation of a guard, oldest rows first within each check."""
    violations: list[Violation] = []
    for check in (
        _reward_levels,
        _headcount_postings,
        _lead_rewards_without_contact,
        _headcount_columns,
        _payment_links,
        _level2_above_level1,
        _over_hard_cap,
        _level2_while_direct_only,
        _share_rewards,
    ):
        violations.extend(check(sess))
    return ComplianceReport(active_rules(sess), violations)


# -- the rules in force -----------------------------------------------------------------------


def _is_reward_setting(key: str) -> bool:
    return key in REWARD_SETTINGS or key.startswith(REWARD_PREFIXES)


def active_rules(sess: Session) -> dict[str, Any]:
    """Every reward-related setting with its value and default, the hard caps no setting lifts, and the switches."""
    settings = [
        {"key": spec.key, "value": get_setting(sess, spec.key), "default": spec.default, "description": spec.description}
        for spec in specs()
        if _is_reward_setting(spec.key)
    ]
    direct_only = bool(get_setting(sess, "reward_direct_only"))
    stage_rules = incentives.list_stage_rules(sess, active=True)
    return {
        "settings": settings,
        "hard_caps": {
            "max_levels": rules.MAX_LEVELS,
            "order_cap_ceiling_bp": rules.HARD_CAP_BP,
            "max_level2_share_bp": rules.MAX_LEVEL2_SHARE_BP,
            "max_share_reward": incentives.MAX_SHARE_REWARD,
            "max_starter_points": incentives.MAX_STARTER_POINTS,
            "max_stage_bonus": incentives.MAX_STAGE_BONUS,
        },
        "direct_only": direct_only,
        "level2_share_bp": 0 if direct_only else min(int(get_setting(sess, "reward_level2_share_bp")), rules.MAX_LEVEL2_SHARE_BP),
        "order_cap_bp": min(int(get_setting(sess, "reward_order_cap_bp")), rules.HARD_CAP_BP),
        "share_reward": {
            "enabled": bool(get_setting(sess, "share_reward_enabled")),
            "points": int(get_setting(sess, "share_reward_points")),
            "when": "at most once per sharer per China-time day, when another signed-in member opens the share",
        },
        "starter_points": int(get_setting(sess, "starter_points")),
        "stage_bonus_rules": [
            {
                "id": rule.id,
                "name": rule.name,
                "min_monthly_sales_fen": rule.min_monthly_sales_fen,
                "consecutive_months": rule.consecutive_months,
                "bonus": rule.bonus,
            }
            for rule in stage_rules
        ],
    }


# -- guard 1: two levels --------------------------------------------------------------------


def _reward_levels(sess: Session) -> list[Violation]:
    found = [
        Violation(1, "reward_level", f"order reward {reward_id} on order {order_id} is at level {level}; only levels 1 and 2 exist", {"order_reward_id": reward_id, "order_id": order_id})
        for reward_id, order_id, level in sess.execute(
            select(OrderReward.id, OrderReward.order_id, OrderReward.level).where(OrderReward.level.not_in((1, 2))).order_by(OrderReward.id)
        )
    ]
    found += [
        Violation(1, "reward_posting_level", f"transaction {tx_id} rewards order {order_id} at level {level}; only levels 1 and 2 exist", {"transaction_id": tx_id, "order_id": order_id})
        for tx_id, order_id, level in sess.execute(
            select(LedgerTransaction.id, LedgerTransaction.order_id, LedgerTransaction.level)
            .where(LedgerTransaction.kind == TxKind.order_reward, or_(LedgerTransaction.level.is_(None), LedgerTransaction.level.not_in((1, 2))))
            .order_by(LedgerTransaction.id)
        )
    ]
    return found


# -- guard 2: no reward for headcount -----------------------------------------------------------


def _headcount_postings(sess: Session) -> list[Violation]:
    """Order rewards without an order, and postings keyed to sign-ups, bindings or teams."""
    found = [
        Violation(2, "reward_without_order", f"transaction {tx_id} ({key}) is an order reward with no order: points not paid for a sale", {"transaction_id": tx_id, "member_id": member_id})
        for tx_id, key, member_id in sess.execute(
            select(LedgerTransaction.id, LedgerTransaction.idempotency_key, LedgerTransaction.member_id)
            .where(LedgerTransaction.kind == TxKind.order_reward, LedgerTransaction.order_id.is_(None))
            .order_by(LedgerTransaction.id)
        )
    ]
    prefixed = or_(*(LedgerTransaction.idempotency_key.like(f"{prefix}:%") for prefix in HEADCOUNT_KEY_PREFIXES))
    found += [
        Violation(2, "headcount_posting", f"transaction {tx_id} ({key}, {kind.value}) pays for a registration, binding or team", {"transaction_id": tx_id, "member_id": member_id})
        for tx_id, key, kind, member_id in sess.execute(
            select(LedgerTransaction.id, LedgerTransaction.idempotency_key, LedgerTransaction.kind, LedgerTransaction.member_id).where(prefixed).order_by(LedgerTransaction.id)
        )
    ]
    return found


def _lead_rewards_without_contact(sess: Session) -> list[Violation]:
    """Valid-lead points paid for a lead that is not a sales lead (no contact phone, or no stated need):
    a sign-in paid as a lead is a reward for a head."""
    found = []
    postings = sess.execute(
        select(LedgerTransaction.id, LedgerTransaction.idempotency_key, LedgerTransaction.member_id)
        .where(LedgerTransaction.kind == TxKind.lead_reward)
        .order_by(LedgerTransaction.id)
    ).all()
    # The leads the postings name, read together (a few thousand ids at a time) instead of one by one.
    wanted = sorted({int(m.group(1)) for _, key, _ in postings if (m := LEAD_KEY_RE.match(key))})
    leads: dict[int, Lead] = {}
    for start in range(0, len(wanted), 5000):
        leads.update((lead.id, lead) for lead in sess.scalars(select(Lead).where(Lead.id.in_(wanted[start:start + 5000]))))
    for tx_id, key, member_id in postings:
        match = LEAD_KEY_RE.match(key)
        lead = leads.get(int(match.group(1))) if match else None
        ref = {"transaction_id": tx_id, "member_id": member_id, "lead_id": lead.id if lead else None}
        if lead is None:
            found.append(Violation(2, "lead_reward_without_lead", f"transaction {tx_id} ({key}) pays valid-lead points for no lead", ref))
        elif not is_sales_lead(lead):
            missing = "a contact phone" if not lead.contact_phone_ciphertext else "a stated need"
            found.append(
                Violation(2, "lead_reward_without_contact", f"transaction {tx_id} paid valid-lead points for lead {lead.id} ({lead.source.value}) without {missing}", ref)
            )
    return found


def _columns(sess: Session, table: str) -> set[str]:
    """The table's columns as the models declare them and as the live database has them."""
    declared = {c.name for c in metadata.tables[table].columns} if table in metadata.tables else set()
    live = {c["name"] for c in inspect(sess.connection()).get_columns(table)}
    return declared | live


def _foreign_keys(sess: Session, table: str) -> set[tuple[str, str]]:
    """(column, referred table) of every foreign key of the table, declared or live."""
    declared = {(fk.parent.name, fk.column.table.name) for fk in metadata.tables[table].foreign_keys} if table in metadata.tables else set()
    live = {(col, fk["referred_table"]) for fk in inspect(sess.connection()).get_foreign_keys(table) for col in fk["constrained_columns"]}
    return declared | live


def _headcount_columns(sess: Session) -> list[Violation]:
    """Grades and stage bonus thresholds may hold sales amounts and nothing that counts people."""
    return [
        Violation(2, "headcount_threshold", f"{table}.{column} looks like a headcount: grades and bonuses may depend only on own sales", {"table": table, "column": column})
        for table in SALES_ONLY_TABLES
        for column in sorted(_columns(sess, table))
        if HEADCOUNT_WORDS.search(column.lower())
    ]


# -- guard 3: no entry fee ----------------------------------------------------------------------


def _payment_links(sess: Session) -> list[Violation]:
    """A distributor row may not carry a fee nor point at (or be pointed at by) anything paid."""
    found = [
        Violation(3, "distributor_fee_column", f"distributors.{column} looks like a fee or purchase: becoming a distributor must be free", {"table": "distributors", "column": column})
        for column in sorted(_columns(sess, "distributors"))
        if PAYMENT_WORDS.search(column.lower())
    ]
    found += [
        Violation(3, "distributor_payment_link", f"distributors.{column} refers to {referred}: approval must not depend on a payment", {"table": "distributors", "column": column})
        for column, referred in sorted(_foreign_keys(sess, "distributors"))
        if referred in PAYMENT_TABLES
    ]
    found += [
        Violation(3, "payment_distributor_link", f"{table}.{column} refers to distributors: a payment must not be tied to becoming one", {"table": table, "column": column})
        for table in PAYMENT_TABLES
        for column, referred in sorted(_foreign_keys(sess, table))
        if referred == "distributors"
    ]
    return found


# -- guards 4 and 5: level 2 and the ceiling ------------------------------------------------------


def _level2_above_level1(sess: Session) -> list[Violation]:
    """One join on the (order, level) key: orders whose level-2 reward exceeds their level-1 reward (or has none)."""
    one, two = aliased(OrderReward), aliased(OrderReward)
    rows = sess.execute(
        select(two.order_id, two.amount, func.coalesce(one.amount, 0))
        .outerjoin(one, and_(one.order_id == two.order_id, one.level == 1))
        .where(two.level == 2, two.amount > func.coalesce(one.amount, 0))
        .order_by(two.order_id)
    )
    return [
        Violation(4, "level2_above_level1", f"order {order_id} pays level 2 ({int(level2)}) more than level 1 ({int(level1)})", {"order_id": order_id})
        for order_id, level2, level1 in rows
    ]


def _over_hard_cap(sess: Session) -> list[Violation]:
    """Orders whose rewards together exceed the hard ceiling, found by the database.

    ``total > fee × cap // 10,000`` holds exactly when ``total × 10,000 > fee × cap`` (whole numbers).
    """
    total = func.sum(OrderReward.amount)
    rows = sess.execute(
        select(OrderReward.order_id, Order.total_fee, total)
        .join(Order, Order.id == OrderReward.order_id)
        .group_by(OrderReward.order_id, Order.total_fee)
        .having(total * 10_000 > Order.total_fee * rules.HARD_CAP_BP)
        .order_by(OrderReward.order_id)
    )
    found = []
    for order_id, total_fee, paid in rows:
        ceiling = int(total_fee) * rules.HARD_CAP_BP // 10_000
        found.append(
            Violation(
                4,
                "over_hard_cap",
                f"order {order_id} paid {int(paid)} hundredths of a point, above the hard ceiling of {ceiling} ({rules.HARD_CAP_BP} bp of ¥{int(total_fee) / 100:,.2f})",
                {"order_id": order_id},
            )
        )
    return found


@dataclass(frozen=True)
class SettingHistory:
    """What values a setting may have had at an instant (call it with the instant), from its changes."""

    default: Any
    #: (when, the possible values before, the value after), oldest first.
    events: list[tuple[datetime, set[Any], Any]]

    def __call__(self, at: datetime) -> set[Any]:
        before = [event for event in self.events if event[0] < at]
        possible = {before[-1][2]} if before else (set(self.events[0][1]) if self.events else {self.default})
        return possible | {new for when, _, new in self.events if when == at}

    def ever(self, value: Any) -> bool:
        """Whether the setting may ever have had ``value``."""
        seen = {self.default} | {new for _, _, new in self.events}
        for _, before, _ in self.events:
            seen |= before
        return value in seen


def setting_history(sess: Session, key: str) -> SettingHistory:
    """What values ``key`` may have had at an instant, from the audit log and the stored row.

    Instants are stored to the second, so a change and a posting in the same
    second are ambiguous: both the value before and the new one are possible.
    A change made without an audit entry leaves the value before it unknown
    (``UNKNOWN`` in the set), and a check must not call that a violation.
    """
    events: list[tuple[datetime, set[Any], Any]] = [
        (at, {detail.get("old", UNKNOWN)}, detail.get("new", UNKNOWN))
        for at, detail in sess.execute(
            select(AuditEntry.created_at, AuditEntry.detail)
            .where(AuditEntry.action == "settings.set", AuditEntry.target == f"setting:{key}")
            .order_by(AuditEntry.created_at, AuditEntry.id)
        )
    ]
    stored = sess.get(Setting, key)
    if stored is not None and (not events or stored.updated_at > events[-1][0] or stored.value != events[-1][2]):
        events.append((stored.updated_at, {UNKNOWN}, stored.value))
    return SettingHistory(spec_for(key).default, events)


def _level2_while_direct_only(sess: Session) -> list[Violation]:
    direct_only_at = setting_history(sess, "reward_direct_only")
    if not direct_only_at.ever(True):
        # Direct only was never on: no level-2 reward can break it, and none need be read.
        return []
    return [
        Violation(5, "level2_while_direct_only", f"order reward {reward_id} paid level 2 on order {order_id} while direct only was on", {"order_reward_id": reward_id, "order_id": order_id})
        for reward_id, order_id, created_at in sess.execute(
            select(OrderReward.id, OrderReward.order_id, OrderReward.created_at).where(OrderReward.level == 2).order_by(OrderReward.id)
        )
        if direct_only_at(created_at) == {True}
    ]


# -- guard 6: share rewards ---------------------------------------------------------------------


def _share_rewards(sess: Session) -> list[Violation]:
    """Every share reward needs the switch on and a recorded open by another member; no open is by the sharer."""
    enabled_at = setting_history(sess, "share_reward_enabled")
    opens = {(row.sharer_id, row.day): row for row in sess.scalars(select(ShareOpen))}
    found = []
    for tx in sess.scalars(select(LedgerTransaction).where(LedgerTransaction.kind == TxKind.share_reward).order_by(LedgerTransaction.id)):
        ref = {"transaction_id": tx.id, "member_id": tx.member_id}
        if enabled_at(tx.created_at) == {False}:
            found.append(Violation(6, "share_reward_while_off", f"transaction {tx.id} paid a share reward to member {tx.member_id} while share rewards were off", ref))
        match = SHARE_KEY_RE.match(tx.idempotency_key)
        share_open = opens.get((int(match.group(1)), match.group(2))) if match else None
        if match is None or int(match.group(1)) != tx.member_id:
            found.append(Violation(6, "share_reward_key", f"transaction {tx.id} ({tx.idempotency_key}) is a share reward outside the one-per-sharer-per-day key", ref))
        elif share_open is None:
            found.append(Violation(6, "share_reward_without_open", f"transaction {tx.id} paid member {tx.member_id} a share reward with no recorded open by another member", ref))
        elif share_open.opener_id == share_open.sharer_id:
            found.append(Violation(6, "share_reward_self_open", f"transaction {tx.id} paid member {tx.member_id} for opening their own share", ref | {"share_open_id": share_open.id}))
    found += [
        Violation(6, "self_open", f"share open {row.id} on {row.day} is member {row.sharer_id} opening their own share", {"share_open_id": row.id, "member_id": row.sharer_id})
        for row in sorted(opens.values(), key=lambda r: r.id)
        if row.opener_id == row.sharer_id
    ]
    return found


# -- the command ------------------------------------------------------------------------------


def _value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def render(report: ComplianceReport) -> list[str]:
    """The report as lines of text, for the command line."""
    r = report.rules
    lines = ["Active rules:"]
    for item in r["settings"]:
        changed = "" if item["value"] == item["default"] else "  (changed)"
        lines.append(f"  {item['key']} = {_value(item['value'])} (default {_value(item['default'])}){changed}")
    caps = r["hard_caps"]
    lines += [
        f"  hard caps: {caps['max_levels']} reward levels; an order pays at most {caps['order_cap_ceiling_bp']} bp of its amount; "
        f"level 2 at most {caps['max_level2_share_bp']} bp of level 1; share reward at most {caps['max_share_reward']}; "
        f"starter at most {caps['max_starter_points']}; a stage bonus at most {caps['max_stage_bonus']} (hundredths of a point)",
        f"  direct only: {'on (level 2 off)' if r['direct_only'] else 'off'}; level 2 = {r['level2_share_bp']} bp of level 1; order cap {r['order_cap_bp']} bp",
        f"  share reward: {'on, ' + str(r['share_reward']['points']) + ' hundredths ' + r['share_reward']['when'] if r['share_reward']['enabled'] else 'off'}",
        f"  starter points: {r['starter_points'] or 'off'}",
    ]
    if r["stage_bonus_rules"]:
        for rule in r["stage_bonus_rules"]:
            lines.append(
                f"  stage bonus #{rule['id']} {rule['name']}: own sales ≥ ¥{rule['min_monthly_sales_fen'] / 100:,.2f} a month "
                f"for {rule['consecutive_months']} month(s) → {rule['bonus']} hundredths"
            )
    else:
        lines.append("  stage bonuses: none active")
    lines.append("Guards:")
    counts: dict[int, int] = defaultdict(int)
    for violation in report.violations:
        counts[violation.guard] += 1
    for n, title in GUARDS.items():
        lines.append(f"  {n}. {title}: {'ok' if counts[n] == 0 else str(counts[n]) + ' violation(s)'}")
    lines += [f"VIOLATION (guard {v.guard}, {v.check}): {v.message}" for v in report.violations]
    lines.append("compliance-report passed" if report.ok else f"compliance-report failed: {len(report.violations)} violations")
    return lines


@click.command("compliance-report")
@with_appcontext
def compliance_report_command() -> None:
    """Print the reward rules in force and every row breaking a compliance guard; exit 1 if there is any."""
    report = compliance_report(db.session())
    for line in render(report):
        click.echo(line)
    if not report.ok:
        raise SystemExit(1)


def register_cli(app: Flask) -> None:
    app.cli.add_command(compliance_report_command)
