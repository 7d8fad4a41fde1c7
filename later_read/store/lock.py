"""JobLock: one run of a job per (date[, hour]) at a time, on redis-py's `redis.asyncio.lock.Lock`.

    lock = JobLock(client, Keys.lock("push", RunScope(date, hour)), "push run for 20261123 hour 9", settings.lock)
    await lock.acquire(stop)              # waits up to [lock] wait_seconds while another run holds it
    lock.refresh_in(tg)                   # refreshes the TTL every ttl/3 from the caller's task group
    ...
    await lock.release()                  # stops the refresh; deletes the key only if still ours

or, around a block that runs in the caller's task (the push's per-hour locks, jobs/push/day_run.py):

    async with holding(JobLock(...), stop):   # acquire, refresh from a task group of its own, release
        ...

The value is `<host>:<pid>:<random>` so a waiter can name the holder. While waiting, one `lock.waiting`
line every few seconds; after the wait `LockHeld` (exit 5) names the holder; a signal ends the wait with
`Interrupted` (exit 6). Redis failures are `RedisUnavailable` (exit 3).

A lock is also its run's fence (docs/design.md, "The job lock"): the Store's fenced writes take it
(`key`, `token`) and write only while Redis still holds this token under the key, in one script. When a
refresh, a fenced write or a batch's ownership check finds the lock gone or held by another token,
`lose` says so once (`lock.lost`), marks it lost (fenced writes then refuse at once, without asking Redis)
and cancels the block under `guard()`, which then raises `LockLost` (exit 8).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup
from redis import exceptions as redis_errors
from redis.asyncio.lock import Lock

from later_read import runtime
from later_read.config.settings import LockSettings
from later_read.errors import Interrupted, LockHeld, LockLost, RedisUnavailable
from later_read.log import alert, event, get_logger

log = get_logger("lock")

POLL_SECONDS = 1.0  # how often a waiter tries again: a dead holder's lock is taken within a second
NOTE_EVERY_SECONDS = 10  # one `lock.waiting` progress line this often (the first one at once)


def holder_token() -> str:
    """`<host>:<pid>:<random>`: who holds the lock, readable by whoever finds it held."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class JobLock:
    def __init__(self, client: aioredis.Redis, key: str, what: str, settings: LockSettings) -> None:
        self.key, self.what, self.settings = key, what, settings
        self.token = holder_token()
        self._lock = Lock(client, key, timeout=settings.ttl_seconds, thread_local=False)
        self._client = client
        self._refreshing = anyio.CancelScope()
        self.lost: str | None = None  # why, once the lock is known not to be this run's any more
        self._guards: list[anyio.CancelScope] = []

    async def acquire(self, stop: anyio.Event) -> None:
        """Take the lock, waiting up to `wait_seconds` for a holder to finish or its lock to expire."""
        started = anyio.current_time()
        deadline, noted = started + self.settings.wait_seconds, None
        while not await self._try():
            holder, ttl = await self._holder()
            now = anyio.current_time()
            if now >= deadline:
                raise LockHeld(self._held_message(holder, ttl, now - started))
            if noted is None or now - noted >= NOTE_EVERY_SECONDS:
                event(
                    log,
                    "lock.waiting",
                    key=self.key,
                    holder=holder,
                    expires_in_seconds=ttl,
                    waited_seconds=round(now - started),
                    wait_seconds=self.settings.wait_seconds,
                )
                noted = now
            with anyio.move_on_after(min(POLL_SECONDS, deadline - now)):
                await stop.wait()
            if stop.is_set():
                raise Interrupted(
                    f"stopped by a signal while waiting for the lock {self.key} (held by {holder}); nothing was done"
                )
        if anyio.current_time() - started >= POLL_SECONDS:
            event(log, "lock.taken", key=self.key, waited_seconds=round(anyio.current_time() - started))

    def _held_message(self, holder: str, ttl: int, waited: float) -> str:
        if self.settings.wait_seconds <= 0:
            how = "not waiting ([lock] wait_seconds / --lock-wait is 0)"
        else:
            how = f"waited {waited:.0f} s and it is still held (a live holder keeps refreshing it)"
        return (
            f"another {self.what} is in progress (held by {holder}, Redis key {self.key}, expires in "
            f"{ttl}s unless refreshed); {how}; let it finish, or stop that process and rerun "
            "(a dead holder's lock expires on its own)"
        )

    def refresh_in(self, tg: TaskGroup) -> None:
        """Keep the lock refreshed from a task of `tg` (the caller's task group) until `release`."""
        tg.start_soon(self._refresh)

    async def _refresh(self) -> None:
        with self._refreshing:
            await self.keep()

    async def keep(self) -> None:
        """Refresh the TTL every ttl/3 until cancelled; a refresh that finds the lock gone or held by
        another token loses it (`lose`); one that fails (Redis unreachable) is alerted and tried again."""
        while True:
            await anyio.sleep(self.settings.ttl_seconds / 3)
            try:
                await self._lock.reacquire()
            except redis_errors.LockNotOwnedError:
                self.lose("the refresh found it gone or held by another run")
                return
            except redis_errors.RedisError as exc:
                alert(log, "lock.refresh_failed", key=self.key, error=exc)

    def lose(self, why: str) -> None:
        """The lock is no longer this run's: say so once, refuse every later fenced write, cancel the
        blocks under `guard()`."""
        if self.lost is not None:
            return
        self.lost = why
        alert(
            log,
            "lock.lost",
            key=self.key,
            why=why,
            fix="this run stopped producing and writing; another run (or the next one) does the work",
        )
        for scope in self._guards:
            scope.cancel()

    def error(self) -> LockLost:
        return LockLost(
            f"lost the lock {self.key} of the {self.what} ({self.lost}); the run stopped "
            "producing and writing, its records are written only while it holds the lock; the run "
            "holding it now, or the next one, finishes the work (check for two runs: `later-read "
            "day`, and Redis: `later-read check`)"
        )

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block until the lock is lost: then it is cancelled and LockLost raised (whatever the
        cancellation made the block raise)."""
        scope = anyio.CancelScope()
        self._guards.append(scope)
        if self.lost is not None:
            scope.cancel()
        try:
            with scope:
                yield
        except BaseException:
            if self.lost is None:
                raise
            raise self.error() from None
        finally:
            self._guards.remove(scope)
        if self.lost is not None:
            raise self.error()

    async def release(self) -> None:
        """Stop refreshing; delete the lock if it is still ours (shielded: runs even while cancelled)."""
        self._refreshing.cancel()
        with anyio.CancelScope(shield=True):
            try:
                await self._lock.release()
            except redis_errors.RedisError:  # LockError included: lost, or Redis is down
                pass  # it expires on its own within ttl_seconds

    async def _try(self) -> bool:
        try:
            return await self._lock.acquire(blocking=False, token=self.token)
        except redis_errors.RedisError as exc:
            raise RedisUnavailable(
                f"Redis error while taking the lock {self.key}: {exc}; check [redis] url and that Redis is up"
            ) from None

    async def _holder(self) -> tuple[str, int]:
        """The holder's token and the lock's TTL in seconds ("?" and -2 when it just went away)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(self.key)
            pipe.ttl(self.key)
            value, ttl = await pipe.execute()
        except redis_errors.RedisError as exc:
            raise RedisUnavailable(f"Redis error while reading the lock {self.key}: {exc}") from None
        return (value.decode("utf-8", "replace") if value else "?"), ttl


@asynccontextmanager
async def holding(lock: JobLock, stop: anyio.Event) -> AsyncIterator[JobLock]:
    """Take `lock` (waiting as `acquire` does), keep it refreshed around the block (cancelled, LockLost,
    once the lock is lost), release it after. The refresh runs in a task group of its own;
    `runtime.task_group` lets what the block raises out as itself."""
    await lock.acquire(stop)
    async with runtime.task_group() as tg:
        lock.refresh_in(tg)
        try:
            with lock.guard():
                yield lock
        finally:
            await lock.release()
