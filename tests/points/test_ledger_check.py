"""``ledger-check``: silent on a healthy ledger, loud (exit 1) on every kind of corruption."""
from __future__ import annotations

import functools
import threading

import pytest
from sqlalchemy import insert, select, update

from server import db
from server.points import checks, ledger, settlement
from server.points.checks import check_ledger
from server.accounts.models import Member
from server.points.models import Account, AccountKind, Entry, LedgerTransaction, OrderReward
from server.points.services import process_order
from tests.points import completed_order, make_member, make_sku, pay, place, post_to

K = AccountKind


@pytest.fixture
def healthy(app):
    """A ledger with every kind of posting: rewards, maturing, a refund's reversal, settlement and a grant."""
    with app.app_context():
        sess = db.session()
        zoe = make_member(sess, "zoe")
        alice = make_member(sess, "alice", inviter=zoe)
        bob = make_member(sess, "bob", inviter=alice, upline=zoe)
        sku = make_sku(sess, price_fen=100_000)
        done = completed_order(sess, bob, sku)
        refunded = pay(sess, place(sess, bob, sku))
        process_order(sess, refunded)
        refunded.refunded_fee = 40_000  # as a partial refund leaves it
        process_order(sess, refunded)
        settlement.settle(sess, period="manual:healthy", mode="weekly", actor="test")
        settlement.grant_points(sess, alice.id, 1_000, reason="goodwill", key="grant:test:1", actor="test")
        db.commit()
        return {"alice": alice.id, "zoe": zoe.id, "order": done.id, "refunded": refunded.id}


def test_a_healthy_ledger_passes(app, healthy):
    with app.app_context():
        report = check_ledger(db.session())
    assert report.ok, report.violations
    assert report.counts["order rewards"] == 4 and report.counts["transactions"] > 0
    result = app.test_cli_runner().invoke(args=["ledger-check"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ledger-check passed:") and "4 order rewards" in result.output
    # 5 + 0.5 settled from the completed order, 10 granted; 6 + 0.6 pending on the order refunded to ¥600.
    assert "points by account kind: available 15.50, debt 0.00, issuance -22.10, matured 0.00, pending 6.60\n" in result.output


def fails_with(app, *phrases):
    result = app.test_cli_runner().invoke(args=["ledger-check"])
    assert result.exit_code == 1, result.output
    for phrase in phrases:
        assert phrase in result.output, result.output
    assert "ledger-check failed" in result.output
    return result.output


def test_a_cached_balance_changed_behind_the_ledgers_back_fails(app, healthy):
    with app.app_context():
        sess = db.session()
        available = ledger.account(sess, healthy["alice"], K.available)
        acct_id, cached = available.id, available.balance
        sess.execute(update(Account).where(Account.id == acct_id).values(balance=Account.balance + 1))
        db.commit()
    fails_with(app, f"account {acct_id} (member {healthy['alice']} available) caches balance {cached + 1} but its entries sum to {cached}")


def test_an_unbalanced_entry_fails(app, healthy):
    with app.app_context():
        sess = db.session()
        tx_id = ledger.find(sess, "grant:test:1").id
        acct_id = ledger.account(sess, healthy["alice"], K.available).id
        sess.execute(insert(Entry).values(transaction_id=tx_id, account_id=acct_id, amount=5, created_at=settlement.utcnow()))
        db.commit()
    output = fails_with(app, f"transaction {tx_id} does not balance: its entries sum to 5", f"account {acct_id} (member")
    assert output.count("VIOLATION") == 2


def test_an_order_reward_that_disagrees_with_its_postings_fails(app, healthy):
    with app.app_context():
        sess = db.session()
        level2 = sess.scalars(select(OrderReward).where(OrderReward.order_id == healthy["order"], OrderReward.level == 2)).one()
        sess.execute(update(OrderReward).where(OrderReward.id == level2.id).values(amount=10_000))
        db.commit()
    fails_with(
        app,
        f"order reward {level2.id} (order {healthy['order']}, level 2) is 10000 but the ledger credited 50",
        f"order {healthy['order']} pays level 2 (10000) more than level 1 (500)",
    )


def test_a_reversal_the_reward_row_does_not_know_fails(app, healthy):
    with app.app_context():
        sess = db.session()
        sess.execute(update(OrderReward).where(OrderReward.order_id == healthy["refunded"], OrderReward.level == 1).values(reversed_amount=0))
        db.commit()
    fails_with(app, "has 0 reversed but the ledger reversed 400")  # 1% repeat rate on the ¥400 refunded


def test_a_reward_to_someone_not_stamped_on_the_order_fails(app, healthy):
    with app.app_context():
        sess = db.session()
        stranger = make_member(sess, "stranger")
        row = sess.scalars(select(OrderReward).where(OrderReward.order_id == healthy["order"], OrderReward.level == 1)).one()
        sess.execute(update(OrderReward).where(OrderReward.id == row.id).values(member_id=stranger.id))
        db.commit()
    fails_with(app, f"pays member {stranger.id}, not the level-1 member stamped on the order ({healthy['alice']})", "but was posted for")


def test_reward_postings_without_a_reward_row_fail(app, healthy):
    with app.app_context():
        sess = db.session()
        sess.execute(OrderReward.__table__.delete().where(OrderReward.order_id == healthy["refunded"], OrderReward.level == 2))
        db.commit()
    fails_with(app, f"order {healthy['refunded']} level 2 has reward postings (100 credited) but no order reward row")


def test_a_reward_row_without_any_posting_fails(app, healthy):
    with app.app_context():
        sess = db.session()
        bob = sess.scalars(select(Member).where(Member.nickname == "bob")).one()
        unpaid = place(sess, bob, make_sku(sess, price_fen=20_000))
        sess.execute(insert(OrderReward).values(order_id=unpaid.id, member_id=healthy["alice"], level=1, amount=300, reversed_amount=0, rule="by hand"))
        reward_id = sess.scalars(select(OrderReward.id).where(OrderReward.order_id == unpaid.id)).one()
        db.commit()
    output = fails_with(app, f"order reward {reward_id} (order {unpaid.id}, level 1) is 300 but the ledger credited 0")
    assert output.count("VIOLATION") == 1


def test_a_reward_posting_without_a_level_fails_both_ways(app, healthy):
    """The level is read from the order-level index: a posting that lost it is a stray of its own and leaves its reward uncredited."""
    with app.app_context():
        sess = db.session()
        tx = ledger.find(sess, f"order:{healthy['order']}:L1:reward")
        assert tx is not None
        tx_id = tx.id
        reward_id = sess.scalars(select(OrderReward.id).where(OrderReward.order_id == healthy["order"], OrderReward.level == 1)).one()
        sess.execute(update(LedgerTransaction).where(LedgerTransaction.id == tx_id).values(level=None))
        db.commit()
    order = healthy["order"]
    fails_with(
        app,
        f"order reward {reward_id} (order {order}, level 1) is 500 but the ledger credited 0",
        f"order {order} level None has reward postings (500 credited) but no order reward row",
        f"transaction {tx_id} rewards order {order} at level None; only levels 1 and 2 exist",
    )


def _insert_entry_around_foreign_keys(app, **values) -> int:
    """An entry written as a restore or a hand-made script could write it, with the foreign keys switched off."""
    with app.extensions["db_engine"].connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        switch = conn.connection.dbapi_connection.execute if sqlite else conn.exec_driver_sql  # SQLite: outside any transaction
        switch("PRAGMA foreign_keys=OFF" if sqlite else "SET FOREIGN_KEY_CHECKS=0")
        entry_id = conn.execute(insert(Entry).values(created_at=settlement.utcnow(), **values)).inserted_primary_key[0]
        conn.commit()
        switch("PRAGMA foreign_keys=ON" if sqlite else "SET FOREIGN_KEY_CHECKS=1")
    return int(entry_id)


def test_entries_of_a_missing_transaction_or_account_fail(app, healthy):
    with app.app_context():
        sess = db.session()
        tx_id = ledger.find(sess, "grant:test:1").id
        acct_id = ledger.account(sess, healthy["alice"], K.available).id
        missing = 10_000_000
        db.commit()
    lost_tx = _insert_entry_around_foreign_keys(app, transaction_id=missing, account_id=acct_id, amount=5)
    lost_acct = _insert_entry_around_foreign_keys(app, transaction_id=tx_id, account_id=missing + 1, amount=-5)
    output = fails_with(
        app,
        f"transaction {missing} does not balance: its entries sum to 5",
        f"transaction {tx_id} does not balance: its entries sum to -5",
        f"entry {lost_tx} belongs to transaction {missing}, which does not exist",
        f"entry {lost_acct} posts to account {missing + 1}, which does not exist",
    )
    # Besides those four, Alice's available account no longer matches its entries.
    assert output.count("VIOLATION") == 5
    with app.app_context():
        sess = db.session()
        sess.execute(Entry.__table__.delete().where(Entry.id.in_([lost_tx, lost_acct])))
        db.commit()


def test_the_summary_counts_balances_per_account_kind(app):
    with app.app_context():
        sess = db.session()
        post_to(sess, make_member(sess, "alice"), K.available, 100)
        report = check_ledger(sess)
    assert report.ok and report.balances == {"available": 100, "issuance": -100}


def test_the_merchant_accounts_cache_no_balance_and_a_cached_one_fails(app):
    with app.app_context():
        sess = db.session()
        post_to(sess, make_member(sess, "alice"), K.available, 100)
        issuance = ledger.account(sess, None, K.issuance)
        db.commit()
        # No posting updates the merchant's row (so none waits on another's lock): its entries are its balance.
        assert (issuance.balance, ledger.balance(sess, issuance)) == (0, -100)
        sess.execute(update(Account).where(Account.id == issuance.id).values(balance=-100))
        db.commit()
    fails_with(app, f"account {issuance.id} (merchant issuance) caches balance -100; the merchant's accounts cache none")


def test_the_checks_run_at_once_on_mariadb_and_report_exactly_what_they_report_one_by_one(app, healthy, monkeypatch):
    with app.app_context():
        if db.session().get_bind().dialect.name != "mysql":
            pytest.skip("the checks run at once on MariaDB/MySQL only")
        sess = db.session()
        # Several kinds of damage at once: a cached balance, a reward's amount and a reward's reversed amount.
        sess.execute(update(Account).where(Account.id == ledger.account(sess, healthy["alice"], K.available).id).values(balance=Account.balance + 7))
        sess.execute(update(OrderReward).where(OrderReward.order_id == healthy["order"], OrderReward.level == 2).values(amount=OrderReward.amount + 1))
        sess.execute(update(OrderReward).where(OrderReward.order_id == healthy["refunded"], OrderReward.level == 1).values(reversed_amount=0))
        db.commit()
        one_by_one = check_ledger(db.session(), workers=1)
        db.session().rollback()
        threads = set()
        original = checks._signs

        @functools.wraps(original)
        def signs(part_session):
            threads.add(threading.current_thread().name)
            return original(part_session)

        monkeypatch.setattr(checks, "_PARTS", tuple(signs if part is original else part for part in checks._PARTS))
        at_once = check_ledger(db.session(), workers=3)
    assert len(one_by_one.violations) == 3 and not one_by_one.ok
    assert (at_once.violations, at_once.counts, at_once.balances) == (one_by_one.violations, one_by_one.counts, one_by_one.balances)
    assert {name.split("_")[0] for name in threads} == {"ledger-check"}
