"""`later-read show UID`: what Redis holds for one user on a date, and what the push will make of it.

The on-call engineer's first question after an alert is "what does the cache say for this user?". This
reads (never writes) the user's value, the date's sent marker and the date's prewarm marker, and says in
words which case the value stands for, by the same rules the push applies:

    rec                  a recommendation for the date: the push sends it (once)
    not_in_experiment    the prewarm looked: the A/B value is the default, nothing to send (quiet)
    no_recommendation    the prewarm looked: recommend had nothing, nothing to send (quiet)
    miss                 never computed, or a value of another date: the push alerts on it
    corrupt              the value does not parse: the push counts it and alerts

Every value read from Redis is printed escaped (`log.quote`, and `log.printable` for each line; the JSON
form with the alert keyword JSON-escaped), so no value can start a line or forge an alert line.

Exit 0 whatever the case (it is an inspection); 2 for a bad uid or date, 3 when Redis is unreachable.
"""

from __future__ import annotations

import datetime as dt
import shlex
from typing import Callable

import orjson

from later_read import constants, value_codec
from later_read.config import Settings
from later_read.connections import open_store
from later_read.errors import EXIT_OK, CorruptValue
from later_read.keys import Keys
from later_read.log import at, defused_json, printable, quote
from later_read.runtime import run
from later_read.store import Store

MISS, CORRUPT = "miss", "corrupt"
SHOWN_CHARS = 2000  # a value (or marker) longer than this is cut when shown, with its full length said

_MEANING = {
    constants.OUTCOME_REC: "a recommendation for the date: the push of the user's hour sends it once",
    constants.OUTCOME_NOT_IN_EXPERIMENT: "the prewarm looked: not in the experiment, nothing to send (quiet)",
    constants.OUTCOME_NO_RECOMMENDATION: "the prewarm looked: recommend had nothing, nothing to send (quiet)",
}


def run_show(settings: Settings, uid: str, date: str, as_json: bool = False,
             echo: Callable[[str], None] = print) -> int:
    """Print the user's state for the date (text, or one JSON object with --json); always exit 0."""
    report = run(_gather, settings, uid, date)
    if as_json:
        echo(defused_json(orjson.dumps(report, option=orjson.OPT_SORT_KEYS).decode()))
    else:
        for line in render(report):
            echo(printable(line))  # values from Redis: no line of their own, no alert keyword
    return EXIT_OK


async def _gather(settings: Settings, uid: str, date: str) -> dict:
    async with open_store(settings) as store:
        return await inspect_user(store, uid, date, settings)


async def inspect_user(store: Store, uid: str, date: str, settings: Settings) -> dict:
    """The user's value, sent marker and the date's prewarm marker, each with its key and TTL."""
    key, sent_key, marker_key = store.keys.rec(uid), Keys.sent(date, uid), Keys.prewarm_done(date)
    raw, ttl = await store.inspect(key)
    sent, sent_ttl = await store.inspect(sent_key)
    marker, marker_ttl = await store.inspect(marker_key)
    outcome, detail, parsed = classify(raw, date)
    return {
        "uid": uid, "date": date, "key": key,
        "raw": cut(raw), "raw_bytes": len(raw) if raw is not None else 0, "value": parsed, "ttl_seconds": ttl,
        "expires_at": _expiry(ttl, settings),
        "outcome": outcome, "detail": detail,
        "sent": {"key": sent_key, "msg_id": cut(sent), "ttl_seconds": sent_ttl},
        "prewarm_marker": {"key": marker_key, "info": _marker(marker), "ttl_seconds": marker_ttl},
        "next": _next_step(outcome, uid, date, sent is not None),
    }


def classify(raw: bytes | None, date: str) -> tuple[str, str, dict | None]:
    """(outcome, detail in words, parsed value) by the push's rules for `date`."""
    if raw is None:
        return MISS, "never computed (no value under this key)", None
    try:
        value = value_codec.decode(raw)
    except CorruptValue as exc:
        return CORRUPT, str(exc), None
    parsed = value.to_dict()
    if value.date != date:
        when = value.date or "an unknown date (no date field: the old Go job's format)"
        return MISS, f"stale value from {when}, not {date}", parsed
    return value.outcome, _MEANING[value.outcome], parsed


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
    ]
    if report["next"]:
        lines.append(f"next       {report['next']}")
    return lines


def _next_step(outcome: str, uid: str, date: str, sent: bool) -> str:
    shell = shlex.quote(uid) if uid.isprintable() else "$'" + quote(uid)[1:-1].replace("'", "\\'") + "'"
    if outcome in (MISS, CORRUPT):
        return f"later-read rerun {shell} --date {date}   (recompute and push this user)"
    if outcome == constants.OUTCOME_REC and not sent:
        return f"later-read rerun {shell} --date {date} --push-only   (push now instead of at its hour)"
    return ""


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
