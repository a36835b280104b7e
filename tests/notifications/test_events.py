"""Each notifying event, end to end: the event's own service, the outbox, the sandbox's subscribeMessage.send."""
from __future__ import annotations

from flask import Flask

from server import db
from server.accounts.models import Member
from tests.notifications.conftest import TEMPLATES, outbox
from tests.points import make_sku, pay, place, ship


def test_an_order_shipped_reaches_the_buyer_within_their_allowance(app: Flask, notify, person, subscribe, sandbox_messages) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped")
    with app.app_context():
        sess = db.session()
        order = pay(sess, place(sess, sess.get(Member, buyer.id), make_sku(sess, price_fen=12_345)))
        db.commit()
        ship(sess, order)
        db.commit()
        out_trade_no = order.out_trade_no
    [message] = sandbox_messages.messages(buyer.openid)
    assert message["template_id"] == TEMPLATES["order_shipped"]
    assert message["page"] == "pages/orders/detail"
    data = message["data"]
    assert data["character_string1"] == out_trade_no
    assert data["thing2"] == "有机茶叶礼盒"
    assert data["amount3"] == "¥123.45"
    assert data["phrase4"] == "已发货"
    [row] = outbox(app, event="order_shipped")
    assert row.state.value == "sent" and row.channel.value == "subscribe" and row.msgid == message["msgid"]
