"""The distributor programme rules and agreement (分销规则与协议): versions, live rates, acceptance.

Staff write the rules as versioned documents: a draft is edited freely, publishing gives it the next
version number and makes it current, and a published version never changes again. Rates are never
typed by hand: the text holds placeholders such as ``{{reward_level1_first_bp}}``, filled in from the
live settings and tiers whenever the rules are shown, and the rendered rules always end with a table
of the current rates. What staff write is plain text with a very small markup, escaped before it is
shown, so no HTML from staff reaches members:

- a blank line starts a new paragraph, a single line break stays a line break;
- a paragraph whose first line starts with ``## `` opens with that line as a heading;
- a paragraph whose lines all start with ``- `` is a list;
- ``**words**`` are bold.

A member applying to be a distributor accepts the current version (``rules_version``); each
acceptance is a row with the member, the version, the time and the client's address.

Services take a session and plain arguments, ``flush()`` and never commit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.accounts.services import record_audit
from server.db import fit, utcnow
from server.distribution.errors import (
    NoSuchRulesError,
    RulesNotAcceptedError,
    RulesOutdatedError,
    RulesPublishedError,
)
from server.distribution.models import ProgrammeRules, RulesAcceptance, RulesStatus
from server.distribution.queries import TIERS, get_tier
from server.errors import ValidationError
from server.settings import services as settings

#: A placeholder: ``{{name}}``, spaces inside the braces allowed.
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
#: What one point is worth at redemption (the design's fixed rate: 1 point = ¥1).
POINT_VALUE = "1 积分 = ¥1"
#: The named database lock publishing takes, so two publishes never get the same number.
PUBLISH_LOCK = "programme_rules_publish"
WEEKDAYS = {1: "周一", 2: "周二", 3: "周三", 4: "周四", 5: "周五", 6: "周六", 7: "周日"}
SETTLEMENT_MODES = {"weekly": "每周", "monthly": "每月", "threshold": "达到门槛时"}


def percent(bp: int) -> str:
    """Basis points as a percentage without trailing zeros: 50 → 0.5%, 1000 → 10%."""
    whole, rest = divmod(int(bp), 100)
    return f"{whole}.{rest:02d}".rstrip("0").rstrip(".") + "%"


def points_text(hundredths: int) -> str:
    """Hundredths of a point as points without trailing zeros: 1000 → 10 积分, 150 → 1.5 积分."""
    whole, rest = divmod(int(hundredths), 100)
    return f"{whole:,}.{rest:02d}".rstrip("0").rstrip(".") + " 积分"


def _yes_no(value: Any) -> str:
    return "是" if value else "否"


#: How known settings read in the rules; any other setting reads as its value (是/否 for a switch).
FORMATS: dict[str, Callable[[Any], str]] = {
    "reward_level1_first_bp": percent,
    "reward_level1_repeat_bp": percent,
    "reward_level2_share_bp": percent,
    "reward_order_cap_bp": percent,
    "valid_lead_points": points_text,
    "settlement_threshold": points_text,
    "min_goods_price": points_text,
    "starter_points": points_text,
    "share_reward_points": points_text,
    "invite_code_points": lambda v: f"{v:,} 积分",
    "after_sales_days": lambda v: f"{v} 天",
    "auto_receive_days": lambda v: f"{v} 天",
    "binding_protection_days": lambda v: f"{v} 天",
    "points_expiry_days": lambda v: "永不过期" if not v else f"{v} 天",
    "settlement_mode": lambda v: SETTLEMENT_MODES.get(v, str(v)),
    "settlement_weekday": lambda v: WEEKDAYS.get(v, str(v)),
}


@dataclass(frozen=True)
class Rate:
    """One row of the rates table: its placeholder, what it is, and its current value as text."""

    key: str
    label: str
    value: str


#: The rates table, in order: (placeholder, label). Rows whose placeholder is unknown (a package that
#: declares the setting is not loaded) are left out.
TABLE: tuple[tuple[str, str], ...] = (
    ("reward_level1_first_bp", "一级奖励：首单或首个合同（按实付金额）"),
    ("reward_level1_repeat_bp", "一级奖励：复购或二期及以后的合同（按实付金额）"),
    ("level2_reward", "二级奖励（按一级奖励计）"),
    ("reward_order_cap_bp", "单笔订单积分合计上限（按实付金额）"),
    ("valid_lead_points", "有效线索奖励"),
    ("settlement_delay", "积分何时可用"),
    ("points_expiry_days", "可用积分有效期"),
    ("points_value", "积分价值"),
    ("tier1_discount", "一级分销员自购折扣"),
    ("tier2_discount", "二级分销员自购折扣"),
    ("tier1_recruit_limit", "一级分销员可招募二级分销员"),
)


def live_values(sess: Session) -> dict[str, str]:
    """Every placeholder's current text: each setting by its key, and the values made from several
    settings or the tiers (``level2_reward``, ``settlement_delay``, ``points_value``, ``tierN_…``)."""
    current = settings.all_settings(sess)
    values: dict[str, str] = {}
    for spec in settings.specs():
        value = current[spec.key]
        fmt = FORMATS.get(spec.key)
        values[spec.key] = fmt(value) if fmt else _yes_no(value) if spec.type is bool else str(value)
    if "reward_level2_share_bp" in current and "reward_direct_only" in current:
        values["level2_reward"] = (
            "不发放（仅直推）" if current["reward_direct_only"] else f"一级奖励的 {percent(current['reward_level2_share_bp'])}"
        )
    if {"after_sales_days", "settlement_mode", "settlement_weekday"} <= current.keys():
        mode = current["settlement_mode"]
        when = {
            "weekly": f"每{WEEKDAYS.get(current['settlement_weekday'], '')}结算",
            "monthly": "每月结算",
            "threshold": f"已成熟积分达到 {points_text(current.get('settlement_threshold', 0))} 时结算",
        }.get(mode, str(mode))
        finance = "，需财务确认收款" if current.get("require_finance_confirmation") else ""
        values["settlement_delay"] = f"订单完成且 {current['after_sales_days']} 天售后期结束后{finance}，{when}"
    values["points_value"] = POINT_VALUE
    for tier in TIERS:
        row = get_tier(sess, tier)
        values[f"tier{tier}_discount"] = percent(row.discount_bp)
        values[f"tier{tier}_can_recruit"] = _yes_no(row.can_recruit)
        values[f"tier{tier}_max_recruits"] = "不限" if not row.max_recruits else f"{row.max_recruits} 人"
        values[f"tier{tier}_recruit_limit"] = (
            "不可招募" if not row.can_recruit else "不限人数" if not row.max_recruits else f"最多 {row.max_recruits} 人"
        )
    return values


def rates(values: dict[str, str]) -> list[Rate]:
    return [Rate(key, label, values[key]) for key, label in TABLE if key in values]


def placeholders(sess: Session) -> dict[str, str]:
    """The placeholders staff may use, each with its current text (for the editor's help)."""
    return dict(sorted(live_values(sess).items()))


def unknown_placeholders(body: str, known: dict[str, str]) -> list[str]:
    return sorted({name for name in PLACEHOLDER_RE.findall(body) if name not in known})


def _check_body(sess: Session, body: str) -> None:
    """Refuse a body with placeholders nothing fills in, naming them."""
    unknown = unknown_placeholders(body, live_values(sess))
    if unknown:
        names = ", ".join("{{" + name + "}}" for name in unknown)
        raise ValidationError(
            f"unknown placeholders: {names}",
            data={"errors": [{"field": "body", "error": f"unknown placeholders: {names}"}], "unknown": unknown},
        )


def _inline(text: str) -> Markup:
    """One escaped line with ``**bold**``."""
    escaped = str(escape(text))
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped))


def markup(text: str) -> Markup:
    """Plain text with the small markup as safe HTML; everything staff typed is escaped."""
    blocks = [block for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n").strip()) if block.strip()]
    html: list[str] = []
    for block in blocks:
        lines = [line.rstrip() for line in block.split("\n")]
        if lines[0].startswith("## "):
            html.append(f"<h3>{_inline(lines[0][3:].strip())}</h3>")
            lines = lines[1:]
            if not lines:
                continue
        if all(line.lstrip().startswith("- ") for line in lines):
            items = "".join(f"<li>{_inline(line.lstrip()[2:].strip())}</li>" for line in lines)
            html.append(f"<ul>{items}</ul>")
        else:
            html.append("<p>" + "<br>".join(str(_inline(line)) for line in lines) + "</p>")
    return Markup("\n".join(html))


def rates_table(rows: list[Rate]) -> Markup:
    body = "".join(f"<tr><th>{escape(r.label)}</th><td>{escape(r.value)}</td></tr>" for r in rows)
    return Markup(f'<table class="rates"><caption>当前费率</caption><tbody>{body}</tbody></table>')


@dataclass(frozen=True)
class Rendered:
    """Rules as members read them: the text with the live values, the same as safe HTML with the
    rates table at its end, and the rates."""

    text: str
    html: Markup
    rates: list[Rate]


def render_text(sess: Session, body: str) -> Rendered:
    """``body`` with every known placeholder filled in from the live settings (unknown ones stay as typed)."""
    values = live_values(sess)
    text = PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), body)
    rows = rates(values)
    return Rendered(text=text, html=Markup(markup(text) + "\n" + rates_table(rows)), rates=rows)


# -- versions ---------------------------------------------------------------------------------------


def list_rules(sess: Session) -> list[ProgrammeRules]:
    """Every version, newest first: drafts by when they were started, published ones by number."""
    return list(sess.scalars(select(ProgrammeRules).order_by(ProgrammeRules.id.desc())))


def get_rules(sess: Session, rules_id: int, *, for_update: bool = False) -> ProgrammeRules:
    row = sess.get(ProgrammeRules, rules_id, with_for_update=True if for_update else None)
    if row is None:
        raise NoSuchRulesError()
    return row


def current_rules(sess: Session) -> ProgrammeRules | None:
    """The current version: the published one with the highest number; None if none was ever published."""
    return sess.scalar(
        select(ProgrammeRules).where(ProgrammeRules.status == RulesStatus.published).order_by(ProgrammeRules.number.desc()).limit(1)
    )


def create_draft(sess: Session, *, title: str, body: str, staff_id: int | None) -> ProgrammeRules:
    """A new draft (an edit of a published version starts one too); placeholders are checked; audited."""
    _check_body(sess, body)
    row = ProgrammeRules(title=title, body=body, status=RulesStatus.draft, created_by=staff_id)
    sess.add(row)
    sess.flush()
    record_audit(sess, staff_id, "programme_rules.create", f"programme_rules:{row.id}", {"title": title})
    return row


def update_draft(sess: Session, rules_id: int, changes: dict[str, Any], *, staff_id: int | None) -> ProgrammeRules:
    """Change a draft's title or body; a published version is immutable (RulesPublishedError)."""
    row = get_rules(sess, rules_id, for_update=True)
    if row.status != RulesStatus.draft:
        raise RulesPublishedError(data={"number": row.number})
    if "body" in changes:
        _check_body(sess, changes["body"])
    for field in ("title", "body"):
        if field in changes:
            setattr(row, field, changes[field])
    sess.flush()
    record_audit(sess, staff_id, "programme_rules.update", f"programme_rules:{row.id}", {"fields": sorted(k for k in changes if k in ("title", "body"))})
    return row


def publish(sess: Session, rules_id: int, *, staff_id: int | None) -> ProgrammeRules:
    """Publish a draft as the next version, which becomes current; audited. Publishing a published
    version again is refused (RulesPublishedError)."""
    settings.lock_named(sess, PUBLISH_LOCK)
    row = get_rules(sess, rules_id, for_update=True)
    if row.status != RulesStatus.draft:
        raise RulesPublishedError(data={"number": row.number})
    # Checked again: a setting or tier the text names may have gone since the draft was saved.
    _check_body(sess, row.body)
    row.number = (sess.scalar(select(func.max(ProgrammeRules.number))) or 0) + 1
    row.status = RulesStatus.published
    row.published_at, row.published_by = utcnow(), staff_id
    sess.flush()
    record_audit(sess, staff_id, "programme_rules.publish", f"programme_rules:{row.id}", {"number": row.number, "title": row.title})
    return row


# -- acceptance -------------------------------------------------------------------------------------


def accept_current(sess: Session, member_id: int, rules_version: int | None, *, client_address: str) -> RulesAcceptance | None:
    """Record that the member accepted ``rules_version``, which must be the current version.

    None when no version was ever published (and ``rules_version`` was not given): there is nothing
    to accept. Missing while a version is current: RulesNotAcceptedError (400); any other number:
    RulesOutdatedError (409) with the current one, so the client shows it.
    """
    current = current_rules(sess)
    if current is None and rules_version is None:
        return None
    current_number = current.number if current is not None else None
    if rules_version is None:
        raise RulesNotAcceptedError(data={"current_version": current_number})
    if current is None or rules_version != current.number:
        raise RulesOutdatedError(data={"current_version": current_number, "rules_version": rules_version})
    row = RulesAcceptance(member_id=member_id, rules_id=current.id, accepted_at=utcnow(), client_address=fit(RulesAcceptance.__table__.c.client_address, client_address))
    sess.add(row)
    sess.flush()
    return row


def latest_acceptance(sess: Session, member_id: int) -> tuple[RulesAcceptance, ProgrammeRules] | None:
    """The member's latest acceptance and the version it was of, or None."""
    found = sess.execute(
        select(RulesAcceptance, ProgrammeRules)
        .join(ProgrammeRules, ProgrammeRules.id == RulesAcceptance.rules_id)
        .where(RulesAcceptance.member_id == member_id)
        .order_by(RulesAcceptance.id.desc())
        .limit(1)
    ).first()
    return (found[0], found[1]) if found else None
