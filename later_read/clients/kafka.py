"""Kafka producer (confluent-kafka): idempotent, acks=all, compressed, batched.

librdkafka reports delivery only inside poll()/flush(); the push job owns the delivery loop.
"""

from __future__ import annotations

from typing import Any

import confluent_kafka

from later_read.config import KafkaSettings
from later_read.errors import KafkaUnavailable

# Safe, fast defaults; anything in [kafka.librdkafka] overrides them.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,   # retries inside librdkafka never duplicate or reorder
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.num.messages": 10000,
    "message.timeout.ms": 60000,  # a message not delivered within a minute is reported failed
    "queue.buffering.max.messages": 200000,
}


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap_servers, **PRODUCER_DEFAULTS, **settings.librdkafka}


def open_producer(settings: KafkaSettings) -> confluent_kafka.Producer:
    try:
        return confluent_kafka.Producer(producer_config(settings))
    except confluent_kafka.KafkaException as exc:
        raise KafkaUnavailable(f"Kafka producer config rejected: {exc}; check [kafka.librdkafka]") from None


def check_topic(client: Any, settings: KafkaSettings, timeout: float = 10.0) -> int:
    """Number of partitions of the configured topic; KafkaUnavailable when unreachable or missing."""
    try:
        metadata = client.list_topics(settings.topic, timeout=timeout)
    except confluent_kafka.KafkaException as exc:
        raise KafkaUnavailable(f"Kafka at {settings.bootstrap_servers} unreachable ({exc.args[0].str()}); "
                               "check [kafka] bootstrap_servers and that the brokers are up") from None
    topic = metadata.topics.get(settings.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        why = topic.error.str() if topic is not None and topic.error is not None else "no partitions"
        raise KafkaUnavailable(f"Kafka topic {settings.topic!r} not usable ({why}); "
                               "create it or fix [kafka] topic")
    return len(topic.partitions)
