"""Store: every Redis operation the jobs perform, with redis-py errors translated at this boundary.

Batching is the caller's choice (`redis.batch_size` keys per call); each method is one round trip
(MGET or one non-transactional pipeline), never one round trip per user.
"""

from __future__ import annotations

import secrets
from typing import Iterable, Sequence

import orjson
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from later_read import constants
from later_read.config import RedisSettings
from later_read.errors import RedisUnavailable
from later_read.keys import Keys

def open_redis(settings: RedisSettings) -> aioredis.Redis:
    """A client whose pool waits for a free connection instead of raising past max_connections."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url, max_connections=settings.max_connections,
        timeout=settings.socket_timeout_seconds * 2,
        socket_timeout=settings.socket_timeout_seconds,
        socket_connect_timeout=settings.socket_timeout_seconds)
    return aioredis.Redis(connection_pool=pool)


def redact_url(url: str) -> str:
    """The URL without its password, for error messages."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


# SET key value EX ttl for every key of the call, in one command (atomic per batch). Why a script and not
# a pipeline, and what Redis Cluster needs here: docs/design.md, "Redis keys".
SET_EX_MANY = """local ttl = ARGV[1]
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'EX', ttl) end
return #KEYS"""


class Store:
    def __init__(self, client: aioredis.Redis, settings: RedisSettings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._set_ex_many = client.register_script(SET_EX_MANY)

    async def _set_many(self, what: str, keys: list[str], values: list, ttl: int) -> None:
        """SET each key to its value with one TTL, in one round trip (see SET_EX_MANY)."""
        if keys:
            await self._run(what, self._set_ex_many(keys=keys, args=[ttl, *values]))

    async def _run(self, what: str, coro):
        try:
            return await coro
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise RedisUnavailable(
                f"Redis at {redact_url(self.settings.url)} unreachable during {what}: {exc}; "
                "check [redis] url and that Redis is up") from None
        except redis_errors.RedisError as exc:
            raise RedisUnavailable(f"Redis error during {what}: {exc}") from None

    async def ping(self) -> None:
        await self._run("PING", self.client.ping())

    async def get_values(self, uids: Sequence[str]) -> list[bytes | None]:
        if not uids:
            return []
        return await self._run("MGET values", self.client.mget([self.keys.rec(u) for u in uids]))

    async def put_values(self, items: Iterable[tuple[str, bytes]]) -> None:
        """SET each user's value with the configured TTL, in one round trip."""
        rec = self.keys.rec
        items = list(items)
        await self._set_many("write values", [rec(uid) for uid, _ in items], [raw for _, raw in items],
                             self.settings.ttl_seconds)

    async def get_sent(self, date: str, uids: Sequence[str]) -> list[bytes | None]:
        if not uids:
            return []
        return await self._run("MGET sent markers",
                               self.client.mget([Keys.sent(date, u) for u in uids]))

    async def put_sent(self, date: str, items: Iterable[tuple[str, str]]) -> None:
        """Mark users as pushed for the date (value: the msg_id that was delivered)."""
        items = list(items)
        await self._set_many("write sent markers", [Keys.sent(date, uid) for uid, _ in items],
                             [msg_id for _, msg_id in items], constants.SENT_TTL_SECONDS)

    async def get_push_state(self, date: str, uids: Sequence[str]
                             ) -> tuple[list[bytes | None], list[bytes | None]]:
        """Each user's value and sent marker for the date: two MGETs in one pipeline (one round trip)."""
        if not uids:
            return [], []
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([self.keys.rec(u) for u in uids])
        pipe.mget([Keys.sent(date, u) for u in uids])
        values, sent = await self._run("MGET values and sent markers", pipe.execute())
        return values, sent

    async def get_prewarm_done(self, date: str) -> dict | None:
        raw = await self._run("GET prewarm marker", self.client.get(Keys.prewarm_done(date)))
        return orjson.loads(raw) if raw else None

    async def put_prewarm_done(self, date: str, info: dict) -> None:
        await self._run("SET prewarm marker", self.client.set(
            Keys.prewarm_done(date), orjson.dumps(info), ex=constants.PREWARM_DONE_TTL_SECONDS))

    async def get_push_run(self, date: str, hour: int, suffix: str = "") -> tuple[dict | None, dict | None]:
        """The hour's start record and finished marker (either None when absent), one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(Keys.push_start(date, hour, suffix))
        pipe.get(Keys.push_finished(date, hour, suffix))
        start, finished = await self._run("GET push run state", pipe.execute())
        return (orjson.loads(start) if start else None), (orjson.loads(finished) if finished else None)

    async def put_push_start(self, date: str, hour: int, info: dict, suffix: str = "") -> bool:
        """SET NX the hour's start record; False when an earlier run already wrote one."""
        return bool(await self._run("SET push start", self.client.set(
            Keys.push_start(date, hour, suffix), orjson.dumps(info), nx=True,
            ex=constants.PUSH_START_TTL_SECONDS)))

    async def set_push_finished(self, date: str, hour: int, info: dict | None, suffix: str = "") -> None:
        """Write the hour's finished marker, or delete it (`info` None) before producing."""
        key = Keys.push_finished(date, hour, suffix)
        if info is None:
            await self._run("DEL push finished", self.client.delete(key))
        else:
            await self._run("SET push finished", self.client.set(
                key, orjson.dumps(info), ex=constants.PUSH_FINISHED_TTL_SECONDS))

    async def put_prewarm_ready(self, date: str, hour: int, info: dict) -> None:
        await self._run("SET prewarm hour marker", self.client.set(
            Keys.prewarm_ready(date, hour), orjson.dumps(info), ex=constants.PREWARM_READY_TTL_SECONDS))

    async def get_prewarm_ready(self, date: str, hour: int) -> tuple[dict | None, dict | None, int]:
        """(hour H's readiness marker, the day's completion marker, how many of the 24 hours are ready):
        one MGET, what the push polls while it waits."""
        keys = [Keys.prewarm_ready(date, h) for h in range(24)] + [Keys.prewarm_done(date)]
        raws = await self._run("MGET prewarm markers", self.client.mget(keys))
        ready = raws[hour]
        return (orjson.loads(ready) if ready else None, orjson.loads(raws[24]) if raws[24] else None,
                sum(1 for raw in raws[:24] if raw))

    async def inspect(self, key: str) -> tuple[bytes | None, int]:
        """A key's raw value and TTL in seconds (-2 absent, -1 no TTL), for `show`."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(key)
        pipe.ttl(key)
        raw, ttl = await self._run(f"GET {key}", pipe.execute())
        return raw, ttl

    async def scratch_roundtrip(self) -> None:
        """SET, GET and DEL a scratch key in one pipeline, for `check`: proves this Redis takes writes
        (a read-only replica answers PING but fails here); RedisUnavailable when it does not."""
        key, token = Keys.check_scratch(secrets.token_hex(8)), secrets.token_hex(8)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, token, ex=constants.CHECK_SCRATCH_TTL_SECONDS)
        pipe.get(key)
        pipe.delete(key)
        _, read, deleted = await self._run("scratch write/read/delete", pipe.execute())
        if read != token.encode() or deleted != 1:
            raise RedisUnavailable(f"Redis scratch key {key} read back {read!r} (deleted={deleted}); "
                                   "check [redis] url points at a writable primary")
