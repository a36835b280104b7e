"""Thirty redemptions at once against a balance that pays for ten: the ledger's guard holds on every database."""
from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select

from server import db
from server.points import ledger
from server.points.checks import check_ledger
from server.points.models import AccountKind, Entry, LedgerTransaction, Redemption, TxKind
from server.points.queries import member_balances
from tests.points.test_redemption import credit, make_item

K = AccountKind


@pytest.mark.slow
def test_thirty_concurrent_redemptions_spend_a_thousand_points_exactly_once(app, wx_login):
    alice = wx_login("alice")
    credit(app, alice, 100_000)  # 1,000 points
    item = make_item(app, price=10_000, title="线上分享会席位")  # 100 points each, unlimited stock
    member_id = alice["user"]["id"]
    statuses: list[int] = []
    codes: list[int] = []
    lowest: list[int] = []
    barrier = threading.Barrier(30)
    done = threading.Event()

    def redeem_once() -> None:
        local = app.test_client()
        barrier.wait()
        response = local.post(
            "/api/v1/points/redemptions",
            headers=alice["headers"] | {"Idempotency-Key": uuid.uuid4().hex},
            json={"item_id": item, "quantity": 1},
        )
        statuses.append(response.status_code)
        codes.append(response.get_json()["code"])

    def watch_balance() -> None:
        # Reads committed balances while the race runs: never below zero at any moment.
        while not done.is_set():
            with app.app_context():
                lowest.append(member_balances(db.session(), member_id).available)

    threads = [threading.Thread(target=redeem_once) for _ in range(30)]
    watcher = threading.Thread(target=watch_balance)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()

    assert sorted(statuses) == [201] * 10 + [409] * 20, statuses
    assert sorted(codes) == [0] * 10 + [40940] * 20
    assert lowest and min(lowest) >= 0
    with app.app_context():
        sess = db.session()
        balances = member_balances(sess, member_id)
        assert (balances.available, balances.debt) == (0, 0)
        assert ledger.balance(sess, ledger.account(sess, None, K.redemption)) == 100_000
        assert sess.scalar(select(func.count()).select_from(Redemption).where(Redemption.member_id == member_id)) == 10
        redeem_txs = sess.scalars(select(LedgerTransaction.id).where(LedgerTransaction.kind == TxKind.redeem)).all()
        assert len(redeem_txs) == 10
        sums = sess.execute(select(Entry.transaction_id, func.sum(Entry.amount)).where(Entry.transaction_id.in_(redeem_txs)).group_by(Entry.transaction_id)).all()
        assert len(sums) == 10 and all(total == 0 for _, total in sums)
        assert check_ledger(sess).ok
