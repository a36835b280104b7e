"""How the console writes values in Chinese: money, points, times and enum values."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from server.clock import local

ROLE = {"owner": "店主", "operations": "运营", "finance": "财务"}
MEMBER_STATUS = {"active": "正常", "disabled": "已停用"}
ORDER_STATUS = {
    "created": "待支付",
    "paid": "已支付",
    "shipped": "已发货",
    "received": "已收货",
    "completed": "已完成",
    "closed": "已关闭",
    "refunding": "退款中",
    "refunded": "已退款",
}
ORDER_KIND = {"online": "线上订单", "contract": "合同订单"}
ACCOUNT = {"pending": "待结算", "matured": "已成熟", "available": "可用", "debt": "欠分", "issuance": "商户发放", "redemption": "商户兑换", "expiry": "商户过期"}
TOUCH = {
    "visit": "访问",
    "scan": "扫码",
    "sign_in": "登录",
    "bind": "绑定",
    "bind_refused": "绑定被拒",
    "lead": "线索",
    "lead_reviewed": "线索审核",
    "order": "下单",
    "paid": "支付",
    "shipped": "发货",
    "received": "收货",
    "completed": "完成",
    "refunded": "退款",
}
LEAD_STATUS = {"new": "待审核", "valid": "有效", "invalid": "无效"}
FOLLOW_UP = {"new": "待跟进", "contacted": "已联系", "converted": "已成交", "lost": "已流失"}
LEAD_SOURCE = {"arrival": "分享进店", "contact": "留资"}
CHANNEL = {
    "miniprogram_code": "小程序码",
    "official_account_qr": "公众号二维码",
    "h5_link": "H5 链接",
    "moments_poster": "朋友圈海报",
    "partner": "合作渠道",
    "invite_code": "邀请码",
}
COMMISSION_MODE = {"per_lead": "按有效线索", "per_deal": "按成交"}
DISTRIBUTOR_STATUS = {"pending": "待审核", "approved": "已通过", "rejected": "已拒绝", "frozen": "已冻结", "disabled": "已停用"}
TX_KIND = {
    "order_reward": "订单奖励",
    "mature": "成熟",
    "settle": "结算",
    "reversal": "冲正",
    "lead_reward": "有效线索奖励",
    "share_reward": "分享奖励",
    "stage_bonus": "阶段奖励",
    "starter": "新人积分",
    "redeem": "兑换",
    "redeem_cancel": "兑换取消",
    "adjust": "人工调整",
    "expire": "过期",
}
REDEMPTION_STATUS = {"placed": "待发放", "fulfilled": "已发放", "cancelled": "已取消"}
ITEM_KIND = {"goods": "实物商品", "privilege": "权益", "invite_code": "邀请码"}
SETTLEMENT_MODE = {"weekly": "每周", "monthly": "每月", "threshold": "达到门槛"}
REFUND_STATUS = {
    "requested": "待审批",
    "approved": "已批准，待提交微信",
    "processing": "微信处理中",
    "succeeded": "已退款",
    "rejected": "已拒绝",
    "failed": "失败",
    "abnormal": "异常（待处理）",
}
PRODUCT_STATUS = {"on_sale": "在售", "off_sale": "已下架"}
ORDER_EVENT = {
    "created": "下单",
    "prepay": "发起支付",
    "pay_window_extended": "延长支付时间",
    "paid": "支付成功",
    "paid_after_close": "关闭后收到付款",
    "shipped": "发货",
    "received": "确认收货",
    "completed": "完成",
    "closed": "关闭",
    "refund_requested": "申请退款",
    "refund_approved": "批准退款",
    "refund_submitted": "退款已提交微信",
    "refund_succeeded": "退款成功",
    "refund_ended": "退款结束",
    "refund_abnormal": "退款异常",
    "refund_settled_offline": "线下处理异常退款",
    "refund_resent": "重新发起异常退款",
    "refund_resend_refused": "重新发起被微信拒绝",
    "refund_closed": "退款结束，订单恢复",
    "refund_reopened": "退款重新打开",
    "refunded": "全额退款",
    "installment_received": "收到分期款",
}
#: What the console says for the errors a form may meet, by envelope code.
FEEDBACK_STATE = {"new": "待处理", "in_progress": "处理中", "resolved": "已解决", "dismissed": "已驳回"}
FEEDBACK_KIND = {"feedback": "反馈", "report": "举报"}
FEEDBACK_CATEGORY = {
    "suggestion": "建议", "product": "产品", "service": "服务",
    "false_advertising": "夸大或虚假宣传", "harassment": "骚扰", "other": "其他",
}

ERRORS = {
    40110: "用户名或密码错误。",
    40485: "没有这门课程。",
    40486: "没有这个课时。",
    40490: "没有这条反馈。",
    40985: "课程至少需要一个课时。",
    40990: "这条反馈的状态已变化，请刷新后查看。",
    40311: "你的角色无权进行此操作。",
    40910: "该用户名已存在。",
    42900: "尝试次数过多，请稍后再试。",
    42200: "输入有误，请检查后重试。",
    40400: "找不到该记录。",
    40436: "找不到该版本的分销规则。",
    40480: "找不到该公告。",
}

OUTBOX_STATE = {"queued": "待发送", "sending": "发送中", "sent": "已发送", "dropped": "未发出", "failed": "发送失败"}
NOTIFY_EVENT = {
    "points_pending": "获得积分（待结算）",
    "points_available": "积分结算到账",
    "order_shipped": "订单发货",
    "refund_result": "退款结果",
    "distributor_decided": "分销员申请结果",
    "lead_valid": "线索有效",
    "redemption_fulfilled": "兑换已发放",
}
MESSAGE_CHANNEL = {"subscribe": "小程序订阅消息", "template": "公众号模板消息"}
REVIEW_STATE = {"open": "待审核", "frozen": "已冻结分销员", "released": "已放行", "reversed": "已冲回", "false_positive": "误报"}
RISK_EVENT = {"sign_in": "登录", "bind": "绑定", "lead": "线索", "payment": "支付", "refund": "退款", "redemption": "兑换", "scene": "申请推广码"}
HOLD_STATE = {"held": "扣留中", "released": "已放行", "reversed": "已冲回"}
REVIEW_DECISION = {"release": "放行奖励", "reverse": "冲回奖励", "freeze": "冻结分销员", "false_positive": "标记误报", "reopen": "重新打开"}
IDENTITY_KIND = {"phone": "手机号", "unionid": "unionid", "address": "收货地址", "payer": "付款人", "client": "客户端地址"}

TABLES = {
    "role": ROLE,
    "member_status": MEMBER_STATUS,
    "order_status": ORDER_STATUS,
    "order_kind": ORDER_KIND,
    "account": ACCOUNT,
    "touch": TOUCH,
    "lead_status": LEAD_STATUS,
    "follow_up": FOLLOW_UP,
    "lead_source": LEAD_SOURCE,
    "channel": CHANNEL,
    "commission_mode": COMMISSION_MODE,
    "distributor_status": DISTRIBUTOR_STATUS,
    "tx_kind": TX_KIND,
    "redemption_status": REDEMPTION_STATUS,
    "item_kind": ITEM_KIND,
    "settlement_mode": SETTLEMENT_MODE,
    "refund_status": REFUND_STATUS,
    "product_status": PRODUCT_STATUS,
    "order_event": ORDER_EVENT,
    "outbox_state": OUTBOX_STATE,
    "notify_event": NOTIFY_EVENT,
    "message_channel": MESSAGE_CHANNEL,
    "feedback_state": FEEDBACK_STATE,
    "feedback_kind": FEEDBACK_KIND,
    "feedback_category": FEEDBACK_CATEGORY,
    "review_state": REVIEW_STATE,
    "risk_event": RISK_EVENT,
    "hold_state": HOLD_STATE,
    "review_decision": REVIEW_DECISION,
    "identity_kind": IDENTITY_KIND,
}


def label(value: Any, table: str) -> str:
    """The Chinese word for an enum value (or its raw value when there is none)."""
    raw = getattr(value, "value", value)
    return TABLES[table].get(str(raw), str(raw)) if raw is not None else ""


def yuan(fen: int | None) -> str:
    """Fen as yuan with two decimals and thousands separators: 123456 → ¥1,234.56 (integer arithmetic)."""
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def fen(text: str, *, maximum: int = 100_000_000_00) -> int | None:
    """Yuan as typed ("12", "12.5", "1,234.56") in whole fen, without floats; None when it is not an amount
    of at most two decimals between 0.01 and ``maximum`` fen."""
    cleaned = text.strip().replace(",", "").replace("，", "").lstrip("¥￥")
    whole, dot, cents = cleaned.partition(".")
    if not whole.isascii() or not whole.isdigit() or len(whole) > 12 or (dot and not (cents.isascii() and cents.isdigit() and len(cents) <= 2)):
        return None
    value = int(whole) * 100 + int(cents.ljust(2, "0") or 0)
    return value if 0 < value <= maximum else None


def points(hundredths: int | None) -> str:
    """Hundredths of a point as points: 12345 → 123.45."""
    if hundredths is None:
        return "—"
    sign = "-" if hundredths < 0 else ""
    whole, cents = divmod(abs(int(hundredths)), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def percent_bp(bp: int | None) -> str:
    """A rate in basis points as a percentage: 1234 → 12.34%; None (nothing to divide by) → —."""
    if bp is None:
        return "—"
    sign = "-" if bp < 0 else ""
    whole, cents = divmod(abs(int(bp)), 100)
    return f"{sign}{whole}.{cents:02d}%"


def china_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored (UTC) time on the merchant's wall clock."""
    return local(value).strftime(fmt) if value else "—"


def error_text(code: int, message: str) -> str:
    return ERRORS.get(code, message)
