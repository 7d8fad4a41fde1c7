"""`later-read push`: the hourly job. Reads Redis (never the A/B or recommend services, unless
`--on-miss live`), fetches each distinct book card once, produces one message per user to Kafka and
marks the user sent once Kafka confirmed it.

    lock push:<date>:<hour>  ->  wait for the hour's prewarm marker (bounded, wait.py)  ->  pipeline  ->  summary

`run_push` checks the options and hands a `PushJob` to the shared lifecycle (`jobs/lifecycle.py`:
signals, connections, the hour's lock, summary, report, metrics, exit code).

The pipeline streams: a reader takes the hour's users from StarRocks page by page (deduplicated by
uid, other hours/dates/task ids excluded by the query), reads each batch's values and sent markers in
one Redis round trip and sorts the users (`select`); hits flow through a bounded stream to
workers that fetch the card (`material`) and hand the message (`message`) to the sink
(`delivery`: Kafka with confirmed delivery and sent markers, or the dry-run printer).

At most one push per user per day: a user with a sent marker is skipped (unless --force), and the
marker is written only after Kafka confirmed the message. Exit codes as in docs/design.md: 0, 1 (some
users failed or messages undelivered), 2, 3, 4, 5 (the hour is locked), 6 (SIGTERM/SIGINT), 70.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from later_read import runtime
from later_read.clients.kafka import OVERSIZE_MESSAGE
from later_read.clients.material import Material
from later_read.config import Settings
from later_read.connections import PushConnections, open_push
from later_read.errors import LaterReadError, ServiceError, UsageError
from later_read.inputs import parse_date
from later_read.jobs.lifecycle import run_job
from later_read.jobs.progress import Progress, check_report_path
from later_read.jobs.push import recovery
from later_read.jobs.push.delivery import Delivery, DryRunSink, delivering
from later_read.jobs.push.live import LiveResolver
from later_read.jobs.push.material import MaterialCache
from later_read.jobs.push.message import build_message, encode
from later_read.jobs.push.select import Hit, Sorter
from later_read.jobs.push.wait import wait_for_prewarm
from later_read.keys import Keys
from later_read.log import alert, event, get_logger
from later_read.runtime import Shutdown
from later_read.shard import Shard, parse_shard
from later_read.saving import peak_calls_saved, with_old_flow
from later_read.summary import Summary
from later_read.users import TaskUser, UserQuery, task_ids_for

log = get_logger("push")

JOB = "push"
# The report's per-user counters (also the metrics' outcomes). With --on-miss skip, every user read is
# in exactly one of sent, misses, corrupt, not_in_experiment, no_recommendation, material_not_found,
# already_sent, not_processed (dropped after a signal), unservable (a uid no job can serve) or `failed`
# (per reason, e.g. undelivered); `remaining` = the hour's users (`total`) never read (a stop came first).
# stale and live_budget_exhausted are parts of misses. With --on-miss live, `live` counts the missed or
# corrupt users computed on the spot; each of those is also counted by its new outcome (sent, ...).
# `recovered`: users marked sent from the topic before reading any user (an earlier run of the hour
# died after Kafka took their message; jobs/push/recovery.py); they then count as already_sent.
REPORT_KEYS = ("users", "sent", "misses", "stale", "corrupt", "not_in_experiment", "no_recommendation",
               "material_not_found", "already_sent", "live", "live_budget_exhausted", "not_processed",
               "unservable", "recovered")
WORKERS_PER_FETCH = 2  # workers waiting on a card another worker is fetching must not idle the pool


@dataclass(frozen=True)
class PushOptions:
    date: str
    hour: int
    dry_run: bool
    output: str | None
    force: bool
    on_miss: str
    report_path: str | None
    lock_wait: float
    wait_seconds: float = 0.0  # for the prewarm's marker (jobs/push/wait.py)
    shard: Shard = Shard.whole()


@dataclass
class PushRun:
    """Everything one run's pipeline needs, built once in `PushJob.work`."""

    settings: Settings
    options: PushOptions
    conns: PushConnections
    summary: Summary
    shutdown: Shutdown
    progress: Progress
    sorter: Sorter
    materials: MaterialCache
    live: LiveResolver | None
    sink: Any = None  # Delivery or DryRunSink
    hour_run: recovery.HourRun | None = None  # None in a dry run


def run_push(settings: Settings, *, date: str | None, hour: int | None, dry_run: bool,
             output: str | None, force: bool, on_miss: str, report_path: str | None,
             lock_wait: float | None = None, wait: float | None = None, shard: str | None = None) -> int:
    """The `push` command: check the options, run the hour, return the exit code."""
    options = push_options(settings, date=date, hour=hour, dry_run=dry_run, output=output, force=force,
                           on_miss=on_miss, report_path=report_path, lock_wait=lock_wait, wait=wait)
    options = dataclasses.replace(options, shard=parse_shard(shard, settings.shards.count))
    return run_job(PushJob(settings, options))


def push_options(settings: Settings, *, date: str | None, hour: int | None, dry_run: bool,
                 output: str | None, force: bool, on_miss: str, report_path: str | None,
                 lock_wait: float | None = None, wait: float | None = None) -> PushOptions:
    """Checked options; date and hour default to one reading of the clock in the configured zone.
    The wait for the prewarm: `wait`, else the config's (0 for a dry run: it must not block)."""
    if output is not None and not dry_run:
        raise UsageError("--output only goes with --dry-run (a real run sends to Kafka); add --dry-run")
    if on_miss not in ("skip", "live"):
        raise UsageError(f"--on-miss: expected skip or live, got {on_miss!r}")
    if hour is not None and not 0 <= hour <= 23:
        raise UsageError(f"--hour: expected 0-23, got {hour}")
    if report_path:
        check_report_path(report_path)
    now = dt.datetime.now(settings.zone)
    day = parse_date(date, settings.zone) if date is not None else now.strftime("%Y%m%d")
    if wait is not None and wait < 0:
        raise UsageError(f"--wait: expected seconds >= 0, got {wait:g}")
    wait_seconds = wait if wait is not None else 0.0 if dry_run else settings.push.wait_for_prewarm_seconds
    return PushOptions(day, now.hour if hour is None else hour, dry_run, output, force, on_miss,
                       report_path, settings.lock.wait_seconds if lock_wait is None else lock_wait,
                       wait_seconds)


class PushJob:
    """The push's part of the lifecycle (see `jobs.lifecycle.Job`)."""

    name = JOB
    report_keys = REPORT_KEYS

    def __init__(self, settings: Settings, options: PushOptions) -> None:
        self.settings, self.options = settings, options
        self.report_path, self.lock_wait, self.shard = options.report_path, options.lock_wait, options.shard
        self.summary = Summary(JOB, options.date, options.hour)
        self.summary.extra.update(dry_run=options.dry_run, force=options.force, on_miss=options.on_miss,
                                  shard=options.shard.label,
                                  topic=None if options.dry_run else settings.kafka.topic)
        self.stream: Any = None
        self.shutdown: Shutdown | None = None

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[PushConnections]:
        """The --output file first (a bad path fails before any connection), then the connections."""
        with contextlib.ExitStack() as stack:
            self.stream = _open_output(stack, self.options)
            async with open_push(self.settings, kafka=not self.options.dry_run) as conns:
                yield conns

    def lock(self) -> tuple[str, str] | None:
        o = self.options
        shard = f" shard {o.shard.label}" if o.shard.sharded else ""
        return None if o.dry_run else (Keys.lock(JOB, o.date, o.hour, o.shard.suffix),
                                       f"push run for {o.date} hour {o.hour}{shard}")

    async def work(self, conns: PushConnections, shutdown: Shutdown) -> str:
        """Recover an unfinished earlier run of the hour, wait for the prewarm (bounded), then the
        pipeline; the status. The lifecycle holds the hour's lock around this."""
        settings, options, summary = self.settings, self.options, self.summary
        self.shutdown = shutdown
        hour_run = None
        if not options.dry_run:
            hour_run = await recovery.begin(conns.store, settings.kafka, options.date, options.hour,
                                            options.shard.suffix)
            summary.counts["recovered"] = hour_run.recovered or 0
        marker = await wait_for_prewarm(conns, options.date, options.hour, options.wait_seconds, shutdown,
                                       options.shard.count)
        summary.extra["prewarm_done"] = marker is not None
        summary.extra["prewarm_marker"] = marker["_which"] if marker is not None else None
        run = await _prepare(settings, options, conns, summary, shutdown)
        run.hour_run = hour_run
        try:
            await _send_all(run, self.stream)
        finally:
            _collect(run)
        if shutdown.stopping:
            return "interrupted"
        return "failures" if summary.failures else "ok"

    def stop_error(self) -> LaterReadError | None:
        """None: the push raises what stops it (ServiceDown, a broker error), so the CLI prints it."""
        return None

    def alert(self, error: BaseException | None) -> None:
        """The push's closing alert: only an interrupted run needs one (the others have their own lines)."""
        if self.summary.status == "interrupted" and self.shutdown is not None:
            alert(log, "push.interrupted", signal=self.shutdown.signal_name, date=self.options.date,
                  hour=self.options.hour, fix="rerun the same hour: users already sent are skipped")


def _open_output(stack: contextlib.ExitStack, options: PushOptions):
    """The --output file (opened before anything else, so a bad path fails first), else None."""
    if options.output is None:
        return None
    try:
        return stack.enter_context(open(options.output, "wb"))
    except OSError as exc:
        raise UsageError(f"--output: cannot write {options.output}: {exc.strerror}") from None


async def _prepare(settings: Settings, options: PushOptions, conns: PushConnections, summary: Summary,
                   shutdown: Shutdown) -> PushRun:
    total = summary.total = await conns.starrocks.count(_query(settings, options))
    event(log, "push.start", date=options.date, hour=options.hour, users=total, dry_run=options.dry_run,
          force=options.force, on_miss=options.on_miss)
    progress = Progress(JOB, settings.push.progress_interval_seconds, total)
    sorter = Sorter(options.date, options.hour, options.force, summary.counts,
                    settings.push.miss_log_limit, progress.advance,
                    name=summary.name if options.on_miss == "skip" else None)
    live = None
    if options.on_miss == "live":
        live = LiveResolver(conns.services, conns.store, sorter, date=options.date,
                            budget=settings.push.live_budget, concurrency=settings.push.concurrency,
                            failures=summary.failures, write=not options.dry_run)
    materials = MaterialCache(conns.services.material, settings.push.concurrency)
    return PushRun(settings, options, conns, summary, shutdown, progress, sorter, materials, live)


def _query(settings: Settings, options: PushOptions) -> UserQuery:
    return UserQuery(settings.starrocks.table, task_ids_for(settings.tasks.ids, options.date),
                     hour=options.hour, shard=options.shard.sql())


def _collect(run: PushRun) -> None:
    """Fold the sink's and the material cache's figures into the summary; alert the miss totals."""
    run.progress.close()
    summary = run.summary
    if run.sink is not None:
        summary.counts["sent"] = run.sink.sent
        summary.extra.update(run.sink.details())
    if isinstance(run.sink, Delivery) and run.sink.undelivered:
        summary.failures["undelivered"] += run.sink.undelivered
        for reason, uid in run.sink.failed_uids:
            summary.name(f"undelivered_{reason}", uid)
    for uid in getattr(run.sink, "oversize", ()):  # refused by produce() for its size: never produced
        summary.failures[OVERSIZE_MESSAGE] += 1
        summary.name(OVERSIZE_MESSAGE, uid)
    summary.extra["materials_fetched"] = run.materials.fetched
    summary.extra["miss_ratio"] = round(summary.counts["misses"] / max(summary.counts["users"], 1), 6)
    users = summary.counts["users"]
    summary.services = with_old_flow(run.conns.services.summary(), users)
    summary.extra["peak_calls_saved"] = peak_calls_saved(summary.services, users)
    run.sorter.alert_totals()


@contextlib.asynccontextmanager
async def _sink(run: PushRun, stream) -> AsyncIterator[Any]:
    if run.options.dry_run:
        printer = DryRunSink(stream)
        try:
            yield printer
        finally:
            printer.flush()
        return
    delivery = Delivery(run.conns.producer, run.settings.kafka.topic, run.conns.store, run.options.date,
                        run.settings.redis.batch_size)
    async with delivering(delivery, run.settings.push.flush_timeout_seconds,
                          stop_early=lambda: run.shutdown.force.cancel_called) as sink:
        yield sink
    if delivery.clean and run.hour_run is not None:  # nothing produced is left unconfirmed or unmarked
        await recovery.end(run.conns.store, run.hour_run, produced=delivery.produced)


async def _send_all(run: PushRun, stream) -> None:
    """The pipeline under the sink, with progress, the grace period after a signal, and force-stop."""
    async with _sink(run, stream) as sink:
        run.sink = sink
        with run.shutdown.force:
            async with runtime.task_group() as tg:
                tg.start_soon(run.progress.run)
                tg.start_soon(_cancel_after_grace, run, tg.cancel_scope)
                await _pipeline(run)
                tg.cancel_scope.cancel()


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
            tg.start_soon(_worker, run, receive.clone())
        receive.close()
        async with send:
            await _read_hits(run, send)


async def _read_hits(run: PushRun, send: ObjectSendStream[Hit]) -> None:
    """The hour's users, batch by batch: values and markers in one round trip, sorted; hits whose card
    is already known are finished right here, the others go to the workers, which fetch the card."""
    batch = run.settings.redis.batch_size
    async for page in run.conns.starrocks.users(_query(run.settings, run.options)):
        for start in range(0, len(page), batch):
            if run.shutdown.stopping:
                return
            users = page[start:start + batch]
            values, sent = await run.conns.store.get_push_state(run.options.date, [u.uid for u in users])
            hits, missing = run.sorter.sort(users, values, sent)
            hits += await _resolve_missing(run, missing)
            for hit in hits:
                known = run.materials.ready(hit.value)
                if known is None:
                    await send.send(hit)
                else:
                    await _deliver(run, hit, known.material, known.error)


async def _resolve_missing(run: PushRun, missing: Sequence[TaskUser]) -> list[Hit]:
    if run.live is None:
        run.progress.advance(len(missing))
        return []
    return await run.live.resolve(missing)


async def _worker(run: PushRun, receive: ObjectReceiveStream[Hit]) -> None:
    async with receive:
        async for hit in receive:
            if run.shutdown.stopping:
                run.summary.counts["not_processed"] += 1  # stop taking new users; the rerun sends them
                run.summary.name("not_processed", hit.user.uid)
                continue
            await _push_one(run, hit)


async def _push_one(run: PushRun, hit: Hit) -> None:
    """Card, message, sink: one user. A failed card fetch is counted per reason, not fatal."""
    try:
        material = await run.materials.get(hit.user.uid, hit.value)
    except ServiceError as exc:
        await _deliver(run, hit, None, exc)
        return
    await _deliver(run, hit, material, None)


async def _deliver(run: PushRun, hit: Hit, material: Material | None, error: ServiceError | None) -> None:
    """The user's message to the sink, or the reason it has none (card not found, card fetch failed)."""
    if error is not None:
        run.summary.failures[f"material_{error.reason}"] += 1
        run.summary.name(f"material_{error.reason}", hit.user.uid)
    elif material is None:
        run.summary.counts["material_not_found"] += 1
    else:
        message = build_message(hit.user, hit.value, material, date=run.options.date,
                                hour=run.options.hour, zone=run.settings.zone)
        await run.sink.send(hit.user.uid, message["msg_id"], encode(message))
    run.progress.advance(1)
