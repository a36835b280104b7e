"""Fixtures of the risk tests: a builder of members and their activity in the app's session."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from server import db
from tests.risk.generate import Builder, Merchant, inject_case


@pytest.fixture
def builder(app: Flask) -> Iterator[Builder]:
    """A ``Builder`` inside an app context; the test commits when its requests must see the rows."""
    with app.app_context():
        yield Builder(db.session(), seed=7)


@pytest.fixture
def inject(builder: Builder) -> Any:
    """``inject("shared_phone")`` adds one labelled case of that kind and returns it."""

    def add(kind: str) -> Any:
        merchant = Merchant()
        inject_case(builder, merchant, kind)
        return merchant.cases[0]

    return add
