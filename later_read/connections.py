"""Connections: every client a job uses, opened once per job and passed down as one object.

    async with open_connections(settings, redis=True, starrocks=True, services=True) as conns:
        await prewarm(conns, options)

Nothing else in the project creates a client; tests and future deployments (Redis Sentinel/Cluster,
sharded runs) change how clients are built here and nowhere else.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from later_read.clients.ab import PATH as AB_PATH, ABClient
from later_read.clients.http import ServiceCaller, open_session
from later_read.clients.kafka import check_topic, open_producer
from later_read.clients.material import PATH as MATERIAL_PATH, MaterialClient
from later_read.clients.rate import SharedRateLimiter, shared_strategy
from later_read.clients.recommend import PATH as REC_PATH, RecClient
from later_read.clients.starrocks import StarRocks
from later_read.config import Settings
from later_read.store import Store, open_redis


@dataclass
class Services:
    ab: ABClient
    rec: RecClient
    material: MaterialClient

    def summary(self) -> dict:
        """Per-service call counts, retries, failures per reason and latency percentiles."""
        return {name: client.caller.stats.summary()
                for name, client in (("ab", self.ab), ("rec", self.rec), ("material", self.material))}


@dataclass
class Connections:
    settings: Settings
    store: Store | None = None
    starrocks: StarRocks | None = None
    services: Services | None = None
    producer: Any | None = None  # confluent_kafka.Producer


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + path


def build_services(settings: Settings, session, strategy=None) -> Services:
    """The three clients; with `strategy` (a limits strategy on Redis) each `*_qps` cap is a total
    shared by every process of the run (clients/rate.py), else a cap of this process alone."""
    s = settings.services

    def caller(name: str, url: str, path: str, qps: float) -> ServiceCaller:
        retry_for = 0.0 if settings.redis.mode == "standalone" else settings.redis.failover_seconds
        limiter = (SharedRateLimiter(strategy, name, qps, settings.shards.count, retry_for)
                   if strategy is not None and qps > 0 else None)
        return ServiceCaller(name, _url(url, path), session, s, qps, limiter)
    return Services(ab=ABClient(caller("ab", s.ab_url, AB_PATH, s.ab_qps)),
                    rec=RecClient(caller("rec", s.rec_url, REC_PATH, s.rec_qps)),
                    material=MaterialClient(caller("material", s.material_url, MATERIAL_PATH, s.material_qps)))


@asynccontextmanager
async def open_connections(settings: Settings, *, redis: bool = False, starrocks: bool = False,
                           services: bool = False, kafka: bool = False,
                           http_connections: int | None = None) -> AsyncIterator[Connections]:
    """Open the requested clients; Redis and Kafka are checked up front so a dead one fails fast."""
    conns = Connections(settings)
    async with AsyncExitStack() as stack:
        if redis:
            client = open_redis(settings.redis)
            stack.push_async_callback(client.aclose)
            conns.store = Store(client, settings.redis)
            await conns.store.ping()
        if starrocks:
            conns.starrocks = StarRocks(settings.starrocks)
            stack.callback(conns.starrocks.close)
        if services:
            limit = http_connections or max(settings.prewarm.concurrency, settings.push.concurrency)
            session = open_session(limit, settings.services.timeout_seconds)
            stack.push_async_callback(session.close)
            capped = settings.services.ab_qps or settings.services.rec_qps or settings.services.material_qps
            strategy = shared_strategy(settings.redis) if redis and capped else None
            conns.services = build_services(settings, session, strategy)
        if kafka:
            conns.producer = open_producer(settings.kafka)
            check_topic(conns.producer, settings.kafka)
        yield conns

