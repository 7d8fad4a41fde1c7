"""The topic is the record of what was sent: recover a dead push run's deliveries before sending more.

A sent marker is written after Kafka acknowledged the message, so a run killed with -9 (OOM kill, lost
node) between the two leaves users whose message is in the topic without a marker; a plain rerun would
send them again. So every push run of a (date, hour), and `rerun UID`, goes through `begin`:

    start, entry = the hour's start record and ledger entry (Redis; ledger.py)
    start and entry not clean ->  read the topic from start's offsets to the current end offsets, take
                                  every message of this date, write its (uid, msg_id) sent marker
    no start                  ->  record each partition's end offset (SET NX, before the first produce)
    write the entry unclean   ->  from here until `end`, a crash leaves the hour "unfinished"

and the run calls `end` with the entry it ends with, clean only when every produced message is confirmed
and marked (no purged or failed delivery whose fate is unknown). With the hour's lock as `fence`, the start
record, the entries and the recovered markers are written only while the run holds it (store/fencing.py). The
read is bounded by what was written to the topic since the hour's first run started (that hour's messages,
and whatever else shares the topic meanwhile), not by the topic's size; a finished hour costs two Redis
GETs. Why this and not a
transactional producer, with figures: docs/design.md ("Exactly one message per user").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from later_read.clients import kafka_topic
from later_read.config.settings import KafkaSettings
from later_read.core import ledger
from later_read.core.message import BadMessage, PushMessage
from later_read.core.scope import RunScope
from later_read.errors import KafkaUnavailable
from later_read.log import alert, get_logger
from later_read.store import Store
from later_read.store.fencing import Fence

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
    """What `begin` found and did for one (date, hour[, shard]): the `scope`."""

    scope: RunScope
    start: dict
    entry: dict | None  # the ledger entry found (before this run marked the hour unfinished)
    recovered: int | None = None  # users marked sent from the topic; None: no recovery was needed
    recovered_of_hour: int = 0  # of those, messages of this hour (and shard): a dead run's deliveries
    written: dict | None = None  # the entry `begin` wrote (mark's), None when it wrote none
    fence: Fence | None = None  # the hour's lock: every write of the hour's records is fenced by it

    @property
    def was_finished(self) -> bool:
        return ledger.is_clean(self.entry)


async def begin(
    store: Store,
    kafka: KafkaSettings,
    scope: RunScope,
    mark: Callable[[dict | None], dict | None] = ledger.unclean,
    fence: Fence | None = None,
) -> HourRun:
    """Recover an unfinished earlier run of the scope's hour, record where this run starts, then write
    `mark(entry found)` as the hour's ledger entry (unclean; None writes nothing); every write fenced by
    `fence`, the hour's lock, when given."""
    start, entry = await store.get_push_run(scope)
    run = HourRun(scope, start or {}, entry, fence=fence)
    if start is not None and not run.was_finished:
        run.recovered, run.recovered_of_hour = await recover(store, kafka, scope, start, fence)
    if start is None:
        offsets = await anyio.to_thread.run_sync(kafka_topic.end_offsets, kafka, kafka.topic, OFFSETS_TIMEOUT_SECONDS)
        run.start = {
            "topic": kafka.topic,
            "offsets": {str(p): o for p, o in sorted(offsets.items())},
            "at": round(time.time(), 3),
        }
        if not await store.put_push_start(scope, run.start, fence):
            # Another run recorded a start meanwhile (only possible without the lock, e.g. `rerun`).
            run.start = (await store.get_push_run(scope))[0] or run.start
            run.recovered, run.recovered_of_hour = await recover(store, kafka, scope, run.start, fence)
    run.written = mark(entry)
    if run.written is not None:
        await store.put_ledger(scope, run.written, fence)
    return run


async def end(store: Store, run: HourRun, entry: dict | None) -> None:
    """The run stopped: write the hour's ledger entry (clean only if every delivery is known), fenced."""
    if entry is not None:
        await store.put_ledger(run.scope, entry, run.fence)


async def recover_if_unfinished(store: Store, kafka: KafkaSettings, scope: RunScope) -> int | None:
    """`recover` when the scope's hour has a start record and its ledger entry is not clean; None when
    nothing to do."""
    start, entry = await store.get_push_run(scope)
    if start is None or ledger.is_clean(entry):
        return None
    return (await recover(store, kafka, scope, start))[0]


async def recover(
    store: Store, kafka: KafkaSettings, scope: RunScope, start: dict, fence: Fence | None = None
) -> tuple[int, int]:
    """Read the topic from `start`'s offsets to its end; write the sent marker of every user with a
    message of the scope's date there. (users marked, messages among them of the scope's hour whose user
    is in its shard). KafkaUnavailable if it cannot read."""
    began = time.monotonic()
    date, hour, shard = scope.date, scope.slot.hour, scope.shard
    topic, offsets = _parse_start(start, date, hour)
    found, read, foreign = await anyio.to_thread.run_sync(_collect, kafka, topic, offsets, date)
    items = sorted((uid, msg_id) for uid, (msg_id, _) in found.items())
    for i in range(0, len(items), MARKER_BATCH):
        await store.put_sent(date, items[i : i + MARKER_BATCH], fence)
    of_hour = sum(1 for uid, (_, at) in found.items() if at == hour and shard.owns(uid))
    alert(
        log,
        "push.recovered",
        date=date,
        hour=hour,
        topic=topic,
        messages_read=read,
        users_marked=len(items),
        of_hour=of_hour,
        other_messages=foreign,
        seconds=round(time.monotonic() - began, 3),
        note="an earlier run of this hour did not finish; what it delivered is marked sent, not resent",
    )
    return len(items), of_hour


def _parse_start(start: dict, date: str, hour: int) -> tuple[str, dict[int, int]]:
    try:
        return str(start["topic"]), {int(p): int(o) for p, o in start["offsets"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise KafkaUnavailable(
            f"the push start record of {date} hour {hour} is not readable ({start!r}); "
            "delete the later_read:push:start key only after checking the topic by hand"
        ) from None


def _collect(
    kafka: KafkaSettings, topic: str, offsets: dict[int, int], date: str
) -> tuple[dict[str, tuple[str, object]], int, int]:
    """({uid: (msg_id, push_hour)} of the date's messages in the range, messages read, messages not of the
    date)."""
    found: dict[str, tuple[str, object]] = {}
    read = foreign = 0
    for record in kafka_topic.read_range(kafka, topic, offsets, RECOVERY_TIMEOUT_SECONDS):
        read += 1
        message = _message_of(record.value, date)
        if message is None:
            foreign += 1
        else:
            found[message[0]] = message[1:]
    return found, read, foreign


def _message_of(value: bytes | None, date: str) -> tuple[str, str, object] | None:
    """(uid, msg_id, push_hour) of a push message of `date` (core/message.py); None for anything else
    sharing the topic."""
    try:
        message = PushMessage.decode(value)
    except BadMessage:
        return None
    if message.push_date != date or not isinstance(message.source_uid, str):
        return None
    return message.source_uid, message.msg_id, message.push_hour
