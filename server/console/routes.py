"""The console's pages: sign-in, dashboard, members, audit log, settings, staff, own password.

A page parses its query or form, calls the services the admin API calls (or reads through
``queries``), and renders a template; a form that changes something answers with a redirect
(303) after success, or the same page with the error (4xx, so nothing is committed).
"""
from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any, Mapping

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from server import db, security
from server.accounts import services as accounts
from server.accounts import staff_accounts
from server.accounts.models import Member, MemberStatus, Staff, StaffRole
from server.api import client_address
from server.console import labels, queries
from server.console.labels import error_text
from server.console.roles import allowed
from server.console.session import console_view, current_staff, end, safe_next, start
from server.errors import AppError, NotFoundError, ValidationError
from server.html import override_html_headers
from server.orders.contracts import confirmation_queue
from server.referral.inviter_changes import change_inviter
from server.referral.models import Binding
from server.settings import services as settings

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")
#: The bare addresses a merchant types: / and /admin lead to the console.
entry_bp = Blueprint("console_entry", __name__)

PAGE_SIZE = 20
COUNT_CAP = queries.COUNT_CAP

csrf = CSRFProtect()

#: The console's policy: this origin's scripts, styles and images (charts draw on canvas), data: for
#: images the charts export; no inline script or style, no framing, forms post only here.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

ERROR_TITLES = {
    400: "请求无效",
    401: "需要登录",
    403: "无权访问",
    404: "页面不存在",
    405: "不支持的请求方式",
    409: "操作冲突",
    413: "提交的内容过大",
    422: "输入有误",
    429: "操作过于频繁",
    500: "服务器出错了",
    502: "微信服务暂不可用",
}


def error_page(status: int, detail: str = "") -> tuple[str, int]:
    return render_template("console/error.html", status=status, title=ERROR_TITLES.get(status, "出错了"), detail=detail), status


# -- every console request ------------------------------------------------------------------------


@bp.before_request
def _console_request() -> None:
    override_html_headers({"Content-Security-Policy": CONSOLE_CSP, "Referrer-Policy": "same-origin"})
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()


@bp.after_request
def _no_store(response: Any) -> Any:
    # Pages show personal data: never kept by shared caches or shown again from the back button after logout.
    if response.mimetype in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError) -> Any:
    return error_page(400, "表单已过期或缺少安全令牌（CSRF），请刷新页面后重试。")


@bp.errorhandler(AppError)
def _app_error(error: AppError) -> Any:
    return error_page(error.http_status, labels.error_text(error.code, ""))


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    return error_page(error.code or 500)


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> Any:
    current_app.logger.exception("unhandled error in the console")
    return error_page(500)


@entry_bp.get("/")
@entry_bp.get("/admin")
@entry_bp.get("/admin/")
@entry_bp.get("/console")
def to_console() -> Response:
    return redirect(url_for("console.dashboard"))


# -- helpers ------------------------------------------------------------------------------------


def int_arg(name: str, default: int, lo: int = 1, hi: int = 100_000) -> int:
    """A whole-number query argument within bounds; anything else is the default (list filters are forgiving)."""
    value = request.args.get(name, "").strip()
    if not value.isdigit() or len(value) > 9:
        return default
    return min(max(int(value), lo), hi)


def date_arg(name: str, problems: list[str], args: Mapping[str, str] | None = None) -> date | None:
    """A China-time day filter (``YYYY-MM-DD``) of ``args`` (the request's query by default); a bad one is a problem."""
    value = (request.args if args is None else args).get(name, "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(f"日期格式应为 YYYY-MM-DD：{value[:20]}")
        return None


def form_text(name: str, limit: int = 256) -> str:
    return request.form.get(name, "").strip()[:limit]


def field_errors(error: AppError) -> dict[str, str]:
    data = error.data if isinstance(error.data, dict) else {}
    return {str(e.get("field")): str(e.get("error")) for e in data.get("errors", []) if isinstance(e, dict)}


def pages(total: int) -> dict[str, Any]:
    """The pager of a list counted with ``count_cap=COUNT_CAP``: past the cap it says "more than" and
    offers the next page for as long as pages keep coming."""
    page = int_arg("page", 1)
    if total > COUNT_CAP:
        return {"page": page, "pages": max(COUNT_CAP // PAGE_SIZE, page + 1), "total": COUNT_CAP, "more": True}
    return {"page": page, "pages": max(1, math.ceil(total / PAGE_SIZE)), "total": total, "more": False}


def page_url(page: int) -> str:
    """This list page with the same filters on another page."""
    args: dict[str, Any] = {**request.args.to_dict(), **(request.view_args or {}), "page": page}
    return url_for(request.endpoint or "console.dashboard", **args)


# -- sign-in -------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The sign-in form: the admin API's sign-in (same rate limits), kept in the session cookie."""
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("console/login.html", next_url=next_url, username="")
    username, password = form_text("username", 64), request.form.get("password", "")[:256]
    if not username or not password:
        return render_template("console/login.html", next_url=next_url, username=username, error="请输入用户名和密码。"), 400
    try:
        _staff, token, _ttl = accounts.sign_in_staff(
            db.session(), username=username, password=password, client_address=client_address(), user_agent=request.headers.get("User-Agent", "")
        )
    except AppError as error:
        return render_template("console/login.html", next_url=next_url, username=username, error=error_text(error.code, error.message)), error.http_status
    start(token)
    return redirect(next_url or url_for("console.dashboard"), 303)


@bp.post("/logout")
def logout() -> Response:
    end()
    flash("已退出登录。", "info")
    return redirect(url_for("console.login"), 303)


@bp.route("/account/password", methods=["GET", "POST"])
@console_view("account")
def password() -> Any:
    """Change one's own password; the old one is required, and every other session ends."""
    if request.method == "GET":
        return render_template("console/password.html", errors={})
    old, new, again = (request.form.get(k, "")[:256] for k in ("old_password", "new_password", "new_password_again"))
    if new != again:
        return render_template("console/password.html", errors={"new_password_again": "两次输入的新密码不一致。"}), 422
    staff = current_staff()
    try:
        staff_accounts.change_password(db.session(), staff, old_password=old, new_password=new)
    except AppError as error:
        errors = field_errors(error) or {"old_password": "当前密码不正确。"}
        return render_template("console/password.html", errors=errors), error.http_status
    # Every token was revoked with the old password; this browser stays signed in with a new one.
    _staff, token, _ttl = accounts.sign_in_staff(
        db.session(), username=staff.username, password=new, client_address=client_address(), user_agent=request.headers.get("User-Agent", "")
    )
    start(token)
    flash("密码已修改，其他设备上的登录已失效。", "success")
    return redirect(url_for("console.dashboard"), 303)


# -- dashboard ----------------------------------------------------------------------------------

#: The dashboard's to-do list: queue key, the area whose staff act on it, label, the console page that
#: lists it and its filter.
TODOS: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("applications", "queue.applications", "分销员申请待审核", "console.distributors", {"status": "pending"}),
    ("leads", "queue.leads", "线索待审核", "console.leads", {"status": "new"}),
    ("refunds", "queue.refunds", "退款待审批", "console.refunds", {"status": "requested"}),
    ("refunds_abnormal", "queue.refund_problems", "异常退款待处理", "console.refunds", {"status": "abnormal"}),
    ("refunds_failed", "queue.refund_problems", "近 30 天失败的退款", "console.refunds", {"status": "failed"}),
    ("redemptions", "queue.redemptions", "兑换待发放", "console.redemptions", {"status": "placed"}),
    ("risk", "queue.risk", "风控审核待处理", "console.risk_reviews", {"state": "open"}),
    ("confirmations", "queue.confirmations", "合同尾款待财务确认", "console.contracts", {"queue": "confirm"}),
    ("feedback", "queue.feedback", "反馈与举报待处理", "console.feedback", {"state": "new"}),
)


@bp.get("/")
@console_view("dashboard")
def dashboard() -> Any:
    sess = db.session()
    staff = current_staff()
    counts = queries.queue_counts(sess)
    if allowed(staff.role, "queue.confirmations"):
        counts["confirmations"] = confirmation_queue(sess, offset=0, limit=1)[1]
    todos = [
        {"label": label, "count": counts.get(key, 0), "url": url_for(endpoint, **args)}
        for key, area, label, endpoint, args in TODOS
        if allowed(staff.role, area)
    ]
    return render_template(
        "console/dashboard.html",
        periods=queries.PERIODS,
        figures=queries.period_figures(sess),
        outstanding=queries.outstanding_points(sess),
        todos=todos,
    )


@bp.get("/dashboard/trend.json")
@console_view("dashboard")
def dashboard_trend() -> Response:
    """Daily series for the dashboard's charts (``days`` 7 to 90, default 30)."""
    days = int_arg("days", 30, lo=7, hi=90)
    return jsonify(queries.trend(db.session(), days))


# -- members ------------------------------------------------------------------------------------


def member_filters(args: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The member list's selection for the filters in ``args`` (search and status), and its problems (none)."""
    q = args.get("q", "").strip()[:64]
    status_arg = args.get("status", "")
    status = MemberStatus(status_arg) if status_arg in MemberStatus._value2member_map_ else None
    digits = q.lstrip("+")
    digest = security.digest(q, "phone") if digits.isdigit() and len(digits) >= 7 else None
    return queries.members_query(q=q or None, phone_digest=digest, status=status), []


@bp.get("/members")
@console_view("members")
def members() -> Any:
    sess = db.session()
    q = request.args.get("q", "").strip()[:64]
    status_arg = request.args.get("status", "")
    status = MemberStatus(status_arg) if status_arg in MemberStatus._value2member_map_ else None
    stmt, _ = member_filters(request.args)
    page = int_arg("page", 1)
    rows, total = db.paginate(sess, stmt, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(Member.id.desc(),), count_cap=COUNT_CAP)
    return render_template(
        "console/members.html",
        rows=rows,
        inviters=queries.inviters_of(sess, [m.id for m in rows]),
        q=q,
        status=status.value if status else "",
        pager=pages(total),
    )


def _member_or_404(member_id: int) -> Member:
    member = db.session().get(Member, member_id)
    if member is None:
        raise NotFoundError("no such member")
    return member


@bp.get("/members/<int:member_id>")
@console_view("members")
def member(member_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    sess = db.session()
    found = _member_or_404(member_id)

    binding = sess.get(Binding, found.id)
    orders, orders_total = queries.member_orders(sess, found.id)
    entries, entries_total = queries.member_entries(sess, found.id)
    staff = current_staff()
    return render_template(
        "console/member.html",
        member=found,
        binding=binding,
        inviter=sess.get(Member, binding.inviter_id) if binding else None,
        upline=sess.get(Member, binding.upline_id) if binding and binding.upline_id else None,
        team=queries.team(sess, found.id),
        distributor=queries.distributor_of(sess, found.id),
        orders=orders,
        orders_total=orders_total,
        balances=queries.member_balances(sess, found.id),
        entries=entries,
        entries_total=entries_total,
        count_cap=COUNT_CAP,
        timeline=queries.member_timeline(sess, found.id),
        leads=queries.member_leads(sess, found.id),
        audit=queries.audit_of(sess, f"member:{found.id}") if allowed(staff.role, "audit") else None,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.post("/members/<int:member_id>/inviter")
@console_view("members.change_inviter")
def member_inviter(member_id: int) -> Any:
    """The owner changes (or, with "clear", removes) a member's inviter, with a reason."""
    _member_or_404(member_id)
    clear = request.form.get("action") == "clear"
    raw = form_text("inviter_id", 32)
    if not clear and not (raw.isdigit() and len(raw) <= 18):
        return member(member_id, errors={"inviter_id": "请输入新邀请人的会员 ID（数字）。"}, status=422)
    try:
        change_inviter(db.session(), member_id, None if clear else int(raw), reason=form_text("reason", 1000), staff_id=current_staff().id)
    except ValidationError as error:
        return member(member_id, errors=_inviter_errors(error), status=error.http_status)
    flash("已清除邀请人。" if clear else "邀请人已修改；已下的订单保持原奖励归属。", "success")
    return redirect(url_for("console.member", member_id=member_id), 303)


#: The inviter form's refusals in Chinese, by the service's reason.
INVITER_REFUSALS = {
    "self": "不能把会员设为自己的邀请人。",
    "cycle": "新邀请人是该会员的下级，会形成循环。",
    "sharer_disabled": "新邀请人的账号或分销资格已停用。",
    "sharer_frozen": "新邀请人是已冻结的分销员。",
    "unchanged": "该会员的邀请人已经是此人。",
    "not_bound": "该会员没有邀请人。",
}


def _inviter_errors(error: ValidationError) -> dict[str, str]:
    data = error.data if isinstance(error.data, dict) else {}
    found: dict[str, str] = {}
    for item in data.get("errors", []):
        field = str(item.get("field"))
        if item.get("reason") in INVITER_REFUSALS:
            found[field] = INVITER_REFUSALS[item["reason"]]
        elif field == "reason":
            found[field] = "请填写原因（最多 255 字）。"
        else:
            found[field] = "找不到该会员。" if item.get("error") == "no such member" else str(item.get("error"))
    return found


# -- audit log ----------------------------------------------------------------------------------


def audit_filters(args: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The audit log's selection for the filters in ``args`` (actor, action, object, dates), and their problems."""
    problems: list[str] = []
    actor = args.get("actor", "")
    staff_id = int(actor) if actor.isdigit() and len(actor) <= 18 else None
    start_day, end_day = date_arg("from", problems, args), date_arg("to", problems, args)
    stmt = queries.audit_query(
        staff_id=staff_id,
        from_cli=actor == "cli",
        action=args.get("action", "").strip()[:64] or None,
        target=args.get("object", "").strip()[:64] or None,
        start=queries.day_start(start_day) if start_day else None,
        end=queries.day_start(end_day + timedelta(days=1)) if end_day else None,
    )
    return stmt, problems


@bp.get("/audit")
@console_view("audit")
def audit() -> Any:
    sess = db.session()
    stmt, problems = audit_filters(request.args)
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess, stmt, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(queries.AuditEntry.id.desc(),), count_column=queries.AuditEntry.id, scalars=False,
        count_cap=COUNT_CAP,
    )
    return render_template(
        "console/audit.html", rows=rows, staff=queries.staff_names(sess), problems=problems, args=request.args, pager=pages(total)
    )


# -- settings -----------------------------------------------------------------------------------


@bp.get("/settings")
@console_view("settings")
def settings_page(errors: dict[str, str] | None = None, submitted: dict[str, str] | None = None, status: int = 200) -> Any:
    values = settings.all_settings(db.session())
    return render_template(
        "console/settings.html", specs=settings.specs(), values=values, errors=errors or {}, submitted=submitted or {}
    ), status


@bp.post("/settings/<key>")
@console_view("settings.edit")
def setting_update(key: str) -> Any:
    """The owner changes one setting, validated and audited by the settings service."""
    spec = settings.spec_for(key)
    value = request.form.get("value", "")[:1000]
    try:
        settings.change_setting(db.session(), key, value, staff_id=current_staff().id)
    except ValidationError as error:
        message = field_errors(error).get(key) or error.message
        return settings_page(errors={key: message}, submitted={key: value}, status=error.http_status)
    flash(f"已保存 {spec.key}。", "success")
    return redirect(url_for("console.settings_page") + f"#setting-{key}", 303)


# -- staff ----------------------------------------------------------------------------------------


@bp.get("/staff")
@console_view("staff")
def staff_page(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    rows = queries.staff_names(db.session())
    return render_template("console/staff.html", rows=rows, roles=list(StaffRole), errors=errors or {}, form=request.form if errors else {}), status


def _staff_or_404(staff_id: int) -> Staff:
    found = db.session().get(Staff, staff_id)
    if found is None:
        raise NotFoundError("no such staff account")
    return found


def _role(value: str) -> StaffRole | None:
    return StaffRole(value) if value in StaffRole._value2member_map_ else None


@bp.post("/staff")
@console_view("staff")
def staff_create() -> Any:
    role = _role(request.form.get("role", ""))
    if role is None:
        return staff_page(errors={"role": "请选择角色。"}, status=422)
    try:
        created = accounts.create_staff(
            db.session(), username=form_text("username", 64), password=request.form.get("password", "")[:256], role=role, created_by=current_staff().id
        )
    except AppError as error:
        errors = field_errors(error) or {"username": error_text(error.code, error.message)}
        return staff_page(errors=errors, status=error.http_status)
    flash(f"已创建员工账号 {created.username}。", "success")
    return redirect(url_for("console.staff_page"), 303)


@bp.post("/staff/<int:staff_id>")
@console_view("staff")
def staff_update(staff_id: int) -> Any:
    """Enable or disable an account, or change its role (the services refuse locking the shop out)."""
    target = _staff_or_404(staff_id)
    sess = db.session()
    try:
        if "active" in request.form:
            accounts.set_staff_active(sess, target, request.form["active"] == "1", by=current_staff())
        else:
            role = _role(request.form.get("role", ""))
            if role is None:
                return staff_page(errors={f"role-{staff_id}": "请选择角色。"}, status=422)
            staff_accounts.set_staff_role(sess, target, role, by=current_staff())
    except AppError as error:
        reason = "不能停用自己的账号。" if "own account" in error.message else "店铺至少需要一名在用的店主；请由另一位店主修改。"
        return staff_page(errors={f"row-{staff_id}": reason}, status=error.http_status)
    flash(f"已更新 {target.username}。", "success")
    return redirect(url_for("console.staff_page"), 303)


@bp.route("/<path:_rest>")
def not_found(_rest: str) -> Any:
    """Unknown console addresses get the console's own 404 page."""
    abort(404)


def nav_items() -> list[tuple[str, str, str]]:
    """The navigation the signed-in staff member's role may use: (endpoint, label, area)."""
    staff = g.get("staff")
    items = [
        ("console.dashboard", "概览", "dashboard"),
        ("console.members", "会员", "members"),
        ("console.distributors", "分销员", "distributors"),
        ("console.orders", "订单", "orders"),
        ("console.products", "商品", "products"),
        ("console.leads", "线索", "leads"),
        ("console.contracts", "合同", "contracts"),
        ("console.partners", "渠道", "partners"),
        ("console.points", "积分", "points"),
        ("console.redemptions", "兑换", "redemptions"),
        ("console.report_funnel", "报表", "reports"),
        ("console.programme_rules", "规则", "programme"),
        ("console.materials", "素材", "materials"),
        ("console.notices", "公告", "notices"),
        ("console.training", "培训", "training"),
        ("console.feedback", "反馈", "feedback"),
        ("console.notifications", "通知", "notifications"),
        ("console.risk_reviews", "风控", "risk"),
        ("console.posters", "海报", "posters"),
        ("console.settings_page", "设置", "settings"),
        ("console.staff_page", "员工", "staff"),
        ("console.audit", "操作日志", "audit"),
    ]
    return [item for item in items if staff is not None and allowed(staff.role, item[2])]


@bp.app_template_global()
def can(area: str) -> bool:
    staff = g.get("staff")
    return staff is not None and allowed(staff.role, area)


bp.add_app_template_global(nav_items, "console_nav")
bp.add_app_template_global(page_url, "page_url")
bp.add_app_template_filter(labels.yuan, "yuan")
bp.add_app_template_filter(labels.points, "points")
bp.add_app_template_filter(labels.percent_bp, "percent_bp")
bp.add_app_template_filter(labels.china_time, "china_time")
bp.add_app_template_filter(labels.label, "label")
