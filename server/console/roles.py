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
    "members": ((OWNER, OPERATIONS), "GET /admin/api/v1/members", "会员搜索与详情"),
    "members.change_inviter": ((OWNER,), "", "修改或清除会员的邀请人"),
    "points.view": ((OWNER, OPERATIONS, FINANCE), "GET /admin/api/v1/points/members/{member_id}", "会员积分余额与明细"),
    "settings": (EVERYONE, "GET /admin/api/v1/settings", "查看商户设置"),
    "settings.edit": ((OWNER,), "PUT /admin/api/v1/settings/{key}", "修改商户设置"),
    "staff": ((OWNER,), "GET /admin/api/v1/staff", "员工账号与角色"),
    "audit": ((OWNER,), "", "操作日志"),
    "leads": ((OWNER, OPERATIONS), "GET /admin/api/v1/leads", "线索池：审核、分配、跟进、关联会员"),
    "leads.reveal_phone": ((OWNER, OPERATIONS), "POST /admin/api/v1/leads/{lead_id}/reveal-phone", "查看线索的完整手机号"),
    "contracts": ((OWNER, OPERATIONS, FINANCE), "GET /admin/api/v1/contracts", "合同与分期"),
    "contracts.manage": ((OWNER, OPERATIONS), "POST /admin/api/v1/contracts", "由线索创建合同、撤销合同"),
    "contracts.receive": ((OWNER, FINANCE), "POST /admin/api/v1/contracts/{order_id}/installments/{seq}/receive", "登记分期到账"),
    "contracts.confirm": ((OWNER, FINANCE), "POST /admin/api/v1/contracts/{order_id}/confirm-final", "确认尾款"),
    "partners": ((OWNER, OPERATIONS, FINANCE), "GET /admin/api/v1/partners", "合作渠道与结算单"),
    "partners.edit": ((OWNER, OPERATIONS), "POST /admin/api/v1/partners", "新建、修改合作渠道及推广码"),
    "partners.pay": ((OWNER, FINANCE), "POST /admin/api/v1/partners/{partner_id}/payouts", "标记渠道佣金已付"),
    # To-do queues on the dashboard: who acts on each.
    "queue.applications": ((OWNER, OPERATIONS), "POST /admin/api/v1/distributors/{distributor_id}/decisions", "分销员申请"),
    "queue.leads": ((OWNER, OPERATIONS), "POST /admin/api/v1/leads/{lead_id}/review", "待审核线索"),
    "queue.refunds": ((OWNER, OPERATIONS, FINANCE), "POST /admin/api/v1/refunds/{refund_id}/approve", "待审批退款"),
    "queue.refund_problems": ((OWNER, FINANCE), "POST /admin/api/v1/refunds/{refund_id}/resend", "失败或异常退款"),
    "queue.redemptions": ((OWNER, OPERATIONS), "POST /admin/api/v1/points/redemptions/{redemption_id}/fulfil", "待发放兑换"),
    "queue.confirmations": ((OWNER, FINANCE), "GET /admin/api/v1/finance/confirmations", "待确认尾款"),
}


def roles_for(area: str) -> tuple[StaffRole, ...]:
    """The roles that may use ``area``; never empty (an empty tuple would mean anyone to ``authenticate_staff``)."""
    return AREAS[area][0]


def allowed(role: StaffRole, area: str) -> bool:
    """Whether ``role`` may use ``area``: the owner always, others when listed."""
    return role == OWNER or role in roles_for(area)
