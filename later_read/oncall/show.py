"""`later-read show UID`: what Redis holds for one user on a date, and what the push will make of it.

The on-call engineer's first question after an alert is "what does the cache say for this user?". This
reads (never writes) the user's value, the date's sent marker and the date's prewarm marker, and says in
words which case the value stands for, by the same rules the push applies:

    rec                  a recommendation for the date: the push sends it (once)
    not_in_experiment    the prewarm looked: the A/B value is the default, nothing to send (quiet)
    no_recommendation    the prewarm looked: recommend had nothing, nothing to send (quiet)
    miss                 never computed, or a value of another date: the push alerts on it
    corrupt              the value does not parse: the push counts it and alerts

It also shows the user's push hour (`--hour`, else its earliest push_hour in the date's task rows, read
from StarRocks when it answers) with that hour's window and its day-ledger entry for the user's shard
(state, users, sent, expired, minutes late...): whether the hour ran, is done, or expired.

Every value read from Redis is printed escaped (`log.quote`, and `log.printable` for each line; the JSON
form with the alert keyword JSON-escaped), so no value can start a line or forge an alert line.

Exit 0 whatever the case (it is an inspection; StarRocks not answering only leaves the hour unknown); 2
for a bad uid, date or hour, 3 when Redis is unreachable.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Callable

import orjson

from later_read.clients.starrocks import StarRocks, UserQuery
from later_read.config.settings import Settings
from later_read.connections import open_store
from later_read.core import value as value_codec
from later_read.core.schedule import Schedule
from later_read.core.scope import RunScope, Shard
from later_read.errors import EXIT_OK, StarRocksError
from later_read.log import at, defused_json, printable, quote
from later_read.runtime import run
from later_read.store import Store
from later_read.store.keys import Keys

MISS, CORRUPT = "miss", value_codec.CORRUPT  # the outcomes shown besides the value's own (absent, stale: miss)
SHOWN_CHARS = 2000  # a value (or marker) longer than this is cut when shown, with its full length said


def run_show(
    settings: Settings,
    uid: str,
    date: str,
    as_json: bool = False,
    echo: Callable[[str], None] = print,
    hour: int | None = None,
) -> int:
    """Print the user's state for the date (text, or one JSON object with --json); always exit 0."""
    report = run(_gather, settings, uid, date, hour)
    if as_json:
        echo(defused_json(orjson.dumps(report, option=orjson.OPT_SORT_KEYS).decode()))
    else:
        for line in render(report):
            echo(printable(line))  # values from Redis: no line of their own, no alert keyword
    return EXIT_OK


async def _gather(settings: Settings, uid: str, date: str, hour: int | None) -> dict:
    async with open_store(settings) as store:
        report = await inspect_user(store, uid, date, settings)
        report["push_hour"] = await push_hour_of(store, settings, uid, date, hour)
        return report


async def push_hour_of(store: Store, settings: Settings, uid: str, date: str, hour: int | None) -> dict:
    """The user's push hour (`hour`, else the earliest in the task rows), its window and its ledger entry
    (the user's shard's); `hour` None with `from` saying why when it cannot be known."""
    source = "--hour"
    if hour is None:
        hour, source = await _earliest_hour(settings, uid, date)
    if hour is None:
        return {"hour": None, "from": source}
    schedule, scope = Schedule.of(settings), RunScope(date, hour, Shard.of(uid, settings.shards.count))
    entry = (await store.get_ledger([scope]))[scope]
    return {
        "hour": hour,
        "from": source,
        "shard": scope.shard.label,
        "key": Keys.push_ledger(scope),
        "window": [schedule.iso(schedule.start(scope.slot)), schedule.iso(schedule.window_end(scope.slot))],
        "ledger": entry,
    }


async def _earliest_hour(settings: Settings, uid: str, date: str) -> tuple[int | None, str]:
    """The user's earliest push_hour (0-23) in the date's task rows, and where it came from (or why not)."""
    query = UserQuery.of(settings, RunScope(date), [uid])
    starrocks = StarRocks(settings.starrocks)
    try:
        rows = await starrocks.query(*query.rows(100))
    except StarRocksError as exc:
        return None, f"unknown (StarRocks: {exc}); pass --hour"
    finally:
        starrocks.close()
    hours = [row[3] for row in rows if isinstance(row[3], int) and 0 <= row[3] <= 23]
    return (min(hours), "task rows") if hours else (None, "no task rows with a push_hour 0-23 for the date")


async def inspect_user(store: Store, uid: str, date: str, settings: Settings) -> dict:
    """The user's value, sent marker and the date's prewarm marker, each with its key and TTL."""
    key, sent_key, marker_key = store.keys.rec(uid), Keys.sent(date, uid), Keys.prewarm_done(RunScope(date))
    raw, ttl = await store.inspect(key)
    sent, sent_ttl = await store.inspect(sent_key)
    marker, marker_ttl = await store.inspect(marker_key)
    verdict = value_codec.judge(raw, date)
    outcome, detail = classify(verdict, date)
    parsed = verdict.value.to_dict() if verdict.value is not None else None
    return {
        "uid": uid,
        "date": date,
        "key": key,
        "raw": cut(raw),
        "raw_bytes": len(raw) if raw is not None else 0,
        "value": parsed,
        "ttl_seconds": ttl,
        "expires_at": _expiry(ttl, settings),
        "outcome": outcome,
        "detail": detail,
        "sent": {"key": sent_key, "msg_id": cut(sent), "ttl_seconds": sent_ttl},
        "prewarm_marker": {"key": marker_key, "info": _marker(marker), "ttl_seconds": marker_ttl},
        "next": _next_step(outcome, uid, date, sent is not None),
    }


def classify(verdict: value_codec.Verdict, date: str) -> tuple[str, str]:
    """(outcome, detail in words) of a value's verdict for `date` (core/value.py `judge`: the push's rules)."""
    if verdict.state == value_codec.ABSENT:
        return MISS, "never computed (no value under this key)"
    if verdict.state == value_codec.CORRUPT:
        return CORRUPT, verdict.problem
    value = verdict.value
    assert value is not None  # stale or usable: parsed
    if verdict.state == value_codec.STALE:
        when = value.date or "an unknown date (no date field: the old Go job's format)"
        return MISS, f"stale value from {when}, not {date}"
    return value.outcome, value_codec.MEANING[value.outcome]


def render(report: dict) -> list[str]:
    """The text form: one `name  value` line per fact."""
    sent, marker = report["sent"], report["prewarm_marker"]
    value = report["value"]
    lines = [
        f"uid        {quote(report['uid'])}",
        f"key        {quote(report['key'])}",
        f"raw        {quote(report['raw']) if report['raw'] is not None else '(absent)'}",
        f"value      {_fields(value) if value else '-'}",
        f"ttl        {_ttl(report['ttl_seconds'])}"
        + (f" (expires {report['expires_at']})" if report["expires_at"] else ""),
        f"outcome    {report['outcome']}: {report['detail']}",
        f"sent       {quote(sent['msg_id']) if sent['msg_id'] else 'none'} ({quote(sent['key'])}"
        + (f", {_ttl(sent['ttl_seconds'])} left)" if sent["msg_id"] else ")"),
        f"prewarm    {_marker_text(marker['info'])} ({marker['key']})",
        f"hour       {_hour_text(report.get('push_hour') or {})}",
    ]
    if report["next"]:
        lines.append(f"next       {report['next']}")
    return lines


def _next_step(outcome: str, uid: str, date: str, sent: bool) -> str:
    shell = shlex.quote(uid) if uid.isprintable() else "$'" + quote(uid)[1:-1].replace("'", "\\'") + "'"
    if outcome in (MISS, CORRUPT):
        return f"later-read rerun {shell} --date {date}   (recompute and push this user)"
    if outcome == value_codec.OUTCOME_REC and not sent:
        return f"later-read rerun {shell} --date {date} --push-only   (push now instead of at its hour)"
    return ""


LEDGER_SHOWN = (
    "state",
    "clean",
    "users",
    "sent",
    "already_sent",
    "earlier_hour",
    "expired",
    "failed",
    "not_processed",
    "late_minutes",
    "runs",
    "caught_up",
    "started_at",
    "finished_at",
)


def _hour_text(found: dict) -> str:
    """The push hour line: the hour, where it came from, its window, its ledger entry (or why none)."""
    if found.get("hour") is None:
        return quote(str(found.get("from", "unknown")), always=False)
    head = (
        f"{found['hour']} (from {found['from']}, shard {found['shard']}) window "
        f"{found['window'][0]} - {found['window'][1]}: "
    )
    entry = found["ledger"]
    if entry is None:
        return head + f"no ledger entry: no push run has begun it ({found['key']})"
    return head + "ledger " + _fields({k: entry[k] for k in LEDGER_SHOWN if k in entry})


def _marker(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"unparsable": cut(raw)}
    return info if isinstance(info, dict) else {"unparsable": cut(raw)}


def _marker_text(info: dict | None) -> str:
    if info is None:
        return "missing: the date's prewarm has not finished (or never ran)"
    return _fields(info)


def _fields(data: dict) -> str:
    """key=value pairs for people: times (`*_at`) in the configured zone, every value quoted as logs do."""
    return " ".join(f"{k}={quote(_shown(k, v))}" for k, v in data.items())


def _shown(key: str, value: object) -> str:
    if key.endswith("_at") and isinstance(value, (int, float)):
        return at(value)
    if isinstance(value, (dict, list)):
        return cut(orjson.dumps(value)) or ""
    return str(value)


def _ttl(ttl: int) -> str:
    return {-2: "absent", -1: "no TTL (never expires!)"}.get(ttl, f"{ttl} s")


def _expiry(ttl: int, settings: Settings) -> str | None:
    if ttl < 0:
        return None
    when = dt.datetime.now(settings.zone) + dt.timedelta(seconds=ttl)
    return when.isoformat(timespec="seconds")


def cut(raw: bytes | str | None) -> str | None:
    """Text for people: at most SHOWN_CHARS characters, then how long the whole was."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... (cut: {len(raw):,} {'bytes' if isinstance(raw, bytes) else 'characters'} in all)"
