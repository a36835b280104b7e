"""Two staff decide the same review at the same moment: one decision wins, the other is told so, and
the ledger moved exactly once (on MariaDB with row locks; on SQLite one writer waits for the other)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from server import db
from server.points.checks import check_ledger
from server.points.models import LedgerTransaction, OrderReward, TxKind
from server.risk.models import RiskEvent, RiskReview
from tests.risk.generate import Builder, Merchant, inject_case


@pytest.mark.slow
@pytest.mark.parametrize("decisions", [("release", "reverse"), ("reverse", "reverse")])
def test_two_staff_deciding_at_once_one_wins(app, client, staff_login, decisions):
    with app.app_context():
        sess = db.session()
        merchant = Merchant()
        builder = Builder(sess, seed=21)
        inject_case(builder, merchant, "shared_phone")
        review = sess.scalar(select(RiskReview).where(RiskReview.member_id == merchant.cases[0].member_id, RiskReview.event == RiskEvent.payment))
        review_id = review.id
        db.commit()
    headers = [staff_login("operations"), staff_login("owner")]
    barrier = threading.Barrier(2)
    answers: list[tuple[int, int, str]] = []

    def decide(i: int) -> None:
        local = app.test_client()
        barrier.wait()
        response = local.post(f"/admin/api/v1/risk/reviews/{review_id}/decisions", headers=headers[i], json={"decision": decisions[i]})
        body = response.get_json()
        answers.append((response.status_code, body["code"], decisions[i]))

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(code for code, _, _ in answers) == [200, 409], answers
    assert [c for s, c, _ in answers if s == 409] == [40995]
    winner = next(d for s, _, d in answers if s == 200)
    with app.app_context():
        sess = db.session()
        review = sess.get(RiskReview, review_id)
        assert review.state.value == {"release": "released", "reverse": "reversed"}[winner]
        reversals = sess.scalar(select(func.count()).select_from(LedgerTransaction).where(LedgerTransaction.kind == TxKind.reversal))
        rewards = sess.scalar(select(func.count()).select_from(OrderReward).where(OrderReward.order_id == review.ref_id))
        assert rewards >= 1 and reversals == (rewards if winner == "reverse" else 0)  # each reward reversed once, or none
        assert check_ledger(sess).ok, check_ledger(sess).violations
