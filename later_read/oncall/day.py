"""`later-read day [--date D] [--now T] [--json]`: the push's day at a glance, for on-call and as a check.

One round trip to Redis (`Store.get_day`): the date's ledger (ledger.py; every shard's, merged per hour),
the ledger's earlier days (to find where it begins), the prewarm's readiness markers and the hour locks.
Per hour: its start and window (schedule.py), the ledger's state and figures, whether the prewarm marked
it ready, whether a run holds its lock, and its verdict at `now`:

    done       the ledger says done
    expired    the ledger says expired, or its window closed without it being done (not marked yet: the
               next scheduled run marks it and alerts)
    late       not done DUE_MINUTES (30) after its start, window still open: the next run catches it up
    due        started less than DUE_MINUTES ago, not done
    upcoming   not started
    untracked  before the ledger's first entry (a first deployment): nobody expects it

Exit 0 when no hour is late or expired (an expired hour whose users were all served, or that had none,
does not count), else 1; 2 bad input; 3 Redis unreachable. Values that come from Redis are printed through
`log.quote`, so an entry cannot forge a line.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable

import orjson

from later_read.config.settings import Settings
from later_read.connections import open_store
from later_read.core import ledger
from later_read.core.clock import Clock
from later_read.core.schedule import Hour, Schedule
from later_read.core.scope import RunScope
from later_read.errors import EXIT_FAILURES, EXIT_OK
from later_read.log import quote
from later_read.runtime import run
from later_read.store import DayRecords
from later_read.store.keys import LEDGER_DAYS

FAILING = ("late", "expired")
FIGURES = (
    "users",
    "sent",
    "recovered",
    "already_sent",
    "earlier_hour",
    "quiet",
    "misses",
    "material_not_found",
    "unservable",
    "failed",
    "not_processed",
    "expired",
)
COLUMNS = (
    "hour",
    "start",
    "state",
    "verdict",
    "users",
    "sent",
    "recov",
    "already",
    "earlier",
    "quiet",
    "misses",
    "no_card",
    "unserv",
    "failed",
    "unsent",
    "expired",
    "late_min",
    "prewarm",
    "note",
)


def run_day(
    settings: Settings, date: str, clock: Clock, as_json: bool = False, echo: Callable[[str], None] = print
) -> int:
    """Print the day (text, or one JSON object); the exit code (module docstring)."""
    now = clock.now()
    records = run(_read, settings, date)
    report = build(settings, date, now, records)
    if as_json:
        echo(orjson.dumps(report, option=orjson.OPT_SORT_KEYS).decode())
    else:
        for line in render(report):
            echo(line)
    return report["exit_code"]


async def _read(settings: Settings, date: str) -> DayRecords:
    first = dt.datetime.strptime(date, "%Y%m%d")
    memory = [
        Hour((first - dt.timedelta(days=back)).strftime("%Y%m%d"), h)
        for back in range(LEDGER_DAYS - 1, 0, -1)
        for h in range(24)
    ]
    async with open_store(settings) as store:
        return await store.get_day(RunScope.split(date, settings.shards.count), memory)


def build(settings: Settings, date: str, now: dt.datetime, records: DayRecords) -> dict:
    """The report: one row per hour, the totals, the exit code."""
    schedule, shards = Schedule.of(settings), RunScope.split(date, settings.shards.count).shards()
    by_hour: dict[Hour, list[dict | None]] = {}
    for scope, entry in records.ledger.items():
        by_hour.setdefault(scope.slot, []).append(entry)
    since = ledger.tracked_since({h: next((e for e in es if e), None) for h, es in by_hour.items()}, schedule)
    rows = [_row(schedule, Hour(date, h), now, by_hour[Hour(date, h)], since, records, shards) for h in range(24)]
    totals: dict = {key: sum(_count(row.get(key)) for row in rows) for key in FIGURES}
    totals["verdicts"] = dict(Counter(row["verdict"] for row in rows))
    failing = [row["hour"] for row in rows if _failing(row)]
    return {
        "date": date,
        "timezone": settings.timezone,
        "now": now.isoformat(timespec="seconds"),
        "catch_up_minutes": schedule.catch_up_minutes,
        "shards": settings.shards.count,
        "prewarm_done": records.prewarm_done is not None,
        "hours": rows,
        "totals": totals,
        "late": [r["hour"] for r in rows if r["verdict"] == "late"],
        "expired": [r["hour"] for r in rows if r["verdict"] == "expired"],
        "failing": failing,
        "exit_code": EXIT_FAILURES if failing else EXIT_OK,
    }


def _row(
    schedule: Schedule,
    hour: Hour,
    now: dt.datetime,
    entries: list[dict | None],
    since,
    records: DayRecords,
    shards: list[RunScope],
) -> dict:
    merged = ledger.merge(entries)
    tracked = any(entries) or (since is not None and schedule.start(hour) >= since)
    holders = [records.locks[x.at(hour)] for x in shards if x.at(hour) in records.locks]
    row = {
        "hour": hour.hour,
        "start": schedule.iso(schedule.start(hour)),
        "window_end": schedule.iso(schedule.window_end(hour)),
        "state": merged["state"],
        "verdict": schedule.verdict(hour, now, merged["state"], tracked),
        "prewarm_ready": records.ready.get(hour.hour) is not None or records.prewarm_done is not None,
        "lock_holders": holders,
        "marked": any(entries),
    }
    row.update(
        {
            k: merged[k]
            for k in (
                *FIGURES,
                "failures",
                "late_minutes",
                "caught_up",
                "runs",
                "started_at",
                "finished_at",
                "clean",
                "shards",
            )
        }
    )
    return row


def _failing(row: dict) -> bool:
    """Late, or expired with someone left unserved (or not yet counted: no entry)."""
    if row["verdict"] == "late":
        return True
    return row["verdict"] == "expired" and (not row["marked"] or _count(row["expired"]) > 0)


def _count(value: object) -> int | float:
    if isinstance(value, dict):
        return sum(_count(v) for v in value.values())
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def render(report: dict) -> list[str]:
    """The text form: a head line, one row per hour, what is late or expired, the totals."""
    lines = [
        (
            f"day {report['date']} timezone={quote(report['timezone'])} now={report['now']} "
            f"catch_up_minutes={report['catch_up_minutes']} shards={report['shards']} "
            f"prewarm={'done' if report['prewarm_done'] else 'not done'}"
        )
    ]
    table = [list(COLUMNS)] + [_cells(row) for row in report["hours"]]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    lines.extend(
        ("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + "  " + cells[-1]).rstrip()
        for cells in table
    )
    listed = [f"{word}: {', '.join(str(h) for h in report[word]) or 'none'}" for word in ("late", "expired")]
    lines.append("now        " + "; ".join(listed))
    t = report["totals"]
    verdicts = " ".join(f"{k}={v}" for k, v in sorted(t["verdicts"].items()))
    lines.append(
        "total      "
        + " ".join(f"{k}={_cell(t[k])}" for k in FIGURES)
        + f" | hours {verdicts} | "
        + (
            "ok: every hour that should be done is done"
            if not report["failing"]
            else f"exit {report['exit_code']}: not done in time: {', '.join(map(str, report['failing']))}"
        )
    )
    return lines


def _cells(row: dict) -> list[str]:
    notes = []
    if row["caught_up"]:
        notes.append("caught up")
    if row["lock_holders"]:
        notes.append("held by " + ",".join(quote(h) for h in row["lock_holders"]))
    if row["verdict"] == "expired" and not row["marked"]:
        notes.append("not marked yet")
    if len(row["shards"]) > 1 and len(set(row["shards"])) > 1:
        notes.append("shards " + ",".join(quote(s) for s in row["shards"]))
    start = row["start"][11:16] + row["start"][19:]  # HH:MM and the offset (it changes on a DST day)
    figures = [_cell(row[k]) if row["marked"] else "-" for k in FIGURES]  # no entry: nothing counted yet
    late = "-" if row["late_minutes"] is None else _cell(row["late_minutes"])
    return [
        f"{row['hour']:02d}",
        start,
        quote(row["state"]),
        row["verdict"],
        *figures,
        late,
        "ready" if row["prewarm_ready"] else "-",
        "; ".join(notes),
    ]


def _cell(value: object) -> str:
    """A figure for the table: numbers as they are, anything else quoted as the logs do."""
    if isinstance(value, dict):
        value = _count(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return quote(str(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
