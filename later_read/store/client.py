"""The Redis client for each `[redis] mode`, built with redis-py's own support for each deployment.

- standalone: one server from `url`, a pool that waits for a free connection (BlockingConnectionPool).
- sentinel: `redis.asyncio.sentinel.Sentinel(sentinels).master_for(service_name)`: every new connection
  asks the sentinels where the master is, so after a failover the pool reconnects to the promoted one;
  `sentinel_password` logs in to the sentinels (`sentinel_kwargs`), the URL's password to the master.
- cluster: `redis.asyncio.cluster.RedisCluster.from_url(url)`: the slot map is read from any node and
  read again after a MOVED reply or a dead node.

Every connection names itself `redis-py(later-read_v<version>)` (`CLIENT LIST`'s lib-name, `DRIVER`).

Retrying through a failover (with re-discovery) is the Store's job (`Store._run`), because redis-py's
cluster client retries at once, with no pause, and would give up before a replica is promoted.
"""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from redis import DriverInfo, exceptions as redis_errors
from redis.asyncio import connection as redis_connection
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from later_read import __version__, runtime
from later_read.config.settings import RedisSettings
from later_read.redact import redact

if TYPE_CHECKING:  # cluster and sentinel clients are imported in their mode only (start-up time)
    from redis.asyncio.sentinel import Sentinel

SLOTS = 16384  # hash slots in every Redis Cluster

# What each connection tells the server it is (CLIENT SETINFO, shown by CLIENT LIST): redis-py's name with
# later-read as its upstream driver, so an operator can tell the job's connections apart. redis-py's version
# is given, not looked up in the installed packages' metadata (about a millisecond per client built).
DRIVER = DriverInfo(lib_version=redis.__version__).add_upstream_driver("later-read", __version__)

# Errors a failover produces while the master is dead or being replaced; retried (sentinel, cluster).
RETRYABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    OSError,
)
RETRY_WAIT_MAX_SECONDS = 1.0  # re-ask the sentinels / slot map at least every second during a failover
# redis-py's asyncio connection lets a write race with the connection being closed under it (a master
# killed mid-pipeline): `self._writer.writelines` on a writer already set to None, or a transport whose
# write callback is gone, raises AttributeError / TypeError instead of ConnectionError (redis-py issues
# #3546 and #4287, redis 8.1.0; CI saw it as a push exiting 70). Nothing was written on that connection.
WRITER_RACE = (AttributeError, TypeError)
_REDIS_CONNECTION = str(Path(redis_connection.__file__).resolve())


def retryable(exc: BaseException) -> bool:
    """A failover's error (RETRYABLE), or redis-py's closed-writer race, which is one too."""
    if isinstance(exc, RETRYABLE):
        return True
    if not isinstance(exc, WRITER_RACE) or "NoneType" not in str(exc):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return any(str(Path(frame.filename).resolve()) == _REDIS_CONNECTION for frame in frames)


@dataclass(frozen=True)
class Failover:
    """How a Redis call rides out a failover: called again with backoff for up to `seconds` ([redis]
    failover_seconds in sentinel and cluster mode; 0 in standalone mode: never called again). The Store
    uses it, and connections.py hands it to the shared rate window (clients/rate.py), which talks to the
    same Redis through `limits`."""

    seconds: float

    @classmethod
    def of(cls, settings: RedisSettings) -> Failover:
        return cls(0.0 if settings.mode == "standalone" else settings.failover_seconds)

    def attempts(self) -> Any:
        """`async for attempt in failover.attempts(): with attempt: ...`: stamina's retry loop."""
        return runtime.retry_context(
            on=retryable, attempts=None, timeout=self.seconds, wait_initial=0.05, wait_max=RETRY_WAIT_MAX_SECONDS
        )

    @staticmethod
    def unreachable(exc: BaseException) -> bool:
        """Redis did not answer (a redis-py error, a socket error, the closed-writer race): not a bug."""
        return isinstance(exc, (redis_errors.RedisError, OSError)) or retryable(exc)


def open_redis(settings: RedisSettings):
    """A client for the configured mode (the caller closes it with `aclose()`)."""
    options: dict[str, Any] = {  # every connection's, in each mode
        "socket_timeout": settings.socket_timeout_seconds,
        "socket_connect_timeout": settings.socket_timeout_seconds,
        "driver_info": DRIVER,
    }
    if settings.mode == "cluster":
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(
            settings.url, max_connections=settings.max_connections, require_full_coverage=True, **options
        )
    if settings.mode == "sentinel":
        return hiredis_packing(
            _sentinel(settings).master_for(settings.service_name, **_url_options(settings.url), **options)
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url, max_connections=settings.max_connections, timeout=settings.socket_timeout_seconds * 2, **options
    )
    return hiredis_packing(aioredis.Redis(connection_pool=pool))


def hiredis_packing(client: Any) -> Any:
    """`client` with its commands packed by hiredis (C) rather than by redis-py's asyncio connection,
    which packs each argument in Python (~1 us each; the push sends four per user). Unchanged without
    hiredis."""
    if HIREDIS_AVAILABLE:
        pool = client.connection_pool
        pool.connection_class = _with_hiredis_packing(pool.connection_class)
    return client


@functools.cache
def _with_hiredis_packing(connection_class: type) -> type:
    """`connection_class` packing with `hiredis.pack_command`: the arguments as they are, in one call. The
    packer redis-py's synchronous connection uses with hiredis (HiredisRespSerializer) first turns every
    argument that is a bytearray or memoryview into bytes, a Python step per argument (about half the
    packing of an MGET of 500 keys); the store never sends those, so that packer is only the way back for
    arguments hiredis refuses (its conversions, its DataError)."""
    serializer = HiredisRespSerializer()

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        if type(args[0]) is str and " " not in args[0]:  # a command's name: "CLIENT SETINFO" is split first
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        return serializer.pack(*args)

    return type(connection_class.__name__, (connection_class,), {"pack_command": pack_command})


def _sentinel(settings: RedisSettings) -> Sentinel:
    from redis.asyncio.sentinel import Sentinel

    options = {  # the sentinels' connections and the master's
        "socket_timeout": settings.socket_timeout_seconds,
        "socket_connect_timeout": settings.socket_timeout_seconds,
        "driver_info": DRIVER,
    }
    password = {"password": settings.sentinel_password} if settings.sentinel_password else {}
    return Sentinel(settings.sentinel_addresses, sentinel_kwargs={**options, **password}, **options)


def _url_options(url: str) -> dict:
    """Password (userinfo or `?password=`), username, database and TLS for the sentinel-found master, read
    from `url` by redis-py's own URL parser."""
    if not url:
        return {}
    from redis.connection import parse_url

    found = parse_url(url)
    options = {key: found[key] for key in ("password", "username", "db") if key in found}
    if url.startswith("rediss://"):
        options["ssl"] = True
    return options


def target(settings: RedisSettings) -> str:
    """Where this configuration points, for messages: the URL, or the sentinels and service name."""
    if settings.mode == "sentinel":
        return f"sentinel {settings.service_name} via {','.join(settings.sentinels)}"
    if settings.mode == "cluster":
        return f"cluster via {redact(settings.url)}"
    return redact(settings.url)


async def describe(client, settings: RedisSettings) -> str:
    """For `later-read check`: the mode, and the master (sentinel) or nodes and slot coverage (cluster)."""
    if settings.mode == "cluster":
        info = await client.cluster_info()
        if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) < SLOTS:
            raise RuntimeError(
                f"cluster_state {info.get('cluster_state')}, only "
                f"{info.get('cluster_slots_ok')}/{SLOTS} slots served; run "
                "`redis-cli --cluster check <node>` and fix the failed masters"
            )
        nodes = await client.cluster_nodes()  # {"host:port": {"flags": "master,...", ...}}
        masters = sorted(a for a, n in nodes.items() if "master" in n["flags"] and "fail" not in n["flags"])
        replicas = sum(1 for n in nodes.values() if "slave" in n["flags"] and "fail" not in n["flags"])
        return (
            f"mode cluster, state {info.get('cluster_state')}, slots "
            f"{info.get('cluster_slots_ok')}/{SLOTS} ok ({info.get('cluster_slots_assigned')} assigned), "
            f"masters {' '.join(masters)}, {replicas} replicas"
        )
    if settings.mode == "sentinel":
        host, port = await client.connection_pool.get_master_address()
        replicas = await client.connection_pool.sentinel_manager.discover_slaves(settings.service_name)
        return f"mode sentinel, master {host}:{port} ({settings.service_name}), {len(replicas)} replicas"
    return "mode standalone"
