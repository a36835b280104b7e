"""The console in a real browser: Debian's Chromium driven by Playwright against a live server thread.

One browser and one server (with the demo shop of ``seed-demo``) serve the module. Playwright's own
browser download cannot be used here, so the system ``chromium`` is launched; without it the module
is skipped, saying so (CI installs it with apt). Every page is watched for JavaScript errors and
Content-Security-Policy violations, which Chromium reports as console errors.

With ``CONSOLE_SCREENSHOTS=1`` the screenshots are written to docs/console/ for the README;
otherwise to a temporary directory.
"""
from __future__ import annotations

import io
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from openpyxl import load_workbook
from sqlalchemy import select
from werkzeug.serving import make_server

from sqlalchemy import select

from server import create_app, db
from server.accounts.services import create_staff
from server.accounts.models import Member, StaffRole
from server.demo import DEMO_PASSWORD
from server.orders import payments
from server.orders.models import Order, OrderKind, OrderStatus, Refund, RefundStatus, Sku
from tests.conftest import DemoShop, _empty_database, make_config
from tests.orders.conftest import pay_merchant, sandbox_pay  # noqa: F401  (the sandbox's WeChat Pay, as the order tests use it)
from wechat_sandbox import PayState

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch arguments, with the system Chromium (containers run as root: no sandbox)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--no-sandbox", "--disable-dev-shm-usage"]}


class LiveServer:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def live(database_url: str, sandbox: Any, demo_shop: DemoShop) -> Iterator[LiveServer]:
    """The app on a free port with the demo shop loaded; emptied again when the module is done."""
    app = create_app(make_config(database_url, sandbox))
    demo_shop.load(app)
    with app.app_context():
        create_staff(db.session(), username="changer", password=DEMO_PASSWORD, role=StaffRole.finance)
        db.commit()
    server = LiveServer(app)
    yield server
    server.stop()
    _empty_database(app)
    if app.extensions["redis"] is not None:
        app.extensions["redis"].flushdb()
    app.extensions["db_engine"].dispose()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("CONSOLE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path_factory.mktemp("console-screenshots")


@pytest.fixture
def errors(page: Any) -> list[str]:
    """JavaScript errors and console errors (CSP violations among them) of the test's page."""
    found: list[str] = []
    page.on("console", lambda message: found.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: found.append(str(error)))
    return found


def sign_in(page: Any, live: LiveServer, username: str, password: str = DEMO_PASSWORD) -> None:
    page.goto(f"{live.url}/console/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live.url}/console/")


def test_owner_sees_the_dashboard_with_charts_and_no_script_errors(page: Any, live: LiveServer, errors: list[str], shots: Path) -> None:
    page.set_viewport_size(LAPTOP)
    page.goto(f"{live.url}/admin")
    assert page.url.startswith(f"{live.url}/console/login")
    page.screenshot(path=str(shots / "login.png"))
    sign_in(page, live, "owner")
    page.wait_for_selector("#chart-counts[data-rendered=true] canvas")
    page.wait_for_selector("#chart-money[data-rendered=true] canvas")
    assert page.locator("[data-figure='30d-new_members']").inner_text() == "8"
    assert page.locator(".todos li").count() == 9  # the owner acts on every queue: feedback and reports, the open risk reviews among them
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    # Members: htmx filters in place and keeps the filter in the URL.
    page.click("nav.nav >> text=会员")
    page.wait_for_url(f"{live.url}/console/members")
    page.screenshot(path=str(shots / "members.png"), full_page=True)
    page.fill("#q", "卡罗")
    page.wait_for_url(f"{live.url}/console/members?q=%E5%8D%A1%E7%BD%97&status=")
    assert page.locator("#results tbody tr").count() == 1
    page.click("#results >> text=卡罗尔")
    page.wait_for_selector("text=直接邀请（1）")
    page.fill("#q", "") if page.locator("#q").count() else None
    page.goto(f"{live.url}/console/members?q=demo-alice")
    page.click("#results >> text=爱丽丝")
    page.wait_for_selector("text=修改邀请人（店主）")
    page.screenshot(path=str(shots / "member.png"), full_page=True)

    page.goto(f"{live.url}/console/settings")
    page.screenshot(path=str(shots / "settings.png"))
    page.goto(f"{live.url}/console/audit")
    page.screenshot(path=str(shots / "audit.png"))
    page.goto(f"{live.url}/console/staff")
    page.screenshot(path=str(shots / "staff.png"))

    page.set_viewport_size(PHONE)
    page.goto(f"{live.url}/console/")
    page.wait_for_selector("#chart-money[data-rendered=true] canvas")
    page.screenshot(path=str(shots / "dashboard-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "the phone layout scrolls sideways"
    assert errors == []


def test_operations_neither_sees_nor_reaches_owner_and_finance_pages(page: Any, live: LiveServer, errors: list[str]) -> None:
    sign_in(page, live, "ops")
    nav = page.locator("nav.nav").inner_text()
    assert "会员" in nav and "员工" not in nav and "操作日志" not in nav
    todos = page.locator(".todos").inner_text()
    assert "分销员申请待审核" in todos and "合同尾款待财务确认" not in todos
    for path in ("/console/staff", "/console/audit"):
        response = page.goto(f"{live.url}{path}")
        assert response.status == 403 and "无权访问" in page.content()
    page.goto(f"{live.url}/console/settings")
    assert page.locator(".setting-form").count() == 0
    assert [e for e in errors if "403" not in e] == []


def test_a_form_without_its_csrf_token_is_refused(page: Any, live: LiveServer) -> None:
    sign_in(page, live, "owner")
    page.goto(f"{live.url}/console/settings")
    form = page.locator("#setting-shop_name form")
    form.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    form.locator("input[name=value]").fill("不该保存的店名")
    form.locator("button").click()
    page.wait_for_selector("text=CSRF")
    page.goto(f"{live.url}/console/settings")
    assert page.locator("#setting-shop_name input[name=value]").input_value() != "不该保存的店名"


def test_logout(page: Any, live: LiveServer) -> None:
    sign_in(page, live, "finance")
    page.click("text=退出")
    page.wait_for_selector("text=已退出登录")
    page.goto(f"{live.url}/console/")
    assert page.url.startswith(f"{live.url}/console/login")


def test_an_idle_session_ends(page: Any, live: LiveServer) -> None:
    sign_in(page, live, "finance")
    # The dashboard fetches its charts' data; let that finish, or its response could carry the cookie of the live session.
    page.wait_for_load_state("networkidle")
    live.app.config["CONSOLE_IDLE_MINUTES"] = 0
    try:
        time.sleep(1.1)
        page.goto(f"{live.url}/console/settings")
        assert page.url.startswith(f"{live.url}/console/login")
        assert "长时间未操作" in page.content()
    finally:
        live.app.config["CONSOLE_IDLE_MINUTES"] = 30


def test_password_change(page: Any, live: LiveServer, errors: list[str]) -> None:
    sign_in(page, live, "changer")
    page.click(".me a")
    page.fill("#old_password", "wrong-password")
    page.fill("#new_password", "brand-new-pass-1")
    page.fill("#new_password_again", "brand-new-pass-1")
    page.click("main button[type=submit]")
    page.wait_for_selector("text=当前密码不正确")
    page.fill("#old_password", DEMO_PASSWORD)
    page.fill("#new_password", "brand-new-pass-1")
    page.fill("#new_password_again", "brand-new-pass-1")
    page.click("main button[type=submit]")
    page.wait_for_selector("text=密码已修改")
    page.click("text=退出")
    sign_in(page, live, "changer", "brand-new-pass-1")
    assert [e for e in errors if "401" not in e] == []


def wait_until(page: Any, expression: str, seconds: float = 10) -> None:
    """Poll ``expression`` in the page (wait_for_function would need eval, which the console's policy forbids)."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def test_owner_approves_an_application_edits_a_tier_in_place_and_previews_a_poster(page: Any, live: LiveServer, errors: list[str], shots: Path) -> None:
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "owner")
    page.click(".todos >> text=分销员申请待审核")
    page.wait_for_url(f"{live.url}/console/distributors?status=pending")
    page.screenshot(path=str(shots / "distributors.png"), full_page=True)
    row = page.locator("#results tbody tr", has_text="方克")
    row.locator("button", has_text="通过").click()
    page.wait_for_selector("text=已通过。")
    assert page.locator("#results tbody tr", has_text="方克").count() == 0
    page.goto(f"{live.url}/console/distributors?q=方克")
    assert "已通过" in page.locator("#results tbody tr", has_text="方克").inner_text()
    page.click("#results >> text=方克 >> nth=0")
    page.wait_for_selector("text=推广记录")
    page.screenshot(path=str(shots / "distributor.png"), full_page=True)

    # Tiers are edited in place: htmx swaps the table, the page does not reload; a refusal shows in place too.
    page.goto(f"{live.url}/console/distributors/tiers")
    page.evaluate("window.__notReloaded = true")
    page.fill("#tier-1 input[name=discount_bp]", "600")
    page.click("#tier-1 button")
    page.wait_for_selector("#tier-1 input[name=discount_bp][value='600']")
    page.fill("#tier-1 input[name=discount_bp]", "abc")
    page.click("#tier-1 button")
    page.wait_for_selector("#tiers >> text=自购折扣应为")
    assert page.evaluate("window.__notReloaded === true")
    page.screenshot(path=str(shots / "distributor-tiers.png"), full_page=True)

    page.click("nav.nav >> text=素材")
    page.wait_for_selector("text=春茶推荐文案")
    page.screenshot(path=str(shots / "materials.png"), full_page=True)

    page.click("nav.nav >> text=海报")
    wait_until(page, "Array.from(document.images).length > 0 && Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)")
    page.screenshot(path=str(shots / "posters.png"), full_page=True)
    page.click("#results >> text=春茶上新")
    page.wait_for_selector("#saved-preview")
    wait_until(page, "document.getElementById('saved-preview').naturalWidth > 0")
    page.fill("#headline", "新标题 · 未保存")
    page.wait_for_selector("#live-preview img[src^='data:image/png']")
    page.screenshot(path=str(shots / "poster.png"), full_page=True)

    page.set_viewport_size(PHONE)
    page.goto(f"{live.url}/console/distributors")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "the phone layout scrolls sideways"
    # The refused discount answered 422, which Chromium logs; nothing else may be an error.
    assert [e for e in errors if "422" not in e] == []


def test_operations_may_not_edit_tiers_and_finance_sees_no_distributor_pages(page: Any, live: LiveServer) -> None:
    sign_in(page, live, "ops")
    page.goto(f"{live.url}/console/distributors/tiers")
    assert page.locator("#tiers form").count() == 0 and page.locator("#grades form").count() == 0
    page.click("text=退出")
    sign_in(page, live, "finance")
    nav = page.locator("nav.nav").inner_text()
    assert "分销员" not in nav and "素材" not in nav and "海报" not in nav
    for path in ("/console/distributors", "/console/materials", "/console/posters"):
        response = page.goto(f"{live.url}{path}")
        assert response.status == 403
def _member_id(live: LiveServer, openid: str) -> int:
    with live.app.app_context():
        return int(db.session().scalars(select(Member.id).where(Member.openid == openid)).one())


def _points(text: str) -> int:
    """A balance as the page shows it ("1,008.88") in hundredths."""
    whole, _, cents = text.strip().replace(",", "").partition(".")
    return int(whole) * 100 + int(cents or 0)


def test_owner_runs_a_settlement_and_adjusts_points_once(page: Any, live: LiveServer, errors: list[str], shots: Path) -> None:
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "owner")
    page.click("nav.nav >> text=积分")
    page.wait_for_url(f"{live.url}/console/points")
    page.screenshot(path=str(shots / "points.png"), full_page=True)

    # Run now: the run goes to a background thread and the page polls it with htmx until it is done.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="task")
    live.app.extensions["task_pool"] = pool
    try:
        page.click("nav.tabs >> text=结算")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#settle-form button")
        page.wait_for_selector("#settlement-job[data-state=done]", timeout=15_000)
    finally:
        live.app.extensions.pop("task_pool")
        pool.shutdown(wait=True)
    assert "结算已完成" in page.locator("#settlement-job").inner_text()
    page.goto(f"{live.url}/console/points/settlements")
    assert page.locator("tbody tr").count() >= 1
    page.screenshot(path=str(shots / "settlement.png"), full_page=True)

    # An adjustment: the same form submitted twice (and a third time by its button) moves the balance once.
    bob = _member_id(live, "demo-bob")
    page.goto(f"{live.url}/console/points?member={bob}")
    before = _points(page.locator("[data-balance=available]").inner_text())
    page.fill("#adjust-points", "8.88")
    page.fill("#adjust-reason", "活动补偿")
    statuses = page.evaluate(
        """async () => {
            const form = document.getElementById("adjust-form");
            const body = new FormData(form);
            const answers = [];
            for (let i = 0; i < 2; i++) {
                answers.push((await fetch(form.action, {method: "POST", body, credentials: "same-origin"})).status);
            }
            return answers;
        }"""
    )
    assert statuses == [200, 200]  # each answered with a redirect to the ledger, which fetch followed
    page.click("#adjust-form button")
    page.wait_for_selector("text=没有重复记账")
    assert _points(page.locator("[data-balance=available]").inner_text()) == before + 888
    assert page.locator("tbody tr", has_text="活动补偿").count() == 1

    page.goto(f"{live.url}/console/redemptions")
    page.screenshot(path=str(shots / "redemptions.png"), full_page=True)
    page.set_viewport_size(PHONE)
    for path in ("/console/points", "/console/points/settlements", "/console/redemptions", "/console/points/rules"):
        page.goto(f"{live.url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"{path} scrolls sideways on a phone"
    assert errors == []


# -- orders, refunds and products ------------------------------------------------------------------------


def paid_order_with_a_refund_request(live: LiveServer, sandbox_pay: PayState) -> tuple[int, int]:
    """A demo-catalog order a new buyer paid through the sandbox's WeChat Pay, then asked to refund: (order id, refund id)."""
    client = live.app.test_client()
    login = client.post("/api/v1/auth/wx-login", json={"code": "sandbox:browser-buyer"}).get_json()["data"]
    headers = {"Authorization": f"Bearer {login['token']}"}
    with live.app.app_context():
        sku_id = db.session().scalars(select(Sku.id).order_by(Sku.id)).first()
    placed = client.post("/api/v1/orders", headers=headers, json={"items": [{"sku_id": sku_id, "quantity": 1}]}).get_json()["data"]
    assert client.post(f"/api/v1/orders/{placed['id']}/pay", headers=headers).status_code == 200
    notice_headers, body = sandbox_pay.build_pay_notification(placed["out_trade_no"])
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=notice_headers).status_code == 204
    asked = client.post(f"/api/v1/orders/{placed['id']}/refunds", headers=headers, json={"reason": "包装破损"})
    assert asked.status_code == 201, asked.get_json()
    return int(placed["id"]), int(asked.get_json()["data"]["id"])


def test_owner_ships_an_order_and_approves_a_refund(page: Any, live: LiveServer, errors: list[str], shots: Path, sandbox_pay: PayState) -> None:
    order_id, refund_id = paid_order_with_a_refund_request(live, sandbox_pay)
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "owner")
    page.click("nav.nav >> text=订单")
    page.wait_for_url(f"{live.url}/console/orders")
    page.screenshot(path=str(shots / "orders.png"), full_page=True)
    # The status filter works in place (htmx) and stays in the URL.
    page.select_option("#status", "paid")
    page.wait_for_url("**/console/orders?*status=paid*")
    paid_rows = page.locator("#results tbody tr")
    assert paid_rows.count() >= 2 and all("已支付" in t for t in paid_rows.all_inner_texts())

    # Ship a paid demo order.
    page.locator("#results tbody tr").last.locator("td a").first.click()
    page.wait_for_selector("text=确认发货")
    page.fill("#carrier", "顺丰速运")
    page.fill("#tracking_no", "SF2026000001")
    page.click("#ship button[type=submit]")
    page.wait_for_selector("text=已发货：顺丰速运 SF2026000001")
    assert page.locator("[data-field=status]").inner_text() == "已发货"
    assert page.locator("#timeline [data-event=shipped]").count() == 1

    # Approve the buyer's refund request from the queue; WeChat Pay (the sandbox) takes it after the commit.
    page.goto(f"{live.url}/console/refunds?status=requested")
    page.click(f"tr[data-refund='{refund_id}'] >> text=处理")
    page.wait_for_url(f"{live.url}/console/orders/{order_id}#refund-{refund_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#refund-{refund_id} >> text=批准退款")
    page.wait_for_selector("text=已批准退款")
    assert page.locator(f"#refund-{refund_id} [data-field=refund-status]").inner_text() == "微信处理中"
    with live.app.app_context():
        refund = db.session().get(Refund, refund_id)
        assert refund is not None and refund.status == RefundStatus.processing
        out_refund_no = refund.out_refund_no
    # WeChat's refund notification ends it.
    notice_headers, body = sandbox_pay.build_refund_notification(out_refund_no)
    assert live.app.test_client().post(payments.V3_NOTIFY_PATH, data=body, headers=notice_headers).status_code == 204
    page.goto(f"{live.url}/console/orders/{order_id}")
    assert page.locator("[data-field=status]").inner_text() == "已退款"
    assert page.locator(f"#refund-{refund_id} [data-field=refund-status]").inner_text() == "已退款"
    page.screenshot(path=str(shots / "order.png"), full_page=True)

    page.goto(f"{live.url}/console/products")
    page.screenshot(path=str(shots / "products.png"), full_page=True)

    page.set_viewport_size(PHONE)
    for path in ("/console/orders", f"/console/orders/{order_id}", "/console/refunds", "/console/products"):
        page.goto(f"{live.url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"{path} scrolls sideways on a phone"
    assert errors == []


def test_operations_cannot_adjust_points(page: Any, live: LiveServer, errors: list[str]) -> None:
    sign_in(page, live, "ops")
    page.goto(f"{live.url}/console/points")
    assert page.locator("#adjust-form").count() == 0 and page.locator("nav.tabs >> text=结算").count() == 0
    status = page.evaluate(
        """async (memberId) => {
            const token = document.querySelector('meta[name="csrf-token"]').content;
            const body = new URLSearchParams({csrf_token: token, member_id: memberId, points: "100", reason: "x", idempotency_key: "ops-try"});
            return (await fetch("/console/points/adjustments", {method: "POST", body, credentials: "same-origin"})).status;
        }""",
        str(_member_id(live, "demo-bob")),
    )
    assert status == 403
    response = page.goto(f"{live.url}/console/points/settlements")
    assert response.status == 403 and "无权访问" in page.content()
    assert [e for e in errors if "403" not in e] == []


def test_finance_cannot_ship(page: Any, live: LiveServer, errors: list[str]) -> None:
    sign_in(page, live, "finance")
    assert "商品" not in page.locator("nav.nav").inner_text()
    with live.app.app_context():
        order_id = db.session().scalars(select(Order.id).where(Order.status == OrderStatus.paid).order_by(Order.id)).first()
    page.goto(f"{live.url}/console/orders/{order_id}")
    assert page.locator("text=确认发货").count() == 0
    token = page.get_attribute("meta[name=csrf-token]", "content")
    response = page.request.post(f"{live.url}/console/orders/{order_id}/ship", form={"csrf_token": token, "carrier": "顺丰", "tracking_no": "SF1"})
    assert response.status == 403 and "无权访问" in response.text()
    with live.app.app_context():
        order = db.session().get(Order, order_id)
        assert order is not None and order.status == OrderStatus.paid
    assert page.goto(f"{live.url}/console/products").status == 403
def test_owner_reviews_a_lead_as_valid_and_reveals_its_phone(page: Any, live: LiveServer, errors: list[str], shots: Path) -> None:
    page.set_viewport_size(LAPTOP)
    sign_in(page, live, "owner")
    page.click("nav.nav >> text=线索")
    page.wait_for_url(f"{live.url}/console/leads")
    assert "13500135000" not in page.content()
    # htmx filters the pool in place and keeps the filter in the URL.
    page.select_option("#follow_up", "new")
    page.wait_for_url(f"{live.url}/console/leads?*follow_up=new*")
    assert page.locator("#results >> text=周先生").count() == 0
    page.screenshot(path=str(shots / "leads.png"), full_page=True)
    page.click("#results >> text=吴女士")
    page.wait_for_selector("#review-form")
    page.fill("#review-note", "电话确认有团购需求")
    page.click("#review-form button[value=valid]")
    page.wait_for_selector("text=已标记为有效线索")
    assert page.locator("[data-field=status]").inner_text().startswith("有效")
    page.click("#reveal-phone")
    page.wait_for_selector("#lead-phone[data-revealed=true]")
    assert page.locator("#lead-phone").inner_text() == "13500135000"
    lead_path = page.url.removeprefix(live.url)
    page.goto(f"{live.url}/console/audit?action=lead.")
    audit = page.locator("table").inner_text()
    assert "lead.reveal_phone" in audit and "lead.valid" in audit and f"lead:{lead_path.rsplit('/', 1)[1]}" in audit
    assert "13500135000" not in page.content()

    page.goto(f"{live.url}/console/contracts")
    page.screenshot(path=str(shots / "contracts.png"), full_page=True)
    page.click("nav.nav >> text=渠道")
    page.click("text=知乎·职场圈")
    page.wait_for_selector("#statement")
    page.screenshot(path=str(shots / "partners.png"), full_page=True)

    page.set_viewport_size(PHONE)
    page.goto(f"{live.url}/console/leads")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "the lead pool scrolls sideways on a phone"
    assert errors == []


def test_operations_cannot_confirm_an_installment(page: Any, live: LiveServer, errors: list[str]) -> None:
    sign_in(page, live, "ops")
    page.goto(f"{live.url}/console/contracts?queue=confirm")
    page.click("#results a.mono")
    page.wait_for_selector("text=分期")
    assert page.locator("#confirm-final").count() == 0
    assert page.locator("form[action*='/receive']").count() == 0
    confirm_url = page.url + "/confirm-final"
    status = page.evaluate(
        """url => fetch(url, {method: "POST", headers: {"X-CSRFToken": document.querySelector('meta[name="csrf-token"]').content}})
            .then(response => response.status)""",
        confirm_url,
    )
    assert status == 403
    page.reload()
    assert page.locator("[data-field=confirmed]").inner_text() == "未确认"
    assert [e for e in errors if "403" not in e] == []


def test_owner_exports_the_filtered_orders_as_excel(page: Any, live: LiveServer, errors: list[str]) -> None:
    """The export link follows the filters htmx puts in the page, and the download opens in openpyxl."""
    sign_in(page, live, "owner")
    page.goto(f"{live.url}/console/orders")
    page.select_option("#kind", "online")
    page.wait_for_url("**/console/orders?*kind=online*")
    page.wait_for_selector("#results a[data-format=xlsx][href*='kind=online']")
    with page.expect_download() as info:
        page.click("#results a[data-format=xlsx]")
    download = info.value
    assert download.suggested_filename.endswith(".xlsx")
    # openpyxl goes by the file's extension, which Playwright's download path lacks: read the bytes.
    sheet = load_workbook(io.BytesIO(Path(download.path()).read_bytes()), read_only=True).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    assert header[:2] == ["订单 ID", "订单号"] and "金额（元）" in header
    with live.app.app_context():
        expected = list(db.session().scalars(select(Order.id).where(Order.kind == OrderKind.online).order_by(Order.id.desc())))
    assert [row[0] for row in rows[1:]] == expected
    assert {row[header.index("类型")] for row in rows[1:]} == {"线上订单"}
    assert errors == []
