"""The prewarm's fan-out: the day's users -> 2 x `concurrency` workers (A/B, then recommend) -> Redis in batches.

    reader --(UserFeed, about one page)--> N long-lived workers --> BatchWriter (batched SETs)
                                                                           `-> HourTracker (ready markers)

- The reader goes through the push hours in order (0 .. 23, hours.py): per hour it pages that hour's
  users out of StarRocks (keyset pagination, `starrocks.batch_size` per page), drops those with an earlier
  push hour (handled there: one point-lookup query per page), reads the page's existing values with MGETs
  (unless `--force`) and puts only the users not yet done for the date into the feed (feed.py). `put`
  returns while fewer than one page of users wait, so the next page (of this hour or the next) is read
  while the workers still have the current one, and memory stays bounded by about two pages whatever the
  day's user count. A rerun goes through the hours in the same order.
- `concurrency` bounds the calls in flight to each service (A/B and recommend: `bound_calls`, or the
  adaptive gates job.py may set), and SERVICES_PER_USER x `concurrency` worker tasks live for the whole
  run and loop over the stream: while one user waits for recommend, another's A/B call is out, so both
  services' slots stay full (docs/design.md, "Where the prewarm's time goes"). No task, cancel scope or
  timeout object is created per user, so the per-user CPU is the two HTTP calls and little else.
- Stopping (SIGTERM/SIGINT, a service down, a fatal error): the reader is cancelled at once, workers take
  no new user, users in flight get `grace_seconds` to finish (a second signal cuts it short), then are
  cancelled and counted `unfinished`. Whatever finished is written: the writer flushes after the workers.
- Each user's outcome is one call to the pass's recorder (`counts`, core/counts.py `RunCounts`): it counts
  and names the user, tells the HourTracker of a failure, and the progress lines read it.

Errors never escape as task-group exception groups: each task hands its fatal error to `request_stop`,
and `run()` returns; the caller reads `stop_reason` and `error`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import anyio

from later_read.clients.starrocks import UserQuery
from later_read.connections import JobConnections
from later_read.core.counts import CACHED, UNFINISHED, UNSERVABLE, RunCounts, service_failure
from later_read.core.scope import RunScope
from later_read.core.uids import unservable
from later_read.core.users import TaskUser
from later_read.core.value import USABLE, encode, judge
from later_read.errors import LaterReadError, ServiceDown, ServiceError
from later_read.jobs.decide import decide
from later_read.jobs.prewarm.feed import UserFeed
from later_read.jobs.prewarm.hours import HOURS, HourTracker
from later_read.jobs.prewarm.writer import BatchWriter
from later_read.jobs.progress import Progress
from later_read.log import event, get_logger
from later_read.runtime import Shutdown

log = get_logger("prewarm")

STOP_INTERRUPTED = "interrupted"
STOP_SERVICE_DOWN = "service_down"
STOP_ERROR = "error"
# A user calls two services in turn (A/B, then recommend): `concurrency` workers per service keep the slots
# of both full, A/B answers waiting in the recommend slots' queue (FIFO) instead of leaving them idle; the
# HTTP pool holds `concurrency` connections per service (job.py).
SERVICES_PER_USER = 2


@dataclass(frozen=True)
class FanoutPlan:
    """What one fan-out runs: the users' query, how many calls in flight, whether to redo the done ones."""

    scope: RunScope  # the date and the shard (the query's users are the shard's)
    query: UserQuery
    concurrency: int  # calls in flight to each service at most (workers: SERVICES_PER_USER x this)
    force: bool
    grace_seconds: float
    total: int | None = None  # the plan's users by the count query (the progress lines' total)


class Fanout:
    """One prewarm pass over the plan's users; what happened to each is in `counts` (a RunCounts: outcomes
    incl. skipped_existing, unservable and unfinished; failures per "<service>.<reason>"; named uids)."""

    def __init__(self, conns: JobConnections, plan: FanoutPlan, shutdown: Shutdown, fence: Any = None) -> None:
        self.store, self.starrocks, self.services = conns.store, conns.starrocks, conns.services
        self.plan, self.shutdown = plan, shutdown
        self.redis_batch = conns.settings.redis.batch_size
        self.stop_reason: str | None = None
        self.error: BaseException | None = None
        self.hours = HourTracker(
            self.store, plan.scope, plan.query.uids is None, self._writer_failed, fence
        )  # readiness markers fenced by the run's lock
        self.counts = RunCounts(hour_failed=self.hours.user_failed)
        self.progress = Progress("prewarm", conns.settings.prewarm.progress_interval_seconds, self.counts, plan.total)
        self.writer = BatchWriter(self.store, self.redis_batch, self._writer_failed, self.hours.written)
        self.feed = UserFeed(max(self.starrocks.settings.batch_size, plan.concurrency))
        for client in (self.services.ab, self.services.rec):  # an adaptive gate, if set, takes precedence
            client.caller.bound_calls(plan.concurrency)
        self._stopped = anyio.Event()
        self._read_scope = anyio.CancelScope()
        self._work_scope = anyio.CancelScope()

    # Stopping -------------------------------------------------------------------------------------
    def request_stop(self, reason: str, error: BaseException | None = None) -> None:
        """Stop reading users now; in-flight users get the grace period. The first reason wins."""
        if self.stop_reason is not None:
            return
        self.stop_reason, self.error = reason, error
        self._read_scope.cancel()
        self._stopped.set()

    def _writer_failed(self, exc: LaterReadError) -> None:
        self.request_stop(STOP_ERROR, exc)

    async def _follow_shutdown(self) -> None:
        await self.shutdown.requested.wait()
        self.request_stop(STOP_INTERRUPTED)

    async def _enforce_grace(self) -> None:
        """After a stop request, give in-flight users `grace_seconds`, then cancel them."""
        await self._stopped.wait()
        await anyio.sleep(self.plan.grace_seconds)
        event(log, "prewarm.grace_expired", logging.WARNING, grace_seconds=self.plan.grace_seconds)
        self._work_scope.cancel()

    # The run --------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Process every user of the plan (or until stopped); buffered results are written before return."""
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._write)
            outer.start_soon(self.hours.run)
            try:
                await self._fan_out()
            finally:
                self.writer.close()

    async def _write(self) -> None:
        """The writer's task; the hour markers still due are written after its last batch."""
        try:
            await self.writer.run()
        finally:
            self.hours.finish()

    async def _fan_out(self) -> None:
        feed = self.feed
        async with anyio.create_task_group() as guard:
            guard.start_soon(self._follow_shutdown)
            guard.start_soon(self._enforce_grace)
            guard.start_soon(self.progress.run)
            with self.shutdown.force, self._work_scope:  # a second signal or the grace cancels work
                async with anyio.create_task_group() as work:
                    work.start_soon(self._read, feed)
                    for _ in range(self.plan.concurrency * SERVICES_PER_USER):
                        work.start_soon(self._work, feed)
            guard.cancel_scope.cancel()

    async def _read(self, feed: UserFeed) -> None:
        try:
            with self._read_scope:
                try:
                    for hour in HOURS:
                        await self._read_hour(hour, feed)
                except LaterReadError as exc:
                    self.request_stop(STOP_ERROR, exc)
        finally:
            feed.close()

    async def _read_hour(self, hour: int, feed: UserFeed) -> None:
        """The users whose earliest push hour is `hour`, page by page, minus those already done.
        `feed.put` returns as soon as the feed is below one page: the next page (and the next hour's)
        is read while the workers still have this one."""
        query = dataclasses.replace(self.plan.query, hour=hour)
        async for read, earlier in self.starrocks.pages(query):
            page = self._servable([user for user in read if user.uid not in earlier] if earlier else read)
            todo = page if self.plan.force else await self._not_done(page)
            skipped = len(page) - len(todo)
            if skipped:
                self.counts.done("skipped_existing", n=skipped)
            self.hours.sent(hour, len(todo), skipped)
            await feed.put([(hour, user) for user in todo])
        self.hours.close(hour)

    def _servable(self, page: list[TaskUser]) -> list[TaskUser]:
        """The page's users whose uid a job can serve; the others are counted and named, not called."""
        servable = []
        for user in page:
            reason = unservable(user.uid)
            if reason is None:
                servable.append(user)
            else:
                self.counts.done(UNSERVABLE, user.uid, reason)
        return servable

    async def _not_done(self, page: list[TaskUser]) -> list[TaskUser]:
        """The users of `page` without a value for the run's date (one MGET per `redis.batch_size`)."""
        todo: list[TaskUser] = []
        for start in range(0, len(page), self.redis_batch):
            chunk = page[start : start + self.redis_batch]
            values = await self.store.get_values([user.uid for user in chunk])
            todo.extend(user for user, raw in zip(chunk, values, strict=True) if not self._is_done(raw))
        return todo

    def _is_done(self, raw: bytes | None) -> bool:
        """Already computed for this date: the value is usable for the run's date (core/value.py; an absent,
        corrupt or stale one is recomputed and overwritten)."""
        return judge(raw, self.plan.scope.date).state == USABLE

    async def _work(self, feed: UserFeed) -> None:
        """One long-lived worker: the per-user hot path (no per-user tasks, scopes or INFO logging)."""
        services, date, add = self.services, self.plan.scope.date, self.writer.add
        done, failed, note = self.counts.done, self.counts.failed, self.counts.note
        items, take = feed.items, feed.items.popleft
        while True:
            if self.stop_reason is not None:
                return  # users still buffered are left for the rerun
            if not items:  # the slow path: wait for the reader (or the end)
                if not await feed.wait():
                    return
                continue
            hour, user = take()
            if feed.reader_waiting:
                feed.room()
            try:
                value = await decide(services, user.uid, user.project, date)
            except ServiceError as exc:
                failed(service_failure(exc.service, exc.reason), user.uid, hour)
                event(log, "prewarm.user_failed", logging.DEBUG, uid=user.uid, error=exc)
            except ServiceDown as exc:
                note(UNFINISHED, user.uid)
                self.request_stop(STOP_SERVICE_DOWN, exc)
                return
            except anyio.get_cancelled_exc_class():
                note(UNFINISHED, user.uid)
                raise
            else:
                done(CACHED if value.is_rec else value.outcome)
                add(user.uid, encode(value), hour)  # its hour settles once the value is in Redis

    def tripped_service(self) -> str:
        """The name of the service whose circuit breaker stopped the run ("?" if none did)."""
        for name in ("ab", "rec"):
            if getattr(self.services, name).caller.breaker.tripped:
                return name
        return "?"
