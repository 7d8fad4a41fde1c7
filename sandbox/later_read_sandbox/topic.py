"""Read a whole topic back, up to its high watermarks: what the push produced, for tests and the demo."""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from later_read.core.message import PushMessage

# A broker just restarted answers these until its partitions have leaders again: asked again, not failed.
_NOT_READY = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
)
READY_WAIT_SECONDS = 60.0


class TopicMessage(NamedTuple):
    key: str
    partition: int
    offset: int
    message: PushMessage  # decoded by core/message.py (PushMessage.decode)

    @property
    def value(self) -> dict:
        """The message's fields by name (as its JSON holds them)."""
        return self.message.to_dict()


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[TopicMessage]:
    """Every message of `topic`, each partition read from the beginning to its high watermark.

    Reading to the watermarks (instead of "until idle") makes the answer exact and fast; a partition
    that cannot be read to its end within `timeout` raises RuntimeError naming it.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        highs = {p: _high(consumer, topic, p) for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        left, found, deadline = {p for p, h in highs.items() if h > 0}, [], time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            key, value, partition, offset = message.key(), message.value(), message.partition(), message.offset()
            assert key is not None and value is not None and partition is not None and offset is not None
            found.append(TopicMessage(key.decode(), partition, offset, PushMessage.decode(value)))
            if offset + 1 >= highs[partition]:
                left.discard(partition)
        if left:
            raise RuntimeError(f"could not read partitions {sorted(left)} of {topic} to their high watermarks")
        return found
    finally:
        consumer.close()


def topic_size(bootstrap: str, topic: str) -> int:
    """Messages in the topic: the sum of its partitions' high watermarks (nothing is deleted here)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "size", "log_level": 3})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(_high(consumer, topic, p) for p in parts)
    finally:
        consumer.close()


def _high(consumer: Consumer, topic: str, partition: int) -> int:
    """The partition's high watermark, asked again while a restarted broker has no leader for it yet."""
    deadline = time.monotonic() + READY_WAIT_SECONDS
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException as exc:
            if exc.args[0].code() not in _NOT_READY or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
