"""The push schedule, decided here and nowhere else: when an hour starts, until when it may be sent, and
what a scheduled run does about the hours before its own (docs/design.md, "The push schedule").

    start(D, H)        local H:00 of date D in `timezone`, zoneinfo fold=0: a local hour that does not
                       exist (spring forward) starts at the transition instant, with the next hour that
                       exists; an hour that happens twice (fall back) starts at its first occurrence
    window_end(D, H)   start + [push] catch_up_minutes: hour H is sent only while start <= now < end
    current(now)       the (D, H) that `now` falls in: its local date and hour
    plan(now, ...)     a scheduled run's work: the hours it marks expired (window closed, not final), the
                       earlier hours it catches up (window open, not final, oldest first), its own hour

Only hours that started in the last LOOKBACK (24 h), and not before the push's ledger first recorded an
hour (`tracked_since`), are judged: a first deployment neither sends nor alerts on the hours before it.

Every comparison and difference is taken on UTC instants: Python compares two datetimes that share a
tzinfo by their wall-clock fields, which is wrong across a DST transition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from later_read.errors import UsageError

if TYPE_CHECKING:
    from later_read.config.settings import Settings

UTC = dt.UTC
LOOKBACK = dt.timedelta(hours=24)  # a run judges the hours that started within the last 24 h
DUE_MINUTES = 30  # `day`: an hour not done this long after its start is late
FINAL = ("done", "expired")  # ledger states a scheduled run never touches again
VERDICTS = ("done", "expired", "late", "due", "upcoming", "untracked")  # `verdict`'s words


@dataclass(frozen=True, order=True)
class Hour:
    """Push hour `hour` (0-23) of `date` (YYYYMMDD): the key of every per-hour record."""

    date: str
    hour: int

    def __str__(self) -> str:
        return f"{self.date} hour {self.hour}"


@dataclass
class Plan:
    """What a scheduled push run does, in this order: expire, catch up (oldest first), its own hour."""

    own: Hour
    expire: list[Hour] = field(default_factory=list)
    catch_up: list[Hour] = field(default_factory=list)
    own_final: str | None = None  # the own hour's state when final: done (a retry, the second pass of a
    # doubled hour) or expired (a retry of a run its window closed on)


class Schedule:
    def __init__(self, zone: ZoneInfo, catch_up_minutes: int) -> None:
        self.zone = zone
        self.catch_up_minutes = catch_up_minutes
        self.window = dt.timedelta(minutes=catch_up_minutes)

    @classmethod
    def of(cls, settings: Settings) -> Schedule:
        return cls(settings.zone, settings.push.catch_up_minutes)

    # One hour ------------------------------------------------------------------------------------------
    def start(self, hour: Hour) -> dt.datetime:
        """The instant (UTC) hour H of date D starts: local H:00, fold=0 (see the module docstring)."""
        day = dt.datetime.strptime(hour.date, "%Y%m%d")
        return day.replace(hour=hour.hour, tzinfo=self.zone).astimezone(UTC)

    def window_end(self, hour: Hour) -> dt.datetime:
        """The instant (UTC) hour H's window closes: its start + catch_up_minutes."""
        return self.start(hour) + self.window

    def expiry(self, hour: Hour, late_from: dt.datetime | None = None) -> dt.datetime:
        """When hour H's messages expire (their `expires_at`): its window's end; for a send a person
        allowed after that end (`--allow-late`, `late_from` = that run's now), a window as long as the
        hour's own from that moment, so the sender does not drop at once what the person chose to send."""
        end = self.window_end(hour)
        if late_from is None or late_from.astimezone(UTC) < end:
            return end
        return late_from.astimezone(UTC) + self.window

    def local(self, instant: dt.datetime) -> dt.datetime:
        return instant.astimezone(self.zone)

    def current(self, now: dt.datetime) -> Hour:
        """The push hour `now` falls in."""
        local = self.local(now)
        return Hour(local.strftime("%Y%m%d"), local.hour)

    def is_open(self, hour: Hour, now: dt.datetime) -> bool:
        return self.start(hour) <= now.astimezone(UTC) < self.window_end(hour)

    def is_closed(self, hour: Hour, now: dt.datetime) -> bool:
        return now.astimezone(UTC) >= self.window_end(hour)

    def late_minutes(self, hour: Hour, now: dt.datetime) -> float:
        """Minutes from the hour's start to `now` (negative before it starts)."""
        return round((now.astimezone(UTC) - self.start(hour)).total_seconds() / 60, 2)

    def iso(self, instant: dt.datetime) -> str:
        """An instant as ISO 8601 in the configured zone, with its offset (`expires_at`, lines)."""
        return self.local(instant).isoformat(timespec="seconds")

    # Several hours -------------------------------------------------------------------------------------
    def hours_between(self, since: dt.datetime, now: dt.datetime) -> list[Hour]:
        """Every hour with since <= start <= now, by start (a skipped local hour before the next one)."""
        since, now = since.astimezone(UTC), now.astimezone(UTC)
        first = self.local(since).date() - dt.timedelta(days=1)
        days = (self.local(now).date() - first).days + 1
        found = []
        for offset in range(days):
            date = (first + dt.timedelta(days=offset)).strftime("%Y%m%d")
            found += [h for h in (Hour(date, n) for n in range(24)) if since <= self.start(h) <= now]
        return sorted(found, key=lambda h: (self.start(h), h))

    def open_before(self, now: dt.datetime) -> list[Hour]:
        """The hours before now's own whose window is still open at `now`, oldest first."""
        own = self.current(now)
        return [h for h in self.hours_between(now - self.window, now) if h < own and self.is_open(h, now)]

    def closed_since(self, since: dt.datetime, now: dt.datetime) -> list[Hour]:
        """The hours that started at or after `since` whose window has closed at `now`, oldest first."""
        return [h for h in self.hours_between(since, now) if self.is_closed(h, now)]

    def plan(self, now: dt.datetime, states: Mapping[Hour, str | None], tracked_since: dt.datetime | None) -> Plan:
        """A scheduled run's work at `now`, from the ledger's states (its own shard's) and the start of
        the earliest hour the ledger holds (None: nothing recorded yet, so only the own hour)."""
        own = self.current(now)
        plan = Plan(own)
        judged = [own]
        if tracked_since is not None:
            since = max(now.astimezone(UTC) - LOOKBACK, tracked_since.astimezone(UTC))
            judged = [h for h in self.hours_between(since, now) if h <= own] or [own]
        for hour in judged:
            if states.get(hour) in FINAL:
                plan.own_final = states.get(hour) if hour == own else plan.own_final
            elif self.is_closed(hour, now):
                plan.expire.append(hour)
            elif hour != own:
                plan.catch_up.append(hour)
        return plan

    # For people ----------------------------------------------------------------------------------------
    def refuse_if_closed(self, hour: Hour, now: dt.datetime, allow_late: bool) -> None:
        """An explicit push of an hour whose window closed is refused (UsageError) unless --allow-late."""
        if allow_late or not self.is_closed(hour, now):
            return
        raise UsageError(
            f"hour {hour.hour} of {hour.date} is expired: its window closed at "
            f"{self.iso(self.window_end(hour))} (start + [push] catch_up_minutes = "
            f"{self.catch_up_minutes}), so a push now would be stale; add --allow-late to send "
            "it anyway"
        )

    def verdict(self, hour: Hour, now: dt.datetime, state: str | None, tracked: bool) -> str:
        """`day`'s word for an hour at `now`: done, expired, upcoming, due (started < DUE_MINUTES ago, not
        done), late (not done DUE_MINUTES after its start, window open) or untracked (before the ledger)."""
        if state == "done":
            return "done"
        if state == "expired" or (tracked and self.is_closed(hour, now)):
            return "expired"
        if self.start(hour) > now.astimezone(UTC):
            return "upcoming"
        if not tracked:
            return "untracked"
        return "late" if self.late_minutes(hour, now) >= DUE_MINUTES else "due"
