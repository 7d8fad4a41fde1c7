"""One push hour, start to end: the same path for a run's own hour and for each hour it catches up.

    recovery.begin   recover a dead run's deliveries, record the start, ledger entry `running` (unclean)
    wait_for_prewarm the hour's readiness marker (bounded, wait.py)
    pipeline         a reader takes the hour's users from StarRocks page by page (and which of them have a
                     row at an earlier hour: that hour's users, never sent by this one), reads each batch's
                     values, sent markers and the hour's lock in one Redis round trip (a lost lock stops
                     the run before the batch) and sorts them (`select`); each hit goes its way to the sink
                     (`send`: the card from `material`, the message from core/message.py, then `delivery`:
                     Kafka with confirmed delivery and sent markers, or the dry-run printer)
    ledger entry     the hour's counts and state (ledger.py), clean only when every delivery is known

Every run of the process shares one Summary: the hour's figures are what it added to it, each user recorded
by one call to its RunCounts (core/counts.py: the sorter, the live resolver and the workers all record into
that one; the hour's progress lines read it). Nothing is sent
after the hour's window end (`deadline`; none with --allow-late or --dry-run): from then on the reader
goes on reading and sorting the hour's users without sending, each one with a message to send counted
`expired`, so the entry's figures cover every user. `expire_hour` is that pass alone, for an hour whose
window closed before any run finished it (docs/design.md, "The push schedule"). The hour's lock is the
`fence` of every write (store/lock.py, store/fencing.py).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import ObjectSendStream

from later_read import runtime
from later_read.clients.kafka import OVERSIZE_MESSAGE
from later_read.clients.starrocks import UserQuery
from later_read.config.settings import Settings
from later_read.connections import PushConnections
from later_read.core import ledger
from later_read.core.clock import Clock
from later_read.core.counts import EXPIRED, UNDELIVERED, RunCounts, undelivered
from later_read.core.message import expires_at
from later_read.core.schedule import FINAL, Hour, Schedule
from later_read.core.scope import RunScope
from later_read.core.users import TaskUser
from later_read.errors import LaterReadError
from later_read.jobs.progress import Progress
from later_read.jobs.push import recovery
from later_read.jobs.push.delivery import Delivery, DryRunSink, delivering
from later_read.jobs.push.live import LiveResolver
from later_read.jobs.push.material import MaterialCache
from later_read.jobs.push.select import Hit, Sorter
from later_read.jobs.push.send import route, worker
from later_read.jobs.push.wait import wait_for_prewarm
from later_read.jobs.summary import Summary
from later_read.log import event, get_logger
from later_read.runtime import Shutdown

log = get_logger("push")

JOB = "push"
WORKERS_PER_FETCH = 2  # workers waiting on a card another worker is fetching must not idle the pool


@dataclass
class PushContext:
    """What every hour of one push run shares (built once in `PushJob.work`)."""

    settings: Settings
    options: Any  # PushOptions (jobs/push/job.py)
    conns: PushConnections
    summary: Summary
    shutdown: Shutdown
    clock: Clock
    schedule: Schedule
    stream: Any = None  # the --output file of a dry run, else None (stdout)
    waited_out: bool = False  # a wait for the prewarm ran out: the run's later hours do not wait again
    fence: Any = None  # the own hour's JobLock, held by the lifecycle (None in a dry run)


class Window:
    """The hour's sending window: `closed()` turns true once time.monotonic() reaches `deadline` (None: it
    never closes: --allow-late, a dry run) and stays true (`was_closed`: the window closed while users were
    left)."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline, self.was_closed = deadline, False

    def closed(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.was_closed = True
        return self.was_closed


@dataclass(frozen=True)
class PushRun:
    """Everything one hour's pipeline needs, built in `_prepare` (nothing set afterwards)."""

    ctx: PushContext
    scope: RunScope  # the hour's date and hour, the run's shard
    query: UserQuery  # the hour's users (and shard), built once from the scope
    counts: RunCounts  # the run's recorder (the summary's): every user of the hour recorded once
    progress: Progress
    sorter: Sorter
    materials: MaterialCache
    live: LiveResolver | None
    expires: str  # the messages' expires_at
    window: Window  # the window's end: nothing is sent after it
    sink: Any = None  # Delivery or DryRunSink (None: the expiry pass, which sends nothing)
    fence: Any = None  # the hour's JobLock (None in a dry run): every write fenced by it

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def options(self) -> Any:
        """The run's PushOptions (jobs/push/job.py)."""
        return self.ctx.options

    @property
    def summary(self) -> Summary:
        return self.ctx.summary

    @property
    def shutdown(self) -> Shutdown:
        return self.ctx.shutdown

    def window_closed(self) -> bool:
        return self.window.closed()


async def push_hour(ctx: PushContext, hour: Hour, caught_up: bool = False, fence: Any = None) -> dict | None:
    """Push one hour under its lock `fence`; its ledger entry as written (None in a dry run, which writes
    nothing)."""
    options, scope = ctx.options, ctx.options.scope.at(hour)
    before, failed_before = Counter(ctx.summary.counts), Counter(ctx.summary.failures)
    hour_run = None
    if not options.dry_run:
        now = ctx.clock.now()

        def mark(prev: dict | None) -> dict:
            return ledger.running(prev, scope, now, ctx.schedule.late_minutes(hour, now), caught_up, options.allow_late)

        hour_run = await recovery.begin(ctx.conns.store, ctx.settings.kafka, scope, mark, fence)
        ctx.summary.run_counts.note("recovered", n=hour_run.recovered or 0)
    wait = 0.0 if ctx.waited_out else options.wait_seconds
    marker = await wait_for_prewarm(ctx.conns, scope, wait, ctx.shutdown)
    ctx.waited_out |= marker is None and wait > 0
    ctx.summary.extra["prewarm_done"] = marker is not None
    ctx.summary.extra["prewarm_marker"] = marker["_which"] if marker is not None else None
    run = await _prepare(ctx, scope, fence)
    try:
        await _send_all(run)
    except BaseException as error:
        _collect(run)
        if hour_run is not None and isinstance(error, Exception):  # best effort: partial, unclean
            with contextlib.suppress(LaterReadError):
                await recovery.end(ctx.conns.store, hour_run, _entry(run, hour_run, before, failed_before, False))
        raise
    _collect(run)
    if hour_run is None:
        return None
    entry = _entry(run, hour_run, before, failed_before, isinstance(run.sink, Delivery) and run.sink.clean)
    await recovery.end(ctx.conns.store, hour_run, entry)
    return entry


def _entry(run: PushRun, hour_run: recovery.HourRun, before: Counter, failed_before: Counter, clean: bool) -> dict:
    """The hour's ledger entry from what this hour added to the run's summary."""
    summary = run.summary
    counts, failures = summary.counts - before, summary.failures - failed_before
    produced = run.sink.produced if isinstance(run.sink, Delivery) else 0
    return ledger.finished(
        hour_run.written or {},
        counts,
        failures,
        run.progress.total or 0,
        clean=clean,
        recovered=hour_run.recovered_of_hour,
        produced=produced,
        now=run.ctx.clock.now(),
        window_closed=run.window.was_closed,
    )


async def expire_hour(ctx: PushContext, hour: Hour, fence: Any) -> dict | None:
    """An hour whose window closed before a run finished it, under its lock `fence`: a dead run's
    deliveries marked from the topic, then its users read and sorted as a run does and nobody sent (each
    with a message to send counted `expired`, but for as many as an earlier run of the hour found without a
    card: `material_not_found`; a card is not asked for here). The entry written, final (expired; done
    when nobody was left), or None when the ledger already says final."""
    store, scope = ctx.conns.store, ctx.options.scope.at(hour)
    start, prev = await store.get_push_run(scope)
    if ledger.state_of(prev) in FINAL:
        return None
    marked = recovered = 0
    if start is not None and not ledger.is_clean(prev):  # later hours must see what a dead run sent
        marked, recovered = await recovery.recover(store, ctx.settings.kafka, scope, start, fence)
    before = Counter(ctx.summary.counts)
    ctx.summary.run_counts.note("recovered", n=marked)
    run = await _prepare(ctx, scope, fence, closed=True)
    await _read_hits(run, None)
    run.progress.close()
    # The users an earlier run of the hour found without a card are hits again here: not expired.
    known = min(int((prev or {}).get("material_not_found") or 0), ctx.summary.counts["expired"] - before["expired"])
    ctx.summary.run_counts.moved(EXPIRED, "material_not_found", known)
    counts = ctx.summary.counts - before
    entry = ledger.finished(
        ledger.closing(prev, scope),
        counts,
        Counter(),
        run.progress.total or 0,
        clean=True,
        recovered=recovered,
        produced=0,
        now=ctx.clock.now(),
        window_closed=True,
    )
    entry["state"] = ledger.DONE if entry["state"] == ledger.DONE else ledger.EXPIRED
    await store.put_ledger(scope, entry, fence)
    return entry


async def _prepare(ctx: PushContext, scope: RunScope, fence: Any = None, closed: bool = False) -> PushRun:
    """The scope's hour's run: its users' query and count, sorter, cards, live resolver, deadline
    (`closed`: already past, the expiry pass)."""
    settings, summary, options = ctx.settings, ctx.summary, ctx.options
    query = UserQuery.of(settings, scope)
    counts = summary.run_counts
    progress = Progress(JOB, settings.push.progress_interval_seconds, counts)
    if closed:  # a sending hour counts its users beside its pipeline (`_count`)
        progress.total = await ctx.conns.starrocks.count(query)
        summary.total = (summary.total or 0) + progress.total
    sorter = Sorter(
        scope.date,
        scope.slot.hour,
        options.force,
        counts,
        settings.push.miss_log_limit,
        names=options.on_miss == "skip",
        alerts=not closed,
    )
    live = None
    if options.on_miss == "live":
        live = LiveResolver(
            ctx.conns.services,
            ctx.conns.store,
            sorter,
            counts,
            date=scope.date,
            budget=settings.push.live_budget,
            concurrency=settings.push.concurrency,
            write=not options.dry_run,
        )
    materials = MaterialCache(
        ctx.conns.services.material, settings.push.concurrency, park_limit=settings.redis.batch_size
    )  # about a batch of users waits parked
    timed = not (options.allow_late or options.dry_run)
    deadline = 0.0 if closed else ctx.clock.monotonic_at(ctx.schedule.window_end(scope.slot)) if timed else None
    late_from = ctx.clock.now() if options.allow_late else None
    return PushRun(
        ctx,
        scope,
        query,
        counts,
        progress,
        sorter,
        materials,
        live,
        expires_at(ctx.schedule, scope.date, scope.slot.hour, late_from),
        Window(deadline),
        sink=None if closed else _new_sink(ctx, scope, fence),
        fence=fence,
    )


def _new_sink(ctx: PushContext, scope: RunScope, fence: Any) -> Delivery | DryRunSink:
    """The hour's sink: the dry run's printer, else Kafka delivery marking the scope's date's users sent."""
    if ctx.options.dry_run:
        return DryRunSink(ctx.stream)
    return Delivery(
        ctx.conns.producer, ctx.settings.kafka.topic, ctx.conns.store, scope.date, ctx.settings.redis.batch_size, fence
    )


def _collect(run: PushRun) -> None:
    """Fold the hour's sink and material figures into the run's summary; alert the hour's miss totals."""
    run.progress.close()
    summary, counts = run.summary, run.counts
    if run.sink is not None:
        counts.note("sent", n=run.sink.sent)
        for key, value in run.sink.details().items():
            summary.extra[key] = summary.extra.get(key, 0) + value
    if isinstance(run.sink, Delivery) and run.sink.undelivered:
        counts.failed_after(
            UNDELIVERED, run.sink.undelivered, ((undelivered(reason), uid) for reason, uid in run.sink.failed_uids)
        )
    oversize = getattr(run.sink, "oversize", ())  # refused by produce() for its size: never produced
    counts.failed_after(OVERSIZE_MESSAGE, len(oversize), ((OVERSIZE_MESSAGE, uid) for uid in oversize))
    summary.extra["materials_fetched"] = summary.extra.get("materials_fetched", 0) + run.materials.fetched
    run.sorter.alert_totals()


@contextlib.asynccontextmanager
async def _sink(run: PushRun) -> AsyncIterator[None]:
    """The sink at work around the pipeline: the printer flushed at the end; Kafka delivery with its pump,
    marker writer and bounded finish (`delivering`)."""
    if isinstance(run.sink, DryRunSink):
        try:
            yield
        finally:
            run.sink.flush()
        return
    async with delivering(
        run.sink, run.settings.push.flush_timeout_seconds, stop_early=lambda: run.shutdown.force.cancel_called
    ):
        yield


async def _send_all(run: PushRun) -> None:
    """The pipeline under the sink, with progress, the grace period after a signal, and force-stop
    (`shutdown.force` is entered once per hour the run handles: an anyio scope may be re-entered after it
    exits; once it has been cancelled the run is stopping and starts no further hour)."""
    async with _sink(run):
        with run.shutdown.force:
            async with runtime.task_group() as tg:
                tg.start_soon(run.progress.run)
                tg.start_soon(_cancel_after_grace, run, tg.cancel_scope)
                async with runtime.task_group() as work:
                    work.start_soon(_count, run)
                    await _pipeline(run)
                tg.cancel_scope.cancel()


async def _count(run: PushRun) -> None:
    """The hour's users (the progress total, the summary's and the ledger entry's, the `push.start` line),
    counted on a second StarRocks connection while the pipeline runs: nothing waits for the count."""
    census = run.ctx.conns.starrocks.twin()
    try:
        total = run.progress.total = await census.count(run.query)
    finally:
        census.close()
    run.summary.total = (run.summary.total or 0) + total
    options = run.options
    event(
        log,
        "push.start",
        date=run.scope.date,
        hour=run.scope.hour,
        users=total,
        dry_run=options.dry_run,
        force=options.force,
        on_miss=options.on_miss,
    )


async def _cancel_after_grace(run: PushRun, scope: anyio.CancelScope) -> None:
    """After SIGTERM/SIGINT, in-flight users get `push.grace_seconds` to finish, then are cancelled."""
    await run.shutdown.requested.wait()
    await anyio.sleep(run.settings.push.grace_seconds)
    event(log, "push.grace_expired", grace_seconds=run.settings.push.grace_seconds)
    scope.cancel()


async def _pipeline(run: PushRun) -> None:
    send, receive = anyio.create_memory_object_stream[Hit](run.settings.redis.batch_size)
    async with runtime.task_group() as tg:
        for _ in range(run.settings.push.concurrency * WORKERS_PER_FETCH):
            tg.start_soon(worker, run, receive.clone())
        receive.close()
        async with send:
            await _read_hits(run, send)


async def _read_hits(run: PushRun, send: ObjectSendStream[Hit] | None) -> None:
    """The hour's users, page by page (which of them belong to an earlier hour), batch by batch: values,
    markers and the lock in one round trip, sorted; hits whose card is already known are finished right
    here, the others go to the workers, which fetch the card; once the window has closed, every hit is
    counted expired (`send` is None only then: the expiry pass)."""
    batch, store, query = run.settings.redis.batch_size, run.ctx.conns.store, run.query
    async for page, earlier in run.ctx.conns.starrocks.pages(query):
        for start in range(0, len(page), batch):
            if run.shutdown.stopping:
                return
            users = page[start : start + batch]
            values, sent = await store.get_push_state(run.scope.date, [u.uid for u in users], run.fence)
            hits, missing = run.sorter.sort(users, values, sent, earlier)
            hits += await _resolve_missing(run, missing)
            await route(run, hits, send)


async def _resolve_missing(run: PushRun, missing: Sequence[TaskUser]) -> list[Hit]:
    if run.live is None or run.window_closed():  # nothing is computed for an hour that cannot be sent
        run.counts.settle(len(missing))  # counted as misses (or corrupt) when sorted
        return []
    return await run.live.resolve(missing)
