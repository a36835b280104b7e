"""Feedback fixtures: distributors (from the distribution tests) and staff of the queue."""
from __future__ import annotations

from tests.distribution.conftest import apply, decide, distributor, ops, owner, sess, share_scene  # noqa: F401
