"""Fill a database with a large merchant, for the console and report benchmarks.

A year of one shop's life: members in a two-level referral tree (a few hubs with thousands of
direct invitees) who arrived through their sharers' scenes on every channel, partner channels,
distributors with tiers and grades, the lead pool, products with SKUs, online orders in every
status with their lines, addresses, timeline, refunds (full and partial) and repeat purchases,
contracts paid in installments (phase 2+ as repeat business), the lead timeline (anonymous visits
and scans, sign-ins, bindings, leads, every order step), the points ledger as the services post it
(``merchant_ledger.py``), monthly settlement runs with statements, redemptions, and staff audit
entries. Rows are written with multi-row INSERTs in batches, with explicit ids; on MariaDB/MySQL the
big tables' secondary indexes and foreign keys are dropped for the load and put back as they were.

    .venv/bin/python bench/large_merchant.py --database-url 'mysql+pymysql://referral:referral@127.0.0.1:3306/referral_test_bench?charset=utf8mb4' --reset
    .venv/bin/python bench/large_merchant.py --members 2000 --orders 20000 --database-url sqlite:////tmp/bench.db --reset

The database is migrated first (``--reset`` drops every table of the app before). Staff
``bench-owner`` (password ``bench-owner-pass``), ``bench-ops`` and ``bench-finance`` are created
for the benchmarks to sign in with.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from itertools import accumulate
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from flask import Flask
from sqlalchemy import Table, create_engine, insert, text
from sqlalchemy.engine import Connection, Engine
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_insert import Sink  # noqa: E402
from merchant_ledger import SETTINGS, PaidOrder, ValidLead, generate_points  # noqa: E402

from server import create_app, models, security  # noqa: E402
from server.accounts.models import AuditEntry, Member, MemberStatus, Staff, StaffRole  # noqa: E402
from server.config import TestingConfig  # noqa: E402
from server.distribution.models import Distributor, DistributorStatus, Grade, Material, MaterialKind  # noqa: E402
from server.migrate import upgrade  # noqa: E402
from server.orders.models import (  # noqa: E402
    Installment,
    Order,
    OrderEvent,
    OrderItem,
    OrderKind,
    OrderStatus,
    Product,
    ProductStatus,
    Refund,
    RefundStatus,
    Sku,
)
from server.orders.services import discounted_price  # noqa: E402
from server.referral.models import (  # noqa: E402
    Binding,
    Channel,
    CommissionMode,
    Lead,
    LeadFollowUp,
    LeadSource,
    LeadStatus,
    Partner,
    PartnerCommission,
    Scene,
    TouchEvent,
    TouchKind,
)
from server.referral.services import SCENE_ALPHABET, SCENE_LENGTH  # noqa: E402
from server.settings.models import Setting  # noqa: E402

OWNER = ("bench-owner", "bench-owner-pass")
#: Staff ids: the owner, an operations clerk who reviews leads and ships, a finance clerk.
OPS, FINANCE = 2, 3
BATCH = 10_000
#: Where online orders end up. An order stays at the last step its age allows (paid, shipped and
#: received orders are the last weeks' ones, as the auto-receive and after-sales jobs move the rest
#: on); an unpaid one closes at its timeout unless it was placed in the last half hour.
STATUS_WEIGHTS = {
    OrderStatus.closed: 13,
    OrderStatus.completed: 82,
    OrderStatus.refunded: 5,
}
#: Share of completed orders that staff later refund in part.
PARTIAL_REFUNDS = 0.06
#: The settings' defaults the timeline follows: pay timeout, auto-receive, after-sales window.
PAY_TIMEOUT = timedelta(minutes=30)
AUTO_RECEIVE_DAYS = 10
AFTER_SALES = timedelta(days=7)
NICKNAMES = ["小明", "阿花", "Lily", "王二", "晴天", "大海", "老李", "Coco", "米粒", "阿杰", "微信用户"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "霞"]
#: Channels a member's scene is shown on, with how often sharers use each.
MEMBER_CHANNELS = {Channel.miniprogram_code: 35, Channel.moments_poster: 30, Channel.h5_link: 20, Channel.official_account_qr: 15}
#: Channels whose scenes people open without signing in (an H5 page, a Moments poster, a partner's link, the official account).
ANONYMOUS_CHANNELS = (Channel.h5_link, Channel.moments_poster, Channel.partner, Channel.official_account_qr)
#: (name, platform, mode, per-lead fen, per-deal bp)
PARTNERS = [
    ("知乎·好物推荐", "zhihu", CommissionMode.per_lead, 800, 0),
    ("微博·生活家", "weibo", CommissionMode.per_deal, 0, 300),
    ("公众号·城市早报", "official_account", CommissionMode.per_lead, 500, 0),
    ("头条·家居号", "toutiao", CommissionMode.per_deal, 0, 200),
    ("小红书·种草团", "xiaohongshu", CommissionMode.per_lead, 600, 0),
]
MATERIALS = [
    (MaterialKind.image_text, "新品上市图文"),
    (MaterialKind.video, "工厂探访短视频"),
    (MaterialKind.image_text, "用户好评合集"),
    (MaterialKind.video, "使用教程"),
    (MaterialKind.image_text, "节日礼盒推荐"),
    (MaterialKind.image_text, "推广员入门手册"),
]
#: (name, own attributed sales in fen from which it applies)
GRADES = [("普通", 0), ("银牌", 500_000), ("金牌", 5_000_000), ("钻石", 20_000_000)]
#: Province, its cities, and its weight among buyers (roughly online shoppers by province).
PROVINCES: list[tuple[str, tuple[str, ...], float]] = [
    ("广东省", ("广州市", "深圳市", "东莞市", "佛山市", "珠海市"), 14),
    ("浙江省", ("杭州市", "宁波市", "温州市", "金华市"), 9),
    ("江苏省", ("南京市", "苏州市", "无锡市", "常州市", "南通市"), 9),
    ("山东省", ("济南市", "青岛市", "烟台市", "潍坊市"), 7),
    ("上海市", ("上海市",), 6),
    ("北京市", ("北京市",), 5),
    ("河南省", ("郑州市", "洛阳市", "南阳市"), 5),
    ("四川省", ("成都市", "绵阳市", "宜宾市"), 5),
    ("湖北省", ("武汉市", "宜昌市", "襄阳市"), 4),
    ("湖南省", ("长沙市", "株洲市", "岳阳市"), 4),
    ("福建省", ("福州市", "厦门市", "泉州市"), 4),
    ("河北省", ("石家庄市", "保定市", "唐山市"), 4),
    ("安徽省", ("合肥市", "芜湖市"), 3),
    ("陕西省", ("西安市", "宝鸡市"), 2.5),
    ("重庆市", ("重庆市",), 2.5),
    ("辽宁省", ("沈阳市", "大连市"), 2.5),
    ("天津市", ("天津市",), 2),
    ("江西省", ("南昌市", "赣州市"), 2),
    ("广西壮族自治区", ("南宁市", "桂林市", "柳州市"), 2),
    ("云南省", ("昆明市", "大理白族自治州"), 1.5),
    ("山西省", ("太原市", "大同市"), 1.5),
    ("黑龙江省", ("哈尔滨市", "大庆市"), 1.2),
    ("吉林省", ("长春市", "吉林市"), 1),
    ("贵州省", ("贵阳市", "遵义市"), 1),
    ("内蒙古自治区", ("呼和浩特市", "包头市"), 0.8),
    ("新疆维吾尔自治区", ("乌鲁木齐市",), 0.7),
    ("甘肃省", ("兰州市",), 0.7),
    ("海南省", ("海口市", "三亚市"), 0.7),
    ("宁夏回族自治区", ("银川市",), 0.3),
    ("青海省", ("西宁市",), 0.2),
    ("西藏自治区", ("拉萨市",), 0.1),
]
#: The big tables whose secondary indexes and foreign keys are dropped for the load on MySQL.
BULK_TABLES = ("scenes", "leads", "orders", "order_items", "order_events", "refunds", "touch_events", "ledger_transactions", "ledger_entries", "order_rewards", "point_statements")


def batches(rows: Iterator[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load(sink: Sink, table: Table, rows: Iterator[dict[str, Any]], total: int, what: str) -> int:
    written = 0
    with tqdm(total=total, desc=what, unit="rows", mininterval=1.0) as bar:
        for chunk in batches(rows):
            sink.insert(table, chunk)
            sink.commit()
            bar.update(len(chunk))
            written += len(chunk)
    return written


def bench_app(url: str) -> Flask:
    """The app on ``url``, with the sandbox's credentials and no rate limits in the way of a benchmark."""
    config = TestingConfig()
    config.DATABASE_URL = url
    config.TASKS_EAGER = True
    return create_app(config)


def migrate(url: str, reset: bool) -> None:
    if reset:
        engine = create_engine(url)
        models.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
    app = bench_app(url)
    with app.app_context():
        upgrade(app)


# -- secondary indexes around the load (MySQL) ------------------------------------------------


def _normalized(ddl: str) -> list[str]:
    return [line for line in (re.sub(r" AUTO_INCREMENT=\d+", "", line).strip().rstrip(",") for line in ddl.splitlines()) if line]


def drop_secondary_indexes(conn: Connection, tables: tuple[str, ...]) -> dict[str, str]:
    """Drop the tables' foreign keys and non-primary indexes; returns each table's DDL before, to restore."""
    saved = {}
    for table in tables:
        ddl = conn.exec_driver_sql(f"SHOW CREATE TABLE `{table}`").one()[1]
        lines = _normalized(ddl)
        fks = [line.split()[1] for line in lines if line.startswith("CONSTRAINT ") and " FOREIGN KEY " in line]
        keys = [line.split()[2] if line.startswith("UNIQUE ") else line.split()[1] for line in lines if line.startswith(("KEY ", "UNIQUE KEY "))]
        if fks:
            conn.exec_driver_sql(f"ALTER TABLE `{table}` " + ", ".join(f"DROP FOREIGN KEY {fk}" for fk in fks))
        if keys:
            conn.exec_driver_sql(f"ALTER TABLE `{table}` " + ", ".join(f"DROP INDEX {key}" for key in keys))
        saved[table] = ddl
    return saved


def restore_secondary_indexes(conn: Connection, saved: dict[str, str]) -> None:
    """Add back what ``drop_secondary_indexes`` dropped, in the same order, and check each table's DDL is as before."""
    for table, ddl in tqdm(saved.items(), desc="indexes", unit="tables"):
        lines = _normalized(ddl)
        adds = [f"ADD {line}" for line in lines if line.startswith(("KEY ", "UNIQUE KEY "))]
        adds += [f"ADD {line}" for line in lines if line.startswith("CONSTRAINT ") and " FOREIGN KEY " in line]
        if adds:
            conn.exec_driver_sql(f"ALTER TABLE `{table}` " + ", ".join(adds))
        after = conn.exec_driver_sql(f"SHOW CREATE TABLE `{table}`").one()[1]
        if _normalized(after) != lines:
            raise RuntimeError(f"{table} differs after restoring its indexes:\n{ddl}\n---\n{after}")


# -- the shop ---------------------------------------------------------------------------------


@dataclass
class Dist:
    """A distributor as planned before the orders (their discount and eligibility depend on it)."""

    member_id: int
    tier: int
    status: DistributorStatus
    applied_at: datetime
    decided_at: datetime | None
    approved_at: datetime | None
    #: When a freeze or disable took effect: no new points, no discount from then on.
    stopped_at: datetime | None
    recruited_by: int | None


@dataclass
class SceneRow:
    code: str
    sharer_id: int | None
    partner_id: int | None
    channel: Channel
    content_type: str
    content_id: str
    created_at: datetime

    @property
    def content(self) -> str:
        return f"{self.content_type}:{self.content_id}" if self.content_type else ""


@dataclass
class Shop:
    """What the steps share: the tree, the scenes, the distributors, the leads and the orders' timelines."""

    rng: random.Random
    now: datetime
    start: datetime
    members: int
    orders: int
    touches: int
    joined: list[datetime] = field(default_factory=list)
    inviter: dict[int, int] = field(default_factory=dict)
    distributors: dict[int, Dist] = field(default_factory=dict)
    scenes: list[SceneRow] = field(default_factory=list)
    scenes_of: dict[int, list[int]] = field(default_factory=dict)
    partner_scenes: list[int] = field(default_factory=list)
    #: The scene each member arrived with (a sharer's for bound members, a partner's for some others).
    arrival: dict[int, int] = field(default_factory=dict)
    #: A later, different scene some members came back through: (when, scene).
    later: dict[int, tuple[datetime, int]] = field(default_factory=dict)
    #: Leads as rows, ids in time order.
    leads: list[dict[str, Any]] = field(default_factory=list)
    #: Per order, its timeline: (member, order id, created, the order touch's detail, scene code, the scene
    #: scanned to place it (online orders), who placed it, [(kind, at, actor)] of the later steps).
    timelines: list[tuple[int, int, datetime, dict[str, Any], str | None, int | None, str, list[tuple[TouchKind, datetime, str]]]] = field(default_factory=list)
    next_commission: int = 1
    addresses: dict[int, dict[str, str]] = field(default_factory=dict)
    paid_orders: list[PaidOrder] = field(default_factory=list)
    #: Own attributed sales per inviter (paid less refunded), for the grades.
    sales: Counter[int] = field(default_factory=Counter)
    next_scene_seq: int = 0

    def active(self, member_id: int) -> bool:
        return member_id % 500 != 0

    def eligible(self, member_id: int, at: datetime) -> bool:
        """``sharer_refusal`` at ``at``: an active member, not a frozen or disabled distributor by then."""
        if not self.active(member_id):
            return False
        dist = self.distributors.get(member_id)
        return dist is None or dist.stopped_at is None or at < dist.stopped_at

    def discount_bp(self, member_id: int, at: datetime) -> int:
        dist = self.distributors.get(member_id)
        if dist is None or dist.approved_at is None or at < dist.approved_at or (dist.stopped_at is not None and at >= dist.stopped_at):
            return 0
        return 500 if dist.tier == 1 else 200

    def new_scene_code(self) -> str:
        return "".join(self.rng.choices(SCENE_ALPHABET, k=SCENE_LENGTH))

    def rand_time(self, after: datetime, before: datetime | None = None) -> datetime:
        end = before or self.now
        return after + (end - after) * self.rng.random() if end > after else after


def plan_tree(shop: Shop) -> None:
    rng, members = shop.rng, shop.members
    shop.joined = [shop.start] + [shop.start + timedelta(seconds=int(365 * 86400 * (i - 1) / max(members, 1))) for i in range(1, members + 1)]
    hubs = list(range(1, min(members, 20) + 1))
    for i in range(2, members + 1):
        roll = rng.random()
        if roll < 0.25:
            shop.inviter[i] = rng.choice([h for h in hubs if h < i] or [1])  # hubs collect thousands of direct invitees
        elif roll < 0.75:
            shop.inviter[i] = rng.randint(max(1, i - 5_000), i - 1)


def plan_distributors(shop: Shop) -> None:
    """A few thousand distributors, mostly the busiest sharers, who applied throughout the year."""
    rng = shop.rng
    invitees = Counter(shop.inviter.values())
    last_bound: dict[int, datetime] = {}
    for member_id, inviter_id in shop.inviter.items():
        last_bound[inviter_id] = max(last_bound.get(inviter_id, shop.start), shop.joined[member_id])
    wanted = max(shop.members // 33, 10)
    chosen = [m for m, _ in invitees.most_common(wanted * 2 // 3) if shop.active(m)]
    picked = set(chosen)
    while len(chosen) < wanted:
        m = rng.randint(1, shop.members)
        if m not in picked and shop.active(m):
            picked.add(m)
            chosen.append(m)
    plans = []
    for m in chosen:
        applied = shop.joined[m] + (shop.now - shop.joined[m]) * (rng.random() ** 2) * 0.9
        plans.append((applied, m))
    recruits: Counter[int] = Counter()
    for applied, m in sorted(plans):
        roll = rng.random()
        decision = applied + timedelta(hours=rng.uniform(0.5, 72))
        decided: datetime | None = decision
        status = DistributorStatus.approved
        if roll < 0.04 or decision > shop.now:
            status, decided = DistributorStatus.pending, None
        elif roll < 0.08:
            status = DistributorStatus.rejected
        recruiter = shop.inviter.get(m)
        boss = shop.distributors.get(recruiter) if recruiter else None
        tier, recruited_by = 1, None
        if boss is not None and boss.tier == 1 and boss.approved_at is not None and boss.approved_at < applied and recruits[boss.member_id] < 50:
            tier, recruited_by = 2, boss.member_id
            if status != DistributorStatus.rejected:
                recruits[boss.member_id] += 1
        approved = decided if status == DistributorStatus.approved else None
        stopped = None
        if approved is not None and roll > 0.93:
            # Frozen or disabled late, after the last member they brought in: nobody binds to them after.
            stopped = max(approved, last_bound.get(m, approved)) + timedelta(days=rng.uniform(1, 20))
            if stopped < shop.now:
                status, decided = (DistributorStatus.frozen if roll > 0.965 else DistributorStatus.disabled), stopped
            else:
                stopped = None
        shop.distributors[m] = Dist(m, tier, status, applied, decided, approved, stopped, recruited_by)


def plan_scenes(shop: Shop) -> None:
    """Scenes for every sharer on the member channels, with content; partners' scenes; who arrived through which."""
    rng = shop.rng
    invitees = Counter(shop.inviter.values())
    channels, weights = list(MEMBER_CHANNELS), list(MEMBER_CHANNELS.values())
    for p in range(1, len(PARTNERS) + 1):
        for n in range(3):
            shop.partner_scenes.append(len(shop.scenes))
            content = ("campaign", f"{PARTNERS[p - 1][1]}-{n + 1}") if n else ("", "")
            shop.scenes.append(SceneRow(shop.new_scene_code(), None, p, Channel.partner, *content, shop.start))
    for s in sorted(set(shop.inviter.values()) | set(shop.distributors)):
        count = 2 + min(invitees[s] // 150, 12) + (2 if s in shop.distributors else 0)
        own = []
        for _ in range(count):
            roll = rng.random()
            content = ("", "") if roll < 0.4 else ("product", str(rng.randint(1, 40))) if roll < 0.8 else ("material", str(rng.randint(1, len(MATERIALS))))
            own.append(len(shop.scenes))
            shop.scenes.append(SceneRow(shop.new_scene_code(), s, None, rng.choices(channels, weights)[0], *content, shop.joined[s]))
        shop.scenes_of[s] = own
    sharers = sorted(shop.scenes_of)
    for m in range(2, shop.members + 1):
        inviter_id = shop.inviter.get(m)
        if inviter_id is None:
            if rng.random() < 0.2:
                shop.arrival[m] = rng.choice(shop.partner_scenes)
            continue
        shop.arrival[m] = rng.choice(shop.scenes_of[inviter_id])
        if rng.random() < 0.2:
            at = shop.rand_time(shop.joined[m] + timedelta(days=1))
            other = rng.choice(sharers)
            if rng.random() < 0.5 or other == m or shop.joined[other] > at:
                other = inviter_id
            shop.later[m] = (at, rng.choice(shop.scenes_of[other]))


def plan_leads(shop: Shop) -> None:
    """The lead pool: an arrival lead per member who came through a scene, contact leads left on forms."""
    rng = shop.rng
    phones = [f"1{rng.choice('3456789')}{rng.randint(0, 999_999_999):09d}" for _ in range(300)]
    sealed = [(security.encrypt(p, "phone"), security.mask_phone(p)) for p in phones]
    needs = ["想批量采购做员工福利", "咨询加盟合作", "需要开发票，想了解企业价", "老人用，想问问使用方法", "想定制节日礼盒 200 份", ""]
    plans: list[dict[str, Any]] = []

    def review(lead: dict[str, Any], *, may_be_valid: bool) -> None:
        roll = rng.random()
        reviewed = lead["created_at"] + timedelta(hours=rng.uniform(0.5, 96))
        if roll < 0.45 or reviewed > shop.now:
            return
        valid = may_be_valid and roll < 0.8
        lead.update(
            status=LeadStatus.valid if valid else LeadStatus.invalid,
            reviewed_by=OPS,
            reviewed_at=reviewed,
            review_note="" if valid else rng.choice(["只是注册，没有需求", "联系不上", "重复线索"]),
        )
        if rng.random() < 0.6:
            follow = reviewed + timedelta(hours=rng.uniform(1, 72))
            if follow < shop.now:
                lead.update(assignee_id=OPS, follow_up=rng.choice([LeadFollowUp.contacted, LeadFollowUp.converted, LeadFollowUp.lost]) if valid else LeadFollowUp.lost, follow_up_at=follow)

    def lead(source: LeadSource, scene: SceneRow, at: datetime, member_id: int | None, sharer_id: int | None) -> dict[str, Any]:
        return {
            "source": source,
            "member_id": member_id,
            "arrival_member_id": member_id if source == LeadSource.arrival else None,
            "sharer_id": sharer_id,
            "partner_id": scene.partner_id,
            "scene_code": scene.code,
            "channel": scene.channel.value,
            "content": scene.content,
            "contact_name": "",
            "contact_phone_ciphertext": None,
            "contact_phone_masked": None,
            "note": "",
            "status": LeadStatus.new,
            "reviewed_by": None,
            "reviewed_at": None,
            "review_note": "",
            "assignee_id": None,
            "follow_up": LeadFollowUp.new,
            "follow_up_at": None,
            "created_at": at,
        }

    for m, index in shop.arrival.items():
        scene = shop.scenes[index]
        row = lead(LeadSource.arrival, scene, shop.joined[m], m, shop.inviter.get(m))
        # An arrival through a member's scene is a head, not a sales lead: never valid; a partner's may be.
        review(row, may_be_valid=scene.partner_id is not None)
        plans.append(row)
    member_scenes = [i for i in range(len(shop.scenes)) if shop.scenes[i].sharer_id is not None]
    for _ in range(shop.members // 10):
        at = shop.rand_time(shop.start + timedelta(days=1))
        index = rng.choice(shop.partner_scenes) if rng.random() < 0.2 else rng.choice(member_scenes)
        scene = shop.scenes[index]
        if scene.created_at > at:
            continue
        known = int((at - shop.start) / timedelta(days=365) * shop.members)
        member_id = rng.randint(1, known) if known >= 1 and rng.random() < 0.6 else None
        row = lead(LeadSource.contact, scene, at, member_id, scene.sharer_id)
        phone = rng.choice(sealed) if rng.random() < 0.85 else (None, None)
        row.update(contact_name=rng.choice(SURNAMES) + rng.choice(["先生", "女士", "经理"]), contact_phone_ciphertext=phone[0], contact_phone_masked=phone[1], note=rng.choice(needs))
        sales_lead = bool(row["contact_phone_ciphertext"]) and bool(row["note"])
        review(row, may_be_valid=sales_lead or scene.partner_id is not None)
        plans.append(row)
    plans.sort(key=lambda row: row["created_at"])
    for lead_id, row in enumerate(plans, 1):
        row["id"] = lead_id
    shop.leads = plans


def address_of(shop: Shop, member_id: int) -> dict[str, str]:
    """A member ships to one place: picked once, so every order of theirs agrees."""
    found = shop.addresses.get(member_id)
    if found is None:
        found = shop.addresses[member_id] = _address(shop.rng)
    return found


PROVINCE_WEIGHTS = list(accumulate(w for _, _, w in PROVINCES))


def _address(pick: random.Random) -> dict[str, str]:
    province, cities, _ = pick.choices(PROVINCES, cum_weights=PROVINCE_WEIGHTS)[0]
    return {
        "name": pick.choice(SURNAMES) + pick.choice(GIVEN),
        "phone": f"1{pick.choice('3456789')}{pick.randint(0, 999_999_999):09d}",
        "province": province,
        "city": pick.choice(cities),
        "district": "",
        "detail": f"{pick.choice(['人民路', '解放路', '中山路', '建设路', '和平街'])}{pick.randint(1, 999)}号",
    }


@dataclass
class ContractPlan:
    lead: dict[str, Any]
    created: datetime
    amount: int
    #: (amount, due date, received at or None)
    installments: list[tuple[int, datetime, datetime | None]]
    confirmed: datetime | None
    parent: ContractPlan | None = None
    order_id: int = 0


def plan_contracts(shop: Shop) -> list[ContractPlan]:
    """Contracts from valid leads of members, paid in installments; some continue as phase 2 (repeat business)."""
    rng = shop.rng
    plans: list[ContractPlan] = []

    def contract(lead: dict[str, Any], created: datetime, parent: ContractPlan | None) -> ContractPlan:
        amount = rng.randrange(50, 500) * 100_000
        first = amount * 3 // 10
        parts = [first, amount - first] if rng.random() < 0.5 else [first, (amount - first) // 2, amount - first - (amount - first) // 2]
        at = created
        installments: list[tuple[int, datetime, datetime | None]] = []
        for part in parts:
            at = at + timedelta(days=rng.uniform(1, 7) if not installments else rng.uniform(10, 40))
            installments.append((part, at, at if at < shop.now else None))
        done = all(received for _, _, received in installments)
        confirmed = installments[-1][1] + timedelta(hours=rng.uniform(2, 72)) if done else None
        plan = ContractPlan(lead, created, amount, installments, confirmed if confirmed and confirmed < shop.now else None, parent)
        plans.append(plan)
        return plan

    wanted = max(shop.orders // 1000, 2)
    for lead in shop.leads:
        if len(plans) >= wanted:
            break
        if lead["status"] != LeadStatus.valid or lead["member_id"] is None or lead["source"] != LeadSource.contact:
            continue
        created = lead["reviewed_at"] + timedelta(days=rng.uniform(1, 10))
        if created > shop.now - timedelta(days=1):
            continue
        plan = contract(lead, created, None)
        if plan.confirmed is not None and rng.random() < 0.3:
            created = plan.confirmed + timedelta(days=rng.uniform(5, 40))
            if created < shop.now - timedelta(days=1):
                contract(lead, created, plan)
    return plans


# -- the steps --------------------------------------------------------------------------------


def load_people(sink: Sink, shop: Shop) -> dict[str, int]:
    rng = shop.rng

    def member_rows() -> Iterator[dict[str, Any]]:
        for i in range(1, shop.members + 1):
            yield {
                "id": i,
                "openid": f"oBench{i:012d}",
                "unionid": f"uBench{i:012d}" if i % 3 == 0 else None,
                "nickname": f"{rng.choice(NICKNAMES)}{i}",
                "phone_masked": f"138****{i % 10_000:04d}" if i % 2 == 0 else None,
                "phone_digest": f"{i:064x}" if i % 2 == 0 else None,
                "status": MemberStatus.active if shop.active(i) else MemberStatus.disabled,
                "created_at": shop.joined[i],
                "updated_at": shop.joined[i],
                "last_login_at": shop.joined[i] + timedelta(days=rng.randint(0, 30)),
            }

    return {"members": load(sink, Member.__table__, member_rows(), shop.members, "members")}  # type: ignore[arg-type]


def load_referral(sink: Sink, shop: Shop) -> dict[str, int]:
    """Settings, partners, materials, grades, scenes, bindings and the lead pool (with partner commissions)."""
    start = shop.start
    counts = {}
    settings = [{"key": key, "value": value, "updated_at": start, "updated_by": "cli"} for key, value in SETTINGS.items()]
    counts["settings"] = load(sink, Setting.__table__, iter(settings), len(settings), "settings")  # type: ignore[arg-type]
    partners = [
        {"id": p, "name": name, "platform": platform, "contact": f"合作经理{p}", "commission_mode": mode, "per_lead_fen": per_lead, "deal_rate_bp": rate, "active": True, "created_at": start}
        for p, (name, platform, mode, per_lead, rate) in enumerate(PARTNERS, 1)
    ]
    counts["partners"] = load(sink, Partner.__table__, iter(partners), len(partners), "partners")  # type: ignore[arg-type]
    materials = [
        {
            "id": n,
            "kind": kind,
            "title": title,
            "summary": title,
            "body": f"{title}：正文" if kind == MaterialKind.image_text else "",
            "url": f"https://example.com/materials/{n}.mp4" if kind == MaterialKind.video else "",
            "cover_url": "",
            "poster_template_id": None,
            "audience": 1 if n == len(MATERIALS) else 3,
            "active": True,
            "sort": n,
            "created_at": start,
            "updated_at": start,
        }
        for n, (kind, title) in enumerate(MATERIALS, 1)
    ]
    counts["materials"] = load(sink, Material.__table__, iter(materials), len(materials), "materials")  # type: ignore[arg-type]
    grades = [{"id": n, "name": name, "min_sales_fen": floor, "perks": f"{name}推广员专属素材", "sort": n, "created_at": start, "updated_at": start} for n, (name, floor) in enumerate(GRADES, 1)]
    counts["grades"] = load(sink, Grade.__table__, iter(grades), len(grades), "grades")  # type: ignore[arg-type]

    def scene_rows() -> Iterator[dict[str, Any]]:
        for s in shop.scenes:
            yield {"code": s.code, "sharer_id": s.sharer_id, "partner_id": s.partner_id, "channel": s.channel, "content_type": s.content_type, "content_id": s.content_id, "created_at": s.created_at, "expires_at": None, "revoked_at": None}

    counts["scenes"] = load(sink, Scene.__table__, scene_rows(), len(shop.scenes), "scenes")  # type: ignore[arg-type]

    def binding_rows() -> Iterator[dict[str, Any]]:
        for member_id, inviter_id in shop.inviter.items():
            scene = shop.scenes[shop.arrival[member_id]]
            yield {
                "member_id": member_id,
                "inviter_id": inviter_id,
                "upline_id": shop.inviter.get(inviter_id),
                "scene_code": scene.code,
                "channel": scene.channel.value,
                "bound_at": shop.joined[member_id],
                "rebind_count": 0,
            }

    counts["referral_bindings"] = load(sink, Binding.__table__, binding_rows(), len(shop.inviter), "bindings")  # type: ignore[arg-type]
    counts["leads"] = load(sink, Lead.__table__, iter(shop.leads), len(shop.leads), "leads")  # type: ignore[arg-type]
    per_lead = {p: fen for p, (_, _, mode, fen, _) in enumerate(PARTNERS, 1) if mode == CommissionMode.per_lead}
    commissions = [
        {"partner_id": lead["partner_id"], "lead_id": lead["id"], "kind": "lead", "base_fen": 0, "amount_fen": per_lead[lead["partner_id"]], "idempotency_key": f"lead:{lead['id']}", "created_at": lead["reviewed_at"], "payout_id": None}
        for lead in shop.leads
        if lead["status"] == LeadStatus.valid and lead["partner_id"] in per_lead
    ]
    for row in commissions:
        row["id"] = shop.next_commission
        shop.next_commission += 1
    counts["partner_commissions"] = load(sink, PartnerCommission.__table__, iter(commissions), len(commissions), "partner commissions")  # type: ignore[arg-type]
    return counts


PRODUCTS: list[dict[str, Any]] = [{"id": p, "title": f"演示商品 {p}", "status": ProductStatus.on_sale} for p in range(1, 41)]
SKUS: list[dict[str, Any]] = [{"id": (p - 1) * 2 + k, "product_id": p, "name": ["标准", "礼盒"][k - 1], "price_fen": 1_000 * p + 9_900 * (k - 1), "stock": 100_000} for p in range(1, 41) for k in (1, 2)]


def load_catalog(sink: Sink, shop: Shop) -> dict[str, int]:
    products = [p | {"created_at": shop.start, "updated_at": shop.start} for p in PRODUCTS]
    return {
        "products": load(sink, Product.__table__, iter(products), len(products), "products"),  # type: ignore[arg-type]
        "skus": load(sink, Sku.__table__, iter(SKUS), len(SKUS), "skus"),  # type: ignore[arg-type]
    }


ORDER_KEYS = (
    "status_before_refund", "discount_bp", "discount_fen", "paid_fee", "refunded_fee", "scene_code", "partner_id", "repeat_business", "parent_order_id", "lead_id",
    "address", "remark", "pay_api", "prepay_id", "transaction_id", "carrier", "tracking_no", "finance_confirmed_at", "finance_confirmed_by",
    "expires_at", "paid_at", "shipped_at", "received_at", "completed_at", "closed_at",
)  # fmt: skip


class OrderBatch:
    """Orders with their lines, events, refunds and installments, written together every BATCH orders."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.tables: dict[Any, list[dict[str, Any]]] = {t: [] for t in (Order.__table__, OrderItem.__table__, OrderEvent.__table__, Refund.__table__, Installment.__table__, PartnerCommission.__table__)}
        self.counts: Counter[str] = Counter()
        self.next_event = self.next_refund = self.next_installment = 1
        #: The current order's finished refunds: (when, refunded_fee after it), for its points.
        self.refunds_done: list[tuple[datetime, int]] = []

    def event(self, order: dict[str, Any], event: str, actor: str, at: datetime, frm: OrderStatus | None = None, to: OrderStatus | None = None, **detail: Any) -> None:
        self.tables[OrderEvent.__table__].append(
            {"id": self.next_event, "order_id": order["id"], "event": event, "actor": actor, "from_status": frm.value if frm else None, "to_status": to.value if to else None, "detail": detail, "created_at": at}
        )
        self.next_event += 1

    def add(self, table: Any, row: dict[str, Any]) -> None:
        self.tables[table].append(row)

    def flush(self) -> None:
        for table, rows in self.tables.items():
            if rows:
                self.sink.insert(table, rows)
                self.counts[table.name] += len(rows)
                rows.clear()
        self.sink.commit()


def load_orders(sink: Sink, shop: Shop, contracts: list[ContractPlan]) -> dict[str, int]:
    """Online orders and contracts in time order (ids grow with time), with everything that happened to them."""
    rng, now = shop.rng, shop.now
    online = []
    for _ in range(shop.orders - len(contracts)):
        member_id = rng.randint(1, shop.members)
        online.append((shop.rand_time(shop.joined[member_id]), member_id))
    specs: list[tuple[datetime, int, Any]] = [(at, member_id, None) for at, member_id in online]
    specs += [(plan.created, plan.lead["member_id"], plan) for plan in contracts]
    specs.sort(key=lambda spec: spec[0])
    statuses, weights = list(STATUS_WEIGHTS), list(accumulate(STATUS_WEIGHTS.values()))
    paid_before: set[int] = set()
    completed_contract: set[int] = set()
    out = OrderBatch(sink)
    with tqdm(total=len(specs), desc="orders", unit="orders", mininterval=1.0) as bar:
        for order_id, (created, member_id, plan) in enumerate(specs, 1):
            inviter_id = shop.inviter.get(member_id)
            order: dict[str, Any] = dict.fromkeys(ORDER_KEYS) | {
                "id": order_id,
                "member_id": member_id,
                "inviter_id": inviter_id,
                "upline_id": shop.inviter.get(inviter_id) if inviter_id else None,
                "discount_bp": 0,
                "discount_fen": 0,
                "paid_fee": 0,
                "refunded_fee": 0,
                "repeat_business": False,
                "remark": "",
                "carrier": "",
                "tracking_no": "",
                "created_at": created,
            }
            out.refunds_done = []
            if plan is None:
                online_order(out, shop, order, rng.choices(statuses, cum_weights=weights)[0], repeat=member_id in paid_before)
            else:
                contract_order(out, shop, order, plan, repeat=plan.parent is not None or member_id in completed_contract)
                if order["status"] == OrderStatus.completed:
                    completed_contract.add(member_id)
            if order["paid_at"] is not None:
                paid_before.add(member_id)
                if inviter_id is not None:
                    shop.sales[inviter_id] += order["paid_fee"] - order["refunded_fee"]
                    shop.paid_orders.append(
                        PaidOrder(order_id, order["out_trade_no"], order["total_fee"], order["repeat_business"], inviter_id, order["upline_id"], order["paid_at"], order["completed_at"], out.refunds_done)
                    )
            out.add(Order.__table__, order)
            if len(out.tables[Order.__table__]) >= BATCH:
                out.flush()
                bar.update(BATCH)
        bar.update(len(out.tables[Order.__table__]))
        out.flush()
    return dict(out.counts)


def _stamp(order: dict[str, Any], status: OrderStatus, at: datetime) -> None:
    order["status"], order["updated_at"] = status, at


def online_order(out: OrderBatch, shop: Shop, order: dict[str, Any], status: OrderStatus, *, repeat: bool) -> None:
    rng, now = shop.rng, shop.now
    order_id, member_id, created = order["id"], order["member_id"], order["created_at"]
    sku = SKUS[rng.randrange(len(SKUS))]
    quantity = rng.choice((1, 1, 1, 2, 3))
    discount = shop.discount_bp(member_id, created)
    price = discounted_price(sku["price_fen"], discount)
    total = price * quantity
    scene = None
    if member_id in shop.inviter and rng.random() < 0.25:
        later = shop.later.get(member_id)
        scene = later[1] if later and later[0] < created else shop.arrival[member_id]
    title = f"演示商品 {sku['product_id']}"
    order.update(
        out_trade_no=f"B{order_id:015d}",
        kind=OrderKind.online,
        total_fee=total,
        discount_bp=discount,
        discount_fen=(sku["price_fen"] - price) * quantity,
        repeat_business=repeat,
        scene_code=shop.scenes[scene].code if scene is not None else None,
        title=title,
        address=address_of(shop, member_id),
        expires_at=created + PAY_TIMEOUT,
    )
    _stamp(order, OrderStatus.created, created)
    out.add(OrderItem.__table__, {"id": order_id, "order_id": order_id, "product_id": sku["product_id"], "sku_id": sku["id"], "title": title, "sku_name": sku["name"], "price_fen": price, "list_price_fen": sku["price_fen"], "quantity": quantity})
    member = f"member:{member_id}"
    out.event(order, "created", member, created, to=OrderStatus.created, total_fee=total, discount_bp=discount, discount_fen=order["discount_fen"], inviter_id=order["inviter_id"], upline_id=order["upline_id"])
    steps: list[tuple[TouchKind, datetime, str]] = []
    shop.timelines.append((member_id, order_id, created, {"out_trade_no": order["out_trade_no"], "total_fee": total}, order["scene_code"], scene, member, steps))

    paid = created + timedelta(seconds=rng.randint(20, 600))
    if status == OrderStatus.closed or paid > now:
        if created + PAY_TIMEOUT < now:
            order["closed_at"] = created + PAY_TIMEOUT
            _stamp(order, OrderStatus.closed, order["closed_at"])
            out.event(order, "closed", "system", order["closed_at"], OrderStatus.created, OrderStatus.closed, reason="timeout")
        return
    order.update(paid_at=paid, paid_fee=total, transaction_id=f"42000{order_id:015d}", pay_api="v3" if order_id % 4 else "v2", prepay_id=f"wx{order_id:030d}")
    _stamp(order, OrderStatus.paid, paid)
    out.event(order, "paid", "wechat", paid, OrderStatus.created, OrderStatus.paid, transaction_id=order["transaction_id"])
    steps.append((TouchKind.paid, paid, "wechat"))
    refund_fee = 0
    if status == OrderStatus.refunded:
        asked = paid + timedelta(hours=rng.uniform(1, 36))
        if asked < now:
            refund(out, shop, order, asked, order["paid_fee"], f"member:{member_id}", steps)
        return
    shipped = paid + timedelta(hours=rng.uniform(6, 72))
    if shipped > now:
        return
    order.update(shipped_at=shipped, carrier=rng.choice(["SF", "ZTO", "YTO", "JD"]), tracking_no=f"SF{order_id:013d}")
    _stamp(order, OrderStatus.shipped, shipped)
    out.event(order, "shipped", f"staff:{OPS}", shipped, OrderStatus.paid, OrderStatus.shipped, carrier=order["carrier"], tracking_no=order["tracking_no"])
    steps.append((TouchKind.shipped, shipped, f"staff:{OPS}"))
    auto = rng.random() < 0.3
    received = shipped + timedelta(days=AUTO_RECEIVE_DAYS if auto else rng.uniform(1, 6))
    if received > now:
        return
    actor = "system" if auto else member
    order["received_at"] = received
    _stamp(order, OrderStatus.received, received)
    out.event(order, "received", actor, received, OrderStatus.shipped, OrderStatus.received)
    steps.append((TouchKind.received, received, actor))
    completed = received + AFTER_SALES
    if completed > now:
        return
    order["completed_at"] = completed
    _stamp(order, OrderStatus.completed, completed)
    out.event(order, "completed", "system", completed, OrderStatus.received, OrderStatus.completed)
    steps.append((TouchKind.completed, completed, "system"))
    if rng.random() < PARTIAL_REFUNDS:
        asked = completed + timedelta(days=rng.uniform(1, 30))
        refund_fee = price if quantity > 1 else total * rng.randint(20, 50) // 100
        if asked < now and refund_fee > 0:
            refund(out, shop, order, asked, refund_fee, f"staff:{OPS}", steps)


def refund(out: OrderBatch, shop: Shop, order: dict[str, Any], asked: datetime, amount: int, actor: str, steps: list[tuple[TouchKind, datetime, str]]) -> None:
    """A refund asked at ``asked``: succeeded a little later (unless that is still to come), full or partial."""
    rng = shop.rng
    before = order["status"]
    order["status_before_refund"] = before
    _stamp(order, OrderStatus.refunding, asked)
    out.event(order, "refund_requested", actor, asked, before, OrderStatus.refunding, amount_fen=amount, reason="")
    finished = asked + timedelta(minutes=rng.uniform(5, 1_440))
    done = finished < shop.now
    refund_id = out.next_refund
    out.next_refund += 1
    out.add(
        Refund.__table__,
        {
            "id": refund_id,
            "order_id": order["id"],
            "out_refund_no": f"F{order['id']:015d}",
            "amount_fen": amount,
            "reason": rng.choice(["不想要了", "商品破损", "尺寸不合适", "部分商品缺货"]),
            "status": RefundStatus.succeeded if done else RefundStatus.processing,
            "refund_id": f"50300{order['id']:015d}",
            "requested_by": actor,
            "failure_reason": "",
            "attempts": 1,
            "next_attempt_at": None,
            "created_at": asked,
            "finished_at": finished if done else None,
        },
    )
    if not done:
        return
    order["refunded_fee"] += amount
    out.event(order, "refund_succeeded", "wechat", finished, refund_id=refund_id, amount_fen=amount, status="succeeded")
    if order["refunded_fee"] >= order["paid_fee"]:
        _stamp(order, OrderStatus.refunded, finished)
        out.event(order, "refunded", "wechat", finished, OrderStatus.refunding, OrderStatus.refunded)
        steps.append((TouchKind.refunded, finished, "wechat"))
    else:
        _stamp(order, before, finished)
        out.event(order, "refund_closed", "wechat", finished, OrderStatus.refunding, before)
        steps.append((TouchKind.completed, finished, "wechat"))
    out.refunds_done.append((finished, order["refunded_fee"]))


def contract_order(out: OrderBatch, shop: Shop, order: dict[str, Any], plan: ContractPlan, *, repeat: bool) -> None:
    """A contract from a valid lead: paid with its first installment, completed when finance confirms the last."""
    order_id, created, lead = order["id"], order["created_at"], plan.lead
    plan.order_id = order_id
    order.update(
        out_trade_no=f"C{order_id:015d}",
        kind=OrderKind.contract,
        total_fee=plan.amount,
        repeat_business=repeat,
        parent_order_id=plan.parent.order_id if plan.parent else None,
        lead_id=lead["id"],
        partner_id=lead["partner_id"],
        title=f"企业采购合同（第 {2 if plan.parent else 1} 期）",
    )
    _stamp(order, OrderStatus.created, created)
    staff = f"staff:{OPS}"
    out.event(order, "created", staff, created, to=OrderStatus.created, total_fee=plan.amount, installments=len(plan.installments), lead_id=lead["id"], parent_order_id=order["parent_order_id"], repeat_business=repeat, inviter_id=order["inviter_id"], upline_id=order["upline_id"])
    steps: list[tuple[TouchKind, datetime, str]] = []
    order["scene_code"] = lead["scene_code"]
    detail = {"kind": OrderKind.contract.value, "out_trade_no": order["out_trade_no"], "total_fee": plan.amount, "lead_id": lead["id"]}
    shop.timelines.append((order["member_id"], order_id, created, detail, lead["scene_code"], None, staff, steps))
    finance = f"staff:{FINANCE}"
    for seq, (amount, due, received) in enumerate(plan.installments, 1):
        out.add(Installment.__table__, {"id": out.next_installment, "order_id": order_id, "seq": seq, "amount_fen": amount, "due_date": due, "received_at": received, "recorded_by": FINANCE if received else None, "note": ""})
        out.next_installment += 1
        if received is None:
            continue
        order["paid_fee"] += amount
        out.event(order, "installment_received", finance, received, seq=seq, amount_fen=amount, received_at=received.isoformat(), paid_fee=order["paid_fee"], final=order["paid_fee"] == plan.amount, note="")
        if seq == 1:
            order["paid_at"] = received
            _stamp(order, OrderStatus.paid, received)
            out.event(order, "paid", finance, received, OrderStatus.created, OrderStatus.paid, first_installment=1, amount_fen=amount)
            steps.append((TouchKind.paid, received, finance))
        order["updated_at"] = received
    if plan.confirmed is not None:
        order.update(finance_confirmed_at=plan.confirmed, finance_confirmed_by=FINANCE, completed_at=plan.confirmed)
        _stamp(order, OrderStatus.completed, plan.confirmed)
        out.event(order, "completed", finance, plan.confirmed, OrderStatus.paid, OrderStatus.completed, final_payment_confirmed=True, paid_fee=order["paid_fee"])
        steps.append((TouchKind.completed, plan.confirmed, finance))
        partner = PARTNERS[lead["partner_id"] - 1] if lead["partner_id"] else None
        if partner is not None and partner[2] == CommissionMode.per_deal:
            key = f"deal:contract:{order['out_trade_no']}"
            out.add(PartnerCommission.__table__, {"id": shop.next_commission, "partner_id": lead["partner_id"], "lead_id": None, "kind": "deal", "base_fen": plan.amount, "amount_fen": plan.amount * partner[4] // 10_000, "idempotency_key": key, "created_at": plan.confirmed, "payout_id": None})
            shop.next_commission += 1


def load_distributors(sink: Sink, shop: Shop) -> dict[str, int]:
    """The distributors, graded by their own attributed sales (never by their team)."""
    rng = shop.rng
    phones = [f"1{rng.choice('3456789')}{rng.randint(0, 999_999_999):09d}" for _ in range(200)]
    sealed = [(security.encrypt(p, "phone"), security.digest(p, "phone"), security.mask_phone(p)) for p in phones]

    def grade_of(member_id: int) -> int:
        sales = shop.sales[member_id]
        return max(n for n, (_, floor) in enumerate(GRADES, 1) if sales >= floor)

    def rows() -> Iterator[dict[str, Any]]:
        for n, dist in enumerate(sorted(shop.distributors.values(), key=lambda d: d.applied_at), 1):
            ciphertext, digest, masked = sealed[n % len(sealed)]
            decided_by = None if dist.status == DistributorStatus.approved and n % 3 == 0 else OPS
            reason = {DistributorStatus.rejected: "资料不完整", DistributorStatus.frozen: "违规宣传，暂停推广", DistributorStatus.disabled: "本人申请退出"}.get(dist.status, "")
            yield {
                "id": n,
                "member_id": dist.member_id,
                "tier": dist.tier,
                "status": dist.status,
                "real_name": rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
                "phone_ciphertext": ciphertext,
                "phone_digest": digest,
                "phone_masked": masked,
                "wechat_id": f"wx_bench_{dist.member_id}",
                "intro": "",
                "recruited_by_id": dist.recruited_by,
                "grade_id": grade_of(dist.member_id) if dist.approved_at is not None else None,
                "applied_at": dist.applied_at,
                "decided_at": dist.decided_at,
                "decided_by": decided_by if dist.decided_at else None,
                "status_reason": reason,
                "updated_at": dist.decided_at or dist.applied_at,
            }

    return {"distributors": load(sink, Distributor.__table__, rows(), len(shop.distributors), "distributors")}  # type: ignore[arg-type]


def touch_rows(shop: Shop) -> Iterator[dict[str, Any]]:
    """The lead timeline: arrivals (with the anonymous visits before them), returns through other scenes,
    leads and their reviews, every order step, and anonymous visits to fill up to ``shop.touches``."""
    rng = shop.rng
    leads_by_member = {lead["member_id"]: lead for lead in shop.leads if lead["source"] == LeadSource.arrival}

    def row(member_id: int | None, kind: TouchKind, at: datetime, scene: SceneRow | None, actor: str, detail: dict[str, Any], channel: str = "", content: str = "", code: str | None = None) -> dict[str, Any]:
        return {
            "member_id": member_id,
            "kind": kind,
            "scene": scene.code if scene else code,
            "channel": scene.channel.value if scene else channel,
            "actor": actor,
            "content": scene.content if scene else content,
            "detail": detail,
            "created_at": at,
        }

    def visitor() -> str:
        return f"visitor:{rng.getrandbits(64):016x}"

    def anonymous(scene: SceneRow, at: datetime) -> dict[str, Any]:
        if scene.channel == Channel.official_account_qr:
            return row(None, TouchKind.scan, at, scene, f"oa:{rng.getrandbits(64):016x}", {"event": "subscribe"})
        return row(None, TouchKind.visit, at, scene, visitor(), {"state": None})

    for m in range(1, shop.members + 1):
        joined, me = shop.joined[m], f"member:{m}"
        index = shop.arrival.get(m)
        if index is None:
            yield row(m, TouchKind.sign_in, joined, None, me, {"first_sign_in": True}, channel="miniprogram")
        else:
            scene = shop.scenes[index]
            if scene.channel in ANONYMOUS_CHANNELS:
                for _ in range(rng.randint(1, 3)):
                    yield anonymous(scene, max(scene.created_at, joined - timedelta(minutes=rng.uniform(1, 4_000))))
            if scene.channel != Channel.official_account_qr:
                yield row(m, TouchKind.scan, joined, scene, me, {})
            yield row(m, TouchKind.sign_in, joined, None, me, {"first_sign_in": True}, channel="miniprogram", code=scene.code)
            if scene.sharer_id is not None:
                yield row(m, TouchKind.bind, joined, scene, me, {"inviter_id": scene.sharer_id, "previous_inviter_id": None})
            lead = leads_by_member.get(m)
            if lead is not None:
                yield row(m, TouchKind.lead, joined, scene, me, {"lead_id": lead["id"], "source": "arrival"})
        if m in shop.later:
            at, later = shop.later[m]
            scene = shop.scenes[later]
            yield row(m, TouchKind.scan, at, scene, me, {})
            yield row(m, TouchKind.sign_in, at, None, me, {"first_sign_in": False}, channel="miniprogram", code=scene.code)
            if scene.sharer_id != shop.inviter.get(m):
                reason = "already_bound" if scene.sharer_id is not None and shop.eligible(scene.sharer_id, at) else "sharer_disabled"
                yield row(m, TouchKind.bind_refused, at, scene, me, {"reason": reason})
    for lead in shop.leads:
        where = {"channel": lead["channel"], "content": lead["content"], "code": lead["scene_code"]}
        if lead["source"] == LeadSource.contact:
            actor = f"member:{lead['member_id']}" if lead["member_id"] else visitor()
            yield row(lead["member_id"], TouchKind.lead, lead["created_at"], None, actor, {"lead_id": lead["id"], "source": "contact"}, **where)
        if lead["reviewed_at"] is not None:
            detail = {"lead_id": lead["id"], "status": lead["status"].value, "note": lead["review_note"]}
            yield row(lead["member_id"], TouchKind.lead_reviewed, lead["reviewed_at"], None, f"staff:{OPS}", detail, **where)
    for member_id, order_id, created, detail, code, scanned, placed_by, steps in shop.timelines:
        me, label = f"member:{member_id}", f"order:{order_id}"
        if scanned is not None:
            # An order placed from a share is a scan too, and a bind attempt the first binding wins.
            scene = shop.scenes[scanned]
            yield row(member_id, TouchKind.scan, created, scene, me, {})
            if scene.sharer_id != shop.inviter.get(member_id):
                yield row(member_id, TouchKind.bind_refused, created, scene, me, {"reason": "already_bound"})
        yield row(member_id, TouchKind.order, created, None, placed_by, detail, channel="order", content=label, code=code)
        for kind, at, actor in steps:
            yield row(member_id, kind, at, None, actor, {"out_trade_no": detail["out_trade_no"]}, channel="order", content=label)


def anonymous_visits(shop: Shop, count: int) -> Iterator[dict[str, Any]]:
    """Visits and official-account scans by people who never signed in, on the scenes people open anonymously."""
    rng = shop.rng
    open_scenes = [s for s in shop.scenes if s.channel in ANONYMOUS_CHANNELS]
    for _ in range(count):
        scene = rng.choice(open_scenes)
        at = shop.rand_time(scene.created_at)
        if scene.channel == Channel.official_account_qr:
            detail: dict[str, Any] = {"event": rng.choice(["subscribe", "SCAN"])}
            actor, kind = f"oa:{rng.getrandbits(64):016x}", TouchKind.scan
        else:
            detail = {"state": None}
            actor, kind = f"visitor:{rng.getrandbits(64):016x}", TouchKind.visit
        yield {"member_id": None, "kind": kind, "scene": scene.code, "channel": scene.channel.value, "actor": actor, "content": scene.content, "detail": detail, "created_at": at}


def load_touches(sink: Sink, shop: Shop) -> dict[str, int]:
    written = 0

    def numbered(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal written
        for r in rows:
            written += 1
            r["id"] = written
            yield r

    expected = len(shop.timelines) * 4 + shop.members * 3
    load(sink, TouchEvent.__table__, numbered(touch_rows(shop)), expected, "touch events")  # type: ignore[arg-type]
    rest = max(shop.touches - written, 0)
    load(sink, TouchEvent.__table__, numbered(anonymous_visits(shop, rest)), rest, "anonymous visits")  # type: ignore[arg-type]
    return {"touch_events": written}


def load_points(sink: Sink, shop: Shop) -> dict[str, int]:
    valid = [
        ValidLead(lead["id"], lead["sharer_id"], lead["reviewed_at"])
        for lead in shop.leads
        if lead["status"] == LeadStatus.valid and lead["sharer_id"] is not None and lead["partner_id"] is None and lead["contact_phone_ciphertext"] and lead["note"]
    ]

    def next_scene_code() -> str:
        return shop.new_scene_code()

    return generate_points(
        sink,
        rng=shop.rng,
        now=shop.now,
        start=shop.start,
        paid_orders=shop.paid_orders,
        valid_leads=valid,
        eligible=shop.eligible,
        adjustments=max(shop.members // 500, 1),
        next_scene_id=next_scene_code,
    )


def load_audit(sink: Sink, shop: Shop) -> dict[str, int]:
    rng = shop.rng
    actions = ["member.disabled", "lead.valid", "refund.approve", "distributor.approve", "setting.change", "points.adjust"]

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(1, shop.orders // 10 + 1):
            yield {"id": i, "staff_id": 1, "action": rng.choice(actions), "target": f"member:{rng.randint(1, shop.members)}", "detail": {}, "created_at": shop.rand_time(shop.start)}

    return {"audit_log": load(sink, AuditEntry.__table__, rows(), shop.orders // 10, "audit entries")}  # type: ignore[arg-type]


def generate(url: str, members: int, orders: int, touches: int, seed: int) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Plan the shop, then write it step by step; returns seconds per step, the database's share of them, and rows per table."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    shop = Shop(random.Random(seed), now, now - timedelta(days=365), members, orders, touches)
    engine = create_engine(url)
    mysql = engine.dialect.name == "mysql"
    timings: dict[str, float] = {}
    #: Of each step's time, how long the database was busy with its rows (on MySQL, alongside the generating).
    database: dict[str, float] = {}
    counts: dict[str, int] = {}

    def timed(what: str, step: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = step()
        timings[what] = timings.get(what, 0.0) + time.perf_counter() - started
        return result

    def write(what: str, step: Callable[[Sink, Shop], dict[str, int]]) -> None:
        def run() -> None:
            with engine.connect() as conn:
                if mysql:
                    # Rows refer to rows of later steps (entries to accounts opened last); ledger-check proves them.
                    conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
                sink = Sink(conn)
                written = step(sink, shop)
                sink.close()
                database[what] = sink.busy
                for table, n in written.items():
                    counts[table] = counts.get(table, 0) + n

        timed(what, run)

    app = bench_app(url)
    with app.app_context():
        def plan() -> list[ContractPlan]:
            plan_tree(shop)
            plan_distributors(shop)
            plan_scenes(shop)
            plan_leads(shop)
            return plan_contracts(shop)

        contracts = timed("plan", plan)
        saved: dict[str, str] = {}
        if mysql:
            with engine.connect() as conn:
                saved = timed("drop indexes", lambda: drop_secondary_indexes(conn, BULK_TABLES))
        write("members", load_people)
        write("referral", load_referral)
        write("catalog", load_catalog)
        write("orders", lambda sink, s: load_orders(sink, s, contracts))
        write("distributors", load_distributors)
        write("touches", load_touches)
        write("points", load_points)
        write("audit", load_audit)
        if saved:
            with engine.connect() as conn:
                timed("indexes", lambda: restore_secondary_indexes(conn, saved))
    engine.dispose()
    return timings, database, counts


def create_staff(url: str) -> None:
    from werkzeug.security import generate_password_hash

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(Staff.__table__),  # type: ignore[arg-type]
            [
                {"id": 1, "username": OWNER[0], "password_hash": generate_password_hash(OWNER[1]), "role": StaffRole.owner, "active": True},
                {"id": OPS, "username": "bench-ops", "password_hash": generate_password_hash("bench-ops-pass"), "role": StaffRole.operations, "active": True},
                {"id": FINANCE, "username": "bench-finance", "password_hash": generate_password_hash("bench-finance-pass"), "role": StaffRole.finance, "active": True},
            ],
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=1_000_000, help="online orders and contracts (one contract per 1,000 orders)")
    parser.add_argument("--touches", type=int, default=None, help="lead-timeline events in all; anonymous visits fill up to it (default 5 per order)")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--reset", action="store_true", help="drop the app's tables first")
    args = parser.parse_args()
    started = time.perf_counter()
    migrate(args.database_url, args.reset)
    create_staff(args.database_url)
    touches = args.touches if args.touches is not None else 5 * args.orders
    timings, database, counts = generate(args.database_url, args.members, args.orders, touches, args.seed)
    for what, seconds in timings.items():
        busy = f"   (database busy {database[what]:6.1f} s)" if what in database else ""
        print(f"{what:>14}: {seconds:7.1f} s{busy}")
    print(f"{'total':>14}: {time.perf_counter() - started:7.1f} s  ({args.members:,} members, {args.orders:,} orders)")
    for table, n in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"{table:>22}: {n:>10,}")


if __name__ == "__main__":
    main()
