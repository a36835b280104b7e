"""The programme rules and notices in the member zone: applying accepts the version shown, a newer
version sends the member back to read it, and notices are listed for the member and marked read once."""
from __future__ import annotations

from sqlalchemy import func, select

from server import db
from server.distribution.models import Distributor, RulesAcceptance
from server.notices.models import NoticeReceipt
from tests.memberzone.conftest import form_fields

RULES = "/admin/api/v1/distributor-rules"
APPLICANT = {"real_name": "爱丽丝", "phone": "13800138000", "wechat_id": "alice_wx", "intro": "宝妈"}


def publish_rules(client, headers, body="首单奖励 {{reward_level1_first_bp}}。\n\n- 积分：{{points_value}}"):
    rules = client.post(RULES, json={"title": "推广员规则", "body": body}, headers=headers).get_json()["data"]
    return client.post(f"{RULES}/{rules['id']}/publish", headers=headers).get_json()["data"]


def _count(app, model, **where):
    with app.app_context():
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return db.session().scalar(stmt) or 0


def test_a_member_reads_the_rules_and_applies_accepting_the_version_shown(app, zone, client, ops):
    publish_rules(client, ops)
    browser, alice = zone("alice")
    html = browser.get("/h5/member/rules").get_data(as_text=True)
    assert "首单奖励 0.5%。" in html and "<li>积分：1 积分 = ¥1</li>" in html and 'class="rates"' in html
    assert "同意规则并申请" in html and "第 1 版" in html
    fields = form_fields(html, 'id="apply"')
    assert fields["rules_version"] == "1"

    unaccepted = browser.post("/h5/member/rules", data=fields | APPLICANT)
    assert unaccepted.status_code == 422 and "请先阅读并勾选" in unaccepted.get_data(as_text=True)
    bad = browser.post("/h5/member/rules", data=fields | APPLICANT | {"accept": "1", "phone": "call me"})
    assert bad.status_code == 422 and "手机号" in bad.get_data(as_text=True)
    assert _count(app, Distributor) == 0

    applied = browser.post("/h5/member/rules", data=fields | APPLICANT | {"accept": "1"})
    assert applied.status_code == 303 and applied.headers["Location"].endswith("/h5/member/rules?applied=1")
    after = browser.get(applied.headers["Location"]).get_data(as_text=True)
    assert "申请已提交" in after and "待审核" in after and "同意规则并申请" not in after
    with app.app_context():
        acceptance = db.session().scalars(select(RulesAcceptance)).one()
        assert acceptance.member_id == alice["user"]["id"] and acceptance.client_address == "127.0.0.1"
    again = browser.post("/h5/member/rules", data=fields | APPLICANT | {"accept": "1"})
    assert again.status_code == 409 and "已提交过申请" in again.get_data(as_text=True)


def test_a_version_published_meanwhile_is_shown_before_the_member_accepts_it(app, zone, client, ops):
    publish_rules(client, ops)
    browser, _ = zone("alice")
    fields = form_fields(browser.get("/h5/member/rules").get_data(as_text=True), 'id="apply"')
    publish_rules(client, ops, body="第二版：复购奖励 {{reward_level1_repeat_bp}}")
    stale = browser.post("/h5/member/rules", data=fields | APPLICANT | {"accept": "1"})
    html = stale.get_data(as_text=True)
    assert stale.status_code == 409 and "分销规则已更新" in html and "第二版：复购奖励 1%" in html
    assert form_fields(html, 'id="apply"')["rules_version"] == "2"
    assert _count(app, Distributor) == 0 and _count(app, RulesAcceptance) == 0


def test_before_any_rules_the_zone_applies_as_before(app, zone):
    browser, _ = zone("bob")
    html = browser.get("/h5/member/rules").get_data(as_text=True)
    assert "商户还没有发布分销规则" in html and "提交申请" in html
    fields = form_fields(html, 'id="apply"')
    assert browser.post("/h5/member/rules", data=fields | APPLICANT).status_code == 303
    assert _count(app, Distributor) == 1 and _count(app, RulesAcceptance) == 0


def test_notices_are_listed_for_the_member_and_read_once(app, zone, client, ops):
    def notice(title, **fields):
        created = client.post("/admin/api/v1/notices", json={"title": title, "body": f"{title}\n<b>第二行</b>"} | fields, headers=ops).get_json()["data"]
        client.post(f"/admin/api/v1/notices/{created['id']}/publish", headers=ops)
        return created["id"]

    everyone = notice("全员通知")
    for_distributors = notice("分销员通知", audience="distributors")
    browser, alice = zone("alice")
    listing = browser.get("/h5/member/notices").get_data(as_text=True)
    assert "1 条未读" in listing and "全员通知" in listing and "分销员通知" not in listing
    page = browser.get(f"/h5/member/notices/{everyone}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "&lt;b&gt;第二行&lt;/b&gt;" in html
    browser.get(f"/h5/member/notices/{everyone}")
    assert _count(app, NoticeReceipt, member_id=alice["user"]["id"]) == 1
    assert "全部已读" in browser.get("/h5/member/notices").get_data(as_text=True)
    hidden = browser.get(f"/h5/member/notices/{for_distributors}")
    assert hidden.status_code == 404 and "没有找到这条公告" in hidden.get_data(as_text=True)
    for address in ("/h5/member/notices/abc", "/h5/member/notices/0", "/h5/member/notices/99999999999999999999"):
        assert browser.get(address).status_code == 404, address
    assert browser.get("/h5/member/notices?before=nonsense").status_code == 200
    assert "公告" in browser.get("/h5/member").get_data(as_text=True)
