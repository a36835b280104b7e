"""Counting what a request sends to the database, to pin the statement counts of the hot paths.

``statements_sent(app)`` records the text of each statement SQLAlchemy executes, to say which ones ran.
``round_trips(app)`` records every statement the app's engine sends. On MariaDB it records at the
driver, so the COMMITs, ROLLBACKs and pings the pool sends itself are counted too (a ping as
``PING``); on SQLite it records the statements SQLAlchemy executes, with ``COMMIT`` and ``ROLLBACK``
for the transaction ends.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pymysql.connections
from flask import Flask
from pymysql.constants import COMMAND
from sqlalchemy import event


def is_mysql(app: Flask) -> bool:
    return app.extensions["db_engine"].dialect.name == "mysql"


@contextlib.contextmanager
def round_trips(app: Flask) -> Iterator[list[str]]:
    """The statements sent while the block runs, in order: each as its first word, upper case (``SELECT``, ``COMMIT``, ``PING``)."""
    seen: list[str] = []
    engine = app.extensions["db_engine"]
    if is_mysql(app):
        original = pymysql.connections.Connection._execute_command

        def recorded(conn: Any, command: int, sql: Any) -> Any:
            text = sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)
            seen.append("PING" if command == COMMAND.COM_PING else text.split(None, 1)[0].upper() if text.strip() else str(command))
            return original(conn, command, sql)

        pymysql.connections.Connection._execute_command = recorded
        try:
            yield seen
        finally:
            pymysql.connections.Connection._execute_command = original
        return

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append(sql.split(None, 1)[0].upper())

    def commit(_conn: Any) -> None:
        seen.append("COMMIT")

    def rollback(_conn: Any) -> None:
        seen.append("ROLLBACK")

    def reset(_dbapi_conn: Any, _record: Any, state: Any) -> None:
        if not state.transaction_was_reset:
            seen.append("ROLLBACK")

    listeners = [(engine, "before_cursor_execute", statement), (engine, "commit", commit), (engine, "rollback", rollback), (engine.pool, "reset", reset)]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield seen
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)


@contextlib.contextmanager
def statements_sent(app: Flask) -> Iterator[list[str]]:
    """The text of each statement the app's engine executes while the block runs, in order, its whitespace
    collapsed to single spaces (SQLite's ``BEGIN`` included; the COMMITs and ROLLBACKs are not statements here)."""
    seen: list[str] = []
    engine = app.extensions["db_engine"]

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append(" ".join(sql.split()))

    event.listen(engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
