"""Kafka producer (confluent-kafka): idempotent, acks=all, compressed, batched.

librdkafka reports delivery only inside poll()/flush(); the push job owns the delivery loop
(`later_read.jobs.push.delivery`). librdkafka's own log lines are routed to our logger at DEBUG level (by
default it writes one stderr line per reconnect attempt, dozens a second while a broker is down), and
its error callback becomes one alert line per distinct error code.

The topic is never created by later-read: the producer never asks the broker to auto-create it
(`allow.auto.create.topics` is off whatever [kafka.librdkafka] says), and `check_topic`, run by every
command that produces (push, rerun) before anything else, refuses a topic that does not exist (exit 3),
the same way for both.
"""

from __future__ import annotations

import logging
from typing import Any

import confluent_kafka

from later_read.config.kafka import producer_config
from later_read.config.settings import KafkaSettings
from later_read.errors import KafkaUnavailable
from later_read.log import alert, event, get_logger

log = get_logger("kafka")

# A message librdkafka refused at produce() for its size (over message.max.bytes): counted per user as
# this reason, never produced, so it is no undelivered message the next run has to recover.
OVERSIZE_MESSAGE = "oversize_message"
OVERSIZE_FIX = (
    "later-read show UID, then fix the card at the material service or raise [kafka.librdkafka] "
    "message.max.bytes (up to the topic's max.message.bytes), then later-read rerun UID --push-only"
)


def refused_for_size(exc: confluent_kafka.KafkaException) -> bool:
    """produce() refused the message for its size (MSG_SIZE_TOO_LARGE): it was never queued."""
    return (
        bool(exc.args)
        and isinstance(exc.args[0], confluent_kafka.KafkaError)
        and exc.args[0].code() == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE
    )


class LibrdkafkaLog:
    """librdkafka's `logger`: its lines (queued until poll) become DEBUG events, visible with -v."""

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            event(log, "kafka.librdkafka", logging.DEBUG, text=fmt % args)


class ErrorReporter:
    """librdkafka's `error_cb`: one alert line per distinct error code per producer, then quiet.

    Per-message consequences (undelivered messages) are counted by the delivery loop; this line says
    why, e.g. `kafka.error code=_ALL_BROKERS_DOWN`.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, error: confluent_kafka.KafkaError) -> None:
        if error.code() in self.seen and not error.fatal():
            return
        self.seen.add(error.code())
        alert(log, "kafka.error", code=error.name(), fatal=error.fatal(), detail=error.str())


def delivery_reason(error: confluent_kafka.KafkaError) -> str:
    """A short stable label for a failed delivery, for per-reason counters (`msg_timed_out`, ...)."""
    return error.name().lstrip("_").lower() or f"code_{error.code()}"


def open_producer(settings: KafkaSettings) -> confluent_kafka.Producer:
    config = {
        "logger": LibrdkafkaLog(),
        "error_cb": ErrorReporter(),
        **producer_config(settings.bootstrap_servers, settings.librdkafka),
    }
    try:
        return confluent_kafka.Producer(config)
    except confluent_kafka.KafkaException as exc:
        raise KafkaUnavailable(f"Kafka producer config rejected: {exc}; check [kafka.librdkafka]") from None


def check_topic(client: Any, settings: KafkaSettings, timeout: float = 10.0) -> int:
    """Number of partitions of the configured topic; KafkaUnavailable when unreachable or missing.

    The one rule for a missing topic, for every command that produces (push, rerun: both through
    `connections.open_push`) and for `check` and `sent`: refused with exit 3, never created. The metadata
    request itself creates nothing: the producer is built with NEVER_CREATE_TOPIC, a consumer never asks.
    """
    try:
        metadata = client.list_topics(settings.topic, timeout=timeout)
    except confluent_kafka.KafkaException as exc:
        raise KafkaUnavailable(
            f"Kafka at {settings.bootstrap_servers} unreachable within {timeout:g} s "
            f"({exc.args[0].str()}); check [kafka] bootstrap_servers and that the "
            "brokers are up"
        ) from None
    topic = metadata.topics.get(settings.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        why = topic.error.str() if topic is not None and topic.error is not None else "no partitions"
        raise KafkaUnavailable(f"Kafka topic {settings.topic!r} not usable ({why}); create it or fix [kafka] topic")
    return len(topic.partitions)
