"""The suite runs in parallel workers that share one Redis server; each flushes a database of its own."""
from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).parent


def test_only_the_fixtures_pick_a_redis_database() -> None:
    # TEST_REDIS_URL names worker 0's database. A test that used it from another worker had its lock
    # and token flushed away under it by worker 0's clean-up; the redis_url fixture gives the worker's own.
    readers = sorted(
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if path.name != "conftest.py" and path != Path(__file__) and "TEST_REDIS_URL" in path.read_text(encoding="utf-8")
    )
    assert readers == []
