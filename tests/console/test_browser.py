"""The console in a real browser: Debian's Chromium driven by Playwright against a live server thread.

One browser and one server (with the demo shop of ``seed-demo``) serve the module. Playwright's own
browser download cannot be used here, so the system ``chromium`` is launched; without it the module
is skipped, saying so (CI installs it with apt). Every page is watched for JavaScript errors and
Content-Security-Policy violations, which Chromium reports as console errors.

With ``CONSOLE_SCREENSHOTS=1`` the screenshots are written to docs/console/ for the README;
otherwise to a temporary directory.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from server import create_app, db
from server.accounts.services import create_staff
from server.accounts.models import StaffRole
from server.demo import DEMO_PASSWORD, seed_demo
from tests.conftest import _empty_database, make_config

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
def live(database_url: str, sandbox: Any) -> Iterator[LiveServer]:
    """The app on a free port with the demo shop loaded; emptied again when the module is done."""
    app = create_app(make_config(database_url, sandbox))
    with app.app_context():
        list(seed_demo(db.session()))
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
    assert page.locator(".todos li").count() == 7
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
