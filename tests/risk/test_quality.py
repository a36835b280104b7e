"""The signals against a generated merchant: injected fraud of every kind is found, honest members are left alone."""
from __future__ import annotations

import logging

from server import db
from tests.risk.generate import KINDS, build, measure


def test_recall_on_injected_fraud_and_false_positives_on_honest_members(app, caplog):
    caplog.set_level(logging.ERROR, logger="server.risk")
    with app.app_context():
        sess = db.session()
        merchant = build(sess, sharers=8, buyers_per_sharer=10, cases_per_kind=2)
        quality = measure(sess, merchant)
        assert len(merchant.cases) == 2 * len(KINDS) and len(merchant.honest) == 88
        assert quality.recall >= 0.9, quality.missed
        assert quality.false_positive_rate <= 0.02, quality.flagged_honest
    assert not [r for r in caplog.records if r.name.startswith("server.risk")], "a scoring error was logged"
