"""Checks for what a person types: dates, hours, uids, uid files. Each failure is one UsageError line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from later_read.core import uids
from later_read.errors import UsageError


def parse_date(text: str | None, zone: ZoneInfo) -> str:
    """YYYYMMDD, exactly eight ASCII digits (strptime alone takes `2026111` and `20261 1`), returned as
    the date it names writes itself; None means today in the configured zone."""
    if text is None:
        return dt.datetime.now(zone).strftime("%Y%m%d")
    try:
        if not (len(text) == 8 and text.isascii() and text.isdigit()):
            raise ValueError(text)
        day = dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise UsageError(f"--date: expected YYYYMMDD such as 20261123, got {text!r}") from None
    if not 2000 <= day.year <= 2100:
        raise UsageError(f"--date: {text} is outside 2000-2100; check the value")
    return day.strftime("%Y%m%d")


def current_hour(zone: ZoneInfo) -> int:
    return dt.datetime.now(zone).hour


def parse_uid(text: str) -> str:
    """A uid as the task table stores it (the one rule of `later_read.core.uids`)."""
    return uids.parse_uid(text)


def read_uids_file(path: str | Path) -> list[str]:
    """One uid per line, plain or quoted as the logs show it; # comments; duplicates dropped."""
    return uids.read_file(path)
