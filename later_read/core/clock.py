"""The jobs' "now": the wall clock in the configured zone, or a time set with `--now ISO8601`.

    clock = Clock.parse("2026-11-22T05:05:00+08:00", zone)   # or Clock(zone) for the wall clock
    clock.now()                  # aware datetime in `zone`: the set time + the monotonic time since start
    clock.monotonic_at(instant)  # the time.monotonic() at which now() reaches `instant` (a deadline)

A set clock still advances: now() adds the monotonic time elapsed since the clock was made, so a run
driven by `--now` that overruns sees its hour's window close as a real run would. `--now` must carry an
offset (a naive time means a different instant in every zone); anything else is one UsageError line.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from later_read.errors import UsageError

NOW_EXAMPLE = "2026-11-22T05:05:00+08:00"


class Clock:
    def __init__(
        self, zone: ZoneInfo, fixed: dt.datetime | None = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if fixed is not None and fixed.utcoffset() is None:
            raise ValueError("a set clock needs an aware datetime")
        self.zone = zone
        self.fixed = None if fixed is None else fixed.astimezone(dt.UTC)
        self._monotonic = monotonic
        self._began = monotonic()
        self._fixed_us = None if self.fixed is None else _epoch_us(self.fixed)
        self._iso_at, self._iso = -1, ""  # iso_ms's last millisecond (since the epoch) and its text
        self._iso_reading, self._iso_slack = 0.0, -1.0  # a set clock's: when it was made, how long it holds

    @classmethod
    def parse(cls, text: str | None, zone: ZoneInfo) -> Clock:
        """`--now`: None is the wall clock; else ISO 8601 with an offset (UsageError otherwise)."""
        if text is None:
            return cls(zone)
        try:
            when = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise UsageError(
                f"--now: expected an ISO 8601 time with an offset such as {NOW_EXAMPLE}, got {text!r}"
            ) from None
        if when.utcoffset() is None:
            raise UsageError(
                f"--now: {text!r} has no UTC offset, so it names a different instant in every "
                f"zone; add one, e.g. {NOW_EXAMPLE}"
            )
        if not 2000 <= when.year <= 2100:
            raise UsageError(f"--now: {text} is outside 2000-2100; check the value")
        return cls(zone, when)

    @property
    def is_set(self) -> bool:
        """True when driven by `--now`, False on the wall clock."""
        return self.fixed is not None

    def now(self) -> dt.datetime:
        """Now, as an aware datetime in the configured zone."""
        if self.fixed is None:
            return dt.datetime.now(self.zone)
        elapsed = dt.timedelta(seconds=self._monotonic() - self._began)
        return (self.fixed + elapsed).astimezone(self.zone)

    def iso_ms(self) -> str:
        """`now().isoformat(timespec="milliseconds")`: the same text, made once per millisecond (the push
        stamps every message with it). A set clock reuses it while its monotonic reading stays short of
        the next millisecond by more than now()'s rounding (1 us), without computing the time again."""
        if self._fixed_us is None:
            us = time.time_ns() // 1000
        else:
            reading = self._monotonic()
            if reading - self._iso_reading < self._iso_slack:
                return self._iso
            elapsed = dt.timedelta(seconds=reading - self._began)  # rounded as now() rounds it
            us = self._fixed_us + (elapsed.days * 86400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds
            self._iso_reading, self._iso_slack = reading, ((us // 1000 + 1) * 1000 - us - 1) / 1e6
        ms = us // 1000
        if ms != self._iso_at:
            seconds, millis = divmod(ms, 1000)
            when = dt.datetime.fromtimestamp(seconds, self.zone).replace(microsecond=millis * 1000)
            self._iso_at, self._iso = ms, when.isoformat(timespec="milliseconds")
        return self._iso

    def monotonic_at(self, instant: dt.datetime) -> float:
        """The `time.monotonic()` reading at which `now()` reaches `instant`: a deadline for a loop."""
        ahead = instant.astimezone(dt.UTC) - self.now().astimezone(dt.UTC)
        return self._monotonic() + ahead.total_seconds()


def _epoch_us(when: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly."""
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
