"""Connections: every client a job uses, opened once per job and passed down as one typed object.

    async with open_job(settings) as conns:          # JobConnections: store, starrocks, services
        await prewarm(conns, options)
    async with open_push(settings, kafka=True) as conns:   # PushConnections: the same + producer
    async with open_store(settings) as store:        # Redis alone (show)

Nothing else in the project creates a client; tests and future deployments (Redis Sentinel/Cluster,
sharded runs) change how clients are built here and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from later_read.clients.ab import PATH as AB_PATH, ABClient
from later_read.clients.http import ServiceCaller, open_session
from later_read.clients.material import PATH as MATERIAL_PATH, MaterialClient
from later_read.clients.rate import SharedRateLimiter, shared_strategy
from later_read.clients.recommend import PATH as REC_PATH, RecClient
from later_read.clients.starrocks import StarRocks
from later_read.config.settings import Settings
from later_read.store import Store
from later_read.store.client import Failover, open_redis


@dataclass
class Services:
    """The three service clients of a job, each with its own caller (limits, breaker, figures)."""

    ab: ABClient
    rec: RecClient
    material: MaterialClient

    def summary(self) -> dict:
        """Per-service call counts, retries, failures per reason and latency percentiles."""
        return {
            name: client.caller.stats.summary()
            for name, client in (("ab", self.ab), ("rec", self.rec), ("material", self.material))
        }


@dataclass(frozen=True)
class JobConnections:
    """What the prewarm (and `rerun`'s prewarm step) use: Redis, StarRocks and the three services."""

    settings: Settings
    store: Store
    starrocks: StarRocks
    services: Services


@dataclass(frozen=True)
class PushConnections(JobConnections):
    """The push's: the same plus the Kafka producer (confluent_kafka.Producer; None on a dry run)."""

    producer: Any


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + path


def build_services(settings: Settings, session, strategy=None) -> Services:
    """The three clients; with `strategy` (a limits strategy on Redis) each `*_qps` cap is a total
    shared by every process of the run (clients/rate.py), else a cap of this process alone."""
    s = settings.services
    failover = Failover.of(settings.redis)

    def caller(name: str, url: str, path: str, qps: float) -> ServiceCaller:
        limiter = (
            SharedRateLimiter(strategy, name, qps, settings.shards.count, failover)
            if strategy is not None and qps > 0
            else None
        )
        return ServiceCaller(name, _url(url, path), session, s, qps, limiter)

    return Services(
        ab=ABClient(caller("ab", s.ab_url, AB_PATH, s.ab_qps)),
        rec=RecClient(caller("rec", s.rec_url, REC_PATH, s.rec_qps)),
        material=MaterialClient(caller("material", s.material_url, MATERIAL_PATH, s.material_qps)),
    )


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """A Store on a fresh client, pinged first so a dead Redis fails fast (RedisUnavailable)."""
    client = open_redis(settings.redis)
    try:
        store = Store(client, settings.redis)
        await store.ping()
        yield store
    finally:
        await client.aclose()


@asynccontextmanager
async def open_job(settings: Settings, http_connections: int | None = None) -> AsyncIterator[JobConnections]:
    """Redis (checked first), StarRocks and the services, closed in reverse order on the way out."""
    async with AsyncExitStack() as stack:
        starrocks = StarRocks(settings.starrocks)
        stack.callback(starrocks.close)
        starrocks.warm_up(spares=len(settings.tasks.ids))  # connects while Redis is pinged and the lock taken:
        # the reads' lanes past the first (one per task id past the first, one for the earlier-hour lookups)
        store = await stack.enter_async_context(open_store(settings))
        limit = http_connections or max(settings.prewarm.concurrency, settings.push.concurrency)
        session = open_session(limit, settings.services)
        stack.push_async_callback(session.close)
        capped = settings.services.ab_qps or settings.services.rec_qps or settings.services.material_qps
        strategy = shared_strategy(settings.redis) if capped else None
        yield JobConnections(settings, store, starrocks, build_services(settings, session, strategy))


@asynccontextmanager
async def open_push(
    settings: Settings, *, kafka: bool, http_connections: int | None = None
) -> AsyncIterator[PushConnections]:
    """`open_job` plus a Kafka producer whose topic was checked (`kafka=False`: producer is None)."""
    async with open_job(settings, http_connections) as job:
        producer = None
        if kafka:
            from later_read.clients.kafka import check_topic, open_producer  # confluent_kafka: push only

            producer = open_producer(settings.kafka)
            check_topic(producer, settings.kafka)
        yield PushConnections(job.settings, job.store, job.starrocks, job.services, producer)
