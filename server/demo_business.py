"""Demo members, a team, orders in several states, leads and redemptions, so the console shows something.

Everything goes through the services a real shop's data goes through (binding by scene, orders,
payments as WeChat Pay's notification applies them, refunds, leads, redemptions); only the
creation times are spread over the last weeks afterwards, so the dashboard's trends have a shape.
Runs once: a second ``seed-demo`` finds the first demo member and stops.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Iterator

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.accounts.models import Member, Staff, StaffRole
from server.accounts.services import bind_phone
from server.db import utcnow
from server.distribution import programme
from server.distribution.models import MaterialKind
from server.distribution.services import apply, appoint, create_grade, create_material
from server.feedback.models import FeedbackCategory, FeedbackKind
from server.feedback.services import submit as submit_feedback
from server.notices.models import NoticeAudience
from server.notices.services import create_notice, publish_notice
from server.orders.models import Order, OrderStatus, Product, RefundStatus, Sku
from server.orders.services import (
    REFUND_ABNORMAL,
    REFUND_SUCCESS,
    LineRequest,
    apply_payment,
    apply_refund_notice,
    close_unpaid,
    finish_refund,
    move,
    place_order,
    receive,
    request_member_refund,
    request_refund,
    ship,
)
from server.points.models import RedemptionItem
from server.points.incentives import create_stage_rule
from server.points.redemption import grant_from_cli, redeem
from server.points.settlement import manual_period_key, settle
from server.points.services import process_order
from server.orders.contracts import InstallmentPlan, create_contract, receive_installment
from server.posters.services import create_template
from server.referral.lead_work import assign_lead, follow_up_lead
from server.referral.models import Binding, Channel, Lead, LeadFollowUp, LeadStatus, PartnerCommission, TouchEvent
from server.referral.services import bind_member, create_partner, create_scene, leave_contact, review_lead, scene_for_share
from server.training.services import add_lesson, complete_lesson, create_course, replace_quiz, set_published
from server.settings.services import get_setting

#: (openid, nickname, days ago they joined, inviter's openid or None, phone or None)
DEMO_MEMBERS = (
    ("demo-alice", "爱丽丝", 28, None, "13800138000"),
    ("demo-bob", "鲍勃", 21, "demo-alice", None),
    ("demo-carol", "卡罗尔", 14, "demo-alice", "13900139000"),
    ("demo-dave", "大卫", 9, "demo-bob", None),
    ("demo-eve", "伊娃", 6, "demo-bob", None),
    ("demo-frank", "弗兰克", 3, "demo-carol", None),
    ("demo-grace", "格蕾丝", 1, None, None),
    ("demo-heidi", "海蒂", 0, "demo-alice", None),
)

#: (buyer's openid, days ago, what becomes of the order)
DEMO_ORDERS = (
    ("demo-bob", 20, "completed"),
    ("demo-carol", 13, "completed"),
    ("demo-dave", 8, "received"),
    ("demo-eve", 5, "shipped"),
    ("demo-dave", 4, "refund_requested"),
    ("demo-frank", 2, "paid"),
    ("demo-heidi", 0, "paid"),
    ("demo-grace", 0, "created"),
    # The refund queues and the end states, so the order pages have every status to show.
    ("demo-grace", 6, "closed"),
    ("demo-carol", 11, "refunded"),
    ("demo-eve", 3, "refund_failed"),
    ("demo-bob", 1, "refund_abnormal"),
)


def _demo_refund(sess: Session, order: Order, owner: Staff, fate: str) -> None:
    """A staff refund and how WeChat Pay ended it: paid back, refused for good, or stuck (abnormal)."""
    refund = request_refund(sess, order, None, "质量问题，全额退款", actor=f"staff:{owner.id}", approved=True, staff_id=owner.id)
    if fate == "refund_failed":
        # What ``submit_refund`` records when WeChat Pay refuses a refund for good.
        finish_refund(sess, order, refund, succeeded=False, actor="wechat", ending=RefundStatus.failed, reason="基本账户余额不足，请充值后重新发起")
        return
    ending = REFUND_SUCCESS if fate == "refunded" else REFUND_ABNORMAL
    # What WeChat Pay's refund notification applies once it has taken the refund.
    apply_refund_notice(
        sess, out_trade_no=order.out_trade_no, out_refund_no=refund.out_refund_no, refund_id=f"DEMOREFUND{refund.id:08d}", amount_fen=refund.amount_fen, ending=ending, api="v3"
    )


def seed_business(sess: Session, product_title: str) -> Iterator[str]:
    """Create the demo members and what they did, unless they are there already."""
    if sess.scalar(select(Member.id).where(Member.openid == DEMO_MEMBERS[0][0])) is not None:
        yield "demo members already there"
        return
    owner = sess.scalar(select(Staff).where(Staff.role == StaffRole.owner).order_by(Staff.id))
    sku = sess.scalar(select(Sku).join(Product, Product.id == Sku.product_id).where(Product.title == product_title))
    if owner is None or sku is None:
        yield "demo members skipped: the demo owner and product come first"
        return
    now = utcnow()
    members: dict[str, Member] = {}
    for openid, nickname, _days, inviter, phone in DEMO_MEMBERS:
        member = Member(openid=openid, nickname=nickname)
        sess.add(member)
        sess.flush()
        members[openid] = member
        if phone:
            bind_phone(sess, member, phone)
        if inviter:
            scene = scene_for_share(sess, members[inviter].id, Channel.miniprogram_code)
            bind_member(sess, member, scene.code)
    alice, bob, frank = members["demo-alice"], members["demo-bob"], members["demo-frank"]
    appoint(sess, alice.id, real_name="李爱丽", phone="13800138000", reason="demo", staff=owner)
    apply(sess, frank, real_name="方克", phone="13700137000", intro="想推广给同事")
    yield f"{len(members)} demo members, {sum(1 for m in DEMO_MEMBERS if m[3])} bound to their inviter by scene (alice has a direct and an indirect team); alice a distributor, frank applying"
    yield from _seed_distribution(sess, owner)

    for number, (openid, days, fate) in enumerate(DEMO_ORDERS):
        order = place_order(sess, members[openid], [LineRequest(sku_id=sku.id, quantity=1 + number % 2)])
        if fate not in ("created", "closed"):
            apply_payment(sess, out_trade_no=order.out_trade_no, transaction_id=f"DEMO{order.id:012d}", amount_fen=order.total_fee, api="v3")
        if fate in ("shipped", "received", "completed"):
            ship(sess, order, carrier="顺丰", tracking_no=f"SF{order.id:010d}", actor="demo")
        if fate in ("received", "completed"):
            receive(sess, order, actor="demo")
        if fate == "completed":
            move(sess, order, OrderStatus.completed, actor="demo")
        if fate == "refund_requested":
            request_member_refund(sess, order, None, "不想要了", actor=f"member:{order.member_id}")
        if fate == "closed":
            close_unpaid(sess, order, actor="system", reason="timeout")
        if fate.startswith("refund") and fate != "refund_requested":
            _demo_refund(sess, order, owner, fate)
        process_order(sess, order)
        when = now - timedelta(days=days, hours=number)
        sess.execute(
            update(Order).where(Order.id == order.id).values(created_at=when, paid_at=when + timedelta(minutes=5) if order.paid_at else None)
        )
    yield f"{len(DEMO_ORDERS)} demo orders: completed, received, shipped, paid, a refund waiting for approval, one unpaid, one closed, one refunded, a failed and an abnormal refund"

    carol_scene = scene_for_share(sess, members["demo-carol"].id, Channel.h5_link)
    leave_contact(sess, member=None, scene_code=carol_scene.code, contact_name="周先生", phone="13600136000", note="想给公司采购 20 盒")
    leave_contact(sess, member=None, scene_code=carol_scene.code, contact_name="吴女士", phone="13500135000", note="咨询团购价格")
    yield "2 contact leads waiting for review"
    yield from _seed_leads_contracts_partners(sess, owner, members)

    grant_from_cli(sess, bob.id, 300_000, reason="演示积分", key="demo-grant-bob")
    goods = sess.scalar(select(RedemptionItem).where(RedemptionItem.kind == "goods").order_by(RedemptionItem.id))
    if goods is not None:
        redeem(sess, bob.id, item_id=goods.id, quantity=1, idempotency_key="demo-redeem-bob", contact={"name": "鲍勃", "phone": "13300133000", "address": "杭州市西湖区"})
        yield "bob redeemed goods: a redemption waiting to be fulfilled"
    yield from _seed_points_rules(sess, bob)
    yield from _seed_training_feedback(sess, owner, members)
    yield from _seed_rules_notices(sess, owner)

    for openid, _nickname, days, _inviter, _phone in DEMO_MEMBERS:
        member = members[openid]
        joined = now - timedelta(days=days, hours=2)
        sess.execute(update(Member).where(Member.id == member.id).values(created_at=joined))
        sess.execute(update(TouchEvent).where(TouchEvent.member_id == member.id, TouchEvent.created_at >= now - timedelta(minutes=5)).values(created_at=joined))
        sess.execute(update(Lead).where(Lead.member_id == member.id).values(created_at=joined))
        sess.execute(update(Binding).where(Binding.member_id == member.id).values(bound_at=joined))
    sess.flush()


def _seed_training_feedback(sess: Session, owner: Staff, members: dict[str, Member]) -> Iterator[str]:
    """A published course with a quiz that alice is half-way through, a suggestion and a report about alice."""
    course = create_course(sess, {"title": "合规推广入门", "summary": "哪些话不能说，积分怎么来", "audience": 2, "pass_mark": 60}, staff=owner)
    first = add_lesson(sess, course.id, {"kind": "article", "title": "不能说的话", "body": "不得宣称**治疗**功效，不得承诺收益。\n\n积分只奖励自己带来的成交，从不按人头。"}, staff=owner, video_hosts=())
    add_lesson(sess, course.id, {"kind": "article", "title": "积分从哪里来", "body": "一级奖励按实付金额计算，二级奖励不超过一级。"}, staff=owner, video_hosts=())
    replace_quiz(sess, course.id, pass_mark=60, questions=[
        {"prompt": "积分能否兑换现金？", "options": ["能", "不能"], "answer": 1},
        {"prompt": "推广时可以夸大功效吗？", "options": ["不可以", "可以"], "answer": 0},
    ], staff=owner)
    set_published(sess, course.id, True, staff=owner)
    complete_lesson(sess, members["demo-alice"].id, first.id)
    submit_feedback(sess, members["demo-bob"], kind=FeedbackKind.feedback, category=FeedbackCategory.suggestion, body="希望增加夜间配送。")
    submit_feedback(
        sess, members["demo-dave"], kind=FeedbackKind.report, category=FeedbackCategory.false_advertising,
        body="朋友圈里说产品能治病。", distributor_member_id=members["demo-alice"].id,
    )
    yield "a training course with a quiz (alice did one lesson of two), a suggestion and a report about alice waiting in the queue"


#: The demo's programme rules: the placeholders read the merchant's live settings, so the text never
#: states a rate the system does not pay.
DEMO_RULES_BODY = """## 积分怎么来
- 好友通过你的海报或链接下单，你得实付金额的 {{reward_level1_first_bp}}（复购 {{reward_level1_repeat_bp}}）。
- 你邀请的分销员带来成交，你得{{level2_reward}}。
- 每笔订单的积分合计不超过实付金额的 {{reward_order_cap_bp}}。

## 积分何时可用
{{settlement_delay}}。积分不能提现，只能在积分商城兑换；{{points_value}}。

## 不允许的做法
- 不按拉人头计奖，不收取入门费。
- 不得夸大功效，不得承诺收益。"""


def _seed_rules_notices(sess: Session, owner: Staff) -> Iterator[str]:
    """Published programme rules (version 1), a pinned notice to everyone and one to distributors."""
    rules = programme.create_draft(sess, title="分销员推广规则", body=DEMO_RULES_BODY, staff_id=owner.id)
    programme.publish(sess, rules.id, staff_id=owner.id)
    welcome = create_notice(
        sess, {"title": "欢迎加入会员中心", "body": "积分只奖励你带来的成交。规则见“推广规则”。", "pinned": True}, staff_id=owner.id
    )
    publish_notice(sess, welcome.id, staff_id=owner.id)
    training = create_notice(
        sess, {"title": "新课程：合规推广入门", "body": "学完并通过小测，推广更放心。", "audience": NoticeAudience.distributors}, staff_id=owner.id
    )
    publish_notice(sess, training.id, staff_id=owner.id)
    yield "programme rules version 1 published; a pinned notice to every member and one to distributors"


#: Sales grades (name, own attributed sales in fen from which it applies, perks).
DEMO_GRADES = (("铜牌", 0, "基础推广素材"), ("银牌", 20_000, "专属海报模板"), ("金牌", 100_000, "线下活动优先报名"))


def _seed_distribution(sess: Session, owner: Staff) -> Iterator[str]:
    """Sales grades, a poster template and promotion materials for the distributor pages."""
    for sort, (name, threshold, perks) in enumerate(DEMO_GRADES):
        create_grade(sess, name=name, min_sales_fen=threshold, perks=perks, sort=sort, staff=owner)
    template = create_template(
        sess, {"name": "春茶上新", "headline": "明前龙井 · 春茶上新", "body_text": "产地直发，会员专享价\n长按识别，和我一起喝好茶", "background_color": "#EAF5EC"},
        staff_id=owner.id,
    )
    create_material(
        sess, {"kind": MaterialKind.image_text, "title": "春茶推荐文案", "summary": "转发到朋友圈的推荐语", "body": "今年的明前龙井到了，产地直发，一起尝尝。", "audience": 3},
        staff=owner,
    )
    create_material(sess, {"kind": MaterialKind.poster, "title": "春茶海报", "poster_template_id": template.id, "audience": 2, "sort": 1}, staff=owner)
    create_material(
        sess, {"kind": MaterialKind.video, "title": "一级分销员培训视频", "url": "https://example.com/training.mp4", "audience": 1, "sort": 2},
        staff=owner,
    )
    yield f"{len(DEMO_GRADES)} sales grades, a poster template and 3 promotion materials"
def _seed_points_rules(sess: Session, bob: Member) -> Iterator[str]:
    """An invite code bought with points, a stage bonus rule and a settlement run, so the console's
    points and redemption pages show each of their parts (no reward override: the demo's rewards are
    the default 0.5%, which ``python -m server demo`` checks)."""
    invite = sess.scalar(select(RedemptionItem).where(RedemptionItem.kind == "invite_code").order_by(RedemptionItem.id))
    if invite is not None:
        redeem(sess, bob.id, item_id=invite.id, quantity=1, idempotency_key="demo-invite-bob")
        yield "bob bought an invite code with points"
    create_stage_rule(sess, name="月度销售之星", min_monthly_sales_fen=1_000_000, bonus=20_000, consecutive_months=2)
    run = settle(sess, period=manual_period_key(), mode=str(get_setting(sess, "settlement_mode")), actor="cli")
    yield f"a stage bonus rule and a settlement run ({run.members} members, {run.total / 100:,.2f} points)"


def _seed_leads_contracts_partners(sess: Session, owner: Staff, members: dict[str, Member]) -> Iterator[str]:
    """Leads being followed up, a partner channel with last month's commission, and an offline contract whose
    installments have all arrived and wait for finance to confirm the final payment."""
    ops = sess.scalar(select(Staff).where(Staff.role == StaffRole.operations).order_by(Staff.id)) or owner
    first = sess.scalar(select(Lead).where(Lead.contact_name == "周先生"))
    if first is not None:
        assign_lead(sess, first.id, ops.id, staff_id=owner.id)
        follow_up_lead(sess, first.id, "已电话联系，对方要 20 盒的报价单", staff_id=ops.id, state=LeadFollowUp.contacted)

    partner = create_partner(
        sess,
        {"name": "知乎·职场圈", "platform": "zhihu", "contact": "郑编辑", "commission_mode": "per_lead", "per_lead_fen": 5_000, "deal_rate_bp": 0},
        staff_id=owner.id,
    )
    scene = create_scene(sess, channel=Channel.partner, partner_id=partner.id, content_type="campaign", content_id="spring")
    partner_lead = leave_contact(sess, member=None, scene_code=scene.code, contact_name="郑经理", phone="13400134000", note="了解企业定制礼盒")
    review_lead(sess, partner_lead.id, LeadStatus.valid, staff=owner, note="渠道线索，已确认")
    # Last month's commission, so the partner's statement has a period to pay.
    last_month = utcnow().replace(day=1) - timedelta(days=10)
    sess.execute(update(PartnerCommission).where(PartnerCommission.partner_id == partner.id).values(created_at=last_month))
    sess.execute(update(Lead).where(Lead.id == partner_lead.id).values(created_at=last_month))
    yield f"partner {partner.name} with a tracked link and a valid lead from last month (a ¥50.00 commission to pay)"

    eve = members["demo-eve"]
    lead = leave_contact(sess, member=eve, scene_code=None, contact_name="伊娃", phone="13100131000", note="公司年度礼盒采购")
    review_lead(sess, lead.id, LeadStatus.valid, staff=ops, note="已确认需求")
    follow_up_lead(sess, lead.id, "报价已确认，准备签约", staff_id=ops.id, state=LeadFollowUp.contacted)
    follow_up_lead(sess, lead.id, "已签合同", staff_id=ops.id, state=LeadFollowUp.converted)
    order = create_contract(
        sess,
        lead_id=lead.id,
        title="年度礼盒采购",
        amount_fen=3_000_000,
        installments=[InstallmentPlan(1_000_000), InstallmentPlan(2_000_000)],
        parent_order_id=None,
        staff_id=ops.id,
    )
    finance = sess.scalar(select(Staff).where(Staff.role == StaffRole.finance).order_by(Staff.id)) or owner
    receive_installment(sess, order.id, 1, staff_id=finance.id, note="首付款")
    receive_installment(sess, order.id, 2, staff_id=finance.id, note="尾款")
    yield f"contract {order.out_trade_no} for eve's lead: both installments received, the final payment waiting for finance"
