"""Store: every Redis operation the jobs perform, with redis-py errors translated at this boundary.

Batching is the caller's choice (`redis.batch_size` keys per call); each method is one round trip
(MGET or one non-transactional pipeline), never one round trip per user.
"""

from __future__ import annotations

import secrets
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import anyio
import orjson
import stamina
from redis import exceptions as redis_errors
from redis.asyncio import connection as redis_connection
from redis.crc import key_slot

from later_read import constants, ledger
from later_read.config import RedisSettings
from later_read.errors import RedisUnavailable
from later_read.keys import Keys
from later_read.log import event, get_logger
from later_read.schedule import Hour
from later_read.shard import Shard
from later_read.redis_client import open_redis, target  # noqa: F401 - re-exported

log = get_logger("store")

# SET key value EX ttl for every key of the call, in one command (atomic per batch). Why a script and not
# a pipeline, and what Redis Cluster needs here (keys grouped by slot): docs/design.md, "Redis keys" and
# "Redis deployments".
SET_EX_MANY = """local ttl = ARGV[1]
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'EX', ttl) end
return #KEYS"""


# Errors a failover produces while the master is dead or being replaced; retried (sentinel, cluster).
RETRYABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ClusterDownError,
             redis_errors.TryAgainError, redis_errors.SlotNotCoveredError, redis_errors.ReadOnlyError,
             redis_errors.MasterDownError, OSError)
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


class Store:
    def __init__(self, client, settings: RedisSettings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.cluster = settings.mode == "cluster"
        self._set_ex_many = client.register_script(SET_EX_MANY)
        # The sentinel and cluster pools raise past max_connections instead of waiting: bound calls here.
        self._slots = anyio.Semaphore(settings.max_connections)
        self._retry_for = 0.0 if settings.mode == "standalone" else settings.failover_seconds

    async def _set_many(self, what: str, keys: list[str], values: list, ttl: int) -> None:
        """SET each key to its value with one TTL, in one round trip (see SET_EX_MANY)."""
        if not keys:
            return
        if self.settings.wait_replicas and not self.cluster:
            await self._set_and_wait(what, keys, values, ttl)
            return
        if not self.cluster:
            await self._run(what, lambda: self._set_ex_many(keys=keys, args=[ttl, *values]))
            return
        groups = _by_slot(keys, values)

        def calls():
            pipe = self.client.pipeline()
            for slot_keys, slot_values in groups:
                if len(slot_keys) == 1:
                    pipe.set(slot_keys[0], slot_values[0], ex=ttl)
                else:
                    pipe.execute_command("EVAL", SET_EX_MANY, len(slot_keys), *slot_keys, ttl, *slot_values)
            return pipe.execute()
        await self._run(what, calls)

    async def _set_and_wait(self, what: str, keys: list[str], values: list, ttl: int) -> None:
        """SET-EX-many then `WAIT wait_replicas`, on one connection (a pipeline): the call returns once
        that many replicas have the batch, so a master killed right after cannot take it with it."""
        wanted = self.settings.wait_replicas
        timeout_ms = int(self.settings.socket_timeout_seconds * 1000 / 2)

        async def calls():
            pipe = self.client.pipeline(transaction=False)
            await self._set_ex_many(keys=keys, args=[ttl, *values], client=pipe)  # queued, not sent
            pipe.execute_command("WAIT", wanted, timeout_ms)
            return await pipe.execute()
        acked = (await self._run(what, calls))[-1]
        if acked < wanted:
            event(log, "redis.replicas_behind", what=what, wanted=wanted, acked=acked, timeout_ms=timeout_ms)

    async def _mget(self, what: str, *key_lists: list[str]) -> list[list[bytes | None]]:
        """MGET each list of keys, all in one round trip; in cluster mode one MGET per hash slot."""
        if not self.cluster:
            def calls():
                pipe = self.client.pipeline(transaction=False)
                for keys in key_lists:
                    pipe.mget(keys)
                return pipe.execute()
            return list(await self._run(what, calls))
        flat = [key for keys in key_lists for key in keys]
        groups = _by_slot(flat, list(range(len(flat))))

        def calls():
            pipe = self.client.pipeline()
            for slot_keys, _ in groups:
                pipe.execute_command("MGET", *slot_keys)  # ClusterPipeline blocks .mget()
            return pipe.execute()
        found: list[bytes | None] = [None] * len(flat)
        for (_, positions), values in zip(groups, await self._run(what, calls)):
            for position, value in zip(positions, values):
                found[position] = value
        out, start = [], 0
        for keys in key_lists:
            out.append(found[start:start + len(keys)])
            start += len(keys)
        return out

    async def _run(self, what: str, call):
        """Await `call()`; through a failover (sentinel, cluster) call it again, with backoff, for up
        to `failover_seconds`; then (or at once in standalone mode) RedisUnavailable, one line."""
        try:
            async with self._slots:
                if not self._retry_for:
                    return await call()
                async for attempt in stamina.retry_context(
                        on=retryable, attempts=None, timeout=self._retry_for,
                        wait_initial=0.05, wait_max=RETRY_WAIT_MAX_SECONDS):
                    with attempt:
                        if attempt.num > 1:
                            event(log, "redis.retry", what=what, attempt=attempt.num)
                        return await call()
        except (*RETRYABLE, *WRITER_RACE) as exc:
            if not retryable(exc):
                raise
            raise RedisUnavailable(
                f"Redis at {target(self.settings)} unreachable during {what}: {exc}; "
                f"check [redis] {'url' if self.settings.mode == 'standalone' else 'mode/url/sentinels'} "
                "and that Redis is up") from None
        except redis_errors.RedisError as exc:
            raise RedisUnavailable(f"Redis error during {what}: {exc}") from None
        raise AssertionError("unreachable: stamina either returns or raises")

    async def ping(self) -> None:
        await self._run("PING", self.client.ping)

    async def get_values(self, uids: Sequence[str]) -> list[bytes | None]:
        if not uids:
            return []
        return (await self._mget("MGET values", [self.keys.rec(u) for u in uids]))[0]

    async def put_values(self, items: Iterable[tuple[str, bytes]]) -> None:
        """SET each user's value with the configured TTL, in one round trip."""
        rec = self.keys.rec
        items = list(items)
        await self._set_many("write values", [rec(uid) for uid, _ in items], [raw for _, raw in items],
                             self.settings.ttl_seconds)

    async def get_sent(self, date: str, uids: Sequence[str]) -> list[bytes | None]:
        if not uids:
            return []
        return (await self._mget("MGET sent markers", [Keys.sent(date, u) for u in uids]))[0]

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
        values, sent = await self._mget("MGET values and sent markers", [self.keys.rec(u) for u in uids],
                                        [Keys.sent(date, u) for u in uids])
        return values, sent

    async def get_prewarm_done(self, date: str, shards: int = 1) -> dict | None:
        """The day's completion marker: the unsharded one, else (with `shards` > 1) every shard's,
        merged (counts summed, the last finish); None while any shard's marker is missing."""
        suffixes = _suffixes(shards)
        found = (await self._mget("GET prewarm markers", [Keys.prewarm_done(date, x) for x in suffixes]))[0]
        return _merged(found)

    async def put_prewarm_done(self, date: str, info: dict, shard: Shard | None = None) -> None:
        key = Keys.prewarm_done(date, shard.suffix if shard else "")
        await self._run("SET prewarm marker", lambda: self.client.set(
            key, orjson.dumps(info), ex=constants.PREWARM_DONE_TTL_SECONDS))

    async def get_push_run(self, date: str, hour: int, suffix: str = "") -> tuple[dict | None, dict | None]:
        """The hour's start record and its ledger entry (either None when absent), one round trip."""
        start, entry = (await self._mget("GET push run state", [Keys.push_start(date, hour, suffix),
                                                                 Keys.push_ledger(date, hour, suffix)]))[0]
        return (orjson.loads(start) if start else None), ledger.parse(entry)

    async def put_push_start(self, date: str, hour: int, info: dict, suffix: str = "") -> bool:
        """SET NX the hour's start record; False when an earlier run already wrote one."""
        key = Keys.push_start(date, hour, suffix)
        return bool(await self._run("SET push start", lambda: self.client.set(
            key, orjson.dumps(info), nx=True, ex=constants.PUSH_START_TTL_SECONDS)))

    async def put_ledger(self, date: str, hour: int, entry: dict, suffix: str = "") -> None:
        """Write the hour's ledger entry (ledger.py: its shape; the whole entry, replacing the last)."""
        key = Keys.push_ledger(date, hour, suffix)
        await self._run("SET ledger entry", lambda: self.client.set(
            key, orjson.dumps(entry), ex=constants.PUSH_LEDGER_TTL_SECONDS))

    async def get_ledger(self, hours: Iterable[Hour], suffixes: Sequence[str] = ("",)
                         ) -> dict[tuple[Hour, str], dict | None]:
        """The ledger entries of `hours` x `suffixes` (None when absent), in one round trip (one MGET
        per hash slot in cluster mode)."""
        pairs = [(hour, suffix) for hour in hours for suffix in suffixes]
        raws = (await self._mget("MGET ledger", [Keys.push_ledger(h.date, h.hour, x) for h, x in pairs]))[0]
        return {pair: ledger.parse(raw) for pair, raw in zip(pairs, raws)}

    async def get_day(self, date: str, shards: int = 1, memory: Sequence[Hour] = ()) -> DayRecords:
        """A date's records for `later-read day`, in one round trip: the ledger of its 24 hours (and of
        `memory`: earlier hours, read to find where the ledger begins) and the hour locks, per shard of
        `shards`; the prewarm's hour and day markers (unsharded, else every shard's, as the push waits)."""
        hours = [Hour(date, h) for h in range(24)]
        runs = ledger_suffixes(shards)
        marks = _suffixes(shards)
        pairs = [(h, x) for h in [*memory, *hours] for x in runs]
        locks = [(h.hour, x) for h in hours for x in runs]
        lists = [[Keys.push_ledger(h.date, h.hour, x) for h, x in pairs],
                 [Keys.prewarm_ready(date, h.hour, x) for h in hours for x in marks],
                 [Keys.prewarm_done(date, x) for x in marks],
                 [Keys.lock("push", date, hour, x) for hour, x in locks]]
        entries, ready, done, held = await self._mget("MGET day records", *lists)
        n = len(marks)
        return DayRecords(
            ledger={pair: ledger.parse(raw) for pair, raw in zip(pairs, entries)},
            ready={h: _merged(ready[h * n:(h + 1) * n]) for h in range(24)},
            prewarm_done=_merged(done),
            locks={pair: raw.decode("utf-8", "replace") for pair, raw in zip(locks, held) if raw is not None})

    async def put_prewarm_ready(self, date: str, hour: int, info: dict, suffix: str = "") -> None:
        """Hour `hour` of the date is prewarmed (by the shard whose `suffix` is given, if sharded)."""
        key = Keys.prewarm_ready(date, hour, suffix)
        await self._run("SET prewarm hour marker", lambda: self.client.set(
            key, orjson.dumps(info), ex=constants.PREWARM_READY_TTL_SECONDS))

    async def get_prewarm_ready(self, date: str, hour: int, shards: int = 1
                                ) -> tuple[dict | None, dict | None, int]:
        """(hour H's readiness marker, the day's completion marker, how many of the 24 hours are ready):
        one MGET, what the push polls while it waits. Sharded, an hour or the day is ready when the
        unsharded marker or every shard's marker is there."""
        suffixes = _suffixes(shards)
        keys = [Keys.prewarm_ready(date, h, x) for x in suffixes for h in range(24)]
        keys += [Keys.prewarm_done(date, x) for x in suffixes]
        raws = (await self._mget("MGET prewarm markers", keys))[0]
        hours = [_merged([raws[i * 24 + h] for i in range(len(suffixes))]) for h in range(24)]
        day = _merged(raws[24 * len(suffixes):])
        return hours[hour], day, sum(1 for marker in hours if marker is not None)

    async def inspect(self, key: str) -> tuple[bytes | None, int]:
        """A key's raw value and TTL in seconds (-2 absent, -1 no TTL), for `show`."""
        def calls():
            pipe = self.client.pipeline(transaction=False)
            pipe.get(key)
            pipe.ttl(key)
            return pipe.execute()
        raw, ttl = await self._run(f"GET {key}", calls)
        return raw, ttl

    async def scratch_roundtrip(self) -> None:
        """SET, GET and DEL a scratch key in one pipeline, for `check`: proves this Redis takes writes
        (a read-only replica answers PING but fails here); RedisUnavailable when it does not."""
        key, token = Keys.check_scratch(secrets.token_hex(8)), secrets.token_hex(8)

        def calls():
            pipe = self.client.pipeline(transaction=False)
            pipe.set(key, token, ex=constants.CHECK_SCRATCH_TTL_SECONDS)
            pipe.get(key)
            pipe.delete(key)
            return pipe.execute()
        _, read, deleted = await self._run("scratch write/read/delete", calls)
        if read != token.encode() or deleted != 1:
            raise RedisUnavailable(f"Redis scratch key {key} read back {read!r} (deleted={deleted}); "
                                   "check [redis] url points at a writable primary")


@dataclass
class DayRecords:
    """What `Store.get_day` read: ledger entries by (Hour, suffix), prewarm readiness by hour (merged over
    shards, None when not ready), the day's prewarm marker, the holder of each held hour lock."""

    ledger: dict[tuple[Hour, str], dict | None]
    ready: dict[int, dict | None]
    prewarm_done: dict | None
    locks: dict[tuple[int, str], str]


def _by_slot(keys: list[str], values: list) -> list[tuple[list[str], list]]:
    """(keys, values) grouped by Redis Cluster hash slot, in order of first appearance."""
    groups: dict[int, tuple[list[str], list]] = {}
    for key, value in zip(keys, values):
        slot_keys, slot_values = groups.setdefault(key_slot(key.encode()), ([], []))
        slot_keys.append(key)
        slot_values.append(value)
    return list(groups.values())


def merge_markers(markers: list[dict]) -> dict:
    """One day's marker from its shards' markers: numbers summed, the earliest start, the latest finish."""
    merged: dict = {"shards": len(markers)}
    for marker in markers:
        for key, value in marker.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in (
                    "started_at", "finished_at", "duration_seconds", "concurrency", "exit_code", "hour"):
                merged[key] = merged.get(key, 0) + value
    merged["started_at"] = min(m.get("started_at", 0) for m in markers)
    merged["finished_at"] = max(m.get("finished_at", 0) for m in markers)
    merged["status"] = "ok" if all(m.get("status") == "ok" for m in markers) else "failures"
    return merged


def ledger_suffixes(shards: int) -> list[str]:
    """The suffixes of a day's per-run records (ledger entries, locks) when the push runs as `shards`."""
    return [s.suffix for s in Shard(0, shards).siblings()]


def _suffixes(shards: int) -> list[str]:
    """The unsharded marker's suffix, then each shard's (when the prewarm runs as `shards` shards)."""
    return [""] + ([s.suffix for s in Shard(0, shards).siblings()] if shards > 1 else [])


def _merged(found: list[bytes | None]) -> dict | None:
    """The unsharded marker (first), else every shard's merged, else None (some shard not there yet)."""
    if found[0]:
        return orjson.loads(found[0])
    if len(found) > 1 and all(found[1:]):
        return merge_markers([orjson.loads(raw) for raw in found[1:]])
    return None
