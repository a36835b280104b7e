"""The merchant's wall clock: China time, in which periods, days and "after 02:00" are counted.

Timestamps are stored and compared in UTC (``server.db.utcnow``); this is only for reading them
as the merchant does.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

#: The merchant's time zone (no daylight saving).
CHINA = ZoneInfo("Asia/Shanghai")


def local(now: datetime) -> datetime:
    """``now`` on the merchant's wall clock."""
    return now.astimezone(CHINA)


def month_start(now: datetime) -> datetime:
    """Midnight of the first day of ``now``'s China-time calendar month, as an aware datetime."""
    return local(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
