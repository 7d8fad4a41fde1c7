"""Reading back what was produced: each partition's end offset, and a range of the topic to its end.

The push uses both to make the topic the record of what it sent (`jobs/push/recovery.py`): before
producing it stores every partition's end offset; a later run of the same hour reads from those offsets
to the end offsets of that moment, which bounds the read by what was written since, not by the topic.

Blocking librdkafka calls; the jobs run them in a worker thread (`anyio.to_thread.run_sync`). The
consumer only assigns partitions (no group membership, nothing committed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import NamedTuple

import confluent_kafka
from confluent_kafka import TopicPartition

from later_read.clients.kafka import ErrorReporter, LibrdkafkaLog
from later_read.config.kafka import consumer_config
from later_read.config.settings import KafkaSettings
from later_read.errors import KafkaUnavailable

# Messages asked of librdkafka per consume() call: large enough that a 100k-message hour is ~100 calls,
# small enough that one batch of ~1 KB messages stays a few MB.
CONSUME_BATCH = 1000
CONSUME_WAIT_SECONDS = 0.5


class Record(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def open_consumer(
    settings: KafkaSettings, group: str = "later-read-reader", *, report_errors: bool = False
) -> confluent_kafka.Consumer:
    """An assign-only consumer that commits nothing (`consumer_config`: [kafka.librdkafka]'s connection
    settings apply, SASL and TLS alike); with `report_errors` librdkafka's errors are logged as they come
    (`ErrorReporter`), else they surface as the caller's timeouts."""
    config = {
        **consumer_config(settings.bootstrap_servers, settings.librdkafka, group),
        "logger": LibrdkafkaLog(),
        **({"error_cb": ErrorReporter()} if report_errors else {}),
    }
    try:
        return confluent_kafka.Consumer(config)
    except confluent_kafka.KafkaException as exc:
        raise KafkaUnavailable(f"Kafka consumer config rejected: {exc}; check [kafka.librdkafka]") from None


def _unreachable(settings: KafkaSettings, topic: str, what: str, detail: object) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"Kafka at {settings.bootstrap_servers}: cannot {what} of topic {topic!r} "
        f"({detail}); check that the brokers are up, then rerun"
    )


def partitions(consumer: confluent_kafka.Consumer, settings: KafkaSettings, topic: str, timeout: float) -> list[int]:
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    except confluent_kafka.KafkaException as exc:
        raise _unreachable(settings, topic, "read the partitions", exc.args[0].str()) from None
    if meta is None or meta.error is not None or not meta.partitions:
        raise _unreachable(settings, topic, "read the partitions", meta.error if meta else "no topic")
    return sorted(meta.partitions)


def watermarks(
    consumer: confluent_kafka.Consumer, settings: KafkaSettings, topic: str, timeout: float
) -> dict[int, tuple[int, int]]:
    """(low, high) offsets of every partition of `topic`: high is the offset the next message gets."""
    marks = {}
    for partition in partitions(consumer, settings, topic, timeout):
        try:
            marks[partition] = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        except confluent_kafka.KafkaException as exc:
            raise _unreachable(
                settings, topic, f"read the end offset of partition {partition}", exc.args[0].str()
            ) from None
        if marks[partition] is None:
            raise _unreachable(settings, topic, f"read the end offset of partition {partition}", "timeout")
    return marks


def end_offsets(settings: KafkaSettings, topic: str, timeout: float) -> dict[int, int]:
    """Every partition's end offset now: where the next message produced to it will be written."""
    consumer = open_consumer(settings)
    try:
        return {p: high for p, (_, high) in watermarks(consumer, settings, topic, timeout).items()}
    finally:
        consumer.close()


def read_range(settings: KafkaSettings, topic: str, starts: dict[int, int], timeout: float) -> Iterator[Record]:
    """Every record from `starts[p]` (a partition absent from `starts` was created since: from its
    beginning) up to the end offsets read when the call begins. KafkaUnavailable if the range cannot be
    read within `timeout` seconds. Offsets below the log start (deleted by retention) are skipped."""
    consumer = open_consumer(settings)
    try:
        marks = watermarks(consumer, settings, topic, timeout)
        ranges = {p: (max(starts.get(p, low), low), high) for p, (low, high) in marks.items()}
        left = {p for p, (start, end) in ranges.items() if start < end}
        consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in sorted(left)])
        deadline = time.monotonic() + timeout
        while left:
            if time.monotonic() > deadline:
                raise _unreachable(
                    settings,
                    topic,
                    f"read partitions {sorted(left)} to their end offsets",
                    f"not done within {timeout:g} s",
                )
            for message in consumer.consume(CONSUME_BATCH, CONSUME_WAIT_SECONDS):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise _unreachable(settings, topic, "read", error.str())
                    continue
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None  # set on every message without an error
                if partition not in left or offset >= ranges[partition][1]:
                    continue
                yield Record(partition, offset, message.key(), message.value())
            # By position, not by the last offset seen: a gap at the end (control records) still ends.
            for done in consumer.position([TopicPartition(topic, p) for p in left]):
                if done.offset >= ranges[done.partition][1]:
                    left.discard(done.partition)
    finally:
        consumer.close()
