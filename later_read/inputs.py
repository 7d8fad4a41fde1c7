"""Checks for what a person types: dates, hours, uids, uid files. Each failure is one UsageError line."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from later_read.errors import UsageError

UID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def parse_date(text: str | None, zone: ZoneInfo) -> str:
    """YYYYMMDD; None means today in the configured zone."""
    if text is None:
        return dt.datetime.now(zone).strftime("%Y%m%d")
    try:
        day = dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise UsageError(f"--date: expected YYYYMMDD such as 20261123, got {text!r}") from None
    if not 2000 <= day.year <= 2100:
        raise UsageError(f"--date: {text} is outside 2000-2100; check the value")
    return text


def current_hour(zone: ZoneInfo) -> int:
    return dt.datetime.now(zone).hour


def parse_uid(text: str) -> str:
    """A uid as the task table stores it: 1-64 characters of letters, digits and _ . : -."""
    if not UID_PATTERN.fullmatch(text):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UsageError(f"uid {shown!r} is not a valid uid (1-64 characters: letters, digits, _ . : -)")
    return text


def read_uids_file(path: str | Path) -> list[str]:
    """One uid per line; blank lines and # comments ignored; duplicates dropped, order kept."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"--uids-file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--uids-file: {path} is not UTF-8 text (one uid per line)") from None
    uids: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            uids[parse_uid(text)] = None
        except UsageError as exc:
            raise UsageError(f"--uids-file {path} line {number}: {exc}") from None
    if not uids:
        raise UsageError(f"--uids-file: {path} lists no uids")
    return list(uids)
