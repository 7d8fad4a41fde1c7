"""`later-read sent`: what the push really put in the topic for a date (an hour, a user), read back.

On-call's answer to "I got it twice": it reads the topic itself, not our Redis markers, and prints the
messages per push hour and every msg_id seen more than once (msg_id is a pure function of date and
uid, so a copy of a user's message always carries the same id).

Where reading starts, per partition:
  1. the offsets the push recorded when it began the hour, `later_read:push:start:{<date>:<HH>[shard
     suffix]}` (Keys.push_start), the earliest over the hours asked and the shards, when Redis has them;
  2. else (no key, Redis unreachable, or a partition the key does not name) a time bound: Kafka's
     offsets_for_times at the start of the hour, or of the date, in the configured zone, less
     START_SLACK_SECONDS.
It reads each partition up to its high watermark taken when it starts (it never follows new messages),
at most `--max-messages` in all, and keeps the messages whose push_date (push_hour, source_uid) match.
Every value printed from the topic is escaped and cut to MAX_FIELD_CHARS; lines are at most `--limit`
per list.

Exit codes: 0 read (whatever it found; duplicates are in the output and in --json's "duplicates");
2 bad input; 3 Kafka unreachable, the topic missing, or a partition not read to its end in --timeout.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
import orjson
from confluent_kafka import TopicPartition
from redis.exceptions import RedisError

from later_read.clients.kafka import check_topic
from later_read.clients.kafka_topic import open_consumer, watermarks
from later_read.config.settings import Settings
from later_read.connections import open_store
from later_read.core.message import BadMessage, PushMessage
from later_read.core.scope import RunScope
from later_read.errors import EXIT_OK, KafkaUnavailable, LaterReadError
from later_read.log import fields
from later_read.runtime import run
from later_read.store.keys import Keys

# A push started by hand a little before its hour, or a host clock a little off, still falls inside the
# time bound; reading an hour more of the topic costs little, and other dates are filtered out anyway.
START_SLACK_SECONDS = 3600
# Values come from the topic (anyone can produce there): long ones are cut so a line stays readable.
MAX_FIELD_CHARS = 80
SHOWN_FIELDS = ("msg_id", "source_uid", "push_date", "push_hour", "rec_id", "material_id", "created_at", "expires_at")
POLL_BATCH = 500
OFFSET_BITS = 48  # Kafka offsets are int64 but never reach 2**48 (280 trillion messages in a partition)
KAFKA_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class SentQuery:
    """What `sent` reads back from the topic: a date, an hour or a user, and its bounds."""

    date: str
    hour: int | None = None
    uid: str | None = None
    limit: int = 20
    max_messages: int = 2_000_000
    timeout: float = 120.0


@dataclass
class Tally:
    """What the scan found: counts per hour, first location of each msg_id, the copies of duplicates."""

    query: SentQuery
    scanned: int = 0
    matching: int = 0
    other: int = 0  # messages of other dates/hours/users inside the range read
    unparsable: int = 0
    per_hour: Counter = field(default_factory=Counter)
    distinct_per_hour: Counter = field(default_factory=Counter)
    # msg_id -> partition << OFFSET_BITS | offset of its first copy: one int, not a tuple (memory bound)
    first: dict[str, int] = field(default_factory=dict)
    copies: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # duplicates only
    uids: dict[str, str] = field(default_factory=dict)  # duplicates only
    shown: list[dict] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return self.scanned >= self.query.max_messages

    def add(self, partition: int, offset: int, raw: bytes | None) -> None:
        self.scanned += 1
        try:
            message = PushMessage.decode(raw)
        except BadMessage:
            self.unparsable += 1
            return
        if not self._matches(message):
            self.other += 1
            return
        self.matching += 1
        msg_id, hour = message.msg_id, message.push_hour
        if not isinstance(hour, int):  # a foreign message: any JSON value, shown escaped
            hour = clean(hour)
        self.per_hour[hour] += 1
        packed = self.first.setdefault(msg_id, partition << OFFSET_BITS | offset)
        if packed != partition << OFFSET_BITS | offset:  # seen before: a copy (same msg_id = same user)
            first = (packed >> OFFSET_BITS, packed & ((1 << OFFSET_BITS) - 1))
            self.copies.setdefault(msg_id, [first]).append((partition, offset))
            self.uids[msg_id] = str(message.source_uid)
        else:
            self.distinct_per_hour[hour] += 1
        if self.query.uid is not None and len(self.shown) < self.query.limit:
            self.shown.append(
                {"partition": partition, "offset": offset, **{k: clean(getattr(message, k)) for k in SHOWN_FIELDS}}
            )

    def _matches(self, message: PushMessage) -> bool:
        q = self.query
        return (
            message.push_date == q.date
            and (q.hour is None or message.push_hour == q.hour)
            and (q.uid is None or message.source_uid == q.uid)
        )


def clean(value: Any) -> str:
    """A value from the topic cut to one output field's length; the lines' `log.fields` escapes it (control
    characters, quotes, the alert keyword), the JSON output's encoder likewise."""
    text = ("" if value is None else str(value))[: MAX_FIELD_CHARS + 1]  # cut first: a value may be 1 MB
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 3] + "..."


def run_sent(settings: Settings, query: SentQuery, as_json: bool = False, echo: Callable[[str], None] = print) -> int:
    """Read the topic for the query, print the report (lines, or one JSON object); exit 0."""
    recorded, keys, notes = run(recorded_starts, settings, query)
    report = scan_topic(settings, query, recorded, keys, notes)
    if as_json:
        echo(orjson.dumps(report).decode())
    else:
        for line in render(report):
            echo(line)
    return EXIT_OK


def start_keys(settings: Settings, query: SentQuery) -> list[str]:
    """The push-start keys of the hours asked: the whole-run key, and each shard's when sharded."""
    count = getattr(getattr(settings, "shards", None), "count", 1) or 1
    hours = range(24) if query.hour is None else [query.hour]
    return [Keys.push_start(scope) for h in hours for scope in RunScope.split(query.date, count, h).whole_and_shards()]


async def recorded_starts(settings: Settings, query: SentQuery) -> tuple[dict[int, int], list[str], list[str]]:
    """(partition -> earliest recorded start offset, keys used, notes) from Redis; empty when unreadable."""
    keys, used, notes = start_keys(settings, query), [], []
    offsets: dict[int, int] = {}
    try:
        async with open_store(settings) as store:
            raws = await store.client.mget(keys)
    except (LaterReadError, RedisError, OSError) as exc:
        return {}, [], [f"push start offsets not read ({exc}); reading from the time bound"]
    for key, raw in zip(keys, raws, strict=True):
        if raw is None:
            continue
        try:
            data = orjson.loads(raw)
            topic, parts = data["topic"], {int(p): int(o) for p, o in data["offsets"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            notes.append(f"{key} is not a push start record; ignored")
            continue
        if topic != settings.kafka.topic:
            notes.append(f"{key} names topic {clean(topic)}, not {settings.kafka.topic}; ignored")
            continue
        used.append(key)
        for partition, offset in parts.items():
            offsets[partition] = min(offset, offsets.get(partition, offset))
    return offsets, used, notes


def time_bound(settings: Settings, query: SentQuery) -> dt.datetime:
    """Start of the hour (or of the date) in the configured zone, less the slack."""
    day = dt.datetime.strptime(query.date, "%Y%m%d").replace(hour=query.hour or 0, tzinfo=settings.zone)
    return day - dt.timedelta(seconds=START_SLACK_SECONDS)


def plan_ranges(
    consumer, settings: Settings, query: SentQuery, recorded: dict[int, int]
) -> tuple[dict[int, tuple[int, int]], bool]:
    """partition -> (start, end) offsets to read, and whether the time bound was used for any."""
    topic = settings.kafka.topic
    partitions = range(check_topic(consumer, settings.kafka, KAFKA_TIMEOUT_SECONDS))
    bound_ms = int(time_bound(settings, query).timestamp() * 1000)
    missing = [TopicPartition(topic, p, bound_ms) for p in partitions if p not in recorded]
    try:
        found = consumer.offsets_for_times(missing, timeout=KAFKA_TIMEOUT_SECONDS) if missing else []
        by_time = {tp.partition: tp.offset for tp in found}
    except confluent_kafka.KafkaException as exc:
        raise KafkaUnavailable(
            f"Kafka at {settings.kafka.bootstrap_servers}: offsets of {topic} not "
            f"readable: {exc}; run `later-read check`"
        ) from None
    marks = watermarks(consumer, settings.kafka, topic, KAFKA_TIMEOUT_SECONDS)  # KafkaUnavailable, one line
    ranges = {}
    for p, (low, high) in marks.items():
        start = recorded.get(p, by_time.get(p, high))
        ranges[p] = (max(low, start if start >= 0 else high), high)  # -1: nothing after the bound
    return ranges, bool(missing)


def scan_topic(
    settings: Settings, query: SentQuery, recorded: dict[int, int], keys: list[str], notes: list[str]
) -> dict:
    """Read the planned ranges and return the report (the --json object)."""
    consumer = open_consumer(settings.kafka, "later-read-sent", report_errors=True)
    try:
        ranges, used_time = plan_ranges(consumer, settings, query, recorded)
        tally = Tally(query)
        read_ranges(consumer, settings.kafka.topic, ranges, tally, query.timeout)
    finally:
        consumer.close()
    if tally.full:
        notes.append(f"stopped after --max-messages {query.max_messages} messages; narrow with --hour")
    bound = time_bound(settings, query).isoformat() if used_time else None
    start = {"push_start_keys": keys, "time_bound": bound}
    return {
        "topic": settings.kafka.topic,
        "date": query.date,
        "hour": query.hour,
        "uid": query.uid,
        "start": start,
        "ranges": {str(p): list(r) for p, r in sorted(ranges.items())},
        "scanned": tally.scanned,
        "matching": tally.matching,
        "other": tally.other,
        "unparsable": tally.unparsable,
        "truncated": tally.full,
        "notes": notes,
        "hours": _hours(tally),
        "duplicates_total": len(tally.copies),
        "duplicates": _duplicates(tally),
        "messages": tally.shown,
    }


def _hours(tally: Tally) -> dict[str, dict]:
    """Per push_hour ("09"; a non-integer hour from a foreign message is shown escaped)."""
    named = {(f"{h:02d}" if isinstance(h, int) else clean(h)): h for h in tally.per_hour}
    return {
        name: {"messages": tally.per_hour[h], "distinct_msg_ids": tally.distinct_per_hour[h]}
        for name, h in sorted(named.items())
    }


def _duplicates(tally: Tally) -> list[dict]:
    return [
        {
            "msg_id": clean(msg_id),
            "uid": clean(tally.uids[msg_id]),
            "copies": len(where),
            "at": [{"partition": p, "offset": o} for p, o in where],
        }
        for msg_id, where in list(tally.copies.items())[: tally.query.limit]
    ]


def read_ranges(consumer, topic: str, ranges: dict[int, tuple[int, int]], tally: Tally, timeout: float) -> None:
    """Consume each partition from its start to its end offset (exclusive) into the tally."""
    todo = {p: end for p, (start, end) in ranges.items() if start < end}
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in todo])
    deadline = time.monotonic() + timeout
    while todo and not tally.full:
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"could not read partitions {sorted(todo)} of {topic} to their end within "
                f"{timeout:g} s; retry with a larger --timeout or a narrower --hour"
            )
        for message in consumer.consume(POLL_BATCH, 0.5):
            partition = message.partition()
            if message.error() or partition not in todo or message.offset() >= todo[partition]:
                continue
            tally.add(partition, message.offset(), message.value())
            if message.offset() + 1 >= todo[partition]:
                del todo[partition]
            if tally.full:
                break


def render(report: dict) -> list[str]:
    """The report as lines: where reading started, the counts per hour, the duplicates, the messages."""
    start = report["start"]
    origin = {
        "start": "push_start_keys" if start["push_start_keys"] else "time_bound",
        "keys": len(start["push_start_keys"]),
    }
    if start["time_bound"]:
        origin["time_bound"] = start["time_bound"]
    head = {k: report[k] for k in ("topic", "date", "hour", "uid") if report[k] is not None}
    lines = [
        f"sent.read {fields(**head, **origin)}",
        "sent.scanned "
        + fields(
            messages=report["scanned"],
            matching=report["matching"],
            other=report["other"],
            unparsable=report["unparsable"],
            ranges=",".join(f"{p}:{a}-{b}" for p, (a, b) in report["ranges"].items()),
        ),
    ]
    lines += [f"sent.note {fields(text=note)}" for note in report["notes"]]
    lines += [
        f"sent.hour {fields(hour=h, messages=v['messages'], distinct_msg_ids=v['distinct_msg_ids'])}"
        for h, v in report["hours"].items()
    ]
    lines.append(f"sent.duplicates {fields(count=report['duplicates_total'])}")
    for dup in report["duplicates"]:
        at = ",".join(f"{a['partition']}:{a['offset']}" for a in dup["at"])
        lines.append(f"sent.duplicate {fields(msg_id=dup['msg_id'], uid=dup['uid'], copies=dup['copies'], at=at)}")
    hidden = report["duplicates_total"] - len(report["duplicates"])
    if hidden:
        lines.append(f"sent.duplicates_not_shown {fields(count=hidden, fix='raise --limit')}")
    lines += [f"sent.message {fields(**m)}" for m in report["messages"]]
    return lines
