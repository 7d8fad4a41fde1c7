"""The jobs' parts one at a time, each against the real server it talks to: the prewarm's BatchWriter and
HourTracker (Redis), its Fanout (MariaDB, the simulator, Redis), the push's MaterialCache (the
simulator's material service) and Delivery (Kafka, Redis). Only in-process collaborators are stood in
for (a counting wrapper around a real client, a progress sink)."""

from __future__ import annotations

import io
import logging
from collections import Counter
from contextlib import asynccontextmanager

import anyio
import orjson
import pytest
import redis

from helpers import (
    DATE,
    VALUE_KEYS,
    Oracle,
    expected_value,
    read_topic,
    seed_users,
    sent_markers,
    servers,
    stored_values,
)
from later_read.config.settings import RedisSettings, load_settings
from later_read.connections import open_job
from later_read.core.message import msg_id
from later_read.core.scope import RunScope
from later_read.core.value import CachedValue
from later_read.errors import LaterReadError, ServiceError
from later_read.jobs.prewarm.hours import HourTracker
from later_read.jobs.prewarm.writer import BatchWriter
from later_read.store import Store
from later_read.store.client import open_redis
from later_read.store.keys import Keys

SCOPE = RunScope(DATE)


@asynccontextmanager
async def store_at(url: str, **settings):
    client = open_redis(RedisSettings(url=url, **settings))
    try:
        yield Store(client, RedisSettings(url=url, **settings))
    finally:
        await client.aclose()


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    """Let the tasks run until `predicate()` holds (a bound on waiting, not a timing assertion)."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls another task's state; there is no event to wait on
            await anyio.sleep(0.005)


# BatchWriter ---------------------------------------------------------------------------------------
def test_batch_writer_writes_a_full_batch_at_once_and_the_rest_on_close(redis_url):
    batches: list[list[tuple[str, bytes, int]]] = []
    errors: list[LaterReadError] = []
    client = redis.Redis.from_url(redis_url)

    async def main() -> None:
        async with store_at(redis_url, ttl_seconds=5000) as store:
            writer = BatchWriter(store, 4, errors.append, batches.append, interval=3600)  # only size or close
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer.run)
                for i in range(3):
                    writer.add(f"u{i}", b"v%d" % i, hour=i)
                await anyio.sleep(0.05)
                assert writer.written == 0 and client.dbsize() == 0  # under a batch: nothing yet
                writer.add("u3", b"v3", hour=3)
                await until(lambda: writer.written == 4, "the full batch")
                assert batches == [[(f"u{i}", b"v%d" % i, i) for i in range(4)]]
                writer.add("u4", b"v4", hour=7)
                writer.close()
        assert (writer.written, writer.lost, errors) == (5, 0, [])
        assert batches[1:] == [[("u4", b"v4", 7)]]

    anyio.run(main)
    keys = [VALUE_KEYS.rec(f"u{i}") for i in range(5)]
    assert client.mget(keys) == [b"v%d" % i for i in range(5)]
    assert all(4990 < client.ttl(key) <= 5000 for key in keys)  # the configured ttl_seconds
    client.close()


def test_batch_writer_splits_what_it_holds_into_batches_of_its_size(redis_url):
    batches: list[list[tuple[str, bytes, int]]] = []

    async def main() -> None:
        async with store_at(redis_url) as store:
            writer = BatchWriter(store, 3, pytest.fail, batches.append, interval=3600)
            for i in range(8):  # queued before the writer runs: flushed as 3 + 3 + 2
                writer.add(f"u{i}", b"x", hour=0)
            writer.close()
            await writer.run()
            assert writer.written == 8

    anyio.run(main)
    assert [len(batch) for batch in batches] == [3, 3, 2]
    assert [uid for batch in batches for uid, _, _ in batch] == [f"u{i}" for i in range(8)]


def test_batch_writer_hands_a_redis_failure_to_on_error_and_counts_the_lost(redis_url):
    errors: list[LaterReadError] = []

    async def main() -> None:
        async with store_at(f"redis://127.0.0.1:{servers.free_port()}/0", socket_timeout_seconds=1) as store:
            writer = BatchWriter(store, 2, errors.append, interval=3600)
            for i in range(5):
                writer.add(f"u{i}", b"x")
            writer.close()
            await writer.run()  # returns: the error goes to on_error, never out of the task
            assert (writer.written, writer.lost) == (0, 5)

    anyio.run(main)
    [error] = errors
    assert "unreachable" in str(error) and "\n" not in str(error)


# HourTracker ---------------------------------------------------------------------------------------
def ready_markers(url: str) -> dict[int, dict]:
    client = redis.Redis.from_url(url)
    try:
        raw = {hour: client.get(Keys.prewarm_ready(SCOPE, hour)) for hour in range(24)}
    finally:
        client.close()
    return {hour: orjson.loads(value) for hour, value in raw.items() if value is not None}


def test_hour_tracker_marks_an_hour_ready_once_read_settled_and_after_every_earlier_hour(redis_url):
    async def main() -> dict[int, dict]:
        async with store_at(redis_url) as store:
            tracker = HourTracker(store, SCOPE, True, pytest.fail)
            async with anyio.create_task_group() as tg:
                tg.start_soon(tracker.run)
                tracker.sent(0, 2, skipped=1)
                tracker.sent(1, 1, skipped=0)
                tracker.close(1)
                tracker.settled(1)  # hour 1 is finished, but hour 0 is not
                tracker.close(0)  # read, two users still pending
                tracker.written([("a", b"x", 0)])
                assert tracker.next_hour == 0 and tracker.ready_seconds == {}
                tracker.settled(0, failed=True)  # a failure settles its user too
                assert tracker.next_hour == 2 and sorted(tracker.ready_seconds) == [0, 1]
                for hour in range(2, 24):
                    tracker.close(hour)  # no users: ready as soon as read
                assert tracker.next_hour == 24
                tracker.finish()
            return tracker.report()

    report = anyio.run(main)
    markers = ready_markers(redis_url)
    assert sorted(markers) == list(range(24))
    assert {k: markers[0][k] for k in ("date", "hour", "users", "skipped", "failed")} == {
        "date": DATE,
        "hour": 0,
        "users": 2,
        "skipped": 1,
        "failed": 1,
    }
    assert {k: markers[1][k] for k in ("users", "skipped", "failed")} == {"users": 1, "skipped": 0, "failed": 0}
    assert all((m["users"], m["failed"]) == (0, 0) for hour, m in markers.items() if hour > 1)
    assert markers[0]["seconds"] <= markers[1]["seconds"] <= markers[23]["seconds"]
    assert report["00"] == {"users": 2, "skipped": 1, "failed": 1, "seconds": markers[0]["seconds"]}
    assert report["05"] == {"users": 0, "skipped": 0, "failed": 0, "seconds": markers[5]["seconds"]}


def test_hour_tracker_leaves_an_unfinished_hour_unmarked_and_a_uids_run_marks_nothing(redis_url):
    async def run(enabled: bool) -> HourTracker:
        async with store_at(redis_url) as store:
            tracker = HourTracker(store, SCOPE, enabled, pytest.fail)
            async with anyio.create_task_group() as tg:
                tg.start_soon(tracker.run)
                tracker.sent(0, 1, 0)
                tracker.close(0)
                tracker.settled(0)
                tracker.sent(1, 2, 0)
                tracker.close(1)
                tracker.settled(1)  # one of hour 1's users never settles (a stop)
                tracker.finish()
            return tracker

    stopped = anyio.run(run, True)
    assert stopped.next_hour == 1 and sorted(ready_markers(redis_url)) == [0]
    redis.Redis.from_url(redis_url).flushdb()
    uids_run = anyio.run(run, False)
    assert uids_run.next_hour == 1 and ready_markers(redis_url) == {}  # counted, not marked


# Fanout --------------------------------------------------------------------------------------------
class CountingAB:
    """The real A/B client, counting its calls in flight (the fan-out's concurrency as the service sees it)."""

    def __init__(self, real) -> None:
        self.real, self.caller = real, real.caller
        self.in_flight = self.peak = 0

    async def assign(self, uid: str, project: str):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self.real.assign(uid, project)
        finally:
            self.in_flight -= 1


def test_fanout_keeps_c_calls_in_flight_per_service_and_records_each_user_once(redis_url, mysql, sim, make_config):
    from later_read.clients.starrocks import UserQuery
    from later_read.jobs.prewarm.fanout import SERVICES_PER_USER, Fanout, FanoutPlan
    from later_read.runtime import Shutdown

    expected = seed_users(mysql, 240)
    sim.configure(ab={"latency_ms": 5, "capacity": 7})  # a call over C = 7 in flight would queue there
    sim.reset()
    settings = load_settings(make_config(redis={"batch_size": 16}), environ={})

    async def main():
        async with open_job(settings) as conns:
            conns.services.ab = counting = CountingAB(conns.services.ab)
            query = UserQuery.of(settings, SCOPE)
            fanout = Fanout(conns, FanoutPlan(SCOPE, query, 7, False, 5.0, len(expected)), Shutdown())
            await fanout.run()
            return fanout, counting

    fanout, counting = anyio.run(main)
    counts = fanout.counts
    assert (fanout.stop_reason, fanout.error, counts.failures, counts.named) == (None, None, Counter(), {})
    outcomes = Counter(sim.expected_value(uid, DATE).outcome for uid in expected)
    cached = outcomes.pop("rec", 0)  # a stored recommendation is counted `cached` (core/counts.py)
    assert +counts.counts == Counter(outcomes, cached=cached) and counts.settled == len(expected)
    assert fanout.progress.done == len(expected)  # the progress lines read the recorder
    assert counting.peak == 7 * SERVICES_PER_USER and counting.in_flight == 0  # every worker busy at once...
    assert sim.stats()["ab"]["max_in_service"] == 7 and sim.stats()["ab"]["max_queued"] == 0  # C calls, no more
    assert sim.calls("ab") == dict.fromkeys(expected, 1)  # each user decided once
    assert stored_values(redis_url) == {uid: expected_value(sim, uid) for uid in expected}
    assert fanout.writer.written == len(expected) and fanout.hours.next_hour == 24
    assert sum(fanout.hours.users) == len(expected)


# MaterialCache -------------------------------------------------------------------------------------
def rec(material_id: str) -> CachedValue:
    return CachedValue("rec", DATE, "t", f"r-{material_id}", "book", material_id)


def test_material_cache_asks_once_per_card_under_concurrency_and_remembers_a_missing_one(redis_url, sim, make_config):
    from later_read.jobs.push.material import MaterialCache

    sim.configure(material={"latency_ms": 30})
    settings = load_settings(make_config(), environ={})
    oracle = Oracle(sim.knobs)
    cards = [c for c in (f"m-{i}" for i in range(100)) if oracle.material_exists(c)][:3]
    cards.append("m-99999999")  # no such card: None, remembered
    found: dict[tuple[int, str], object] = {}

    async def main() -> MaterialCache:
        async with open_job(settings) as conns:
            cache = MaterialCache(conns.services.material, concurrency=2)

            async def user(i: int, card: str) -> None:
                found[i, card] = await cache.get(f"u{i}", rec(card))

            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(user, i, cards[i % len(cards)])
            assert cache.ready(rec("m-1")) is not None and cache.ready(rec("m-7")) is None
            assert await cache.get("late", rec("m-99999999")) is None  # asked again: not fetched again
            return cache

    cache = anyio.run(main)
    assert cache.fetched == len(cards) and sim.stats()["material"]["calls"] == len(cards)
    assert {card for (_, card), material in found.items() if material is None} == {"m-99999999"}
    assert {(card, material.material_id) for (_, card), material in found.items() if material} == {
        (card, card) for card in cards[:3]
    }


def test_material_cache_remembers_a_failed_card_for_the_run(redis_url, sim, make_config):
    from later_read.jobs.push.material import MaterialCache

    sim.configure(material={"error_5xx_rate": 1.0})
    settings = load_settings(
        make_config(services={"max_attempts": 2, "backoff_initial_seconds": 0, "backoff_max_seconds": 0}), environ={}
    )

    async def main() -> list[BaseException]:
        async with open_job(settings) as conns:
            cache = MaterialCache(conns.services.material, concurrency=4)
            raised = []
            for uid in ("u1", "u2"):
                with pytest.raises(ServiceError) as caught:
                    await cache.get(uid, rec("m-5"))
                raised.append(caught.value)
            return raised

    first, second = anyio.run(main)
    assert second is first  # the one answer, for every user of the card
    assert sim.stats()["material"]["calls"] == 2  # its two attempts, not asked again


# Delivery ------------------------------------------------------------------------------------------
def kafka_settings(make_config, **librdkafka):
    return load_settings(make_config(kafka={"librdkafka": librdkafka}), environ={})


def test_delivery_marks_a_user_only_after_its_delivery_report(redis_url, kafka_topic, make_config):
    from later_read.clients.kafka import open_producer
    from later_read.jobs.push.delivery import Delivery

    settings = kafka_settings(make_config)
    uids = [f"d{i}" for i in range(25)]

    async def main() -> Delivery:
        async with store_at(redis_url) as store:
            delivery = Delivery(open_producer(settings.kafka), settings.kafka.topic, store, DATE, batch_size=10)
            for uid in uids:
                await delivery.send(uid, orjson.dumps({"msg_id": msg_id(DATE, uid)}))
            assert (delivery.produced, delivery.delivered, sent_markers(redis_url)) == (25, 0, {})  # no report yet
            await delivery.finish(30)
            return delivery

    delivery = anyio.run(main)
    assert (delivery.produced, delivery.delivered, delivery.marked, delivery.undelivered) == (25, 25, 25, 0)
    assert delivery.clean and delivery.failed == Counter()
    assert sent_markers(redis_url) == {uid: msg_id(DATE, uid) for uid in uids}
    assert sorted(m.key for m in read_topic(*kafka_topic)) == sorted(uids)


def test_delivery_counts_a_failed_produce_and_marks_nobody(redis_url, make_config):
    from later_read.clients.kafka import open_producer
    from later_read.jobs.push.delivery import Delivery, report_undelivered

    settings = load_settings(
        make_config(
            kafka={"bootstrap_servers": f"127.0.0.1:{servers.free_port()}", "librdkafka": {"message.timeout.ms": 1000}}
        ),
        environ={},
    )
    stream = io.StringIO()

    async def main() -> Delivery:
        async with store_at(redis_url) as store:
            delivery = Delivery(open_producer(settings.kafka), settings.kafka.topic, store, DATE, batch_size=10)
            for uid in ("f1", "f2", "f3"):
                await delivery.send(uid, b"{}")
            await delivery.finish(30)
            return delivery

    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("later_read.push")
    logger.addHandler(handler)
    try:
        delivery = anyio.run(main)
        report_undelivered(delivery)
    finally:
        logger.removeHandler(handler)
    assert (delivery.produced, delivery.delivered, delivery.marked, delivery.undelivered) == (3, 0, 0, 3)
    assert delivery.failed == Counter({"msg_timed_out": 3}) and not delivery.clean
    assert sorted(delivery.failed_uids) == [("msg_timed_out", uid) for uid in ("f1", "f2", "f3")]
    assert sent_markers(redis_url) == {}
    [line] = stream.getvalue().splitlines()
    assert line.startswith("push.undelivered count=3 produced=3 reasons=msg_timed_out:3 ")
    assert line.endswith("LATER_READ_ALERT")


def test_delivery_never_produces_a_message_over_the_size_limit(redis_url, kafka_topic, make_config):
    from later_read.clients.kafka import open_producer
    from later_read.jobs.push.delivery import Delivery

    settings = kafka_settings(make_config, **{"message.max.bytes": 2000})

    async def main() -> Delivery:
        async with store_at(redis_url) as store:
            delivery = Delivery(open_producer(settings.kafka), settings.kafka.topic, store, DATE, batch_size=10)
            await delivery.send("big", b"x" * 5000)
            await delivery.send("small", orjson.dumps({"msg_id": msg_id(DATE, "small")}))
            await delivery.finish(30)
            return delivery

    delivery = anyio.run(main)
    assert (delivery.oversize, delivery.largest_oversize) == (["big"], 5000)
    assert (delivery.produced, delivery.delivered, delivery.undelivered) == (1, 1, 0)
    assert sent_markers(redis_url) == {"small": msg_id(DATE, "small")}
    assert [m.key for m in read_topic(*kafka_topic)] == ["small"]
