"""The two ways to make a rerun after a kill -9 send nothing twice, measured on the sandbox broker.

    python benchmarks/exactly_once.py [--messages 50000] [--repeat 3]

A. what the push does (jobs/push/recovery.py): idempotent producer, acks=all; a rerun of an unfinished
   hour reads the topic back from the recorded start offsets. Measured: producing N messages with
   delivery reports, and the recovery read of those N messages (read + parse + collect uid/msg_id).
B. the alternative: a transactional producer (transactional.id per (date, hour), so a new run fences
   the dead one and aborts its open transaction), committing every K messages (markers can only be
   written after the commit), consumers on read_committed. Measured: producing the same N messages
   with a commit every K, and the commit latency.

Prints the median of --repeat runs; the figures in docs/design.md ("Exactly one message per user")
come from here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from later_read.clients.kafka_topic import end_offsets, read_range  # noqa: E402
from later_read.config.kafka import PRODUCER_DEFAULTS  # noqa: E402
from later_read.config.settings import KafkaSettings  # noqa: E402
from later_read.core.message import msg_id  # noqa: E402
from later_read_sandbox.servers import KafkaServer  # noqa: E402

DATE = "20261123"


def message(i: int) -> tuple[str, bytes]:
    uid = str(100_000_000 + i)
    body = {
        "msg_id": msg_id(DATE, uid),
        "source_uid": uid,
        "project": "novel",
        "task_id": "04-026-x",
        "push_date": DATE,
        "push_hour": 9,
        "rec_id": f"r{i}",
        "rec_type": "book",
        "material_id": f"m-{i % 2000}",
        "trace_id": f"tr-{i:016x}",
        "title": f"Book {i % 2000}",
        "content": "Readers who finished your last book loved this one. Start chapter one tonight.",
        "cover_url": f"https://img.example.com/c/{i}.jpg",
        "deeplink": f"reader://book/{i}",
        "created_at": "2026-11-23T09:00:00.000+08:00",
    }
    return uid, orjson.dumps(body)


def produce_idempotent(bootstrap: str, topic: str, n: int) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS})
    delivered = []
    began = time.perf_counter()
    for i in range(n):
        uid, value = message(i)
        while True:
            try:
                producer.produce(topic, value, key=uid, on_delivery=lambda e, m: delivered.append(e is None))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    assert len(delivered) == n and all(delivered)
    return time.perf_counter() - began


def produce_transactional(bootstrap: str, topic: str, n: int, every: int) -> tuple[float, list[float]]:
    config = {
        "bootstrap.servers": bootstrap,
        **PRODUCER_DEFAULTS,
        "transactional.id": f"later_read:push:{DATE}:09:{topic}",
    }
    producer = Producer(config)
    began = time.perf_counter()
    producer.init_transactions(30)  # fences (and aborts) any earlier producer with this id
    commits = []
    for start in range(0, n, every):
        producer.begin_transaction()
        for i in range(start, min(start + every, n)):
            uid, value = message(i)
            while True:
                try:
                    producer.produce(topic, value, key=uid)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        at = time.perf_counter()
        producer.commit_transaction(60)  # flushes, then commits: markers may be written after this
        commits.append(time.perf_counter() - at)
    return time.perf_counter() - began, commits


def recovery_read(settings: KafkaSettings, starts: dict[int, int]) -> tuple[float, int]:
    began = time.perf_counter()
    found = {}
    for record in read_range(settings, settings.topic, starts, 120):
        body = orjson.loads(record.value)
        if body.get("push_date") == DATE:
            found[body["source_uid"]] = body["msg_id"]
    return time.perf_counter() - began, len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--commit-every", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    with KafkaServer() as broker:
        for r in range(args.repeat):
            topic = broker.create_topic(f"eo_{r}", partitions=3)
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap, topic=topic)
            at = time.perf_counter()
            starts = end_offsets(settings, topic, 10)  # what every push run pays for its start record
            rows.setdefault("A start record: end offsets of 3 partitions, ms", []).append(
                (time.perf_counter() - at) * 1000
            )
            rows.setdefault("A produce (idempotent), s", []).append(
                produce_idempotent(broker.bootstrap, topic, args.messages)
            )
            seconds, users = recovery_read(settings, starts)
            assert users == args.messages
            rows.setdefault("A recovery read of all of them, s", []).append(seconds)
            topic_b = broker.create_topic(f"eo_tx_{r}", partitions=3)
            total, commits = produce_transactional(broker.bootstrap, topic_b, args.messages, args.commit_every)
            rows.setdefault(f"B produce (transactional, commit every {args.commit_every}), s", []).append(total)
            rows.setdefault("B commit latency p50, ms", []).append(statistics.median(commits) * 1000)
            rows.setdefault("B commit latency max, ms", []).append(max(commits) * 1000)
    print(f"{args.messages} messages of ~{len(message(0)[1])} bytes, 3 partitions, median of {args.repeat}:")
    for name, values in rows.items():
        print(f"  {name:<52} {statistics.median(values):9.3f}   runs: " + " / ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
