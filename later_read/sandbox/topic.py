"""Read a whole topic back, up to its high watermarks: what the push produced, for tests and the demo."""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


class TopicMessage(NamedTuple):
    key: str
    partition: int
    offset: int
    value: dict


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[TopicMessage]:
    """Every message of `topic`, each partition read from the beginning to its high watermark.

    Reading to the watermarks (instead of "until idle") makes the answer exact and fast; a partition
    that cannot be read to its end within `timeout` raises RuntimeError naming it.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "log_level": 3})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        left, found, deadline = {p for p, h in highs.items() if h > 0}, [], time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            found.append(TopicMessage(message.key().decode(), message.partition(), message.offset(),
                                      orjson.loads(message.value())))
            if message.offset() + 1 >= highs[message.partition()]:
                left.discard(message.partition())
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
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        consumer.close()
