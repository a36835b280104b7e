"""The member's team in the zone: direct and indirect invitees (masked), the orders they brought,
and for a distributor the distributors they recruited. Shown for the member's own information:
nothing here is rewarded by headcount."""
from __future__ import annotations

from typing import Any

from flask import request

from server import db, security
from server.accounts.models import Member
from server.distribution import services as distribution
from server.distribution.routes import serialize_recruits
from server.memberzone.routes import Pager, add_section, bp, page, page_arg, zone_view
from server.orders import queries as order_queries
from server.orders.models import OrderStatus
from server.referral import services as referral

LEVELS = (("direct", "直接团队", 1), ("indirect", "间接团队", 2))


@bp.get("/team")
@zone_view
def team(member: Member) -> Any:
    sess = db.session()
    level_arg = request.args.get("level", "direct")
    name, title, level = next((entry for entry in LEVELS if entry[0] == level_arg), LEVELS[0])
    pager = Pager(page_arg(), 0)
    rows, total = referral.team_page(sess, member.id, level, pager.offset, pager.size)
    stats = referral.attributed_sales(sess, [m.id for m in rows])
    people = [
        {"nickname": security.mask(m.nickname), "avatar_url": m.avatar_url, "bound_at": m.bound_at, "orders": stats[m.id].orders, "amount_fen": stats[m.id].amount_fen}
        for m in rows
    ]
    distributor = distribution.distributor_of(sess, member.id)
    return page(
        "memberzone/team.html",
        tab="team",
        people=people,
        level=name,
        levels=LEVELS,
        title=title,
        pager=Pager(pager.page, total),
        is_distributor=distributor is not None,
    )


@bp.get("/orders")
@zone_view
def orders(member: Member) -> Any:
    """Orders the member brought, as level 1 or 2; buyers masked."""
    sess = db.session()
    status_arg = request.args.get("status", "")
    status = OrderStatus(status_arg) if status_arg in OrderStatus.__members__ else None
    pager = Pager(page_arg(), 0)
    rows, total, buyers = order_queries.referral_orders(sess, member.id, status, pager.offset, pager.size)
    items = [
        {
            "order": order,
            "buyer": security.mask(buyers[order.member_id].nickname) if order.member_id in buyers else "*",
            "level": 1 if order.inviter_id == member.id else 2,
        }
        for order in rows
    ]
    return page("memberzone/orders.html", tab="team", items=items, pager=Pager(pager.page, total))


@bp.get("/recruits")
@zone_view
def recruits(member: Member) -> Any:
    """A distributor's recruits (tier 2) with their own sales, and their own recruiting limit."""
    sess = db.session()
    distributor = distribution.distributor_of(sess, member.id)
    if distributor is None:
        return page("memberzone/recruits.html", tab="team", distributor=None)
    pager = Pager(page_arg(), 0)
    data = serialize_recruits(sess, distributor, pager.offset, pager.size)
    return page("memberzone/recruits.html", tab="team", distributor=distributor, data=data, pager=Pager(pager.page, data["total"]))


add_section("memberzone.team", "我的团队", "直接与间接邀请的好友")
add_section("memberzone.orders", "推广订单", "好友通过你下的订单")
add_section("memberzone.recruits", "我招募的推广员", "二级推广员与招募名额")
