"""Staff audit entries are written in one layer: the services.

Routes (``routes.py`` and ``*_routes.py``) and CLI commands (``cli.py``, ``OTHER_COMMANDS``) call a service that
records its own ``record_audit`` entry; they never write one themselves, so an action is audited
the same whichever way it is reached and no caller can forget it.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: CLI commands that live outside a ``cli.py``.
OTHER_COMMANDS = {"server/settings/__init__.py"}


def _callers_layer(path: Path) -> bool:
    return path.name in ("routes.py", "cli.py") or path.name.endswith("_routes.py") or path.relative_to(ROOT).as_posix() in OTHER_COMMANDS


def _audit_mentions(source: str) -> list[int]:
    """Lines that name ``record_audit``: a call, an attribute (``accounts.record_audit``) or an import."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id == "record_audit":
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "record_audit":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and any(alias.name == "record_audit" for alias in node.names):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_the_check_sees_every_form() -> None:
    source = (
        "from server.accounts.services import record_audit\n"
        "from server.accounts import services as accounts\n"
        "def f(sess):\n"
        "    record_audit(sess, 1, 'a')\n"
        "    accounts.record_audit(sess, 1, 'b')\n"
    )
    assert _audit_mentions(source) == [1, 4, 5]
    assert _audit_mentions("def f(sess):\n    services.create(sess, staff_id=1)\n") == []


def test_routes_and_commands_leave_auditing_to_services() -> None:
    modules = sorted(p for p in (ROOT / "server").rglob("*.py") if _callers_layer(p))
    assert len([p for p in modules if p.name != "cli.py"]) >= 10, "the route modules moved; point this test at them"
    found = {
        path.relative_to(ROOT).as_posix(): lines
        for path in modules
        if (lines := _audit_mentions(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"record_audit belongs in the service the route or command calls: {found}"


def test_services_still_audit() -> None:
    """The moved entries live on in services (a sample, one per package the routes used to audit for)."""
    expected = {
        "server/orders/catalog.py": "product.create",
        "server/orders/services.py": "refund.approve",
        "server/orders/payments.py": "refund.resend",
        "server/orders/contracts.py": "contract.confirm_final",
        "server/points/redemption.py": "redemption_item.create",
        "server/referral/services.py": "partner.create",
        "server/settings/services.py": "settings.set",
    }
    for name, action in expected.items():
        source = (ROOT / name).read_text(encoding="utf-8")
        assert _audit_mentions(source), name
        assert f'"{action}"' in source, (name, action)
