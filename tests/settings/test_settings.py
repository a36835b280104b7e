"""Merchant settings: declared specs, validation, the admin API and the CLI."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry
from server.settings import services
from server.settings.services import SettingSpec
from tests.statements import statements_sent


@pytest.fixture(autouse=True)
def demo_specs(monkeypatch):
    """Two settings of this test's own, so the test does not depend on which packages declare what."""
    monkeypatch.setitem(services._REGISTRY, "demo_days", SettingSpec("demo_days", int, 7, "days", minimum=0, maximum=365))
    monkeypatch.setitem(
        services._REGISTRY, "demo_mode", SettingSpec("demo_mode", str, "weekly", "mode", choices=("weekly", "monthly"))
    )
    monkeypatch.setitem(services._REGISTRY, "demo_name", SettingSpec("demo_name", str, "shop", "name", max_length=8))


@pytest.mark.parametrize(
    ("key", "raw", "parsed"),
    [("demo_days", "14", 14), ("demo_days", 0, 0), ("demo_mode", "monthly", "monthly"), ("demo_name", " 小店 ", "小店"), ("demo_name", "x" * 8, "x" * 8)],
)
def test_parse_accepts(key, raw, parsed):
    assert services.spec_for(key).parse(raw) == parsed


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("demo_days", "-1"), ("demo_days", 366), ("demo_days", "ten"), ("demo_days", True), ("demo_days", 1.5), ("demo_mode", "daily"),
        ("demo_name", "x" * 9), ("demo_name", " \u3000\n"), ("demo_name", 1),
    ],
)
def test_parse_refuses(key, raw):
    with pytest.raises(ValueError):
        services.spec_for(key).parse(raw)


def test_default_then_changed(app):
    with app.app_context():
        sess = db.session()
        assert services.get_setting(sess, "demo_days") == 7
        services.set_setting(sess, "demo_days", "30", by="cli")
        db.commit()
        assert services.get_setting(db.session(), "demo_days") == 30


def test_settings_are_read_once_a_transaction_and_a_change_is_seen_at_once(app):
    with app.app_context():
        sess = db.session()
        with statements_sent(app) as statements:
            assert [services.get_setting(sess, key) for key in ("demo_days", "demo_mode", "demo_name", "demo_days")] == [7, "weekly", "shop", 7]
        assert sum("FROM settings" in statement for statement in statements) == 1
        services.set_setting(sess, "demo_days", "30", by="cli")
        assert services.get_setting(sess, "demo_days") == 30  # in the transaction that changed it
        db.commit()
    with app.app_context():  # another unit of work changes it; the next transaction here reads the change
        sess = db.session()
        assert services.get_setting(sess, "demo_mode") == "weekly"
        db.commit()
        with app.app_context():
            services.set_setting(db.session(), "demo_mode", "monthly", by="cli")
            db.commit()
        assert services.get_setting(sess, "demo_mode") == "monthly"


def test_admin_api_owner_changes_others_read(client, staff_login):
    owner, ops = staff_login("owner"), staff_login("operations")
    listed = client.get("/admin/api/v1/settings", headers=ops).get_json()["data"]["items"]
    assert {"key": "demo_days", "value": 7} .items() <= next(i for i in listed if i["key"] == "demo_days").items()
    assert client.put("/admin/api/v1/settings/demo_days", headers=ops, json={"value": 3}).status_code == 403
    bad = client.put("/admin/api/v1/settings/demo_days", headers=owner, json={"value": 999})
    assert bad.status_code == 422 and "at most 365" in bad.get_json()["message"]
    assert client.put("/admin/api/v1/settings/nope", headers=owner, json={"value": 1}).status_code == 404
    ok = client.put("/admin/api/v1/settings/demo_days", headers=owner, json={"value": 3})
    assert ok.status_code == 200 and ok.get_json()["data"]["value"] == 3


def test_cli_list_get_set(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["settings", "set", "demo_mode", "monthly"]).exit_code == 0
    assert runner.invoke(args=["settings", "get", "demo_mode"]).output.strip() == '"monthly"'
    refused = runner.invoke(args=["settings", "set", "demo_mode", "hourly"])
    assert refused.exit_code != 0 and "one of" in refused.output
    listing = runner.invoke(args=["settings", "list"]).output
    assert "demo_mode = \"monthly\"  (changed)" in listing
    with app.app_context():
        actions = db.session().scalars(select(AuditEntry.action)).all()
    assert actions == ["settings.set"]
