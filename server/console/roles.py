"""The console's role matrix, written once: which staff roles may use each area.

The rules are those of ``/admin/api/v1`` (``staff_required``): the owner may do everything, and
each area names the other roles the matching admin endpoints accept. Pages check an area with
``authenticate_staff`` (as the API does) and templates show navigation with ``allowed``.
"""
from __future__ import annotations

from server.accounts.models import StaffRole

OWNER, OPERATIONS, FINANCE = StaffRole.owner, StaffRole.operations, StaffRole.finance
EVERYONE = (OWNER, OPERATIONS, FINANCE)

#: area: (the roles that may use it, the admin API endpoint whose rule it follows or "" for a console-only
#: area, what it is).
AREAS: dict[str, tuple[tuple[StaffRole, ...], str, str]] = {
    "dashboard": (EVERYONE, "GET /admin/api/v1/me", "概览与待办"),
    "account": (EVERYONE, "GET /admin/api/v1/me", "自己的密码"),
    # Each list exports under its own area (see export_pages); this is only one's own files of big exports.
    "exports": (EVERYONE, "GET /admin/api/v1/me", "自己的后台导出文件"),
    "members": ((OWNER, OPERATIONS), "GET /admin/api/v1/members", "会员搜索与详情"),
    "members.change_inviter": ((OWNER,), "", "修改或清除会员的邀请人"),
    "points.view": ((OWNER, OPERATIONS, FINANCE), "GET /admin/api/v1/points/members/{member_id}", "会员积分余额与明细"),
    "orders": (EVERYONE, "GET /admin/api/v1/orders", "订单列表与详情"),
    "orders.ship": ((OWNER, OPERATIONS), "POST /admin/api/v1/orders/{order_id}/ship", "订单发货"),
    "orders.refund": (EVERYONE, "POST /admin/api/v1/orders/{order_id}/refunds", "员工发起退款"),
    "refunds": (EVERYONE, "GET /admin/api/v1/refunds", "退款列表与失败、异常退款队列"),
    "refunds.decide": (EVERYONE, "POST /admin/api/v1/refunds/{refund_id}/reject", "批准或拒绝会员的退款申请"),
    "refunds.settle_offline": ((OWNER, FINANCE), "POST /admin/api/v1/refunds/{refund_id}/settle-offline", "异常退款线下处理"),
    "refunds.resend": ((OWNER, FINANCE), "POST /admin/api/v1/refunds/{refund_id}/resend", "异常退款重新发起"),
    "products": ((OWNER, OPERATIONS), "GET /admin/api/v1/products", "商品、SKU、库存与预售"),
    "products.edit": ((OWNER, OPERATIONS), "PATCH /admin/api/v1/skus/{sku_id}", "新建、编辑、上下架商品与 SKU"),
    "settings": (EVERYONE, "GET /admin/api/v1/settings", "查看商户设置"),
    "settings.edit": ((OWNER,), "PUT /admin/api/v1/settings/{key}", "修改商户设置"),
    "staff": ((OWNER,), "GET /admin/api/v1/staff", "员工账号与角色"),
    "audit": ((OWNER,), "", "操作日志"),
    "distributors": ((OWNER, OPERATIONS), "GET /admin/api/v1/distributors", "分销员列表、申请与档案"),
    "distributors.decide": ((OWNER, OPERATIONS), "POST /admin/api/v1/distributors/{distributor_id}/decisions", "审核、冻结、解冻、停用分销员"),
    "distributors.appoint": ((OWNER, OPERATIONS), "POST /admin/api/v1/distributors", "任命一级分销员"),
    "distributors.tiers": ((OWNER,), "PATCH /admin/api/v1/distributor-tiers/{tier}", "修改分销等级权限"),
    "distributors.grades": ((OWNER,), "POST /admin/api/v1/grades", "新建、修改、删除销售等级"),
    "programme": ((OWNER, OPERATIONS), "GET /admin/api/v1/distributor-rules", "分销规则与协议的各个版本"),
    "programme.edit": ((OWNER, OPERATIONS), "POST /admin/api/v1/distributor-rules", "编写、预览、发布分销规则"),
    "notices": ((OWNER, OPERATIONS), "GET /admin/api/v1/notices", "公告及其阅读情况"),
    "notices.edit": ((OWNER, OPERATIONS), "POST /admin/api/v1/notices", "编写、发布、撤回公告"),
    "materials": ((OWNER, OPERATIONS), "GET /admin/api/v1/materials", "推广素材"),
    "materials.edit": ((OWNER, OPERATIONS), "POST /admin/api/v1/materials", "新建、修改、下架推广素材"),
    "posters": ((OWNER, OPERATIONS), "GET /admin/api/v1/poster-templates", "海报模板与预览"),
    "posters.edit": ((OWNER, OPERATIONS), "POST /admin/api/v1/poster-templates", "新建、修改海报模板"),
    "points": (EVERYONE, "GET /admin/api/v1/points/transactions", "积分流水"),
    "points.adjust": ((OWNER,), "POST /admin/api/v1/points/adjustments", "人工调整会员积分"),
    "points.settlement": ((OWNER, FINANCE), "GET /admin/api/v1/points/settlements", "结算批次与对账单"),
    "points.settlement.run": ((OWNER,), "POST /admin/api/v1/points/settlements", "立即结算"),
    "points.rules": ((OWNER,), "GET /admin/api/v1/points/reward-overrides", "奖励规则、单品与等级覆盖、阶段奖励"),
    "points.compliance": ((OWNER,), "GET /admin/api/v1/compliance", "合规报告"),
    "redemptions": (EVERYONE, "GET /admin/api/v1/points/redemptions", "兑换记录与邀请码"),
    "redemptions.fulfil": ((OWNER, OPERATIONS), "POST /admin/api/v1/points/redemptions/{redemption_id}/fulfil", "发放兑换"),
    "redemptions.cancel": ((OWNER, OPERATIONS), "POST /admin/api/v1/points/redemptions/{redemption_id}/cancel", "取消兑换并退回积分"),
    "redemptions.catalog": ((OWNER, OPERATIONS), "POST /admin/api/v1/points/items", "兑换商品目录"),
    "notifications": ((OWNER, OPERATIONS), "GET /admin/api/v1/notifications", "给会员的订阅消息、模板消息及其状态"),
    "risk": ((OWNER, OPERATIONS, FINANCE), "GET /admin/api/v1/risk/reviews", "风控审核队列、证据与信号报表"),
    "risk.decide": ((OWNER, OPERATIONS), "POST /admin/api/v1/risk/reviews/{review_id}/decisions", "放行或冲回被扣留的奖励、冻结分销员、标记误报"),
    "notifications.resend": ((OWNER, OPERATIONS), "POST /admin/api/v1/notifications/{outbox_id}/resend", "重新发送未发出或失败的消息"),
    "training": ((OWNER, OPERATIONS), "GET /admin/api/v1/training/courses", "培训课程与学习情况"),
    "training.edit": ((OWNER, OPERATIONS), "POST /admin/api/v1/training/courses", "新建、编辑、发布培训课程及测验"),
    "feedback": ((OWNER, OPERATIONS), "GET /admin/api/v1/feedback", "会员反馈与举报"),
    "feedback.handle": ((OWNER, OPERATIONS), "POST /admin/api/v1/feedback/{item_id}/transitions", "受理、回复、解决、驳回反馈与举报，指派与内部备注"),
    "leads": ((OWNER, OPERATIONS), "GET /admin/api/v1/leads", "线索池：审核、分配、跟进、关联会员"),
    "leads.reveal_phone": ((OWNER, OPERATIONS), "POST /admin/api/v1/leads/{lead_id}/reveal-phone", "查看线索的完整手机号"),
    "contracts": ((OWNER, OPERATIONS, FINANCE), "GET /admin/api/v1/contracts", "合同与分期"),
    "contracts.manage": ((OWNER, OPERATIONS), "POST /admin/api/v1/contracts", "由线索创建合同、撤销合同"),
    "contracts.receive": ((OWNER, FINANCE), "POST /admin/api/v1/contracts/{order_id}/installments/{seq}/receive", "登记分期到账"),
    "contracts.confirm": ((OWNER, FINANCE), "POST /admin/api/v1/contracts/{order_id}/confirm-final", "确认尾款"),
    "reports": (EVERYONE, "GET /admin/api/v1/reports/funnel", "数据报表：渠道漏斗、分销员、地区、商品、复购、积分负债"),
    "partners": ((OWNER, OPERATIONS, FINANCE), "GET /admin/api/v1/partners", "合作渠道与结算单"),
    "partners.edit": ((OWNER, OPERATIONS), "POST /admin/api/v1/partners", "新建、修改合作渠道及推广码"),
    "partners.pay": ((OWNER, FINANCE), "POST /admin/api/v1/partners/{partner_id}/payouts", "标记渠道佣金已付"),
    # To-do queues on the dashboard: who acts on each.
    "queue.applications": ((OWNER, OPERATIONS), "POST /admin/api/v1/distributors/{distributor_id}/decisions", "分销员申请"),
    "queue.leads": ((OWNER, OPERATIONS), "POST /admin/api/v1/leads/{lead_id}/review", "待审核线索"),
    "queue.refunds": ((OWNER, OPERATIONS, FINANCE), "POST /admin/api/v1/refunds/{refund_id}/approve", "待审批退款"),
    "queue.refund_problems": ((OWNER, FINANCE), "POST /admin/api/v1/refunds/{refund_id}/resend", "失败或异常退款"),
    "queue.risk": ((OWNER, OPERATIONS), "POST /admin/api/v1/risk/reviews/{review_id}/decisions", "待处理的风控审核"),
    "queue.redemptions": ((OWNER, OPERATIONS), "POST /admin/api/v1/points/redemptions/{redemption_id}/fulfil", "待发放兑换"),
    "queue.confirmations": ((OWNER, FINANCE), "GET /admin/api/v1/finance/confirmations", "待确认尾款"),
    "queue.feedback": ((OWNER, OPERATIONS), "GET /admin/api/v1/feedback", "待处理的反馈与举报"),
}


def roles_for(area: str) -> tuple[StaffRole, ...]:
    """The roles that may use ``area``; never empty (an empty tuple would mean anyone to ``authenticate_staff``)."""
    return AREAS[area][0]


def allowed(role: StaffRole, area: str) -> bool:
    """Whether ``role`` may use ``area``: the owner always, others when listed."""
    return role == OWNER or role in roles_for(area)
