"""The day ledger: one entry per (date, push hour[, shard]), the single record of what happened to an hour.

Key `later_read:push:ledger:{<date>:<HH>[shard suffix]}` (store/keys.py), JSON, 3 days. Catch-up,
the lateness rule, `later-read day`, metrics and alert rules read it through `Store.get_ledger` /
`Store.get_day` (one round trip for many hours); the push writes it (`Store.put_ledger`).

    state          pending (no entry: no run has begun the hour), running, done, partial, expired
    clean          every message a run of the hour produced was confirmed and its user marked; absent or
                   false with a start record: the next run first marks what the topic holds (recovery.py)
    date, hour, shard ("K/N", "0/1" unsharded)
    users          the hour's users (the COUNT; the users read, if more)
    sent           messages Kafka confirmed in the latest run
    recovered      users of the hour a dead run had delivered, marked sent from the topic by the latest run
    already_sent   users with a sent marker when the latest run read them (recovered ones included)
    earlier_hour   users without a marker who have a row at an earlier hour of the date: that hour's users
                   (a user is pushed only by its earliest hour's runs), never sent by this one
    quiet          not_in_experiment + no_recommendation: nothing to send, by the prewarm's answer
    misses         {"absent", "stale", "corrupt"}: no usable value (alerted by the push)
    material_not_found, unservable   no message, and no run can change that
    failed, failures               users whose card fetch or delivery failed, total and per reason
    not_processed  users a stop (signal) or an error left unread or unsent
    expired        users with a message to send that were not sent because the hour's window closed first
                   (the run that was sending when it closed, or the expiry pass: users read, nobody sent)
    produced       messages the latest run handed to Kafka
    started_at, finished_at        the latest run's start and end on its clock (epoch s; finished_at
                                   null while running)
    late_minutes   from the hour's start to the latest run's start (negative: it ran early)
    runs           runs that began the hour; caught_up: the latest was a later hour's run (catch-up);
                   allow_late: the latest ran with --allow-late
    expired_by     "schedule" when the expiry pass (a later scheduled run) ended the hour

The counts are the latest run's view of the hour: every run reads all of the hour's users again, so
what earlier runs sent shows as already_sent (recovered for a dead run's deliveries).

State of a run that ended (`finished`): expired when the window closed before every user was sent; done
when it read every user, every delivery is confirmed and marked and each user is settled (sent,
already_sent, earlier_hour, quiet, material_not_found or unservable: nothing a rerun could change); else
partial (misses, failures, a stop). The expiry pass (`closing`, then `finished`) ends expired, or done when
nobody was left. done and expired are final: no scheduled run touches the hour again.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from later_read.core.schedule import LOOKBACK, VERDICTS, Hour, Schedule
from later_read.core.scope import RunScope

Entry = dict[str, Any]  # one ledger entry: the JSON object stored per hour and shard

PENDING, RUNNING, DONE, PARTIAL, EXPIRED, UNREADABLE = (
    "pending",
    "running",
    "done",
    "partial",
    "expired",
    "unreadable",
)
# How `day` merges an hour's shards: the first state any shard is in, in this order (done only if all are).
MERGE_ORDER = (EXPIRED, UNREADABLE, PARTIAL, RUNNING, PENDING, DONE)
SETTLED = (
    "sent",
    "already_sent",
    "earlier_hour",
    "not_in_experiment",
    "no_recommendation",
    "material_not_found",
    "unservable",
)
MISSES = ("absent", "stale", "corrupt")
COUNTS = (
    "users",
    "sent",
    "recovered",
    "already_sent",
    "earlier_hour",
    "quiet",
    "material_not_found",
    "unservable",
    "failed",
    "not_processed",
    "expired",
    "produced",
    "runs",
)


def parse(raw: bytes | None) -> Entry | None:
    """An entry as stored; None when absent; a non-JSON or non-object value is `unreadable` (never
    clean, never final: the hour is recovered and retried)."""
    if raw is None:
        return None
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict) or not isinstance(entry.get("state"), str):
        return {"state": UNREADABLE, "clean": False, "raw": raw[:200].decode("utf-8", "replace")}
    return entry


def state_of(entry: Entry | None) -> str:
    return PENDING if entry is None else str(entry.get("state"))


def is_clean(entry: Entry | None) -> bool:
    return entry is not None and entry.get("clean") is True


def unclean(entry: Entry | None) -> Entry | None:
    """The entry while a run is producing for the hour without taking it over (`rerun UID`)."""
    return None if entry is None else {**entry, "clean": False}


def running(
    prev: Entry | None,
    scope: RunScope,
    now: dt.datetime,
    late_minutes: float,
    caught_up: bool = False,
    allow_late: bool = False,
) -> Entry:
    """The entry a push run writes when it begins the scope's hour (before producing: unclean)."""
    return {
        "state": RUNNING,
        "clean": False,
        "date": scope.date,
        "hour": scope.hour,
        "shard": scope.shard.label,
        "users": (prev or {}).get("users", 0),
        "started_at": round(now.timestamp(), 3),
        "finished_at": None,
        "late_minutes": late_minutes,
        "runs": int((prev or {}).get("runs", 0)) + 1,
        "caught_up": caught_up,
        "allow_late": allow_late,
    }


def finished(
    entry: Entry,
    counts: Counter[str],
    failures: Counter[str],
    total: int,
    *,
    clean: bool,
    recovered: int,
    produced: int,
    now: dt.datetime,
    window_closed: bool = False,
) -> Entry:
    """The entry of a run that ended the hour: its counts and state (module docstring). With
    `window_closed` the users it had not read or sent when the window closed are expired."""
    read = counts["users"]
    users = max(total, read)
    settled = sum(counts[k] for k in SETTLED)
    unread = users - read
    figures = {
        "users": users,
        "sent": counts["sent"],
        "recovered": recovered,
        "already_sent": counts["already_sent"],
        "earlier_hour": counts["earlier_hour"],
        "quiet": counts["not_in_experiment"] + counts["no_recommendation"],
        "misses": {
            "absent": counts["misses"] - counts["stale"],
            "stale": counts["stale"],
            "corrupt": counts["corrupt"],
        },
        "material_not_found": counts["material_not_found"],
        "unservable": counts["unservable"],
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "not_processed": counts["not_processed"] + (0 if window_closed else unread),
        "expired": counts["expired"] + (unread if window_closed else 0),
        "produced": produced,
        "finished_at": round(now.timestamp(), 3),
        "clean": clean,
    }
    if figures["expired"]:
        state = EXPIRED
    elif clean and not failures and read >= total and settled == read:
        state = DONE
    else:
        state = PARTIAL
    return {**entry, **figures, "state": state}


def closing(prev: Entry | None, scope: RunScope) -> Entry:
    """The base of the entry the expiry pass writes (`finished` adds its figures): the earlier runs' start,
    lateness and count kept, `expired_by` set (the pass, not a run, ended the hour)."""
    prev = prev or {}
    return {
        **prev,
        "date": scope.date,
        "hour": scope.hour,
        "shard": scope.shard.label,
        "runs": int(prev.get("runs") or 0),
        "started_at": prev.get("started_at"),
        "late_minutes": prev.get("late_minutes"),
        "expired_by": "schedule",
    }


def verdicts(entries: Mapping[Hour, Entry | None], schedule: Schedule, now: dt.datetime) -> dict[str, int]:
    """How many of the hours that started in the last 24 h (LOOKBACK) have each of `day`'s verdicts at
    `now` (`Schedule.verdict`), from a shard's ledger of the last LEDGER_DAYS dates: the push's metrics
    (`later_read_push_hours{verdict}`) and their alert rules."""
    since = tracked_since(entries, schedule)
    found: Counter[str] = Counter()
    for hour in schedule.hours_between(now - LOOKBACK, now):
        entry = entries.get(hour)
        tracked = entry is not None or (since is not None and schedule.start(hour) >= since)
        found[schedule.verdict(hour, now, state_of(entry) if entry is not None else None, tracked)] += 1
    return {verdict: found[verdict] for verdict in VERDICTS}


def tracked_since(entries: Mapping[Hour, Entry | None], schedule: Schedule) -> dt.datetime | None:
    """The start of the earliest hour the ledger holds an entry for (None: it holds none): the hours
    before it predate this deployment (or its ledger) and are neither caught up nor expired."""
    starts = [schedule.start(hour) for hour, entry in entries.items() if entry is not None]
    return min(starts) if starts else None


def merge(entries: Iterable[Entry | None]) -> Entry:
    """One hour over its shards, for `day`: counts summed, the least advanced state (MERGE_ORDER), the
    latest finish (None while a shard has not finished), the largest lateness."""
    entries = list(entries)
    states = {state_of(e) for e in entries}
    merged: Entry = {
        "state": next(s for s in MERGE_ORDER + tuple(states) if s in states),
        "shards": [state_of(e) for e in entries],
    }
    found = [e for e in entries if e is not None]
    for key in COUNTS:
        merged[key] = sum(_number(e.get(key)) for e in found)
    for key in ("misses", "failures"):
        total: Counter[str] = Counter(dict.fromkeys(MISSES, 0) if key == "misses" else {})
        for e in found:
            total.update(
                {str(k): _number(v) for k, v in (e.get(key) or {}).items()} if isinstance(e.get(key), dict) else {}
            )
        merged[key] = dict(total)
    finishes = [(e or {}).get("finished_at") for e in entries]
    merged["finished_at"] = None if None in finishes or not found else max(_number(f) for f in finishes)
    merged["started_at"] = min(_numbers(found, "started_at"), default=None)
    merged["late_minutes"] = max(_numbers(found, "late_minutes"), default=None)  # None: no run began it
    merged["caught_up"] = any(e.get("caught_up") is True for e in found)
    merged["clean"] = bool(found) and all(is_clean(e) for e in entries)
    return merged


def _numbers(entries: list[Entry], key: str) -> list[float | int]:
    """The entries' values of `key` that are numbers (an entry without one, e.g. expired unrun, is left out)."""
    return [e[key] for e in entries if isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool)]


def _number(value: object) -> float | int:
    """A count as stored; anything else (a hand-edited or foreign entry) counts as 0."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
