"""The ledger's invariants, checked against the database as it is (``python -m server ledger-check``).

Every check is one aggregate query, so the whole ledger is read a handful of
times however large it grows. The database constraints already refuse most of
these states; the check exists for what they cannot see (sums across rows) and
for rows written around the ORM.
"""
from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, cast

from sqlalchemy import Engine, Select, Table, case, exists, func, literal, select
from sqlalchemy.orm import Session, aliased

from server.db import mysql_family
from server.orders.models import Order
from server.points.models import MERCHANT_KINDS, Account, AccountKind, Entry, LedgerTransaction, OrderReward, TxKind
from server.points.rules import MAX_LEVELS

K = AccountKind
_TRANSACTIONS, _ENTRIES = cast(Table, LedgerTransaction.__table__), cast(Table, Entry.__table__)


@dataclass
class LedgerReport:
    violations: list[str] = field(default_factory=list)
    #: Rows checked, per table.
    counts: dict[str, int] = field(default_factory=dict)
    #: Hundredths of a point per account kind, summed over all accounts (they sum to zero).
    balances: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


#: Connections ``python -m server ledger-check`` reads with at once on MariaDB/MySQL, by default.
DEFAULT_WORKERS = 2


def check_ledger(sess: Session, *, workers: int = 1) -> LedgerReport:
    """Every invariant of DESIGN §4 and the reward guards of §5; each broken one is a line in ``violations``.

    The entries are read twice in all: once by transaction (balance, and transactions that do not
    exist) and once by account (cached balances, and accounts that do not exist).

    The checks are independent parts, each a few queries. With ``workers`` above 1 on MariaDB/MySQL they run
    that many at a time, each part on a connection of its own in a REPEATABLE READ transaction: a part sees one
    snapshot, and every part's invariant holds in every committed state, so postings committed between two
    parts' snapshots cannot look like a broken ledger. Otherwise (and on SQLite) they run one after the other in
    ``sess``. On committed data the report is the same either way (the parts cannot see what ``sess`` has not committed).
    """
    bind = sess.get_bind()
    results: list[Any]
    if workers > 1 and isinstance(bind, Engine) and mysql_family(bind.dialect):
        snapshot = bind.execution_options(isolation_level="REPEATABLE READ")

        def run(part: Callable[[Session], Any]) -> Any:
            with Session(snapshot) as own:
                return part(own)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ledger-check") as pool:
            results = list(pool.map(run, _PARTS))
    else:
        results = [part(sess) for part in _PARTS]
    parts = dict(zip((part.__name__ for part in _PARTS), results))
    report = LedgerReport()
    (unbalanced, no_transaction), (cached, no_account) = parts["_transactions_part"], parts["_accounts_part"]
    report.violations += unbalanced + cached + parts["_signs"] + no_transaction + no_account + parts["_unique_keys"]
    posted, unposted = parts["_posting_sums"], parts["_unposted_rewards"]
    report.violations += _reward_problems(sess, posted[0] + unposted, posted[1]) + parts["_reward_levels"]
    report.counts, report.balances = parts["_totals"]
    return report


def _transactions_part(sess: Session) -> tuple[list[str], list[str]]:
    """Transactions that do not balance, and every entry whose transaction does not exist."""
    unbalanced, unknown = _by_transaction(sess)
    return unbalanced, _orphans(sess, Entry.transaction_id, unknown, "entry {} belongs to transaction {}, which does not exist")


def _accounts_part(sess: Session) -> tuple[list[str], list[str]]:
    """Accounts whose cached balance is not their entries', and every entry whose account does not exist."""
    cached, unknown = _by_account(sess)
    return cached, _orphans(sess, Entry.account_id, unknown, "entry {} posts to account {}, which does not exist")


def _totals(sess: Session) -> tuple[dict[str, int], dict[str, int]]:
    """Rows checked per table, and hundredths of a point per account kind (they sum to zero)."""
    counts = {
        name: int(sess.scalar(select(func.count()).select_from(model)) or 0)
        for name, model in (("transactions", LedgerTransaction), ("entries", Entry), ("accounts", Account), ("order rewards", OrderReward))
    }
    # Members' kinds from their cached balances (proved equal to their entries by ``_by_account``), the merchant's from their entries.
    merchant = Account.kind.in_(MERCHANT_KINDS)
    members = select(Account.kind, func.coalesce(func.sum(Account.balance), 0)).where(~merchant).group_by(Account.kind)
    merchants = select(Account.kind, func.coalesce(func.sum(Entry.amount), 0)).join(Entry, Entry.account_id == Account.id).where(merchant).group_by(Account.kind)
    totals = {kind.value: int(total) for query in (members, merchants) for kind, total in sess.execute(query)}
    return counts, dict(sorted(totals.items()))


def _by_transaction(sess: Session) -> tuple[list[str], list[int]]:
    """One pass over the entries' (transaction_id, account_id, amount) index: the transactions whose entries do not sum
    to zero, and the transaction ids entries name that do not exist.

    The ids are looked up in a set the database makes from the transactions' narrowest index (``NOT IN``, materialised),
    not one row of the wide transactions table each.
    """
    sums = select(Entry.transaction_id.label("tx_id"), func.sum(Entry.amount).label("total")).group_by(Entry.transaction_id).subquery()
    rows = sess.execute(
        select(sums.c.tx_id, sums.c.total)
        .where((sums.c.total != 0) | sums.c.tx_id.not_in(select(LedgerTransaction.id)))
        .order_by(sums.c.tx_id)
    ).all()
    found = set(sess.scalars(select(LedgerTransaction.id).where(LedgerTransaction.id.in_([tx_id for tx_id, _ in rows])))) if rows else set()
    unbalanced = [f"transaction {tx_id} does not balance: its entries sum to {int(total)}" for tx_id, total in rows if total != 0]
    return unbalanced, [tx_id for tx_id, _ in rows if tx_id not in found]


def _by_account(sess: Session) -> tuple[list[str], list[int]]:
    """A member account caches the sum of its entries; the merchant's cache nothing (0: their entries are their balance).

    Also the account ids entries name that do not exist, from the same pass over the entries.
    """
    sums = select(Entry.account_id, func.sum(Entry.amount).label("total")).group_by(Entry.account_id).subquery()
    # The sums first (STRAIGHT_JOIN on MySQL/MariaDB; a LEFT JOIN keeps that order anyway): one pass over the
    # entries' (account_id, id, amount) index, then one account read each. Joined the other way round, MariaDB
    # sums each account's entries through its (account_id, created_at) index, one row lookup per entry.
    disagree = sess.execute(
        select(sums.c.account_id, Account.id, Account.kind, Account.member_id, Account.balance, sums.c.total)
        .select_from(sums)
        .outerjoin(Account, Account.id == sums.c.account_id)
        .where(Account.id.is_(None) | (Account.kind.not_in(MERCHANT_KINDS) & (Account.balance != sums.c.total)))
        .prefix_with("STRAIGHT_JOIN", dialect="mysql")
    ).all()
    unknown = sorted(ref for ref, acct_id, *_ in disagree if acct_id is None)
    unposted = select(Account.id, Account.kind, Account.member_id, Account.balance, literal(0)).where(
        Account.kind.not_in(MERCHANT_KINDS), Account.balance != 0, ~exists().where(Entry.account_id == Account.id)
    )
    rows = sorted([*(row[1:] for row in disagree if row[1] is not None), *sess.execute(unposted)], key=lambda row: row[0])
    merchant = sess.execute(
        select(Account.id, Account.kind, Account.balance).where(Account.kind.in_(MERCHANT_KINDS), Account.balance != 0).order_by(Account.id)
    )
    return [
        f"account {acct_id} ({_owner(member_id)} {kind.value}) caches balance {balance} but its entries sum to {int(entries)}"
        for acct_id, kind, member_id, balance, entries in rows
    ] + [f"account {acct_id} (merchant {kind.value}) caches balance {balance}; the merchant's accounts cache none" for acct_id, kind, balance in merchant], unknown


def _signs(sess: Session) -> list[str]:
    rows = sess.execute(
        select(Account.id, Account.kind, Account.member_id, Account.balance)
        .where(
            (Account.kind.in_((K.available, K.pending, K.matured)) & (Account.balance < 0)) | ((Account.kind == K.debt) & (Account.balance > 0))
        )
        .order_by(Account.id)
    )
    return [f"account {acct_id} ({_owner(member_id)} {kind.value}) has an impossible balance {balance}" for acct_id, kind, member_id, balance in rows]


def _orphans(sess: Session, column: Any, missing: list[int], message: str) -> list[str]:
    """The entries that name a missing transaction or account (``column``), read only when there are any."""
    if not missing:
        return []
    return [message.format(entry_id, ref) for entry_id, ref in sess.execute(select(Entry.id, column).where(column.in_(missing)).order_by(Entry.id))]


def _unique_keys(sess: Session) -> list[str]:
    rows = sess.execute(
        select(LedgerTransaction.idempotency_key, func.count())
        .group_by(LedgerTransaction.idempotency_key)
        .having(func.count() > 1)
        .order_by(LedgerTransaction.idempotency_key)
    )
    return [f"idempotency key {key!r} was posted {int(n)} times" for key, n in rows]


def _issuance_postings(issuance: list[int], *columns: Any) -> Select[Any]:
    """``columns`` of each order's reward and reversal postings, joined to their issuance leg.

    Read from ``ix_ledger_transactions_order_level`` and ``ix_ledger_entries_transaction_account`` alone, in
    (order, level) order: no transaction row is read, so a sum per (order, level) streams off the indexes.
    """
    return (
        select(*columns)
        .select_from(LedgerTransaction)
        .join(Entry, (Entry.transaction_id == LedgerTransaction.id) & Entry.account_id.in_(issuance))
        .where(LedgerTransaction.order_id.is_not(None), LedgerTransaction.kind.in_((TxKind.order_reward, TxKind.reversal)))
        .with_hint(_TRANSACTIONS, "FORCE INDEX (ix_ledger_transactions_order_level)", "mysql")
        .with_hint(_ENTRIES, "FORCE INDEX (ix_ledger_entries_transaction_account)", "mysql")
        .with_hint(_TRANSACTIONS, "FORCE INDEX (ix_ledger_transactions_order_level)", "mariadb")
        .with_hint(_ENTRIES, "FORCE INDEX (ix_ledger_entries_transaction_account)", "mariadb")
    )


#: A reward whose ledger sums disagree with it: (reward id, order, level, member, amount, reversed amount,
#: what the ledger credited, what it reversed, whether postings were for someone else).
_Disagreement = tuple[int, int, int, int, int, int, int, int, bool]


def _issuance_ids(sess: Session) -> list[int]:
    return list(sess.scalars(select(Account.id).where(Account.kind == K.issuance)))


def _posting_sums(sess: Session) -> tuple[list[_Disagreement], list[tuple[int, int | None, int]]]:
    """Each order reward's amount and reversed amount against what its postings took from and returned to issuance.

    The issuance leg is the one leg every reward and reversal has, whichever member
    accounts the other legs touched (a reversal may split across available and debt).
    The sums per (order, level) are made once, from the postings' indexes, and joined to
    the rewards: a sum that disagrees with its reward, or has none (a stray), comes back.
    """
    is_reward = LedgerTransaction.kind == TxKind.order_reward
    posted = _issuance_postings(
        _issuance_ids(sess),
        LedgerTransaction.order_id,
        LedgerTransaction.level,
        func.sum(case((is_reward, -Entry.amount), else_=0)).label("credited"),
        func.sum(case((is_reward, 0), else_=Entry.amount)).label("reversed"),
        # Who the postings were for: one member (min = max, no null) or not.
        func.min(LedgerTransaction.member_id).label("first_member"),
        func.max(LedgerTransaction.member_id).label("last_member"),
        (func.count() - func.count(LedgerTransaction.member_id)).label("no_member"),
    ).group_by(LedgerTransaction.order_id, LedgerTransaction.level).subquery()
    someone_else = (posted.c.no_member > 0) | (posted.c.first_member != OrderReward.member_id) | (posted.c.last_member != OrderReward.member_id)
    stray: list[tuple[int, int | None, int]] = []
    disagree: list[_Disagreement] = []
    # One pass over the sums: those without a reward, and the rewards they disagree with.
    rows = sess.execute(
        select(
            posted.c.order_id, posted.c.level, posted.c.credited, posted.c.reversed, someone_else,
            OrderReward.id, OrderReward.member_id, OrderReward.amount, OrderReward.reversed_amount,
        )
        .select_from(posted)
        .outerjoin(OrderReward, (OrderReward.order_id == posted.c.order_id) & (OrderReward.level == posted.c.level))
        .where(OrderReward.id.is_(None) | (posted.c.credited != OrderReward.amount) | (posted.c.reversed != OrderReward.reversed_amount) | someone_else)
    )
    for order_id, level, ledger_credited, ledger_reversed, other_member, reward_id, member_id, amount, reversed_amount in rows:
        if reward_id is None:
            stray.append((order_id, level, int(ledger_credited)))
        else:
            disagree.append((reward_id, order_id, level, member_id, amount, reversed_amount, int(ledger_credited), int(ledger_reversed), bool(other_member)))
    return disagree, stray


def _unposted_rewards(sess: Session) -> list[_Disagreement]:
    """Rewards with something credited or reversed and no issuance posting at all: the ledger credited 0.

    A look-up per reward in the postings' indexes.
    """
    unposted = ~exists(
        _issuance_postings(_issuance_ids(sess), literal(1)).where(LedgerTransaction.order_id == OrderReward.order_id, LedgerTransaction.level == OrderReward.level)
    )
    return [
        (reward_id, order_id, level, member_id, amount, reversed_amount, 0, 0, False)
        for reward_id, order_id, level, member_id, amount, reversed_amount in sess.execute(
            select(OrderReward.id, OrderReward.order_id, OrderReward.level, OrderReward.member_id, OrderReward.amount, OrderReward.reversed_amount).where(
                (OrderReward.amount != 0) | (OrderReward.reversed_amount != 0), unposted
            )
        )
    ]


def _reward_problems(sess: Session, disagree: list[_Disagreement], stray: list[tuple[int, int | None, int]]) -> list[str]:
    """The texts for the rewards ``_posting_sums`` and ``_unposted_rewards`` found, by (order, level)."""
    found: dict[tuple[int, int], list[str]] = defaultdict(list)
    strangers: list[tuple[int, int, int, int]] = []
    for reward_id, order_id, level, member_id, amount, reversed_amount, ledger_credited, ledger_reversed, other_member in disagree:
        if ledger_credited != amount:
            found[(order_id, level)].append(f"order reward {reward_id} (order {order_id}, level {level}) is {amount} but the ledger credited {ledger_credited}")
        if ledger_reversed != reversed_amount:
            found[(order_id, level)].append(f"order reward {reward_id} (order {order_id}, level {level}) has {reversed_amount} reversed but the ledger reversed {ledger_reversed}")
        if other_member:
            strangers.append((order_id, level, reward_id, member_id))
    issuance = _issuance_ids(sess) if strangers else []
    for order_id, level, reward_id, member_id in strangers:
        # Only for a reward that has them: who else its postings were for.
        members = set(
            sess.scalars(_issuance_postings(issuance, LedgerTransaction.member_id).where(LedgerTransaction.order_id == order_id, LedgerTransaction.level == level))
        )
        found[(order_id, level)].append(
            f"order reward {reward_id} (order {order_id}, level {level}) belongs to member {member_id} but was posted for {sorted(members - {member_id}, key=str)}"
        )
    problems = [text for key in sorted(found) for text in found[key]]
    problems += [
        f"order {order_id} level {level} has reward postings ({total} credited) but no order reward row"
        for order_id, level, total in sorted(stray, key=lambda row: (row[0], row[1] or 0))
    ]
    return problems


def _reward_levels(sess: Session) -> list[str]:
    """Guards 1 and 4: two levels at most, to the inviter and upline stamped on the order, level 2 never above level 1.

    Each guard is a query that returns only the rewards that break it.
    """
    problems: list[tuple[tuple[int, int, int], str]] = []
    stamped = case((OrderReward.level == 1, Order.inviter_id), else_=Order.upline_id)
    valid = OrderReward.level.between(1, MAX_LEVELS)
    rows = sess.execute(
        select(OrderReward.id, OrderReward.order_id, OrderReward.level, OrderReward.member_id, stamped, valid)
        .join(Order, Order.id == OrderReward.order_id)
        .where(~valid | stamped.is_(None) | (stamped != OrderReward.member_id))
    )
    for reward_id, order_id, level, member_id, stamped_id, in_range in rows:
        if not in_range:
            problems.append(((order_id, level, 0), f"order reward {reward_id} on order {order_id} is at level {level}; only levels 1 and 2 exist"))
        else:
            problems.append(((order_id, level, 0), f"order reward {reward_id} on order {order_id} pays member {member_id}, not the level-{level} member stamped on the order ({stamped_id})"))
    texts = [text for _, text in sorted(problems)]
    level1 = aliased(OrderReward)
    over = sess.execute(
        select(OrderReward.order_id, OrderReward.amount, level1.amount)
        .outerjoin(level1, (level1.order_id == OrderReward.order_id) & (level1.level == 1))
        .where(OrderReward.level == 2, OrderReward.amount > func.coalesce(level1.amount, 0))
        .order_by(OrderReward.order_id)
    )
    texts += [f"order {order_id} pays level 2 ({int(amount2)}) more than level 1 ({int(amount1 or 0)})" for order_id, amount2, amount1 in over]
    # Every transaction's kind and level are in the order-level index, a fraction of the rows' width.
    stray = sess.execute(
        select(LedgerTransaction.id, LedgerTransaction.order_id, LedgerTransaction.level)
        .where(LedgerTransaction.kind == TxKind.order_reward, (LedgerTransaction.level.is_(None)) | (LedgerTransaction.level.not_in(range(1, MAX_LEVELS + 1))))
        .with_hint(_TRANSACTIONS, "FORCE INDEX (ix_ledger_transactions_order_level)", "mysql")
        .with_hint(_TRANSACTIONS, "FORCE INDEX (ix_ledger_transactions_order_level)", "mariadb")
        .order_by(LedgerTransaction.id)
    )
    texts += [f"transaction {tx_id} rewards order {order_id} at level {level}; only levels 1 and 2 exist" for tx_id, order_id, level in stray]
    return texts


def _owner(member_id: int | None) -> str:
    return "merchant" if member_id is None else f"member {member_id}"


#: The independent parts of ``check_ledger``, the longest first (the order they start in when run at once).
_PARTS: tuple[Callable[[Session], Any], ...] = (
    _posting_sums, _transactions_part, _reward_levels, _unposted_rewards, _totals, _accounts_part, _signs, _unique_keys,
)
