"""The member zone's blueprint, its sign-in, its home page and what every zone page shares.

Every page is a GET that renders a template, or a POST from one of the zone's own forms that
answers with a redirect (303) after success; anything refused renders the zone's error card with
the reason in Chinese, and nothing is committed (``db.finish_request`` commits below 400 only).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from server import db
from server.accounts.models import Member, MemberStatus
from server.console import labels
from server.errors import AppError
from server.html import content_security_policy, csp_nonce, image_origins, override_html_headers, request_script_sources
from server.memberzone import session, wechat_share
from server.points.queries import member_balances
from server.referral import official_account as zone_services
from server.settings.services import get_setting
from server.wechat import official_account

bp = Blueprint("memberzone", __name__, url_prefix="/h5/member", template_folder="templates")

PAGE_SIZE = 20
#: The cards shown instead of a page: why the visitor cannot see the zone (or this page).
STATES = {
    # state: (title, text)
    "not_member": ("还差一步", "你还没有使用过「{shop}」小程序。请在微信中搜索并打开小程序，登录后再回到这里，就能看到你的积分、团队和专属分享链接。"),
    "disabled": ("账号已停用", "如有疑问，请联系客服。"),
    "unidentified": ("无法识别你的身份", "请先关注「{shop}」公众号并打开小程序登录，再从公众号菜单进入会员专区。"),
    "snapshot": ("请前往完整页面使用", "你正在浏览朋友圈里的页面快照，微信不会在快照中告诉我们你是谁。请点击页面底部的「前往完整页面」，再进入会员专区。"),
    "unavailable": ("微信暂时无法访问", "请稍后再从公众号菜单进入。"),
    "expired": ("链接已失效", "请从公众号菜单重新进入会员专区。"),
    "form_expired": ("页面已过期", "请返回刷新页面后再提交。"),
}
ERROR_TITLES = {400: "请求无效", 403: "无权访问", 404: "没有找到", 409: "操作冲突", 422: "输入有误", 429: "操作过于频繁", 502: "微信服务暂不可用"}
#: What members read for the errors they can meet in the zone; anything else shows the status's title.
MEMBER_ERRORS = {
    40430: "你还不是推广员。",
    40480: "没有找到这条公告，或它已撤回。",
    40930: "你已提交过申请，或已经是推广员。",
    40931: "你的推广员资格已被冻结或停用，暂不能重新申请。",
    40440: "没有找到这件商品，或它已下架。",
    40441: "没有找到这条兑换记录。",
    40442: "没有找到这张结算单。",
    40940: "可用积分不足。",
    40941: "这次提交与之前的不一致，请刷新页面后重试。",
    40942: "这件商品已兑完。",
    40944: "你已达到这件商品的兑换上限。",
    42200: "输入有误，请检查后重试。",
}


def member_error(error: AppError) -> str:
    """What a member reads for ``error``."""
    return MEMBER_ERRORS.get(error.code) or labels.error_text(error.code, "") or ERROR_TITLES.get(error.http_status, "出错了")


@dataclass(frozen=True)
class Section:
    """A link on the zone's home page: endpoint, title and a one-line description."""

    endpoint: str
    title: str
    text: str


#: The home page's links, in order; page modules append theirs.
SECTIONS: list[Section] = []


def add_section(endpoint: str, title: str, text: str) -> None:
    SECTIONS.append(Section(endpoint, title, text))


# -- every zone request ------------------------------------------------------------------------------


@bp.after_request
def _zone_headers(response: Response) -> Response:
    # The html module's policy, with ``data:`` images: the page's empty icon, so the browser asks for no favicon.
    # Built after the view, so it allows the script files the page asked for (WeChat's JS-SDK).
    override_html_headers({"Content-Security-Policy": content_security_policy(
        csp_nonce(), image_origins() | {"data:"}, request_script_sources()
    )})
    # Personal pages: no shared cache may keep one member's page for another.
    response.headers["Cache-Control"] = "no-store"
    return response


def shop_name() -> str:
    return str(get_setting(db.session(), "shop_name"))


def page(template: str, status: int = 200, **context: Any) -> Response:
    """Render a zone template (it extends memberzone/base.html) with what every page shows."""
    return Response(render_template(template, shop_name=shop_name(), **context), status=status)


def state_page(state: str, status: int = 200) -> Response:
    title, text = STATES[state]
    return page("memberzone/state.html", status, state=state, title=title, text=text.format(shop=shop_name()))


def error_page(status: int, detail: str = "") -> Response:
    return page("memberzone/state.html", status, state="error", title=ERROR_TITLES.get(status, "出错了"), text=detail or "请返回上一页重试。")


@bp.errorhandler(AppError)
def _app_error(error: AppError) -> Response:
    return error_page(error.http_status, member_error(error))


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    return error_page(error.code or 500)


def zone_view(view: Callable[..., Any]) -> Callable[..., Any]:
    """The view gets the signed-in member as its first argument; anyone else is sent through OAuth
    (a GET) or shown why not. A POST must carry the page's form token."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        unionid = session.zone_unionid()
        if unionid is None:
            if request.method != "GET":
                return state_page("expired", 400)
            return session.start_oauth("snsapi_base", request.full_path.rstrip("?"))
        member = zone_services.member_for_unionid(db.session(), unionid)
        if member is None:
            return state_page("not_member")
        if member.status != MemberStatus.active:
            return state_page("disabled", 403)
        if request.method == "POST" and not session.form_token_valid(request.form.get("form_token", ""), unionid):
            return state_page("form_expired", 400)
        g.zone_unionid = unionid
        if request.method == "GET":
            g.zone_share = wechat_share.zone_share(member)
        return view(member, *args, **kwargs)

    return wrapped


@bp.app_template_global()
def form_token() -> str:
    return session.form_token(g.zone_unionid)


def page_arg(name: str = "page") -> int:
    """A page number from the query string; anything unreadable is the first page."""
    value = request.args.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and 0 < int(value) <= 100_000 else 1


@dataclass(frozen=True)
class Pager:
    page: int
    total: int
    size: int = PAGE_SIZE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    def url(self, page: int, **args: Any) -> str:
        assert request.endpoint is not None
        return url_for(request.endpoint, **(request.view_args or {}), **{**request.args.to_dict(), **args, "page": page})


# -- the home page and sign-in -------------------------------------------------------------------------


@bp.get("")
@zone_view
def home(member: Member) -> BaseResponse:
    """The member centre: balances, team counts, the share link and the official-account QR code."""
    sess = db.session()
    zone = zone_services.member_zone(sess, member)
    balances = member_balances(sess, member.id)
    # Commits early, by design: no transaction is open while WeChat draws the QR code.
    db.commit()
    qr = None
    try:
        qr = zone_services.scene_qrcode(official_account(), zone.oa_scene.code, zone.oa_expire_seconds)
    except AppError:
        current_app.logger.warning("member zone shown without its QR code: WeChat failed")
    share_url = f"{current_app.config['PUBLIC_BASE_URL']}/s/{zone.share_scene.code}"
    return page("memberzone/home.html", member=member, zone=zone, balances=balances, share_url=share_url, qr=qr, sections=SECTIONS)


@bp.get("/oauth")
def oauth() -> BaseResponse:
    """Where WeChat's OAuth sends the browser back: identify the visitor, set the cookie, go where they were going."""
    checked = session.checked_state(request.args.get("state", ""))
    if checked is None:
        # Not a redirect back to OAuth: a browser that refuses cookies would loop for ever.
        return state_page("expired", 400)
    scope, going_to = checked
    code = request.args.get("code")
    if not code:
        return state_page("unidentified")  # the user declined snsapi_userinfo's consent screen
    try:
        identity = zone_services.oauth_identity(official_account(), code)
    except zone_services.InvalidOAuthCodeError:
        return state_page("expired", 400)
    except AppError:
        return state_page("unavailable", 502)
    if identity.snapshot:
        # A Moments snapshot page: WeChat gives every viewer the same virtual openid, so nobody
        # may sign in (or be bound) through it; the visitor has to open the full page.
        return state_page("snapshot", 403)
    if identity.unionid is None:
        if scope == "snsapi_base":
            # Not a follower: only the consent screen of snsapi_userinfo yields a unionid.
            return session.start_oauth("snsapi_userinfo", going_to)
        return state_page("unidentified")
    return session.sign_in(redirect(going_to), identity.unionid)


#: The console's filters for money, points, time and enum words, which zone templates use too.
FILTERS: dict[str, Callable[..., str]] = {"yuan": labels.yuan, "points": labels.points, "china_time": labels.china_time, "label": labels.label}
for _name, _filter in FILTERS.items():
    bp.add_app_template_filter(_filter, _name)
