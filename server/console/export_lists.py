"""The seven console lists that export: what each selects (the page's own filter function), in which
order, and the columns a clerk needs.

An export reads its list in keyset batches: each batch is one query "the next N rows after the last
key seen", in the page's order, so memory stays flat in the number of rows and no transaction or
cursor stays open between batches. Each batch is turned into rows with a few grouped look-ups (the
members it names, …), as the page does for its twenty rows. Personal data is written exactly as the
page shows it: phone numbers masked, never decrypted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from server import db
from server.accounts.models import AuditEntry, Member, Staff
from server.console import distributors_queries, queries
from server.console import points_queries as pq
from server.console.distributors_pages import distributor_filters
from server.console.labels import label
from server.console.lead_pages import lead_filters
from server.console.orders_pages import order_filters
from server.console.points_pages import ledger_filters
from server.console.redemption_pages import redemption_filters
from server.console.routes import audit_filters, member_filters
from server.distribution.models import Distributor
from server.exports import Column
from server.orders.models import Order
from server.orders.queries import members_by_id
from server.points import redemption as points
from server.points.models import Entry, ItemKind, LedgerTransaction, Redemption
from server.referral.models import Lead

Row = dict[str, Any]
Selection = Callable[[Mapping[str, str]], tuple[Any, list[str]]]


@dataclass(frozen=True)
class ExportList:
    """One console list as a file."""

    #: The name in URLs, job rows and audit entries.
    name: str
    #: The list's Chinese title: the sheet's and the file's name.
    title: str
    #: The role area of the list (``roles.AREAS``); exporting needs the same.
    area: str
    #: The list page's endpoint; its export lives at the same path plus ``/export``.
    endpoint: str
    #: The page's filter names in its URL; these, and only these, are carried to the export.
    filter_names: tuple[str, ...]
    #: The page's own filter function: the selection and the problems with the filters.
    select: Selection
    #: The page's order, newest first: every key descending, the last one unique.
    keys: tuple[Any, ...]
    columns: list[Column]
    #: One batch of selected rows (each a tuple of the selection's entities) as file rows.
    rows: Callable[[Session, list[tuple[Any, ...]]], list[Row]]
    #: How many file rows the selection makes, when that is not one per selected row.
    count: Callable[[Session, Any], int] | None = None

    def filters(self, args: Mapping[str, str]) -> dict[str, str]:
        """The list's filters present in ``args``, as the page's URL carries them (cut to a sane length)."""
        return {name: str(args.get(name, ""))[:64] for name in self.filter_names if str(args.get(name, "")).strip()}


def count_rows(sess: Session, export: ExportList, stmt: Any) -> int:
    """How many rows the export of ``stmt`` has."""
    if export.count is not None:
        return export.count(sess, stmt)
    return db.count(sess, stmt)


def _before(keys: tuple[Any, ...], values: tuple[Any, ...]) -> Any:
    """Rows that come after ``values`` in the order of ``keys`` (each descending)."""
    first, rest = keys[0], keys[1:]
    if not rest:
        return first < values[0]
    return or_(first < values[0], and_(first == values[0], _before(rest, values[1:])))


def batches(sess: Session, export: ExportList, stmt: Any, size: int) -> Iterator[list[tuple[Any, ...]]]:
    """The selection in the page's order, ``size`` rows per query, each query starting after the last key seen."""
    width = len(export.keys)
    last: tuple[Any, ...] | None = None
    while True:
        query = stmt.add_columns(*export.keys).order_by(None).order_by(*(key.desc() for key in export.keys)).limit(size)
        if last is not None:
            query = query.where(_before(export.keys, last))
        found = sess.execute(query).all()
        if not found:
            return
        yield [tuple(row[:-width]) for row in found]
        if len(found) < size:
            return
        last = tuple(found[-1][-width:])


def export_rows(
    sess: Session,
    export: ExportList,
    stmt: Any,
    *,
    size: int,
    after_batch: Callable[[int], None] | None = None,
    end_read: Callable[[], None] | None = None,
) -> Iterator[Row]:
    """The file's rows, batch by batch; ``after_batch`` hears the rows done so far once a batch is written.

    ``end_read`` is called once each batch has been read (and after the last, empty, query), so a caller
    that streams can end the read transaction instead of holding it while the client downloads.
    """
    done = 0
    try:
        for batch in batches(sess, export, stmt, size):
            rows = export.rows(sess, batch)
            if end_read is not None:
                end_read()
            yield from rows
            done += len(rows)
            if after_batch is not None:
                after_batch(done)
    finally:
        if end_read is not None:
            end_read()


# -- the lists ---------------------------------------------------------------------------------------


def _nickname(members: Mapping[int, Member], member_id: int | None) -> str | None:
    found = members.get(member_id) if member_id is not None else None
    return found.nickname if found is not None else None


def _member_rows(sess: Session, batch: list[tuple[Any, ...]]) -> list[Row]:
    found: list[Member] = [row[0] for row in batch]
    inviters = queries.inviters_of(sess, [m.id for m in found])
    return [
        {
            "id": m.id,
            "nickname": m.nickname,
            "phone": m.phone_masked,
            "inviter_id": inviters[m.id].id if m.id in inviters else None,
            "inviter": inviters[m.id].nickname if m.id in inviters else None,
            "status": label(m.status, "member_status"),
            "created_at": m.created_at,
        }
        for m in found
    ]


def _distributor_rows(sess: Session, batch: list[tuple[Any, ...]]) -> list[Row]:
    member_ids = [member.id for _d, member in batch]
    sales = distributors_queries.own_sales(sess, member_ids)
    balances = distributors_queries.available_points(sess, member_ids)
    grades = distributors_queries.grade_names(sess)
    return [
        {
            "id": d.id,
            "member_id": m.id,
            "nickname": m.nickname,
            "real_name": d.real_name,
            "phone": d.phone_masked,
            "tier": "一级" if d.tier == 1 else "二级",
            "grade": grades.get(d.grade_id) if d.grade_id else None,
            "sales": sales.get(m.id, 0),
            "points": balances.get(m.id, 0),
            "status": label(d.status, "distributor_status"),
            "applied_at": d.applied_at,
        }
        for d, m in batch
    ]


def _order_rows(sess: Session, batch: list[tuple[Any, ...]]) -> list[Row]:
    found: list[Order] = [row[0] for row in batch]
    members = members_by_id(sess, {o.member_id for o in found} | {o.inviter_id for o in found} | {o.upline_id for o in found})
    return [
        {
            "id": o.id,
            "out_trade_no": o.out_trade_no,
            "kind": label(o.kind, "order_kind"),
            "title": o.title,
            "member_id": o.member_id,
            "member": _nickname(members, o.member_id),
            "status": label(o.status, "order_status"),
            "total_fee": o.total_fee,
            "paid_fee": o.paid_fee,
            "refunded_fee": o.refunded_fee,
            "inviter_id": o.inviter_id,
            "inviter": _nickname(members, o.inviter_id),
            "upline_id": o.upline_id,
            "upline": _nickname(members, o.upline_id),
            "created_at": o.created_at,
            "paid_at": o.paid_at,
        }
        for o in found
    ]


def _lead_rows(sess: Session, batch: list[tuple[Any, ...]]) -> list[Row]:
    found: list[Lead] = [row[0] for row in batch]
    sharers = pq.members_by_id(sess, {lead.sharer_id for lead in found if lead.sharer_id})
    staff = {s.id: s.username for s in queries.staff_names(sess)}
    return [
        {
            "id": lead.id,
            "contact_name": lead.contact_name,
            "phone": lead.contact_phone_masked,
            "member_id": lead.member_id,
            "source": label(lead.source, "lead_source"),
            "channel": label(lead.channel, "channel") if lead.channel else None,
            "sharer_id": lead.sharer_id,
            "sharer": _nickname(sharers, lead.sharer_id),
            "partner_id": lead.partner_id,
            "status": label(lead.status, "lead_status"),
            "follow_up": label(lead.follow_up, "follow_up"),
            "assignee": staff.get(lead.assignee_id) if lead.assignee_id else None,
            "created_at": lead.created_at,
        }
        for lead in found
    ]


def _ledger_rows(sess: Session, batch: list[tuple[Any, ...]]) -> list[Row]:
    txs: list[LedgerTransaction] = [row[0] for row in batch]
    lines = points.transaction_entries(sess, [tx.id for tx in txs])
    members = pq.members_by_id(sess, {tx.member_id for tx in txs if tx.member_id})
    return [
        {
            "transaction_id": tx.id,
            "created_at": tx.created_at,
            "kind": label(tx.kind, "tx_kind"),
            "level": tx.level,
            "member_id": tx.member_id,
            "member": _nickname(members, tx.member_id),
            "entry_id": line.entry.id,
            "account": label(line.account, "account"),
            "account_member_id": line.member_id,
            "amount": line.entry.amount,
            "out_trade_no": line.out_trade_no,
            "reason": tx.reason,
            "actor": tx.actor,
            "idempotency_key": tx.idempotency_key,
            "reverses_id": tx.reverses_id,
        }
        for tx in txs
        for line in lines[tx.id]
    ]


def _ledger_count(sess: Session, stmt: Any) -> int:
    """One file row per entry of the selected transactions."""
    selected = stmt.order_by(None).with_only_columns(LedgerTransaction.id).subquery()
    return int(sess.scalar(select(func.count()).select_from(Entry).where(Entry.transaction_id.in_(select(selected.c.id)))) or 0)


def _redemption_rows(sess: Session, batch: list[tuple[Any, ...]]) -> list[Row]:
    members = pq.members_by_id(sess, {r.member_id for r, _item in batch})
    codes = points.invite_codes_for(sess, [r.id for r, item in batch if item.kind == ItemKind.invite_code])
    rows = []
    for r, item in batch:
        contact = r.contact if isinstance(r.contact, dict) else {}
        rows.append(
            {
                "id": r.id,
                "created_at": r.created_at,
                "member_id": r.member_id,
                "member": _nickname(members, r.member_id),
                "item": item.title,
                "kind": label(item.kind, "item_kind"),
                "quantity": r.quantity,
                "total": r.total,
                # The shipping contact is shown in full on the page (it is what the goods are sent to).
                "contact_name": contact.get("name"),
                "contact_phone": contact.get("phone"),
                "address": contact.get("address"),
                "contact_note": contact.get("note"),
                "codes": " ".join(code.scene_code for code, _revoked in codes.get(r.id, [])) or None,
                "status": label(r.status, "redemption_status"),
                "decided_at": r.decided_at,
                "staff_note": r.staff_note,
            }
        )
    return rows


def _audit_rows(sess: Session, batch: list[tuple[Any, ...]]) -> list[Row]:
    rows = []
    for entry, staff in batch:
        assert isinstance(entry, AuditEntry)
        rows.append(
            {
                "id": entry.id,
                "created_at": entry.created_at,
                "staff": staff.username if isinstance(staff, Staff) else "命令行",
                "action": entry.action,
                "target": entry.target,
                "detail": _detail(entry.detail),
            }
        )
    return rows


def _detail(detail: Any) -> str:
    """An entry's detail as the page shows it: JSON, Chinese kept."""
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)


LISTS: dict[str, ExportList] = {
    export.name: export
    for export in (
        ExportList(
            name="members",
            title="会员",
            area="members",
            endpoint="console.members",
            filter_names=("q", "status"),
            select=member_filters,
            keys=(Member.id,),
            columns=[
                Column("id", "会员 ID", "int", 10),
                Column("nickname", "昵称", width=18),
                Column("phone", "手机（已脱敏）"),
                Column("inviter_id", "邀请人 ID", "int", 10),
                Column("inviter", "邀请人昵称", width=18),
                Column("status", "状态", width=8),
                Column("created_at", "注册时间", "datetime", 20),
            ],
            rows=_member_rows,
        ),
        ExportList(
            name="distributors",
            title="分销员",
            area="distributors",
            endpoint="console.distributors",
            filter_names=("q", "status", "tier"),
            select=distributor_filters,
            keys=(Distributor.applied_at, Distributor.id),
            columns=[
                Column("id", "分销员 ID", "int", 10),
                Column("member_id", "会员 ID", "int", 10),
                Column("nickname", "会员昵称", width=18),
                Column("real_name", "姓名", width=12),
                Column("phone", "手机（已脱敏）"),
                Column("tier", "级别", width=8),
                Column("grade", "销售等级", width=12),
                Column("sales", "自有销售额", "fen"),
                Column("points", "可用积分", "points"),
                Column("status", "状态", width=8),
                Column("applied_at", "申请时间", "datetime", 20),
            ],
            rows=_distributor_rows,
        ),
        ExportList(
            name="orders",
            title="订单",
            area="orders",
            endpoint="console.orders",
            filter_names=("q", "status", "kind", "product", "inviter", "from", "to"),
            select=order_filters,
            keys=(Order.id,),
            columns=[
                Column("id", "订单 ID", "int", 10),
                Column("out_trade_no", "订单号", width=24),
                Column("kind", "类型", width=10),
                Column("title", "商品", width=24),
                Column("member_id", "买家 ID", "int", 10),
                Column("member", "买家昵称", width=16),
                Column("status", "状态", width=8),
                Column("total_fee", "金额", "fen"),
                Column("paid_fee", "已付", "fen"),
                Column("refunded_fee", "已退", "fen"),
                Column("inviter_id", "邀请人 ID", "int", 10),
                Column("inviter", "邀请人昵称", width=16),
                Column("upline_id", "上级 ID", "int", 10),
                Column("upline", "上级昵称", width=16),
                Column("created_at", "下单时间", "datetime", 20),
                Column("paid_at", "支付时间", "datetime", 20),
            ],
            rows=_order_rows,
        ),
        ExportList(
            name="leads",
            title="线索",
            area="leads",
            endpoint="console.leads",
            filter_names=("status", "follow_up", "source", "channel", "assignee", "sharer", "from", "to"),
            select=lead_filters,
            keys=(Lead.id,),
            columns=[
                Column("id", "线索 ID", "int", 10),
                Column("contact_name", "联系人", width=12),
                Column("phone", "手机（已脱敏）"),
                Column("member_id", "会员 ID", "int", 10),
                Column("source", "来源", width=10),
                Column("channel", "渠道", width=12),
                Column("sharer_id", "分享人 ID", "int", 10),
                Column("sharer", "分享人昵称", width=16),
                Column("partner_id", "合作渠道 ID", "int", 10),
                Column("status", "审核", width=8),
                Column("follow_up", "跟进", width=8),
                Column("assignee", "负责人", width=12),
                Column("created_at", "时间", "datetime", 20),
            ],
            rows=_lead_rows,
        ),
        ExportList(
            name="points",
            title="积分流水",
            area="points",
            endpoint="console.points",
            filter_names=("member", "kind", "from", "to"),
            select=ledger_filters,
            keys=(LedgerTransaction.id,),
            columns=[
                Column("transaction_id", "交易 ID", "int", 10),
                Column("created_at", "时间", "datetime", 20),
                Column("kind", "类型", width=12),
                Column("level", "奖励级别", "int", 8),
                Column("member_id", "会员 ID", "int", 10),
                Column("member", "会员昵称", width=16),
                Column("entry_id", "分录 ID", "int", 10),
                Column("account", "账户", width=10),
                Column("account_member_id", "账户所属会员 ID", "int", 12),
                Column("amount", "积分", "points"),
                Column("out_trade_no", "订单号", width=24),
                Column("reason", "原因", width=24),
                Column("actor", "操作人", width=14),
                Column("idempotency_key", "幂等键", width=30),
                Column("reverses_id", "冲正交易 ID", "int", 10),
            ],
            rows=_ledger_rows,
            count=_ledger_count,
        ),
        ExportList(
            name="redemptions",
            title="积分兑换",
            area="redemptions",
            endpoint="console.redemptions",
            filter_names=("status", "kind", "member"),
            select=redemption_filters,
            keys=(Redemption.id,),
            columns=[
                Column("id", "兑换 ID", "int", 10),
                Column("created_at", "兑换时间", "datetime", 20),
                Column("member_id", "会员 ID", "int", 10),
                Column("member", "会员昵称", width=16),
                Column("item", "商品", width=20),
                Column("kind", "类型", width=10),
                Column("quantity", "数量", "int", 6),
                Column("total", "积分", "points"),
                Column("contact_name", "收货人", width=10),
                Column("contact_phone", "联系电话"),
                Column("address", "地址", width=30),
                Column("contact_note", "会员备注", width=16),
                Column("codes", "邀请码", width=20),
                Column("status", "状态", width=8),
                Column("decided_at", "处理时间", "datetime", 20),
                Column("staff_note", "处理备注", width=24),
            ],
            rows=_redemption_rows,
        ),
        ExportList(
            name="audit",
            title="操作日志",
            area="audit",
            endpoint="console.audit",
            filter_names=("actor", "action", "object", "from", "to"),
            select=audit_filters,
            keys=(AuditEntry.id,),
            columns=[
                Column("id", "记录 ID", "int", 10),
                Column("created_at", "时间", "datetime", 20),
                Column("staff", "操作人", width=14),
                Column("action", "操作", width=24),
                Column("target", "对象", width=20),
                Column("detail", "详情", width=60),
            ],
            rows=_audit_rows,
        ),
    )
}
