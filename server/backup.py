"""``python -m server backup`` and ``restore``: the whole database in one gzip file, and back.

MariaDB/MySQL: ``mysqldump --single-transaction`` (one consistent snapshot of every InnoDB table while
the service keeps writing), with routines and triggers, loaded back with the ``mysql`` client. SQLite:
the online backup API (``sqlite3.Connection.backup``), which copies a consistent database while
others write to it. The password reaches the dump and load programs in an option file of mode 0600
that is deleted afterwards, never on a command line, where ``ps`` would show it.

A restore goes into an empty database (``--force`` drops what is there first) and then compares the
restored schema's Alembic revision with this code's.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

import click
from alembic.script import ScriptDirectory
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import URL, Engine, make_url

from server import migrate
from server.config import ROOT

#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Bytes copied at a time between a program and the gzip file.
CHUNK = 1 << 20
#: The dump programs, newest name first (MariaDB 11 renamed them; Debian keeps both).
DUMP_PROGRAMS = ("mariadb-dump", "mysqldump")
CLIENT_PROGRAMS = ("mariadb", "mysql")


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why."""


@dataclass(frozen=True)
class Revisions:
    """The restored database's Alembic revision and the one this code expects."""

    database: str | None
    code: str

    @property
    def match(self) -> bool:
        return self.database == self.code


def _program(names: tuple[str, ...]) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BackupError(f"none of {', '.join(names)} is installed (Debian: apt-get install mariadb-client)")


def _option_value(value: str) -> str:
    """A value as an option file reads it: quoted, with backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def options_file(url: URL) -> Iterator[str]:
    """A ``[client]`` option file with the URL's credentials, readable by this user only, removed afterwards."""
    lines = ["[client]"]
    if url.username:
        lines.append(f"user={_option_value(url.username)}")
    if url.password:
        lines.append(f"password={_option_value(str(url.password))}")
    socket = url.query.get("unix_socket")
    if socket:
        lines.append(f"socket={_option_value(str(socket))}")
    else:
        lines.append(f"host={_option_value(url.host or 'localhost')}")
        # A host of "localhost" would make the client use the socket; the URL means TCP.
        lines.append("protocol=TCP")
        if url.port:
            lines.append(f"port={int(url.port)}")
    lines.append("default-character-set=utf8mb4")
    fd, path = tempfile.mkstemp(prefix="referral-backup-", suffix=".cnf")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _open_private(path: Path) -> IO[bytes]:
    """``path`` opened for writing, created readable by this user only (a backup holds members' data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database has nothing to back up or restore into")
    return Path(url.database)


def default_output(url: URL, now: datetime | None = None) -> Path:
    """Where a backup goes unless named: var/backups/referral-<UTC time>.<kind>.gz."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    kind = "sqlite3" if url.get_backend_name() == "sqlite" else "sql"
    return ROOT / "var" / "backups" / f"referral-{stamp}.{kind}.gz"


def backup(engine: Engine, output: Path) -> Path:
    """Write the database of ``engine`` to ``output`` (gzip); the file appears only once it is complete."""
    url = engine.url
    partial = output.with_name(output.name + ".partial")
    try:
        if url.get_backend_name() == "sqlite":
            try:
                _backup_sqlite(_sqlite_path(url), partial)
            except sqlite3.Error as error:
                raise BackupError(f"SQLite could not read {url.database}: {error}") from None
        elif url.get_backend_name() == "mysql":
            _backup_mysql(url, partial)
        else:
            raise BackupError(f"no backup for {url.get_backend_name()} databases")
        os.replace(partial, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    return output


def _backup_sqlite(source: Path, output: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="referral-backup-") as scratch:
        copy = Path(scratch) / "copy.sqlite3"
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(copy)
        try:
            with dst:
                src.backup(dst)
        finally:
            dst.close()
            src.close()
        with copy.open("rb") as raw, _open_private(output) as f, gzip.GzipFile(fileobj=f, mode="wb") as out:
            shutil.copyfileobj(raw, out, CHUNK)


def _backup_mysql(url: URL, output: Path) -> None:
    program = _program(DUMP_PROGRAMS)
    with options_file(url) as options, _open_private(output) as f, gzip.GzipFile(fileobj=f, mode="wb") as out:
        # --defaults-extra-file must come first. --no-tablespaces: MySQL 8 wants the PROCESS privilege otherwise.
        args = [program, f"--defaults-extra-file={options}", "--single-transaction", "--routines", "--triggers",
                "--hex-blob", "--no-tablespaces", "--skip-lock-tables", str(url.database)]
        with tempfile.TemporaryFile() as errors, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors) as dump:
            assert dump.stdout is not None
            shutil.copyfileobj(dump.stdout, out, CHUNK)
            if dump.wait() != 0:
                errors.seek(0)
                raise BackupError(f"{Path(program).name} failed: {errors.read().decode(errors='replace').strip()}")


def existing_tables(engine: Engine) -> list[str]:
    """The tables the database of ``engine`` holds."""
    with engine.connect() as conn:
        return sorted(inspect(conn).get_table_names())


def _drop_everything(engine: Engine) -> None:
    """Drop every table of a MariaDB/MySQL database (``restore --force``), whatever references what."""
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
        for table in reversed(metadata.sorted_tables):
            table.drop(conn)
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")


def _is_sqlite_backup(path: Path) -> bool:
    with gzip.open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def restore(engine: Engine, source: Path, *, force: bool = False) -> None:
    """Load the backup ``source`` into the database of ``engine``, which must be empty unless ``force``."""
    url = engine.url
    if not source.is_file():
        raise BackupError(f"{source} is not a file")
    try:
        sqlite_backup = _is_sqlite_backup(source)
    except (OSError, EOFError) as error:
        raise BackupError(f"{source} is not a gzip backup ({error})") from None
    backend = url.get_backend_name()
    if sqlite_backup != (backend == "sqlite"):
        made_by = "SQLite" if sqlite_backup else "MariaDB/MySQL"
        raise BackupError(f"{source} is a {made_by} backup; DATABASE_URL is a {backend} database")
    tables = existing_tables(engine)
    if tables and not force:
        raise BackupError(
            f"the database is not empty ({len(tables)} tables, e.g. {', '.join(tables[:3])}): "
            "restore into an empty database, or pass --force to drop its tables first"
        )
    if tables and not sqlite_backup:
        _drop_everything(engine)  # SQLite's backup API replaces the whole file, whatever it held
    engine.dispose()  # no pooled connection may hold the old schema open
    if sqlite_backup:
        try:
            _restore_sqlite(source, _sqlite_path(url))
        except sqlite3.Error as error:
            raise BackupError(f"SQLite could not write {url.database}: {error}") from None
    else:
        _restore_mysql(source, url)
    engine.dispose()


def _restore_sqlite(source: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="referral-restore-") as scratch:
        copy = Path(scratch) / "copy.sqlite3"
        with gzip.open(source, "rb") as raw, copy.open("wb") as out:
            shutil.copyfileobj(raw, out, CHUNK)
        src = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            with dst:
                src.backup(dst)
        finally:
            dst.close()
            src.close()


def _restore_mysql(source: Path, url: URL) -> None:
    program = _program(CLIENT_PROGRAMS)
    with options_file(url) as options, gzip.open(source, "rb") as dump, tempfile.TemporaryFile() as errors:
        args = [program, f"--defaults-extra-file={options}", "--batch", str(url.database)]
        with subprocess.Popen(args, stdin=subprocess.PIPE, stderr=errors) as load:
            assert load.stdin is not None
            try:
                shutil.copyfileobj(dump, load.stdin, CHUNK)
            except BrokenPipeError:
                pass  # the client stopped reading: its exit status and message say why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    load.stdin.close()
            status = load.wait()
        if status != 0:
            errors.seek(0)
            raise BackupError(f"{Path(program).name} failed: {errors.read().decode(errors='replace').strip()}")


def revisions(app: Flask, engine: Engine) -> Revisions:
    """The Alembic revision the database is at, and the head of this code's migrations."""
    heads = ScriptDirectory.from_config(migrate.alembic_config(app)).get_heads()
    with engine.connect() as conn:
        database = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if inspect(conn).has_table("alembic_version") else None
    return Revisions(database=database, code=",".join(sorted(heads)))


@click.command("backup")
@click.argument("output", required=False, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def backup_command(output: Path | None) -> None:
    """Back the database up into OUTPUT (gzip; default var/backups/referral-<time>.sql.gz or .sqlite3.gz)."""
    engine: Engine = current_app.extensions["db_engine"]
    target = output or default_output(engine.url)
    try:
        written = backup(engine, target)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    found = revisions(current_app, engine)
    click.echo(f"backup written to {written} ({written.stat().st_size:,} bytes, schema at revision {found.database})")


@click.command("restore")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Drop the tables of a database that is not empty first.")
@with_appcontext
def restore_command(source: Path, force: bool) -> None:
    """Restore the backup SOURCE into DATABASE_URL, then check its schema revision against this code."""
    engine: Engine = current_app.extensions["db_engine"]
    try:
        restore(engine, source, force=force)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    found = revisions(current_app, engine)
    click.echo(f"restored {source} into {engine.url.render_as_string()}")
    if not found.match:
        raise click.ClickException(
            f"the restored schema is at revision {found.database}, this code expects {found.code}: "
            "run `python -m server db upgrade` if the backup is older, or restore with the code it was made with"
        )
    click.echo(f"schema at revision {found.database}, as this code expects; `python -m server ledger-check` verifies the ledger")
