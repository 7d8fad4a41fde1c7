"""Getting push messages to Kafka with every delivery confirmed, and marking users sent only then.

librdkafka reports a delivery only from inside poll()/flush(), so this module owns that loop:

- `send` calls produce() on the event loop; a full local queue (BufferError) is met by polling and
  retrying after a short sleep, never by dropping the message; a message librdkafka refuses for its size
  (over `message.max.bytes`, checked inside produce() before anything is queued) is that user's
  `oversize_message` failure: never produced, so it leaves nothing in doubt for the next run to recover;
- a pump task calls poll(0) every few milliseconds; the delivery callback (run inside poll, on the
  event-loop thread) queues the confirmed (uid, msg_id);
- a marker task writes the confirmed users' sent markers one batched call at a time, as soon as they arrive.
  The gap between "Kafka has it" and "the marker is written" is what a kill -9 turns into a duplicate
  on the next run (consumers deduplicate by msg_id), so it is kept to one Redis round trip;
- at the end, `finish` keeps polling until every message is reported or `push.flush_timeout_seconds`
  passes, purges what is left, writes the last markers, and counts the rest `undelivered`: they get no
  marker, so the next run sends them again;
- with the hour's lock as `fence`, every marker batch is written only while the run holds it (store/fencing.py);
  once the lock is lost, `send` produces nothing more, `finish` purges what librdkafka still holds at
  once (no flush wait) and no marker is written.

`DryRunSink` has the same `send` and writes the messages as JSON lines instead (no Kafka, no markers).
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import IO, Any

import anyio
import confluent_kafka

from later_read import runtime
from later_read.clients.kafka import OVERSIZE_FIX, delivery_reason, refused_for_size
from later_read.core.message import msg_id_of
from later_read.log import alert, event, get_logger
from later_read.store import Store
from later_read.store.fencing import Fence

log = get_logger("push")

POLL_INTERVAL_SECONDS = 0.005  # how often the pump serves delivery callbacks
BUFFER_FULL_WAIT_SECONDS = 0.01  # pause after BufferError before producing the same message again
# produce()'s arguments go by position, in its documented order (topic, value, key, partition, on_delivery):
# confluent-kafka parses keyword arguments by name at every call, ~0.35 us of a message's 1.2 us there.
# The partition is librdkafka's RD_KAFKA_PARTITION_UA: none given, the configured partitioner picks it by key.
ANY_PARTITION = -1


class Delivery:
    """Produce, confirm, mark. Counters are read by the job for its summary."""

    def __init__(
        self, producer: Any, topic: str, store: Store, date: str, batch_size: int, fence: Fence | None = None
    ) -> None:
        self.producer, self.topic, self.store, self.date = producer, topic, store, date
        self.batch_size, self.fence = batch_size, fence
        self.confirmed: deque[tuple[str, str]] = deque()
        self.produced = self.delivered = self.marked = self.buffer_full_waits = 0
        self.failed: Counter[str] = Counter()  # per-reason delivery failures reported by librdkafka
        self.failed_uids: list[tuple[str, str]] = []  # (reason, uid) of each of those
        self.oversize: list[str] = []  # users whose message produce() refused for its size (not produced)
        self.largest_oversize = 0  # bytes of the largest of those messages
        self._wake = anyio.Event()
        self._report = self._reported  # one bound method for every message's delivery report

    @property
    def outstanding(self) -> int:
        return self.produced - self.delivered - sum(self.failed.values())

    @property
    def fence_lost(self) -> bool:
        return self.fence is not None and self.fence.lost is not None

    def offer(self, uid: str, value: bytes) -> bool:
        """Hand one message (PushMessage.encode's bytes, keyed by uid) to librdkafka without waiting: False when
        its queue is full (then `send` it, which waits); LockLost instead once the run's lock is lost."""
        if self.fence_lost:
            assert self.fence is not None
            raise self.fence.error()
        try:
            self.producer.produce(self.topic, value, uid, ANY_PARTITION, self._report)  # by position: ANY_PARTITION
        except BufferError:
            return False
        except confluent_kafka.KafkaException as exc:  # e.g. message too large, fatal producer
            if refused_for_size(exc):
                self.oversize.append(uid)
                self.largest_oversize = max(self.largest_oversize, len(value))
                return True
            self.produced += 1
            self.failed[delivery_reason(exc.args[0])] += 1
            self.failed_uids.append((delivery_reason(exc.args[0]), uid))
            return True
        self.produced += 1
        return True

    async def send(self, uid: str, value: bytes) -> None:
        """`offer`, waiting (never dropping) while librdkafka's queue is full."""
        while not self.offer(uid, value):
            self.buffer_full_waits += 1
            self.producer.poll(0)
            await anyio.sleep(BUFFER_FULL_WAIT_SECONDS)

    def _reported(self, error: Any, message: Any) -> None:
        """librdkafka's delivery report (inside poll): queue the confirmed user (the message's key) and its
        msg_id (read from the message) for its marker."""
        if error is None:
            self.delivered += 1
            self.confirmed.append((message.key().decode(), msg_id_of(message.value())))
        else:
            self.failed[delivery_reason(error)] += 1
            self.failed_uids.append((delivery_reason(error), message.key().decode()))

    async def pump(self) -> None:
        """Serve delivery reports until cancelled; wake the marker writer when users were confirmed."""
        while True:
            self.producer.poll(0)
            if self.confirmed:
                self._wake.set()
            await anyio.sleep(POLL_INTERVAL_SECONDS)

    async def write_markers(self) -> None:
        """Write sent markers for confirmed users as they arrive, one Redis call per batch."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self._write_confirmed()

    async def _write_confirmed(self) -> None:
        while self.confirmed:
            batch = [self.confirmed.popleft() for _ in range(min(len(self.confirmed), self.batch_size))]
            try:
                await self.store.put_sent(self.date, batch, self.fence)
            except BaseException:
                self.confirmed.extendleft(reversed(batch))  # still unmarked: counted as such below
                raise
            self.marked += len(batch)

    async def finish(self, timeout: float, stop_early: Callable[[], bool] = lambda: False) -> None:
        """Wait up to `timeout` for the outstanding reports, purge the rest, write the last markers."""
        deadline = time.monotonic() + timeout
        while self.outstanding > 0 and time.monotonic() < deadline and not stop_early() and not self.fence_lost:
            self.producer.poll(0)
            if len(self.confirmed) >= self.batch_size:
                await self._write_confirmed()
            await anyio.sleep(POLL_INTERVAL_SECONDS)
        if self.outstanding > 0:
            if self.fence_lost:  # the run stops at once: nothing queued is sent, nothing marked
                event(log, "push.purged", outstanding=self.outstanding, reason="lock_lost")
            else:
                event(log, "push.flush_timeout", outstanding=self.outstanding, timeout_seconds=timeout)
            self.producer.purge()
            self.producer.poll(0)  # serve the purge reports so they are counted
        await self._write_confirmed()

    @property
    def undelivered(self) -> int:
        return self.produced - self.delivered

    @property
    def clean(self) -> bool:
        """Every message produced was confirmed and its user marked: nothing whose fate is unknown."""
        return self.undelivered == 0 and not self.confirmed and self.marked == self.delivered

    @property
    def sent(self) -> int:
        """Messages Kafka confirmed (their users are marked sent unless Redis failed meanwhile)."""
        return self.delivered

    def details(self) -> dict[str, int]:
        return {"produced": self.produced, "marked": self.marked, "buffer_full_waits": self.buffer_full_waits}


@asynccontextmanager
async def delivering(
    delivery: Delivery, flush_timeout: float, stop_early: Callable[[], bool] = lambda: False
) -> AsyncIterator[Delivery]:
    """Run the pump and the marker writer around the body; always finish (shielded, bounded)."""
    try:
        async with runtime.task_group() as tg:
            tg.start_soon(delivery.pump)
            tg.start_soon(delivery.write_markers)
            try:
                yield delivery
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await delivery.finish(flush_timeout, stop_early)
            report_undelivered(delivery)
            report_oversize(delivery)


def report_undelivered(delivery: Delivery) -> None:
    """One alert line when some messages were not confirmed (they got no marker; rerun sends them)."""
    if delivery.undelivered:
        reasons = ",".join(f"{k}:{v}" for k, v in sorted(delivery.failed.items())) or "unknown"
        alert(
            log,
            "push.undelivered",
            count=delivery.undelivered,
            produced=delivery.produced,
            reasons=reasons,
            fix="check Kafka, then rerun the hour (delivered users are marked sent)",
        )


def report_oversize(delivery: Delivery) -> None:
    """One alert line for the run's messages refused for their size (each user counted once)."""
    if delivery.oversize:
        alert(
            log,
            "push.oversize_message",
            count=len(delivery.oversize),
            first=delivery.oversize[0],
            largest_bytes=delivery.largest_oversize,
            fix=OVERSIZE_FIX,
        )


class DryRunSink:
    """`--dry-run`: the messages as JSON lines on stdout or in a file; nothing produced or marked."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream or sys.stdout.buffer
        self.written = 0

    def offer(self, uid: str, value: bytes) -> bool:
        self.stream.write(value + b"\n")
        self.written += 1
        return True

    async def send(self, uid: str, value: bytes) -> None:
        self.offer(uid, value)

    def flush(self) -> None:
        self.stream.flush()

    @property
    def sent(self) -> int:
        return self.written

    def details(self) -> dict[str, int]:
        return {"printed": self.written}
