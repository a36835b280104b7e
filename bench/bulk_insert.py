"""Batched multi-row INSERTs for the benchmark generators, with the app's column types applied once per column.

``insert(table)`` with a list of dicts runs every value through SQLAlchemy's bind processors, and
PyMySQL then escapes each value again through several layers; at millions of rows that costs more
than the database's own work. Here each column gets one converter, the way the app's types store
values (an enum by name, JSON as ``json.dumps`` text, a UTC datetime naive), and:

- on MySQL/MariaDB the rows become multi-row ``INSERT … VALUES (…), (…)`` statements of a few
  megabytes, built here and sent by a writer thread, so the next batch is generated while the
  server stores the last one;
- on SQLite they go to ``executemany`` as tuples, datetimes in SQLAlchemy's text format.
"""
from __future__ import annotations

import enum
import json
import queue
import threading
import time
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any, Callable

from pymysql.converters import _escape_table  # type: ignore[import-untyped]
from sqlalchemy import JSON, Boolean, Enum, Integer, String, Table
from sqlalchemy.engine import Connection

from server.db import UTCDateTime

#: Largest statement sent to MySQL (max_allowed_packet is 16 MB by default on MariaDB).
STATEMENT_BYTES = 4_000_000


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value


def _text(value: str) -> str:
    return "'" + value.translate(_escape_table) + "'"


def _literal(value: Any) -> str:
    """A MySQL literal of a plain Python value."""
    if value is None:
        return "NULL"
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:
        return _text(value)
    if kind is bool:
        return "1" if value else "0"
    if kind is datetime:
        return f"'{_utc(value):%Y-%m-%d %H:%M:%S}'"
    if isinstance(value, enum.Enum):
        return _text(value.name)
    return _text(str(value))


def _datetime_literal(value: datetime | None) -> str:
    if value is None:
        return "NULL"
    if value.tzinfo is not timezone.utc:
        value = _utc(value)
    return f"'{value:%Y-%m-%d %H:%M:%S}'"


def _mysql_column(column_type: Any) -> Callable[[Any], str]:
    """The literal maker for one column: typed where the type says what every value is."""
    if isinstance(column_type, JSON):
        # A Python None is the JSON null, as the app's JSON columns store it.
        return lambda value: _text(json.dumps(value))
    if isinstance(column_type, UTCDateTime):
        return _datetime_literal
    if isinstance(column_type, Enum):
        return lambda value: "NULL" if value is None else _text(value.name if isinstance(value, enum.Enum) else value)
    if isinstance(column_type, String):
        return lambda value: "NULL" if value is None else _text(value)
    if isinstance(column_type, Integer) and not isinstance(column_type, Boolean):
        return lambda value: "NULL" if value is None else str(int(value))
    return _literal


def _sqlite_column(column_type: Any) -> Callable[[Any], Any] | None:
    if isinstance(column_type, UTCDateTime):
        # SQLAlchemy's SQLite DATETIME text, microseconds included, so comparisons with bound values agree.
        return lambda value: None if value is None else f"{_utc(value):%Y-%m-%d %H:%M:%S.%f}"
    if isinstance(column_type, Enum):
        return lambda value: value.name if isinstance(value, enum.Enum) else value
    if isinstance(column_type, JSON):
        return json.dumps
    return None


class Sink:
    """Where a generator step's rows go: ``insert`` batches, ``commit`` between them, ``close`` at the end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.mysql = conn.dialect.name == "mysql"
        self.quote = conn.dialect.identifier_preparer.quote
        self.work: queue.Queue[str | None] = queue.Queue(maxsize=4)
        self.failed: list[BaseException] = []
        self.thread: threading.Thread | None = None
        #: Seconds the database spent on this sink's statements and commits.
        self.busy = 0.0
        if self.mysql:
            self.cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            self.thread = threading.Thread(target=self._send, daemon=True)
            self.thread.start()

    def _send(self) -> None:
        while (sql := self.work.get()) is not None:
            if self.failed:
                continue
            started = time.perf_counter()
            try:
                if sql == "COMMIT":
                    self.conn.connection.dbapi_connection.commit()  # type: ignore[union-attr]
                else:
                    self.cursor.execute(sql)
            except BaseException as error:  # handed to the generating thread in close()
                self.failed.append(error)
            self.busy += time.perf_counter() - started

    def _put(self, sql: str) -> None:
        if self.failed:
            raise self.failed[0]
        self.work.put(sql)

    def _defaults(self, table: Table, given: list[str]) -> tuple[list[str], tuple[Any, ...]]:
        # Columns left out take their Python-side default, as an ORM insert would give them.
        defaults = {c.name: c.default for c in table.c if c.name not in given and c.default is not None and (c.default.is_scalar or c.default.is_callable)}
        return list(defaults), tuple(d.arg if d.is_scalar else d.arg(None) for d in defaults.values())  # type: ignore[attr-defined]

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """INSERT ``rows`` (dicts with the same keys) into ``table``."""
        if not rows:
            return
        given = list(rows[0])
        extra, fixed = self._defaults(table, given)
        names = given + extra
        get = itemgetter(*given)
        head = f"INSERT INTO {self.quote(table.name)} ({', '.join(self.quote(n) for n in names)}) VALUES "
        if self.mysql:
            formats = [_mysql_column(table.c[n].type) for n in given]
            tail = "".join("," + _literal(value) for value in fixed)
            parts: list[str] = []
            size = 0
            for row in rows:
                values = get(row) if len(given) > 1 else (get(row),)
                part = "(" + ",".join([f(v) for f, v in zip(formats, values)]) + tail + ")"
                parts.append(part)
                size += len(part)
                if size > STATEMENT_BYTES:
                    self._put(head + ",".join(parts))
                    parts, size = [], 0
            if parts:
                self._put(head + ",".join(parts))
            return
        converters = [(i, f) for i, f in ((i, _sqlite_column(table.c[n].type)) for i, n in enumerate(given)) if f is not None]
        params: list[tuple[Any, ...]] = []
        for row in rows:
            values = list(get(row)) if len(given) > 1 else [get(row)]
            for i, convert in converters:
                values[i] = convert(values[i])
            params.append(tuple(values) + fixed)
        started = time.perf_counter()
        self.conn.exec_driver_sql(head + "(" + ", ".join("?" * len(names)) + ")", params)
        self.busy += time.perf_counter() - started

    def commit(self) -> None:
        if self.mysql:
            self._put("COMMIT")
        else:
            started = time.perf_counter()
            self.conn.commit()
            self.busy += time.perf_counter() - started

    def close(self) -> None:
        """Wait until everything is written and committed; raises what the writer thread met."""
        if self.thread is not None:
            self.work.put("COMMIT")
            self.work.put(None)
            self.thread.join()
            self.thread = None
            if self.failed:
                raise self.failed[0]
        else:
            self.conn.commit()
