"""The console's programme rules and notices pages: drafting with a live preview, publishing with a
confirmation, the distributor's accepted version, notices with their readers; and who may do what."""
from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry
from server.distribution.models import ProgrammeRules
from server.notices.models import Notice
from tests.console.conftest import Console


def test_rules_draft_preview_publish_and_new_version(app: Any, console: Callable[..., Console], client: Any) -> None:
    ops = console("operations")
    assert "还没有分销规则" in ops.get("/console/distributor-rules").text
    page = ops.get("/console/distributor-rules/new")
    assert page.status_code == 200 and "{{reward_level1_first_bp}}" in page.text and "0.5%" in page.text

    preview = ops.post("/console/distributor-rules", {"title": "规则", "body": "奖励 {{reward_level1_first_bp}} <i>x</i>", "action": "preview"})
    assert preview.status_code == 200 and "奖励 0.5% &lt;i&gt;x&lt;/i&gt;" in preview.text and 'class="rates"' in preview.text
    with app.app_context():
        assert db.session().scalars(select(ProgrammeRules)).all() == []

    refused = ops.post("/console/distributor-rules", {"title": "规则", "body": "奖励 {{level1}}", "action": "save"})
    assert refused.status_code == 422 and "未知的占位符：{{level1}}" in refused.text
    saved = ops.post("/console/distributor-rules", {"title": "规则", "body": "奖励 {{reward_level1_first_bp}}", "action": "save"})
    assert saved.status_code == 303
    with app.app_context():
        rules_id = db.session().scalars(select(ProgrammeRules.id)).one()
    page = ops.get(f"/console/distributor-rules/{rules_id}").text
    assert "发布此版本" in page and "data-confirm" in page
    assert ops.post(f"/console/distributor-rules/{rules_id}", {"title": "规则 v1", "body": "奖励 {{reward_level1_first_bp}}！", "action": "save"}).status_code == 303
    assert ops.post(f"/console/distributor-rules/{rules_id}/publish").status_code == 303
    page = ops.get(f"/console/distributor-rules/{rules_id}").text
    assert "当前版本" in page and "第 1 版" in page and "发布此版本" not in page and "奖励 0.5%！" in page
    assert ops.post(f"/console/distributor-rules/{rules_id}", {"title": "改", "body": "改", "action": "save"}).status_code == 409
    assert ops.post(f"/console/distributor-rules/{rules_id}/publish").status_code == 409
    copy = ops.get(f"/console/distributor-rules/new?from={rules_id}").text
    assert "奖励 {{reward_level1_first_bp}}！" in copy
    with app.app_context():
        assert db.session().scalar(select(AuditEntry.action).where(AuditEntry.action == "programme_rules.publish")) == "programme_rules.publish"


def test_the_distributor_page_shows_the_accepted_version(app: Any, console: Callable[..., Console], client: Any, wx_login: Any, staff_login: Any) -> None:
    ops_api = staff_login("operations")
    rules = client.post("/admin/api/v1/distributor-rules", json={"title": "协议", "body": "正文"}, headers=ops_api).get_json()["data"]
    client.post(f"/admin/api/v1/distributor-rules/{rules['id']}/publish", headers=ops_api)
    alice = wx_login("alice")
    applied = client.post(
        "/api/v1/distributors/apply", json={"real_name": "爱丽丝", "phone": "13800138000", "rules_version": 1}, headers=alice["headers"]
    ).get_json()["data"]
    page = console("operations", username="ops-two").get(f"/console/distributors/{applied['id']}").text
    accepted = page[page.index('id="rules-acceptance"'):]
    assert "第 1 版「协议」" in accepted[:400] and "127.0.0.1" in accepted[:400]


def test_notices_pages_edit_publish_read_counts_and_withdraw(app: Any, console: Callable[..., Console], client: Any, wx_login: Any) -> None:
    ops = console("operations")
    bad = ops.post("/console/notices", {"title": "", "body": "正文", "audience": "all"})
    assert bad.status_code == 422 and "请填写标题" in bad.text
    bad = ops.post("/console/notices", {"title": "标题", "body": "正文", "audience": "tier"})
    assert bad.status_code == 422 and "请选择一级或二级" in bad.text
    assert ops.post("/console/notices", {"title": "上新", "body": "<b>新品</b>\n第二行", "audience": "all", "pinned": "1"}).status_code == 303
    with app.app_context():
        notice_id = db.session().scalars(select(Notice.id)).one()
    assert ops.post(f"/console/notices/{notice_id}", {"title": "上新啦", "body": "<b>新品</b>\n第二行", "audience": "all"}).status_code == 303
    page = ops.get(f"/console/notices/{notice_id}").text
    assert "data-confirm" in page and "发布" in page
    assert ops.post(f"/console/notices/{notice_id}/publish").status_code == 303
    alice = wx_login("alice")
    wx_login("bob")
    assert client.get(f"/api/v1/notices/{notice_id}", headers=alice["headers"]).status_code == 200
    listing = ops.get("/console/notices").text
    assert f'data-reads="{notice_id}">1 / 2<' in listing and "上新啦" in listing
    page = ops.get(f"/console/notices/{notice_id}").text
    assert "&lt;b&gt;新品&lt;/b&gt;<br>第二行" in page and 'id="read-count">1 / 2<' in page and alice["user"]["nickname"] in page
    assert ops.post(f"/console/notices/{notice_id}", {"title": "改", "body": "改", "audience": "all"}).status_code == 409
    assert ops.post(f"/console/notices/{notice_id}/withdraw").status_code == 303
    assert client.get(f"/api/v1/notices/{notice_id}", headers=alice["headers"]).status_code == 404
    assert ops.post(f"/console/notices/{notice_id}/withdraw").status_code == 409
    with app.app_context():
        actions = db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"notice:{notice_id}").order_by(AuditEntry.id)).all()
        assert actions == ["notice.create", "notice.update", "notice.publish", "notice.withdraw"]


def test_finance_reaches_neither_and_forms_need_csrf(console: Callable[..., Console]) -> None:
    finance = console("finance")
    for path in ("/console/distributor-rules", "/console/notices", "/console/notices/new", "/console/distributor-rules/new"):
        assert finance.get(path).status_code == 403, path
    assert finance.post("/console/notices", {"title": "x", "body": "y", "audience": "all"}).status_code == 403
    ops = console("operations")
    assert ops.post("/console/notices", {"title": "x", "body": "y", "audience": "all"}, csrf=False).status_code == 400
    assert ops.post("/console/distributor-rules", {"title": "x", "body": "y"}, csrf=False).status_code == 400
    page = ops.get("/console/").text
    nav = page[page.index('<nav class="nav"'):page.index("</nav>")]
    assert ">规则</a>" in nav and ">公告</a>" in nav
