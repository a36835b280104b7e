"""Which database errors end the transaction they happen in (``db.dooms_transaction``)."""
from __future__ import annotations

import threading

import pytest
from flask import Flask
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from server import db
from server.db import utcnow
from server.settings.models import Setting


def test_a_refused_insert_leaves_its_transaction_going(app: Flask) -> None:
    engine = app.extensions["db_engine"]
    row = {"key": "x-doomed", "value": "1", "updated_at": utcnow(), "updated_by": "test"}
    with engine.connect() as conn:
        conn.execute(insert(Setting).values(row))
        with pytest.raises(IntegrityError) as refused:
            conn.execute(insert(Setting).values(row))
        assert not db.dooms_transaction(refused.value)
        assert not db.dooms_transaction(ValueError("not the database's"))
        conn.rollback()


def test_a_deadlock_dooms_its_transaction_on_mariadb(app: Flask) -> None:
    engine = app.extensions["db_engine"]
    if engine.dialect.name != "mysql":
        pytest.skip("SQLite has one writer at a time: no deadlock between transactions")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO settings (`key`, value, updated_at, updated_by) VALUES ('x-a', '0', NOW(), 't'), ('x-b', '0', NOW(), 't')"))
    one, two = engine.connect(), engine.connect()
    errors: list[BaseException] = []
    try:
        one.execute(text("UPDATE settings SET value = '1' WHERE `key` = 'x-a'"))
        two.execute(text("UPDATE settings SET value = '2' WHERE `key` = 'x-b'"))

        def cross(conn, key: str) -> None:
            try:
                conn.execute(text(f"UPDATE settings SET value = '3' WHERE `key` = '{key}'"))
            except DBAPIError as error:
                errors.append(error)

        waiting = threading.Thread(target=cross, args=(one, "x-b"))
        waiting.start()
        waiting.join(0.5)
        cross(two, "x-a")
        waiting.join(10)
        assert len(errors) == 1, errors
        assert db.dooms_transaction(errors[0])
    finally:
        one.rollback()
        two.rollback()
        one.close()
        two.close()
