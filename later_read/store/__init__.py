"""Store: every Redis operation the jobs perform, with redis-py errors translated at this boundary.

Batching is the caller's choice (`redis.batch_size` keys per call); each method is one round trip
(MGET or one non-transactional pipeline), never one round trip per user.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import anyio
import orjson
from redis import exceptions as redis_errors
from redis.crc import key_slot

from later_read.config.settings import RedisSettings
from later_read.core import ledger
from later_read.core.schedule import Hour
from later_read.core.scope import RunScope
from later_read.errors import RedisUnavailable
from later_read.log import event, get_logger
from later_read.store import fencing
from later_read.store.client import RETRYABLE, WRITER_RACE, Failover, retryable, target
from later_read.store.fencing import Fence
from later_read.store.keys import (
    CHECK_SCRATCH_TTL_SECONDS,
    PREWARM_DONE_TTL_SECONDS,
    PREWARM_READY_TTL_SECONDS,
    PUSH_LEDGER_TTL_SECONDS,
    PUSH_START_TTL_SECONDS,
    SENT_TTL_SECONDS,
    Keys,
)

log = get_logger("store")

# SET key value EX ttl for every key of the call, in one command (atomic per batch). Why a script and not
# a pipeline, and what Redis Cluster needs here (keys grouped by slot): docs/design.md, "Redis keys" and
# "Redis deployments".
SET_EX_MANY = """local ttl = ARGV[1]
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'EX', ttl) end
return #KEYS"""


class Store:
    def __init__(self, client, settings: RedisSettings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.cluster = settings.mode == "cluster"
        self._set_ex_many = client.register_script(SET_EX_MANY)
        self._fenced_set = client.register_script(fencing.FENCED_SET)
        # The sentinel and cluster pools raise past max_connections instead of waiting: bound calls here.
        self._slots = anyio.Semaphore(settings.max_connections)
        self.failover = Failover.of(settings)

    async def _set_many(self, what: str, keys: list[str], values: list, ttl: int, fence: Fence | None = None) -> None:
        """SET each key to its value with one TTL, in one round trip (see SET_EX_MANY); with a `fence`,
        only while its lock holds its token (fencing.py: one script, or in cluster mode the lock's GET in
        the same pipeline)."""
        fencing.refuse_if_lost(fence)
        if not keys:
            return
        if self.settings.wait_replicas and not self.cluster:
            await self._set_and_wait(what, keys, values, ttl, fence)
        elif not self.cluster:
            if fence is None:
                await self._run(what, lambda: self._set_ex_many(keys=keys, args=[ttl, *values]))
            else:
                await self._put_fenced(what, fence, keys, values, ttl)
        else:
            await self._set_by_slot(what, keys, values, ttl, fence)

    async def _set_by_slot(self, what: str, keys: list[str], values: list, ttl: int, fence: Fence | None) -> None:
        """Cluster: one SET-EX-many call per hash slot in one pipeline, the fence's lock read beside them."""
        groups = _by_slot(keys, values)

        def calls():
            pipe = self.client.pipeline()
            if fence is not None:
                pipe.get(fence.key)
            for slot_keys, slot_values in groups:
                if len(slot_keys) == 1:
                    pipe.set(slot_keys[0], slot_values[0], ex=ttl)
                else:
                    pipe.execute_command("EVAL", SET_EX_MANY, len(slot_keys), *slot_keys, ttl, *slot_values)
            return pipe.execute()

        results = await self._run(what, calls)
        if fence is not None:
            fencing.check_owner(fence, results[0], what)

    async def _put_fenced(
        self, what: str, fence: Fence, keys: list[str], values: list, ttl: int, nx: bool = False
    ) -> int:
        """FENCED_SET over `keys` (in cluster mode they must share the lock's hash slot): the keys written."""
        fencing.refuse_if_lost(fence)
        result = await self._run(
            what,
            lambda: self._fenced_set(keys=[fence.key, *keys], args=[fence.token, ttl, "NX" if nx else "", *values]),
        )
        return fencing.checked(fence, int(result), what)

    async def _set_and_wait(
        self, what: str, keys: list[str], values: list, ttl: int, fence: Fence | None = None
    ) -> None:
        """SET-EX-many (fenced with a `fence`) then `WAIT wait_replicas`, on one connection (a pipeline):
        the call returns once that many replicas have the batch, so a master killed right after cannot take
        it with it."""
        wanted = self.settings.wait_replicas
        timeout_ms = int(self.settings.socket_timeout_seconds * 1000 / 2)

        async def calls():
            pipe = self.client.pipeline(transaction=False)
            if fence is None:
                await self._set_ex_many(keys=keys, args=[ttl, *values], client=pipe)  # queued, not sent
            else:
                await self._fenced_set(keys=[fence.key, *keys], args=[fence.token, ttl, "", *values], client=pipe)
            pipe.execute_command("WAIT", wanted, timeout_ms)
            return await pipe.execute()

        results = await self._run(what, calls)
        if fence is not None:
            fencing.checked(fence, int(results[0]), what)
        acked = results[-1]
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

        def slot_calls():
            pipe = self.client.pipeline()
            for slot_keys, _ in groups:
                pipe.execute_command("MGET", *slot_keys)  # ClusterPipeline blocks .mget()
            return pipe.execute()

        found: list[bytes | None] = [None] * len(flat)
        for (_, positions), values in zip(groups, await self._run(what, slot_calls), strict=True):
            for position, value in zip(positions, values, strict=True):
                found[position] = value
        out, start = [], 0
        for keys in key_lists:
            out.append(found[start : start + len(keys)])
            start += len(keys)
        return out

    async def _run(self, what: str, call):
        """Await `call()`; through a failover (sentinel, cluster) call it again, with backoff, for up
        to `failover_seconds`; then (or at once in standalone mode) RedisUnavailable, one line."""
        try:
            async with self._slots:
                if not self.failover.seconds:
                    return await call()
                async for attempt in self.failover.attempts():
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
                "and that Redis is up"
            ) from None
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
        await self._set_many(
            "write values", [rec(uid) for uid, _ in items], [raw for _, raw in items], self.settings.ttl_seconds
        )

    async def get_sent(self, date: str, uids: Sequence[str]) -> list[bytes | None]:
        if not uids:
            return []
        return (await self._mget("MGET sent markers", [Keys.sent(date, u) for u in uids]))[0]

    async def put_sent(self, date: str, items: Iterable[tuple[str, str]], fence: Fence | None = None) -> None:
        """Mark users as pushed for the date (value: the msg_id that was delivered); with a `fence`, only
        while the run holds its lock (fencing.py)."""
        items = list(items)
        await self._set_many(
            "write sent markers",
            Keys.sents(date, [uid for uid, _ in items]),
            [msg_id for _, msg_id in items],
            SENT_TTL_SECONDS,
            fence,
        )

    async def get_push_state(
        self, date: str, uids: Sequence[str], fence: Fence | None = None
    ) -> tuple[list[bytes | None], list[bytes | None]]:
        """Each user's value and sent marker for the date: two MGETs in one pipeline (one round trip); with a
        `fence`, its lock is read in the same round trip and LockLost raised unless it holds the token."""
        fencing.refuse_if_lost(fence)
        if not uids:
            return [], []
        lists = [self.keys.recs(uids), Keys.sents(date, uids)]
        found = await self._mget("MGET values and sent markers", *lists, *([[fence.key]] if fence else []))
        if fence is not None:
            fencing.check_owner(fence, found[2][0], "the ownership check of a batch")
        return found[0], found[1]

    async def get_prewarm_done(self, scope: RunScope) -> dict | None:
        """The scope's day's completion marker: the unsharded one, else (the scope sharded) every shard's of
        its split, merged (counts summed, the last finish); None while any shard's marker is missing."""
        keys = [Keys.prewarm_done(x) for x in scope.whole_and_shards()]
        return _merged((await self._mget("GET prewarm markers", keys))[0])

    async def put_prewarm_done(self, scope: RunScope, info: dict, fence: Fence | None = None) -> None:
        """The completion marker of the scope's day and shard; with a `fence`, only while the run holds its
        lock."""
        key = Keys.prewarm_done(scope)
        await self._put(f"SET {key}", key, orjson.dumps(info), PREWARM_DONE_TTL_SECONDS, fence)

    async def _put(self, what: str, key: str, value: bytes, ttl: int, fence: Fence | None) -> None:
        """SET `key` EX `ttl`; with a `fence`, FENCED_SET (the key shares the lock's hash slot: keys.py)."""
        if fence is None:
            await self._run(what, lambda: self.client.set(key, value, ex=ttl))
        else:
            await self._put_fenced(what, fence, [key], [value], ttl)

    async def get_push_run(self, scope: RunScope) -> tuple[dict | None, dict | None]:
        """The scope's hour's start record and ledger entry (either None when absent), one round trip."""
        start, entry = (await self._mget("GET push run state", [Keys.push_start(scope), Keys.push_ledger(scope)]))[0]
        return (orjson.loads(start) if start else None), ledger.parse(entry)

    async def put_push_start(self, scope: RunScope, info: dict, fence: Fence | None = None) -> bool:
        """SET NX the scope's hour's start record (fenced by the hour's lock when given); False when an
        earlier run already wrote one."""
        key, value, ttl = Keys.push_start(scope), orjson.dumps(info), PUSH_START_TTL_SECONDS
        if fence is not None:
            return await self._put_fenced("SET push start", fence, [key], [value], ttl, nx=True) == 1
        return bool(await self._run("SET push start", lambda: self.client.set(key, value, nx=True, ex=ttl)))

    async def put_ledger(self, scope: RunScope, entry: dict, fence: Fence | None = None) -> None:
        """Write the scope's hour's ledger entry (core/ledger.py: its shape; the whole entry, replacing the
        last); with a `fence`, only while the run holds the hour's lock."""
        key = Keys.push_ledger(scope)
        await self._put("SET ledger entry", key, orjson.dumps(entry), PUSH_LEDGER_TTL_SECONDS, fence)

    async def get_ledger(self, scopes: Iterable[RunScope]) -> dict[RunScope, dict | None]:
        """The ledger entries of `scopes` (None when absent), in one round trip (one MGET per hash slot in
        cluster mode)."""
        scopes = list(scopes)
        raws = (await self._mget("MGET ledger", [Keys.push_ledger(scope) for scope in scopes]))[0]
        return {scope: ledger.parse(raw) for scope, raw in zip(scopes, raws, strict=True)}

    async def get_day(self, day: RunScope, memory: Sequence[Hour] = ()) -> DayRecords:
        """A date's records for `later-read day`, in one round trip: the ledger of its 24 hours (and of
        `memory`: earlier hours, read to find where the ledger begins) and the hour locks, of every shard of
        `day`'s split; the prewarm's hour and day markers (unsharded, else every shard's, as the push waits)."""
        hours = [Hour(day.date, h) for h in range(24)]
        marks = day.whole_and_shards()
        runs = [scope.at(hour) for hour in [*memory, *hours] for scope in day.shards()]
        locks = [scope.at(hour) for hour in hours for scope in day.shards()]
        lists = [
            [Keys.push_ledger(scope) for scope in runs],
            [Keys.prewarm_ready(x, h.hour) for h in hours for x in marks],
            [Keys.prewarm_done(x) for x in marks],
            [Keys.lock("push", scope) for scope in locks],
        ]
        entries, ready, done, held = await self._mget("MGET day records", *lists)
        n = len(marks)
        return DayRecords(
            ledger={scope: ledger.parse(raw) for scope, raw in zip(runs, entries, strict=True)},
            ready={h: _merged(ready[h * n : (h + 1) * n]) for h in range(24)},
            prewarm_done=_merged(done),
            locks={
                scope: raw.decode("utf-8", "replace") for scope, raw in zip(locks, held, strict=True) if raw is not None
            },
        )

    async def put_prewarm_ready(self, scope: RunScope, hour: int, info: dict, fence: Fence | None = None) -> None:
        """Hour `hour` of the scope's day is prewarmed (by its shard); with a `fence`, only while the
        prewarm holds its lock."""
        key = Keys.prewarm_ready(scope, hour)
        await self._put("SET prewarm hour marker", key, orjson.dumps(info), PREWARM_READY_TTL_SECONDS, fence)

    async def get_prewarm_ready(self, scope: RunScope) -> tuple[dict | None, dict | None, int]:
        """(the scope's hour's readiness marker, the day's completion marker, how many of the 24 hours are
        ready): one MGET, what the push polls while it waits. With the scope sharded, an hour or the day is
        ready when the unsharded marker or every shard's marker of its split is there."""
        marks = scope.whole_and_shards()
        keys = [Keys.prewarm_ready(x, h) for x in marks for h in range(24)]
        keys += [Keys.prewarm_done(x) for x in marks]
        raws = (await self._mget("MGET prewarm markers", keys))[0]
        hours = [_merged([raws[i * 24 + h] for i in range(len(marks))]) for h in range(24)]
        day = _merged(raws[24 * len(marks) :])
        return hours[scope.slot.hour], day, sum(1 for marker in hours if marker is not None)

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
            pipe.set(key, token, ex=CHECK_SCRATCH_TTL_SECONDS)
            pipe.get(key)
            pipe.delete(key)
            return pipe.execute()

        _, read, deleted = await self._run("scratch write/read/delete", calls)
        if read != token.encode() or deleted != 1:
            raise RedisUnavailable(
                f"Redis scratch key {key} read back {read!r} (deleted={deleted}); "
                "check [redis] url points at a writable primary"
            )


@dataclass
class DayRecords:
    """What `Store.get_day` read: ledger entries by hour and shard (RunScope), prewarm readiness by hour
    (merged over shards, None when not ready), the day's prewarm marker, the holder of each held hour lock
    (by hour and shard)."""

    ledger: dict[RunScope, dict | None]
    ready: dict[int, dict | None]
    prewarm_done: dict | None
    locks: dict[RunScope, str]


def _by_slot(keys: list[str], values: list) -> list[tuple[list[str], list]]:
    """(keys, values) grouped by Redis Cluster hash slot, in order of first appearance."""
    groups: dict[int, tuple[list[str], list]] = {}
    for key, value in zip(keys, values, strict=True):
        slot_keys, slot_values = groups.setdefault(key_slot(key.encode()), ([], []))
        slot_keys.append(key)
        slot_values.append(value)
    return list(groups.values())


def merge_markers(markers: list[dict]) -> dict:
    """One day's marker from its shards' markers: numbers summed, the earliest start, the latest finish."""
    merged: dict = {"shards": len(markers)}
    for marker in markers:
        for key, value in marker.items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and key not in ("started_at", "finished_at", "duration_seconds", "concurrency", "exit_code", "hour")
            ):
                merged[key] = merged.get(key, 0) + value
    merged["started_at"] = min(m.get("started_at", 0) for m in markers)
    merged["finished_at"] = max(m.get("finished_at", 0) for m in markers)
    merged["status"] = "ok" if all(m.get("status") == "ok" for m in markers) else "failures"
    return merged


def _merged(found: list[bytes | None]) -> dict | None:
    """The unsharded marker (first), else every shard's merged, else None (some shard not there yet)."""
    first = found[0]
    if first:
        return orjson.loads(first)
    if len(found) > 1 and all(found[1:]):
        return merge_markers([orjson.loads(raw) for raw in found[1:] if raw is not None])
    return None
