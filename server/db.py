"""Database engine, declarative base, column types and the unit of work.

Services take a session and only ``flush()``. A request commits once, in one place:
``finish_request`` commits when its response is a success (status below 400) and rolls
back otherwise; a commit that fails becomes the error response. Jobs and CLI commands
commit themselves (``commit()``). A commit runs the side effects queued with
``after_commit``; a rollback drops them, including those queued inside a savepoint that
rolled back. The few routes that must commit early (so that no transaction is open
while WeChat answers, before a lock is released, or to keep a write under an error
answer) call ``commit()`` where they do; tests/test_commits.py lists each with its reason.
"""
from __future__ import annotations

import contextlib
import enum
import socket
import ssl
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, TypeVar, cast

from flask import Flask, Response, current_app, g, has_app_context
from sqlalchemy import BigInteger, DateTime, Enum, Integer, MetaData, String, create_engine, event, func, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.engine import Connection, CursorResult, Engine, ExceptionContext, Result
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction, sessionmaker
from sqlalchemy.pool import PoolResetState, StaticPool
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


#: Primary and foreign keys: BIGINT on MySQL, INTEGER on SQLite (its rowid alias).
BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC; refuses naive datetimes on the way in."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class china_date(FunctionElement[str]):
    """``china_date(column)``: the China-time calendar day of a UTC timestamp column, as ``YYYY-MM-DD``
    text, for grouping by the merchant's days in SQL. China keeps UTC+8 all year (no daylight saving),
    so a fixed offset is exact."""

    type = String()
    inherit_cache = True
    name = "china_date"


@compiles(china_date, "sqlite")
def _china_date_sqlite(element: china_date, compiler: Any, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)}, '+8 hours')"


@compiles(china_date, "mysql")
@compiles(china_date, "mariadb")
def _china_date_mysql(element: china_date, compiler: Any, **kw: Any) -> str:
    return f"DATE_FORMAT(({compiler.process(element.clauses, **kw)}) + INTERVAL 8 HOUR, '%%Y-%%m-%%d')"


class int_div(FunctionElement[int]):
    """``int_div(a, b)``: a ÷ b floored, for non-negative integers, exact on every backend (MySQL's ``/`` is a
    decimal rounded to four places, which FLOOR could round up)."""

    type = BigInteger()
    inherit_cache = True
    name = "int_div"


@compiles(int_div, "sqlite")
def _int_div_sqlite(element: int_div, compiler: Any, **kw: Any) -> str:
    a, b = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(({a}) / ({b}))"


@compiles(int_div, "mysql")
@compiles(int_div, "mariadb")
def _int_div_mysql(element: int_div, compiler: Any, **kw: Any) -> str:
    a, b = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(({a}) DIV ({b}))"


def enum_column(cls: type[enum.Enum], name: str, length: int = 16) -> Enum:
    """Enum stored as a short string: no native ENUM type, so adding a value needs no ALTER."""
    return Enum(cls, name=name, native_enum=False, length=length, validate_strings=True)


def paginate(
    sess: Session,
    stmt: Any,
    *,
    offset: int,
    limit: int,
    order_by: tuple[Any, ...] = (),
    count_column: Any = None,
    scalars: bool = True,
    count_cap: int | None = None,
) -> tuple[list[Any], int]:
    """One page of ``stmt`` in ``order_by`` order, and how many rows it has in all (counted over
    ``count_column`` when the selection is wider than a row); entities with ``scalars``, else rows.
    With ``count_cap`` the count stops past that many rows (see ``count``)."""
    total = count(sess, stmt, count_column=count_column, cap=count_cap)
    paged = stmt.order_by(*order_by).offset(offset).limit(limit)
    rows = sess.scalars(paged).all() if scalars else sess.execute(paged).all()
    return list(rows), total


def count(sess: Session, stmt: Any, *, count_column: Any = None, cap: int | None = None) -> int:
    """How many rows ``stmt`` selects (counted over ``count_column`` when the selection is wider than a row).

    With ``cap`` the database stops reading after ``cap + 1`` rows, and ``cap + 1`` means "more than
    ``cap``": a list of millions of rows costs no more to count than one of ``cap``.
    """
    counted = stmt.with_only_columns(count_column) if count_column is not None else stmt
    counted = counted.order_by(None)
    if cap is not None:
        if count_column is None and not counted._distinct:
            # Only the rows' existence is counted: a constant lets the database stay in the index it filters
            # by, instead of reading each whole row into the derived table.
            counted = counted.with_only_columns(literal(1), maintain_column_froms=True)
        counted = counted.limit(cap + 1)
    return int(sess.scalar(select(func.count()).select_from(counted.subquery())) or 0)


def fit(column: Any, head: str, tail: str = "") -> str:
    """``head + tail`` within the characters the String ``column`` holds: ``head`` is cut (marked "…"), ``tail`` kept."""
    room = column.type.length - len(tail)
    return head + tail if len(head) <= room else head[: max(room - 1, 0)] + "…" + tail


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched. ``Session.execute`` is typed to return a ``Result``; for
    these statements it is the ``CursorResult`` that carries the count."""
    return cast(CursorResult[Any], result).rowcount


def per_transaction(sess: Session, name: str, load: Callable[[], T]) -> T:
    """``load()``'s answer, kept in the session for its current transaction and loaded afresh in the next.

    For what a unit of work reads again and again and cannot change under its own feet (the settings,
    the ledger accounts it has read), so each is one statement per transaction, not one per use. Whoever changes such
    rows in the transaction drops the name with ``sess.info.pop(name, None)``.
    """
    transaction = sess.get_transaction()
    held = sess.info.get(name)
    if held is not None and transaction is not None and held[0] is transaction:
        return cast(T, held[1])
    value = load()
    transaction = sess.get_transaction()  # load() began it if nothing had yet
    if transaction is not None:
        sess.info[name] = (transaction, value)
    return value


#: SQLAlchemy's dialect names for MariaDB and MySQL: "mariadb" for a ``mariadb+pymysql://`` URL, "mysql" otherwise.
MYSQL_FAMILY = ("mysql", "mariadb")


def mysql_family(dialect: Any) -> bool:
    """MariaDB or MySQL (``MYSQL_FAMILY``)."""
    return dialect.name in MYSQL_FAMILY


#: MariaDB/MySQL errors on which the server rolls the whole transaction back, not just the statement: a
#: deadlock (ER_LOCK_DEADLOCK). A lock wait timeout (1205) undoes only its statement, unless the server
#: runs with innodb_rollback_on_timeout.
_TRANSACTION_ROLLED_BACK = frozenset({1213})


def dooms_transaction(error: BaseException) -> bool:
    """Whether ``error`` ended the transaction it was raised in (a deadlock, a lost connection): whoever
    catches it must let the unit of work fail. Going on would run the rest in a new transaction and commit
    that half alone."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    args: tuple[Any, ...] = tuple(getattr(error.orig, "args", ()))
    return bool(args) and args[0] in _TRANSACTION_ROLLED_BACK


def utcnow() -> datetime:
    """The current time, aware, in UTC, truncated to the second MySQL's DATETIME keeps."""
    return datetime.now(timezone.utc).replace(microsecond=0)


#: The recursion limit set on every MySQL/MariaDB connection: their largest value.
MAX_RECURSION = 4_294_967_295


#: In a pooled connection's ``info``: its last transaction was committed or rolled back through SQLAlchemy.
_TRANSACTION_ENDED = "transaction_ended"


def _server_closed(dbapi_conn: Any) -> bool:
    """Whether the server has closed an idle PyMySQL connection (a restart, ``wait_timeout``, a KILL).

    An idle connection has nothing to read: if its socket has bytes or an end of file waiting, the
    server said goodbye. One non-blocking peek, no round trip (the check go-sql-driver/mysql makes
    before reusing a connection). TLS sockets cannot be peeked at, so those are pinged.
    """
    sock = getattr(dbapi_conn, "_sock", None)
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket):
        try:
            dbapi_conn.ping(reconnect=False)
        except Exception:
            return True
        return False
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: alive
    except OSError:
        return True
    return True  # an error packet or an end of file (b"")


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs for concurrent use."""
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if url in ("sqlite://", "sqlite:///:memory:"):
            # One shared connection, or each thread would see its own empty database.
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, open transactions (so SAVEPOINT works), and open them
            # with BEGIN IMMEDIATE: writers queue on busy_timeout instead of failing when a
            # read-then-write transaction finds its snapshot stale.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if url not in ("sqlite://", "sqlite:///:memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No ping on every checkout and no ROLLBACK on every checkin: each cost a round trip per request.
    # Checkout checks the socket instead (``_server_closed``), and checkin ends only a transaction still open.
    engine = create_engine(url, pool_recycle=3600, pool_reset_on_return=None, isolation_level="READ COMMITTED")

    @event.listens_for(engine, "checkout")
    def _alive(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        record.info[_TRANSACTION_ENDED] = False
        if _server_closed(dbapi_conn):
            # The pool opens a new connection and checks out that one instead.
            raise DisconnectionError("the database server closed this connection")

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _ending(conn: Connection) -> None:
        conn.connection.info[_TRANSACTION_ENDED] = True

    @event.listens_for(engine, "begin")
    def _begun(conn: Connection) -> None:
        conn.connection.info[_TRANSACTION_ENDED] = False

    @event.listens_for(engine, "handle_error")
    def _failed(context: ExceptionContext) -> None:
        # After an error (a COMMIT that failed among them) the transaction may still be open.
        conn = context.connection
        if conn is not None and not conn.closed and not conn.invalidated:
            conn.connection.info[_TRANSACTION_ENDED] = False

    @event.listens_for(engine, "reset")
    def _end_open_transaction(dbapi_conn: Any, record: Any, state: PoolResetState) -> None:
        # The Connection closed its transaction itself (a rollback), or its last word was a COMMIT or
        # ROLLBACK that succeeded: nothing is open. Anything else (a raw DBAPI use, a connection checked
        # out and never used) is rolled back, as the pool's default reset would.
        if not state.transaction_was_reset and not record.info.get(_TRANSACTION_ENDED):
            dbapi_conn.rollback()

    @event.listens_for(engine, "connect")
    def _unbounded_recursion(dbapi_conn: Any, _record: Any) -> None:
        # MariaDB ends a recursive CTE after max_recursive_iterations (1000 by default) and MySQL
        # fails it after cte_max_recursion_depth (1000): the referral chain's cycle check must see
        # chains of any depth, and bounds its own recursion by the number of members.
        mariadb = "mariadb" in str(dbapi_conn.get_server_info()).lower()
        cur = dbapi_conn.cursor()
        cur.execute(f"SET SESSION {'max_recursive_iterations' if mariadb else 'cte_max_recursion_depth'} = {MAX_RECURSION}")
        cur.close()

    return engine


def init_app(app: Flask) -> None:
    """Create the engine and session factory, and close the request's session at teardown."""
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["db_engine"] = engine
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    event.listen(factory, "after_transaction_create", _savepoint_started)
    event.listen(factory, "after_soft_rollback", _rolled_back)
    app.extensions["db_sessionmaker"] = factory

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        sess: Session | None = g.pop("db_session", None)
        g.pop("after_commit", None)
        g.pop("savepoint_marks", None)
        if sess is not None:
            sess.rollback()
            sess.close()


def engine() -> Engine:
    return current_app.extensions["db_engine"]


def session() -> Session:
    """The session of the current request or job, created on first use."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["db_sessionmaker"]()
    return g.db_session


def transaction_open() -> bool:
    """Whether the current request or job holds an open database transaction (never starts a session)."""
    if not has_app_context():
        return False
    sess: Session | None = g.get("db_session")
    return sess is not None and sess.in_transaction()


def after_commit(fn: Callable[[], Any]) -> None:
    """Queue a side effect (a WeChat call, a cache clear) to run once the commit succeeds.

    A rollback drops it: of the whole session, or of the savepoint it was queued in.
    """
    g.setdefault("after_commit", []).append(fn)


def _is_current_session(sess: Session) -> bool:
    """Whether ``sess`` is the session of the current request or job, whose queue is in ``g``."""
    return has_app_context() and g.get("db_session") is sess


def _savepoint_started(sess: Session, transaction: SessionTransaction) -> None:
    """Remember how many side effects were queued when a savepoint began."""
    if transaction.nested and _is_current_session(sess):
        g.setdefault("savepoint_marks", {})[transaction] = len(g.get("after_commit", []))


def _rolled_back(sess: Session, transaction: SessionTransaction) -> None:
    """Drop the side effects of what was rolled back: those queued since the savepoint began, or all."""
    if not _is_current_session(sess):
        return
    marks: dict[SessionTransaction, int] = g.get("savepoint_marks", {})
    queued: list[Callable[[], Any]] = g.get("after_commit", [])
    if transaction.nested:
        mark = marks.pop(transaction, None)
        if mark is not None:
            del queued[mark:]
    elif transaction.parent is None:
        queued.clear()
        marks.clear()


def commit() -> None:
    """Commit the unit of work, then run its queued side effects; a commit that fails drops them.

    Requests commit in ``finish_request``; a route calls this itself only to commit early, as listed
    in tests/test_commits.py.
    """
    queued = g.pop("after_commit", [])
    g.pop("savepoint_marks", None)
    session().commit()
    for fn in queued:
        try:
            fn()
        except Exception:  # a side effect must never undo or fail a committed unit of work
            current_app.logger.exception("after-commit side effect failed")


def finish_request(response: Response) -> None:
    """End the request's unit of work: commit a success (status below 400), roll back anything else.

    Called with the view's response before it is final, so a commit that fails (an IntegrityError,
    a deadlock) raises into Flask's error handling and the client gets the error, not a success.
    """
    sess: Session | None = g.get("db_session")
    if sess is None and not g.get("after_commit"):  # nothing to commit, nothing queued
        return
    if response.status_code < 400:
        commit()
    else:
        g.pop("after_commit", None)
        g.pop("savepoint_marks", None)
        if sess is not None:
            sess.rollback()


@contextlib.contextmanager
def unit_of_work(app: Flask) -> Iterator[Session]:
    """For jobs and CLI commands: an app context whose session rolls back unless committed."""
    with app.app_context():
        yield session()
