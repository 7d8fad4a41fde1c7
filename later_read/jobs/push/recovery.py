"""The topic is the record of what was sent: recover a dead push run's deliveries before sending more.

A sent marker is written after Kafka acknowledged the message, so a run killed with -9 (OOM kill, lost
node) between the two leaves users whose message is in the topic without a marker; a plain rerun would
send them again. So every push run of a (date, hour), and `rerun UID`, goes through `begin`:

    start, finished = the hour's start record and finished marker (Redis)
    start and not finished  ->  read the topic from start's offsets to the current end offsets, take
                                every message of this date, write its (uid, msg_id) sent marker
    no start                ->  record each partition's end offset (SET NX, before the first produce)
    delete finished         ->  from here until `end`, a crash leaves the hour "unfinished"

and the run calls `end` when it stops with every produced message confirmed and marked (no purged or
failed delivery whose fate is unknown). The read is bounded by what was written to the topic since the
hour's first run started (that hour's messages, and whatever else shares the topic meanwhile), not by
the topic's size; a finished hour costs two Redis GETs. Why this and not a transactional producer, with
figures: docs/design.md ("Exactly one message per user").
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import orjson

from later_read.clients import kafka_topic
from later_read.config import KafkaSettings
from later_read.errors import KafkaUnavailable
from later_read.log import alert, get_logger
from later_read.store import Store

log = get_logger("push")

# Bound on reading a dead run's range back. ~100k messages read in ~2 s here (docs/design.md); two
# minutes covers a day's worth on a slow cluster, and a recovery that cannot finish must stop the run
# (exit 3) rather than send blind.
RECOVERY_TIMEOUT_SECONDS = 120.0
# Metadata and end-offset requests: a broker that does not answer within this is unreachable.
OFFSETS_TIMEOUT_SECONDS = 15.0
MARKER_BATCH = 1000  # sent markers per Redis call while recovering


@dataclass
class HourRun:
    """What `begin` found and did for one (date, hour)."""

    date: str
    hour: int
    suffix: str
    start: dict
    was_finished: bool
    recovered: int | None = None  # users marked sent from the topic; None: no recovery was needed


async def begin(store: Store, kafka: KafkaSettings, date: str, hour: int, suffix: str = "") -> HourRun:
    """Recover an unfinished earlier run of the hour, record where this run starts, mark it running."""
    start, finished = await store.get_push_run(date, hour, suffix)
    run = HourRun(date, hour, suffix, start or {}, finished is not None)
    if start is not None and finished is None:
        run.recovered = await recover(store, kafka, date, hour, start)
    if start is None:
        offsets = await anyio.to_thread.run_sync(kafka_topic.end_offsets, kafka, kafka.topic,
                                                 OFFSETS_TIMEOUT_SECONDS)
        run.start = {"topic": kafka.topic, "offsets": {str(p): o for p, o in sorted(offsets.items())},
                     "at": round(time.time(), 3)}
        if not await store.put_push_start(date, hour, run.start, suffix):
            # Another run recorded a start meanwhile (only possible without the lock, e.g. `rerun`).
            run.start = (await store.get_push_run(date, hour, suffix))[0] or run.start
            run.recovered = await recover(store, kafka, date, hour, run.start)
    await store.set_push_finished(date, hour, None, suffix)
    return run


async def end(store: Store, run: HourRun, **info: object) -> None:
    """The run stopped with every produced message confirmed and marked: the hour is finished."""
    await store.set_push_finished(run.date, run.hour, {"at": round(time.time(), 3), **info}, run.suffix)


async def recover_if_unfinished(store: Store, kafka: KafkaSettings, date: str, hour: int,
                                suffix: str = "") -> int | None:
    """`recover` when the hour has a start record and no finished marker; None when nothing to do."""
    start, finished = await store.get_push_run(date, hour, suffix)
    if start is None or finished is not None:
        return None
    return await recover(store, kafka, date, hour, start)


async def recover(store: Store, kafka: KafkaSettings, date: str, hour: int, start: dict) -> int:
    """Read the topic from `start`'s offsets to its end; write the sent marker of every user with a
    message of `date` there. Returns how many users were marked. KafkaUnavailable if it cannot read."""
    began = time.monotonic()
    topic, offsets = _parse_start(start, date, hour)
    found, read, foreign = await anyio.to_thread.run_sync(_collect, kafka, topic, offsets, date)
    items = sorted(found.items())
    for i in range(0, len(items), MARKER_BATCH):
        await store.put_sent(date, items[i:i + MARKER_BATCH])
    alert(log, "push.recovered", date=date, hour=hour, topic=topic, messages_read=read,
          users_marked=len(items), other_messages=foreign, seconds=round(time.monotonic() - began, 3),
          note="an earlier run of this hour did not finish; what it delivered is marked sent, not resent")
    return len(items)


def _parse_start(start: dict, date: str, hour: int) -> tuple[str, dict[int, int]]:
    try:
        return str(start["topic"]), {int(p): int(o) for p, o in start["offsets"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise KafkaUnavailable(f"the push start record of {date} hour {hour} is not readable ({start!r}); "
                               "delete the later_read:push:start key only after checking the topic by hand"
                               ) from None


def _collect(kafka: KafkaSettings, topic: str, offsets: dict[int, int], date: str
             ) -> tuple[dict[str, str], int, int]:
    """({uid: msg_id} of the date's messages in the range, messages read, messages not of the date)."""
    found: dict[str, str] = {}
    read = foreign = 0
    for record in kafka_topic.read_range(kafka, topic, offsets, RECOVERY_TIMEOUT_SECONDS):
        read += 1
        pair = _message_of(record.value, date)
        if pair is None:
            foreign += 1
        else:
            found[pair[0]] = pair[1]
    return found, read, foreign


def _message_of(value: bytes | None, date: str) -> tuple[str, str] | None:
    """(uid, msg_id) of a push message of `date`; None for anything else sharing the topic."""
    try:
        body = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("push_date") != date:
        return None
    uid, msg_id = body.get("source_uid"), body.get("msg_id")
    if not isinstance(uid, str) or not isinstance(msg_id, str):
        return None
    return uid, msg_id
