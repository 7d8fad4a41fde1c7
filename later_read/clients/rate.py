"""One request-rate cap per service for all shards of a run: a moving 1-second window kept in Redis.

`[services] ab_qps`, `rec_qps`, `material_qps` are totals: N shard processes together never send a
service more than that many requests in any one-second window. The window is the `limits` library's
moving-window strategy on its async Redis storage (redis-py implementation, the same Redis deployment
and mode as the values: standalone, sentinel or cluster); each request takes one entry
(`MovingWindowRateLimiter.hit`), and a request that finds the window full sleeps until the window's
oldest entry expires. In front of it, each of the `[shards] count` processes spaces its own calls at
count/qps (the local `RateLimiter`): without that, the shards would fill the window in the first
quarter second and wait out the rest, and bursts that dense, shifted by the services' latency jitter,
overshoot a per-second count (measured: 463/s against a 400 cap with 4 shards). The window in Redis is
what guarantees the total (a rerun or an extra process next to the shards still shares it); the
pacing only smooths it.

The concurrency bound (`[prewarm] concurrency`, `[push] concurrency`) stays per shard.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from later_read.config.settings import RedisSettings
from later_read.errors import RedisUnavailable

if TYPE_CHECKING:  # `limits` is imported only when a cap is set (50 ms of a job's start-up otherwise)
    from limits import RateLimitItemPerSecond
    from limits.aio.strategies import MovingWindowRateLimiter

KEY_PREFIX = "later_read:qps"  # the limiter's keys, inside the project's Redis namespace
MIN_WAIT_SECONDS = 0.001  # a full window is re-checked no sooner than this


class Failover(Protocol):
    """What the shared window needs of store/client.py's `Failover` (connections.py hands it in)."""

    @property
    def seconds(self) -> float: ...

    def attempts(self) -> Any: ...

    def unreachable(self, exc: BaseException) -> bool: ...


class RateLimiter:
    """Spaces calls at least 1/qps apart (a leaky bucket without a burst); qps 0 = no limit.

    A caller that wakes more than one interval after its slot (the event loop was stalled, e.g. by a
    busy CPU) takes a new slot instead of going at once: otherwise every caller whose slot passed during
    the stall would go together, a burst the size of the concurrency."""

    def __init__(self, qps: float) -> None:
        self.interval = 1.0 / qps if qps > 0 else 0.0
        self.next_slot = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        while True:
            now = time.monotonic()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
            if slot <= now:
                return
            await anyio.sleep(slot - now)
            if time.monotonic() - slot <= self.interval:
                return


def storage_uri(settings: RedisSettings) -> tuple[str, dict]:
    """The `limits` storage URI and options for the configured Redis mode."""
    options: dict = {
        "implementation": "redispy",
        "key_prefix": KEY_PREFIX,
        "socket_timeout": settings.socket_timeout_seconds,
        "socket_connect_timeout": settings.socket_timeout_seconds,
    }
    if settings.mode == "sentinel":
        hosts = ",".join(settings.sentinels)
        if settings.url and "@" in settings.url:  # the master's password, as in the url
            hosts = settings.url.split("://", 1)[1].rsplit("@", 1)[0] + "@" + hosts
        return f"async+redis+sentinel://{hosts}/{settings.service_name}", {**options, "use_replicas": False}
    if settings.mode == "cluster":
        return "async+redis+cluster://" + settings.url.split("://", 1)[1].split("/", 1)[0], options
    if settings.url.startswith("unix://"):
        return "async+redis+unix://" + settings.url[len("unix://") :], options
    return "async+" + settings.url, options


def window(qps: float) -> RateLimitItemPerSecond:
    """`qps` requests per second as a limits item (below 1/s: one request per ceil(1/qps) seconds;
    a fractional rate above 1/s rounds down, never up)."""
    from limits import RateLimitItemPerSecond

    if qps >= 1:
        return RateLimitItemPerSecond(int(qps))
    return RateLimitItemPerSecond(1, math.ceil(1 / qps))


class SharedRateLimiter:
    """`wait()` returns when this request fits the service's shared window (see the module doc)."""

    def __init__(
        self, strategy: MovingWindowRateLimiter, service: str, qps: float, shards: int, failover: Failover
    ) -> None:
        """`failover`: how the Store rides out a Redis failover (store/client.py `Failover`, handed in by
        connections.py: no client imports the store)."""
        self.strategy, self.service, self.failover = strategy, service, failover
        self.item = window(qps)
        self.local = RateLimiter(qps / shards)  # this shard's even share (see the module doc)
        self.waits = 0  # requests that found the shared window full at least once

    async def wait(self) -> None:
        await self.local.wait()
        try:
            if not self.failover.seconds:
                return await self._take()
            # sentinel/cluster: ride out a failover like the Store does ([redis] failover_seconds)
            async for attempt in self.failover.attempts():
                with attempt:
                    return await self._take()
        except Exception as exc:
            if not self.failover.unreachable(exc):
                raise
            raise RedisUnavailable(
                f"Redis unreachable for the shared [services] *_qps window: {exc}; check [redis] and that Redis is up"
            ) from None

    async def _take(self) -> None:
        """One entry of the shared window, sleeping while it is full."""
        waited = False
        while not await self.strategy.hit(self.item, self.service):
            waited = True
            stats = await self.strategy.get_window_stats(self.item, self.service)
            await anyio.sleep(max(stats.reset_time - time.time(), MIN_WAIT_SECONDS))
        self.waits += waited


def shared_strategy(settings: RedisSettings) -> MovingWindowRateLimiter:
    """The moving-window strategy on the configured Redis (one per job, shared by the services)."""
    from limits.aio.strategies import MovingWindowRateLimiter
    from limits.storage import storage_from_string

    uri, options = storage_uri(settings)
    return MovingWindowRateLimiter(storage_from_string(uri, **options))
