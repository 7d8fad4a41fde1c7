"""The librdkafka configuration of every Kafka client later-read builds, and librdkafka's own verdict on
the producer's, checked when the settings load (`KafkaSettings.problems`): the defaults, the
`[kafka.librdkafka]` pass-through table over them, and the one property later-read always forces (a
missing topic is never created). clients/kafka.py builds the producer from `producer_config`,
clients/kafka_topic.py every reader (the push's, recovery's and `sent`'s) from `consumer_config`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

# Every Kafka client later-read builds (the producer; the consumers that read end offsets, recover an hour
# and serve `sent`) connects to the brokers as soon as the metadata names them. With librdkafka's default
# (sparse connections) a new client's first metadata request is answered on the bootstrap connection,
# which is then retired, and the request's retry waits for a connection that sparse mode opens at most once
# per reconnect.backoff.ms / 2 (50 ms): ~55 ms of the push's topic check, as much again for the start
# record's end offsets. The cost: a connection to every broker of the cluster, also one leading no
# partition of the topic. [kafka.librdkafka] can set it back.
CONNECTION_DEFAULTS: dict[str, Any] = {"enable.sparse.connections": False}
# Safe, fast defaults; anything in [kafka.librdkafka] overrides them.
PRODUCER_DEFAULTS: dict[str, Any] = {
    **CONNECTION_DEFAULTS,
    "enable.idempotence": True,  # retries inside librdkafka never duplicate or reorder
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.num.messages": 10000,
    "message.timeout.ms": 60000,  # a message not delivered within a minute is reported failed
    "queue.buffering.max.messages": 200000,
}
# Applied after [kafka.librdkafka]: a metadata request or a produce to a missing topic must not create it
# (the broker would, with auto.create.topics.enable, and with its own partition count and retention).
NEVER_CREATE_TOPIC = {"allow.auto.create.topics": False}


def producer_config(bootstrap_servers: str, librdkafka: dict[str, Any]) -> dict[str, Any]:
    """The producer's config: the defaults, then `[kafka.librdkafka]`, then NEVER_CREATE_TOPIC."""
    return {"bootstrap.servers": bootstrap_servers, **PRODUCER_DEFAULTS, **librdkafka, **NEVER_CREATE_TOPIC}


def consumer_config(bootstrap_servers: str, librdkafka: dict[str, Any], group: str) -> dict[str, Any]:
    """A reader's config (the end offsets, recovery, `sent`): assign-only in a throwaway group `group`-<random>
    that commits nothing; CONNECTION_DEFAULTS, then `[kafka.librdkafka]` (SASL, TLS) less the producer's own
    properties of PRODUCER_DEFAULTS, which a consumer would only warn about."""
    passed = {k: v for k, v in librdkafka.items() if k not in _PRODUCER_ONLY}
    return {
        **CONNECTION_DEFAULTS,
        **passed,
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"{group}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **NEVER_CREATE_TOPIC,
    }


_PRODUCER_ONLY = PRODUCER_DEFAULTS.keys() - CONNECTION_DEFAULTS.keys()


def librdkafka_problem(librdkafka: dict[str, Any]) -> str | None:
    """librdkafka's verdict on the producer config, or None: a producer is built without
    bootstrap.servers (so it never connects) and dropped. Unknown properties, bad values and
    conflicting ones (acks=1 with idempotence) are refused here, at config time, and so is asking for
    the topic to be auto-created (one rule: a missing topic is refused, never created)."""
    import confluent_kafka  # ~60 ms to import: only when [kafka.librdkafka] is set

    if str(librdkafka.get("allow.auto.create.topics", "false")).lower() in ("true", "1"):
        return (
            "allow.auto.create.topics: later-read never creates its topic (a missing topic is refused "
            "by push and rerun alike); remove the property and create the topic"
        )
    config = {k: v for k, v in producer_config("", librdkafka).items() if k != "bootstrap.servers"}
    try:
        confluent_kafka.Producer({"logger": _SILENT, **config})
    except (confluent_kafka.KafkaException, TypeError, ValueError) as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if isinstance(error, confluent_kafka.KafkaError) else str(error)
        return f"librdkafka refuses it: {' '.join(text.split())}"
    return None


_SILENT = logging.getLogger("later_read.kafka.config_check")  # a configuration check logs nothing
_SILENT.disabled = True
