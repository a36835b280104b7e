"""The console's order and refund pages for every role, through the Flask test client: filters, the order page,
shipping, refund decisions, staff refunds and the abnormal refunds queue, with WeChat Pay played by the sandbox."""
from __future__ import annotations

import re
from typing import Any, Callable

import pytest
from flask import Flask
from sqlalchemy import func, or_, select

from server import db
from server.accounts.models import AuditEntry, Member
from server.orders import payments
from server.orders.models import Order, OrderEvent, OrderKind, OrderStatus, Product, Refund, RefundStatus
from tests.console.conftest import Console
from server.demo import DEMO_PASSWORD, DEMO_PRODUCT
from tests.console.test_pages import demo  # noqa: F401  (the demo shop fixture)
from tests.orders.conftest import OrderRef, make_order, pay_merchant, prepay, sandbox_pay  # noqa: F401  (WeChat Pay fixtures)
from wechat_sandbox import PayState

ORDER_ROW = re.compile(r'data-order="(\d+)"')


def demo_login(app: Flask, username: str) -> Console:
    """A demo staff member (owner, ops, finance) signed in through the form."""
    browser = Console(app.test_client())
    assert browser.login(username, DEMO_PASSWORD).status_code == 303
    return browser


def listed(page: str) -> set[int]:
    return {int(i) for i in ORDER_ROW.findall(page)}


def order_ids(app: Flask, *where: Any) -> set[int]:
    with app.app_context():
        return set(db.session().scalars(select(Order.id).where(*where)))


def row(app: Flask, model: Any, ident: int) -> Any:
    with app.app_context():
        found = db.session().get(model, ident)
        assert found is not None
        db.session().expunge(found)
        return found


def demo_order(app: Flask, status: OrderStatus) -> int:
    return min(order_ids(app, Order.status == status))


def demo_refund(app: Flask, status: RefundStatus) -> Refund:
    with app.app_context():
        refund = db.session().scalars(select(Refund).where(Refund.status == status).order_by(Refund.id)).first()
        assert refund is not None
        db.session().expunge(refund)
        return refund


def audit_actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session().scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


# -- who reaches what --------------------------------------------------------------------------------


@pytest.mark.parametrize("username,products", [("owner", 200), ("ops", 200), ("finance", 403)])
def test_each_role_reaches_the_order_pages_and_only_owner_and_operations_the_catalog(app: Flask, demo: dict[str, Any], username: str, products: int) -> None:
    browser = demo_login(app, username)
    order_id = demo_order(app, OrderStatus.paid)
    for path in ("/console/orders", f"/console/orders/{order_id}", "/console/refunds", "/console/refunds?status=abnormal"):
        assert browser.get(path).status_code == 200, path
    with app.app_context():
        product_id = db.session().scalars(select(Product.id)).first()
    for path in ("/console/products", f"/console/products/{product_id}", "/console/products/new"):
        response = browser.get(path)
        assert response.status_code == products, path
        if products == 403:
            assert "无权访问" in response.text
    nav = browser.get("/console/").text
    nav = nav[nav.index('<nav class="nav"'):nav.index("</nav>")]
    assert ">订单</a>" in nav and (">商品</a>" in nav) == (products == 200)


def test_the_dashboard_queues_link_to_the_refund_lists(app: Flask, demo: dict[str, Any]) -> None:
    page = demo_login(app, "finance").get("/console/").text
    for status in ("requested", "abnormal", "failed"):
        assert f'href="/console/refunds?status={status}"' in page


# -- the order list ------------------------------------------------------------------------------------


def test_the_order_list_filters(app: Flask, demo: dict[str, Any]) -> None:
    ops = demo_login(app, "ops")
    everything = listed(ops.get("/console/orders").text)
    assert everything == order_ids(app) and len(everything) == 13  # twelve online orders and the demo contract
    assert listed(ops.get("/console/orders?status=paid").text) == order_ids(app, Order.status == OrderStatus.paid)
    assert listed(ops.get("/console/orders?status=closed").text) == order_ids(app, Order.status == OrderStatus.closed) != set()
    alice = demo["alice"]
    assert listed(ops.get(f"/console/orders?inviter={alice}").text) == order_ids(app, Order.inviter_id == alice) != set()
    # A number is an order's id or its buyer's member id.
    assert listed(ops.get(f"/console/orders?q={demo['dave']}").text) == order_ids(app, or_(Order.member_id == demo["dave"], Order.id == demo["dave"]))
    some = row(app, Order, min(everything))
    assert listed(ops.get(f"/console/orders?q={some.out_trade_no[:-3]}").text) == {some.id}
    assert listed(ops.get("/console/orders?q=demo-dave").text) == order_ids(app, Order.member_id == demo["dave"])
    with app.app_context():
        product_id = db.session().scalars(select(Product.id).where(Product.title == DEMO_PRODUCT[0])).one()
        other_id = db.session().scalars(select(Product.id).where(Product.title != DEMO_PRODUCT[0])).first()
    assert listed(ops.get(f"/console/orders?product={product_id}").text) == order_ids(app, Order.kind == OrderKind.online)  # a contract has no lines
    assert listed(ops.get(f"/console/orders?product={other_id}").text) == set()
    assert listed(ops.get("/console/orders?to=2000-01-01").text) == set()
    assert listed(ops.get("/console/orders?from=2000-01-01&kind=online").text) == order_ids(app, Order.kind == OrderKind.online)
    # Filters combine, and the pager keeps them.
    both = ops.get(f"/console/orders?status=completed&inviter={alice}").text
    assert listed(both) == order_ids(app, Order.status == OrderStatus.completed, Order.inviter_id == alice)


#: Bad filters: each is explained on the page (or ignored), never an error.
BAD_FILTERS = (
    ({"inviter": "abc"}, "邀请人应填写会员 ID"),
    ({"from": "2026-13-45"}, "日期格式应为"),
    ({"to": "x" * 300}, "日期格式应为"),
    ({"status": "nope"}, ""),
    ({"page": "abc"}, ""),
    ({"page": "99999999999"}, ""),
    ({"q": "%" * 500}, ""),
    ({"q": "99999999999999999999999"}, ""),
    ({"product": "-1"}, ""),
)


def test_bad_filters_are_explained_not_errors(app: Flask, demo: dict[str, Any]) -> None:
    ops = demo_login(app, "ops")
    for query, message in BAD_FILTERS:
        response = ops.get("/console/orders", query_string=query)
        assert response.status_code == 200 and message in response.text, query


# -- the order page ------------------------------------------------------------------------------------


def test_the_order_page_shows_lines_amounts_referrers_and_timeline(app: Flask, demo: dict[str, Any]) -> None:
    owner = demo_login(app, "owner")
    with app.app_context():
        order = db.session().scalars(select(Order).where(Order.member_id == demo["dave"], Order.status == OrderStatus.refunding)).one()
        bob = db.session().scalars(select(Member).where(Member.openid == "demo-bob")).one()
        db.session().expunge_all()
    page = owner.get(f"/console/orders/{order.id}").text
    assert order.out_trade_no in page and "退款中" in page
    assert f'data-field="total">¥{order.total_fee // 100:,}.{order.total_fee % 100:02d}<' in page
    assert f'data-field="inviter"><a href="/console/members/{bob.id}">鲍勃（{bob.id}）</a>' in page
    assert f'data-field="upline"><a href="/console/members/{demo["alice"]}">爱丽丝' in page
    assert "有机" in page or "商品明细" in page
    assert 'data-event="created"' in page and 'data-event="paid"' in page and 'data-event="refund_requested"' in page
    assert "批准退款" in page and "拒绝" in page and "待审批" in page
    assert owner.get("/console/orders/999999").status_code == 404
    assert owner.get("/console/orders/99999999999999999999999").status_code == 404


# -- shipping --------------------------------------------------------------------------------------------


def test_operations_ships_a_paid_order(app: Flask, demo: dict[str, Any]) -> None:
    order_id = demo_order(app, OrderStatus.paid)
    ops = demo_login(app, "ops")
    assert "确认发货" in ops.get(f"/console/orders/{order_id}").text
    response = ops.post(f"/console/orders/{order_id}/ship", {"carrier": "顺丰速运", "tracking_no": "SF1234567890"})
    assert response.status_code == 303 and response.location.endswith(f"/console/orders/{order_id}")
    shipped = row(app, Order, order_id)
    assert (shipped.status, shipped.carrier, shipped.tracking_no) == (OrderStatus.shipped, "顺丰速运", "SF1234567890")
    page = ops.get(f"/console/orders/{order_id}").text
    assert "已发货：顺丰速运 SF1234567890" in page and 'data-event="shipped"' in page and "确认发货" not in page
    # Shipping twice is a conflict, said in Chinese; nothing moves.
    again = ops.post(f"/console/orders/{order_id}/ship", {"carrier": "顺丰速运", "tracking_no": "SF0"})
    assert again.status_code == 409 and "状态已变化" in again.text
    assert row(app, Order, order_id).tracking_no == "SF1234567890"


#: Ship forms the admin API's body refuses, and the message each gets.
BAD_SHIPMENTS = (
    ({"carrier": "", "tracking_no": "SF1"}, "请填写快递公司"),
    ({"carrier": "顺丰", "tracking_no": "   "}, "请填写运单号"),
    ({"carrier": "顺丰" * 40, "tracking_no": "SF1"}, "请填写快递公司"),
    ({"carrier": "顺丰", "tracking_no": "9" * 70}, "请填写运单号"),
    ({}, "请填写快递公司"),
)


def test_shipping_with_bad_input_changes_nothing(app: Flask, demo: dict[str, Any]) -> None:
    order_id = demo_order(app, OrderStatus.paid)
    owner = demo_login(app, "owner")
    for form, message in BAD_SHIPMENTS:
        response = owner.post(f"/console/orders/{order_id}/ship", form)
        assert response.status_code == 422 and message in response.text, form
    assert row(app, Order, order_id).status == OrderStatus.paid
    assert owner.post("/console/orders/999999/ship", {"carrier": "顺丰", "tracking_no": "SF1"}).status_code == 404


def test_finance_cannot_ship(app: Flask, demo: dict[str, Any]) -> None:
    order_id = demo_order(app, OrderStatus.paid)
    finance = demo_login(app, "finance")
    assert "确认发货" not in finance.get(f"/console/orders/{order_id}").text
    response = finance.post(f"/console/orders/{order_id}/ship", {"carrier": "顺丰", "tracking_no": "SF1"})
    assert response.status_code == 403 and "无权访问" in response.text
    assert row(app, Order, order_id).status == OrderStatus.paid


def test_a_post_without_csrf_is_refused(app: Flask, demo: dict[str, Any]) -> None:
    order_id = demo_order(app, OrderStatus.paid)
    response = demo_login(app, "owner").post(f"/console/orders/{order_id}/ship", {"carrier": "顺丰", "tracking_no": "SF1"}, csrf=False)
    assert response.status_code == 400 and "CSRF" in response.text
    assert row(app, Order, order_id).status == OrderStatus.paid


# -- refunds through WeChat Pay (the sandbox) -------------------------------------------------------------------


def paid_order(app: Flask, client: Any, make_order: Callable[..., OrderRef], sandbox_pay: PayState, price_fen: int = 10_000) -> OrderRef:
    """An order paid through the sandbox's WeChat Pay (v3), its notification applied."""
    ref = make_order(price_fen=price_fen)
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    return ref


def member_request(client: Any, ref: OrderRef, **body: Any) -> int:
    response = client.post(f"/api/v1/orders/{ref.id}/refunds", headers=ref.headers, json={"reason": "不想要了", **body})
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["data"]["id"])


def test_finance_approves_a_request_and_wechat_pay_refunds_it(
    app: Flask, client: Any, console: Callable[..., Console], make_order: Callable[..., OrderRef], sandbox_pay: PayState
) -> None:
    ref = paid_order(app, client, make_order, sandbox_pay)
    refund_id = member_request(client, ref)
    finance = console("finance")
    page = finance.get("/console/refunds?status=requested").text
    assert f'data-refund="{refund_id}"' in page
    response = finance.post(f"/console/refunds/{refund_id}/approve")
    assert response.status_code == 303 and response.location.endswith(f"/console/orders/{ref.id}#refund-{refund_id}")
    # Sent after the commit: WeChat Pay took it, and its notification ends it.
    refund = row(app, Refund, refund_id)
    assert refund.status == RefundStatus.processing and refund.refund_id
    headers, body = sandbox_pay.build_refund_notification(refund.out_refund_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    assert row(app, Order, ref.id).status == OrderStatus.refunded
    page = finance.get(f"/console/orders/{ref.id}").text
    assert "已退款" in page and 'data-event="refund_succeeded"' in page
    assert "refund.approve" in audit_actions(app)
    # A decided request cannot be decided again.
    again = finance.post(f"/console/refunds/{refund_id}/approve")
    assert again.status_code == 409 and "状态已变化" in again.text


def test_operations_rejects_a_request_with_a_reason(
    app: Flask, client: Any, console: Callable[..., Console], make_order: Callable[..., OrderRef], sandbox_pay: PayState
) -> None:
    ref = paid_order(app, client, make_order, sandbox_pay)
    refund_id = member_request(client, ref)
    ops = console("operations")
    blank = ops.post(f"/console/refunds/{refund_id}/reject", {"reason": "  "})
    assert blank.status_code == 422 and "请填写原因" in blank.text
    assert row(app, Refund, refund_id).status == RefundStatus.requested
    assert ops.post(f"/console/refunds/{refund_id}/reject", {"reason": "商品已拆封"}).status_code == 303
    refund = row(app, Refund, refund_id)
    assert refund.status == RefundStatus.rejected and "商品已拆封" in refund.reason
    assert row(app, Order, ref.id).status == OrderStatus.paid
    assert ops.post("/console/refunds/999999/reject", {"reason": "x"}).status_code == 404


def test_staff_refund_in_yuan(
    app: Flask, client: Any, console: Callable[..., Console], make_order: Callable[..., OrderRef], sandbox_pay: PayState
) -> None:
    ref = paid_order(app, client, make_order, sandbox_pay, price_fen=10_000)
    owner = console("owner")
    path = f"/console/orders/{ref.id}/refunds"
    for amount, message in (("abc", "退款金额应为"), ("0.001", "退款金额应为"), ("-5", "退款金额应为"), ("100.01", "最多可退 ¥100.00"), ("9" * 40, "退款金额应为")):
        response = owner.post(path, {"amount": amount, "reason": "破损"})
        assert response.status_code == 422 and message in response.text, amount
    assert owner.post(path, {"amount": "12.30", "reason": ""}).status_code == 422
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(Refund)) == 0
    assert owner.post(path, {"amount": "12.30", "reason": "破损补偿"}).status_code == 303
    refund = db_refunds(app, ref.id)[0]
    assert (refund.amount_fen, refund.status) == (1_230, RefundStatus.processing)
    assert 'data-field="refundable">¥87.70<' in owner.get(f"/console/orders/{ref.id}").text
    # Operations cannot settle or resend abnormal refunds, but may refund.
    assert console("operations", "ops-2").post(path, {"amount": "0.70", "reason": "运费"}).status_code == 303
    assert sorted(r.amount_fen for r in db_refunds(app, ref.id)) == [70, 1_230]


def db_refunds(app: Flask, order_id: int) -> list[Refund]:
    with app.app_context():
        found = list(db.session().scalars(select(Refund).where(Refund.order_id == order_id).order_by(Refund.id)))
        db.session().expunge_all()
        return found


def test_abnormal_refunds_are_resent_or_settled_offline_by_finance(
    app: Flask, client: Any, console: Callable[..., Console], make_order: Callable[..., OrderRef], sandbox_pay: PayState
) -> None:
    refunds = []
    for _ in range(2):
        ref = paid_order(app, client, make_order, sandbox_pay)
        console("owner", f"owner-{ref.id}").post(f"/console/orders/{ref.id}/refunds", {"reason": "退货"})
        refund = db_refunds(app, ref.id)[0]
        headers, body = sandbox_pay.build_refund_notification(refund.out_refund_no, status="ABNORMAL")
        assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
        refunds.append((ref, row(app, Refund, refund.id)))
    (first_order, first), (second_order, second) = refunds
    assert first.status == second.status == RefundStatus.abnormal

    ops = console("operations")
    assert f'data-refund="{first.id}"' in ops.get("/console/refunds?status=abnormal").text
    assert "记为已线下退款" not in ops.get(f"/console/orders/{first_order.id}").text
    assert ops.post(f"/console/refunds/{first.id}/settle-offline", {"note": "x"}).status_code == 403
    assert ops.post(f"/console/refunds/{first.id}/resend", {"target": "merchant_bank_card"}).status_code == 403

    finance = console("finance")
    page = finance.get(f"/console/orders/{first_order.id}").text
    assert "记为已线下退款" in page and "重新发起" in page
    # The buyer's card needs all its details: refused before WeChat is asked.
    incomplete = finance.post(f"/console/refunds/{first.id}/resend", {"target": "user_bank_card", "bank_type": "ICBC_DEBIT"})
    assert incomplete.status_code == 422 and "银行代码、卡号和姓名" in incomplete.text
    assert finance.post(f"/console/refunds/{first.id}/resend", {"target": "somewhere"}).status_code == 422
    assert row(app, Refund, first.id).status == RefundStatus.abnormal
    # Resent to the merchant's account: processing again, for WeChat's notification to end.
    assert finance.post(f"/console/refunds/{first.id}/resend", {"target": "merchant_bank_card"}).status_code == 303
    assert row(app, Refund, first.id).status == RefundStatus.processing
    # Settled offline, with a note that goes on the timeline.
    assert finance.post(f"/console/refunds/{second.id}/settle-offline", {"note": ""}).status_code == 422
    assert finance.post(f"/console/refunds/{second.id}/settle-offline", {"note": "银行转账 流水 20260101"}).status_code == 303
    assert row(app, Refund, second.id).status == RefundStatus.succeeded
    assert row(app, Order, second_order.id).status == OrderStatus.refunded
    assert "银行转账 流水 20260101" in finance.get(f"/console/orders/{second_order.id}").text
    # Only an abnormal refund can be settled offline.
    assert finance.post(f"/console/refunds/{second.id}/settle-offline", {"note": "again"}).status_code == 409
    actions = audit_actions(app)
    assert "refund.resend" in actions and "refund.settle_offline" in actions


def test_the_demo_refund_queues(app: Flask, demo: dict[str, Any]) -> None:
    finance = demo_login(app, "finance")
    failed, abnormal = demo_refund(app, RefundStatus.failed), demo_refund(app, RefundStatus.abnormal)
    failed_page = finance.get("/console/refunds?status=failed").text
    assert f'data-refund="{failed.id}"' in failed_page and "基本账户余额不足" in failed_page and f'data-refund="{abnormal.id}"' not in failed_page
    assert f'data-refund="{abnormal.id}"' in finance.get("/console/refunds?status=abnormal").text
    everything = finance.get("/console/refunds?status=nope")
    assert everything.status_code == 200 and f'data-refund="{failed.id}"' in everything.text
    # A v2 or unknown refund at WeChat cannot be resent: the page says what to do, nothing changes.
    with app.app_context():
        events_before = db.session().scalar(select(func.count()).select_from(OrderEvent))
    refused = finance.post(f"/console/refunds/{abnormal.id}/resend", {"target": "merchant_bank_card"})
    assert refused.status_code >= 400 and refused.mimetype == "text/html"
    assert row(app, Refund, abnormal.id).status == RefundStatus.abnormal
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(OrderEvent)) >= events_before
