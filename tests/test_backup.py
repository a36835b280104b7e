"""``backup`` and ``restore``: a backup restored into a fresh database passes ``ledger-check`` with the same
figures, on SQLite always and on MariaDB/MySQL when the run is configured for it; a database that is not
empty is refused without ``--force``; the schema revision is checked; no password on a command line."""
from __future__ import annotations

import gzip
import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask
from sqlalchemy import create_engine, make_url

from server import backup, db, migrate
from server.points import settlement
from server.points.services import process_order
from tests.points import completed_order, make_member, make_sku, pay, place


def fill_ledger(app: Flask) -> None:
    """Rewards on two levels, a partial refund's reversal, a settlement and a grant."""
    with app.app_context():
        sess = db.session()
        zoe = make_member(sess, "zoe")
        alice = make_member(sess, "alice", inviter=zoe)
        bob = make_member(sess, "bob", inviter=alice, upline=zoe)
        sku = make_sku(sess, price_fen=100_000)
        completed_order(sess, bob, sku)
        refunded = pay(sess, place(sess, bob, sku))
        process_order(sess, refunded)
        refunded.refunded_fee = 40_000
        process_order(sess, refunded)
        settlement.settle(sess, period="manual:backup", mode="weekly", actor="test")
        settlement.grant_points(sess, alice.id, 1_000, reason="goodwill", key="grant:backup:1", actor="test")
        db.commit()


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=list(args))


def ledger_figures(app: Flask) -> str:
    result = run(app, "ledger-check")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ledger-check passed:") and "4 order rewards" in result.output
    return str(result.output)


def round_trip(source: Flask, target: Flask, path: Path) -> None:
    """Back ``source`` up, restore into the empty ``target``: the same ledger, checked."""
    expected = ledger_figures(source)
    made = run(source, "backup", str(path))
    assert made.exit_code == 0, made.output
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name(path.name + ".partial").exists()
    with gzip.open(path, "rb") as f:
        assert f.read(16)  # a gzip stream with something in it
    restored = run(target, "restore", str(path))
    assert restored.exit_code == 0, restored.output
    assert "as this code expects" in restored.output
    assert ledger_figures(target) == expected
    # Now the target is not empty: refused unless forced, and forced it is the backup again.
    again = run(target, "restore", str(path))
    assert again.exit_code == 1 and "not empty" in again.output and "--force" in again.output
    forced = run(target, "restore", str(path), "--force")
    assert forced.exit_code == 0, forced.output
    assert ledger_figures(target) == expected


def test_sqlite_round_trip(app: Flask, app_factory: Callable[..., Flask], tmp_path: Path) -> None:
    source = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'source.db'}")
    migrate.upgrade(source)
    fill_ledger(source)
    target = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}")
    assert backup.existing_tables(target.extensions["db_engine"]) == []
    round_trip(source, target, tmp_path / "backups" / "shop.sqlite3.gz")


@pytest.fixture
def fresh_mysql(database_url: str) -> Any:
    """An empty MariaDB/MySQL database next to the test database, dropped afterwards."""
    url = make_url(database_url)
    if url.get_backend_name() != "mysql":
        pytest.skip("TEST_DATABASE_URL is not MariaDB/MySQL")
    fresh = url.set(database=f"{url.database}_restore")
    server = create_engine(url.set(database=""))
    with server.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{fresh.database}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{fresh.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    yield fresh.render_as_string(hide_password=False)
    with server.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{fresh.database}`")
    server.dispose()


def test_mysql_round_trip(app: Flask, app_factory: Callable[..., Flask], fresh_mysql: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill_ledger(app)
    password = str(make_url(fresh_mysql).password)
    launched: list[list[str]] = []
    real = subprocess.Popen

    def watched(args: list[str], **kwargs: Any) -> Any:
        launched.append(list(args))
        options = args[1].split("=", 1)[1]
        assert args[1].startswith("--defaults-extra-file=") and stat.S_IMODE(os.stat(options).st_mode) == 0o600
        assert f'password="{password}"' in Path(options).read_text()
        return real(args, **kwargs)

    monkeypatch.setattr(backup.subprocess, "Popen", watched)
    round_trip(app, app_factory(DATABASE_URL=fresh_mysql), tmp_path / "shop.sql.gz")
    assert Path(launched[0][0]).name in backup.DUMP_PROGRAMS and Path(launched[1][0]).name in backup.CLIENT_PROGRAMS
    assert "--single-transaction" in launched[0] and "--routines" in launched[0] and "--triggers" in launched[0]
    # The test's password is also part of the user and database names: no argument may carry it as a password.
    assert not [arg for args in launched for arg in args if arg.startswith(("-p", "--password", "--user", "-u"))]
    assert not any(os.path.exists(args[1].split("=", 1)[1]) for args in launched)  # the option files are gone


def test_a_backup_of_an_older_schema_says_to_upgrade(app: Flask, app_factory: Callable[..., Flask], tmp_path: Path) -> None:
    # ``app`` first: the factory empties the first app's database afterwards, which must have every table.
    source = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(source, "0001")
    path = tmp_path / "old.sqlite3.gz"
    assert run(source, "backup", str(path)).exit_code == 0
    target = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}")
    result = run(target, "restore", str(path))
    assert result.exit_code == 1
    assert "revision 0001" in result.output and "db upgrade" in result.output


def test_a_backup_is_refused_by_the_other_kind_of_database_and_junk_is_refused(app: Flask, app_factory: Callable[..., Flask], tmp_path: Path) -> None:
    target = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}")
    dump = tmp_path / "dump.sql.gz"
    with gzip.open(dump, "wb") as f:
        f.write(b"-- MariaDB dump 10.19\nCREATE TABLE t (id int);\n")
    result = run(target, "restore", str(dump))
    assert result.exit_code == 1 and "MariaDB/MySQL backup" in result.output
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"not gzip at all")
    result = run(target, "restore", str(junk))
    assert result.exit_code == 1 and "not a gzip backup" in result.output
    result = run(target, "restore", str(tmp_path / "missing.gz"))
    assert result.exit_code == 1 and "is not a file" in result.output
    assert backup.existing_tables(target.extensions["db_engine"]) == []


def test_a_sqlite_file_that_cannot_be_read_is_a_message(app: Flask, app_factory: Callable[..., Flask], tmp_path: Path) -> None:
    missing = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'nowhere' / 'missing.db'}")
    result = run(missing, "backup", str(tmp_path / "b.sqlite3.gz"))
    assert result.exit_code == 1 and "SQLite could not read" in result.output
    assert not list(tmp_path.glob("b.sqlite3.gz*"))


def test_the_option_file_quotes_what_it_holds_and_is_private() -> None:
    url = make_url('mysql+pymysql://shop:pa"ss\\word@db.internal:3307/referral?charset=utf8mb4')
    with backup.options_file(url) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        text = Path(path).read_text()
    assert not os.path.exists(path)
    assert 'user="shop"' in text and 'password="pa\\"ss\\\\word"' in text
    assert 'host="db.internal"' in text and "port=3307" in text and "protocol=TCP" in text


def test_an_unnamed_backup_goes_to_var_backups_with_the_time(tmp_path: Path) -> None:
    path = backup.default_output(make_url("mysql+pymysql://u:p@h/d"))
    assert path.parent.name == "backups" and path.name.startswith("referral-") and path.name.endswith(".sql.gz")
    assert backup.default_output(make_url(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")).name.endswith(".sqlite3.gz")
