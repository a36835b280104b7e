"""Reading and changing merchant settings, each checked against its declared spec."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.accounts.services import record_audit
from server.db import per_transaction
from server.errors import NotFoundError, ValidationError
from server.settings.models import Mutex, Setting


@dataclass(frozen=True)
class SettingSpec:
    """What a setting is: its type, default, bounds and meaning."""

    key: str
    type: type  # int, bool or str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    #: The most characters a text setting holds; every text setting without choices needs one.
    max_length: int | None = None
    #: Checks that need other settings too, e.g. level 2 never above level 1.
    extra_checks: tuple[Any, ...] = field(default=())
    #: What must follow a new value in the same unit of work, e.g. prices derived from it: (session, value).
    after_change: tuple[Any, ...] = field(default=())

    def parse(self, value: Any) -> Any:
        """The value as this setting's type; ValueError with a readable reason otherwise."""
        if isinstance(value, str) and self.type is not str:
            text = value.strip().lower()
            if self.type is bool:
                if text not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                    raise ValueError("expected true or false")
                value = text in {"true", "1", "yes", "on"}
            elif self.type is int:
                try:
                    value = int(text)
                except ValueError:
                    raise ValueError("expected a whole number") from None
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("expected a whole number")
        if self.type is bool and not isinstance(value, bool):
            raise ValueError("expected true or false")
        if self.type is str and not isinstance(value, str):
            raise ValueError("expected text")
        if self.type is str:
            value = value.strip()
            if not value:
                raise ValueError("must not be blank")
            if self.max_length is not None and len(value) > self.max_length:
                raise ValueError(f"must be at most {self.max_length} characters")
        if self.choices and value not in self.choices:
            raise ValueError(f"expected one of: {', '.join(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {self.maximum}")
        return value


_REGISTRY: dict[str, SettingSpec] = {}


def register(*specs: SettingSpec) -> None:
    """Declare settings; each domain package declares its own at import."""
    for spec in specs:
        _REGISTRY[spec.key] = spec


def specs() -> list[SettingSpec]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def spec_for(key: str) -> SettingSpec:
    try:
        return _REGISTRY[key]
    except KeyError:
        raise NotFoundError(f"no setting named {key}") from None


def get_setting(sess: Session, key: str) -> Any:
    """The merchant's value for ``key``, or its default.

    The stored settings are read once per transaction (most keys have no row, and a missing row is a
    statement every time it is asked for); ``set_setting`` drops what was read.
    """
    spec = spec_for(key)
    return _stored(sess).get(key, spec.default)


#: The name the transaction's stored settings are kept under (``db.per_transaction``).
_STORED = "settings.stored"


def _stored(sess: Session) -> dict[str, Any]:
    """The settings rows of this transaction, by key (read on first use)."""
    return per_transaction(sess, _STORED, lambda: {row.key: row.value for row in sess.scalars(select(Setting))})


def all_settings(sess: Session) -> dict[str, Any]:
    stored = _stored(sess)
    return {spec.key: stored.get(spec.key, spec.default) for spec in specs()}


def set_setting(sess: Session, key: str, value: Any, *, by: str) -> Any:
    """Validate and store a setting; returns the stored value."""
    spec = spec_for(key)
    try:
        parsed = spec.parse(value)
        for check in spec.extra_checks:
            check(sess, parsed)
    except ValueError as error:
        raise ValidationError(f"{key}: {error}", data={"errors": [{"field": key, "error": str(error)}]}) from None
    row = sess.get(Setting, key)
    if row is None:
        sess.add(Setting(key=key, value=parsed, updated_by=by))
    else:
        row.value = parsed
        row.updated_by = by
    sess.flush()
    sess.info.pop(_STORED, None)
    for follow in spec.after_change:
        follow(sess, parsed)
    return parsed


def change_setting(sess: Session, key: str, value: Any, *, staff_id: int | None) -> Any:
    """``set_setting`` as staff (``staff_id``) or the command line (None) do it: stored and audited
    as ``settings.set`` with the old and new values; returns the stored value."""
    # Imported here: accounts.services imports modules that import this one.

    old = get_setting(sess, key)
    new = set_setting(sess, key, value, by="cli" if staff_id is None else f"staff:{staff_id}")
    record_audit(sess, staff_id, "settings.set", f"setting:{key}", {"old": old, "new": new})
    return new


def lock_named(sess: Session, name: str) -> None:
    """Hold the named database lock until the transaction ends (every worker, every host)."""
    if sess.get(Mutex, name) is None:
        try:
            with sess.begin_nested():
                sess.add(Mutex(name=name))
        except IntegrityError:
            pass  # created by a concurrent transaction; locking it below waits for that one
    sess.execute(select(Mutex).where(Mutex.name == name).with_for_update()).scalar_one()
