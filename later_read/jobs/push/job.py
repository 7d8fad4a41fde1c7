"""`later-read push`: the hourly job. Reads Redis (never the A/B or recommend services, unless
`--on-miss live`), fetches each distinct book card once, produces one message per user to Kafka and
marks the user sent once Kafka confirmed it.

    lock push:<date>:<hour>  ->  the hours to handle (day_run.py)  ->  each: hour.py  ->  summary

`run_push` checks the options and hands a `PushJob` to the shared lifecycle (`jobs/lifecycle.py`:
signals, connections, the own hour's lock, summary, report, metrics, exit code). Which hours a run
handles (docs/design.md, "The push schedule"):

    later-read push                     scheduled: the hour the clock (`--now`, else the wall clock) is
                                        in, after expiring and catching up the earlier hours the schedule
                                        says (day_run.py), each under its own hour lock
    later-read push --hour H [--date D] exactly that hour; refused (exit 2) when its window has closed,
                                        unless --allow-late

At most one push per user per day: a user with a sent marker is skipped (unless --force), and the
marker is written only after Kafka confirmed the message. Exit codes as in docs/design.md: 0, 1 (some
users failed or messages undelivered), 2, 3, 4, 5 (the hour is locked), 6 (SIGTERM/SIGINT), 7 (an hour's
users expired unsent), 8 (the run lost a lock it held: it stopped), 70; a run that handled several hours
exits with the worst (7 over 1 over 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from later_read.config.settings import Settings
from later_read.connections import PushConnections, open_push
from later_read.core import ledger
from later_read.core.clock import Clock
from later_read.core.schedule import Hour, Schedule
from later_read.core.scope import RunScope, parse_shard
from later_read.errors import LaterReadError, UsageError
from later_read.inputs import parse_date
from later_read.jobs.lifecycle import run_job
from later_read.jobs.progress import check_report_path
from later_read.jobs.push import day_run
from later_read.jobs.push.hour import JOB, PushContext
from later_read.jobs.saving import peak_calls_saved, with_old_flow
from later_read.jobs.summary import Summary
from later_read.log import alert, get_logger
from later_read.runtime import Shutdown
from later_read.store.keys import Keys
from later_read.store.lock import JobLock

log = get_logger("push")

# The report's per-user counters (also the metrics' outcomes), summed over the hours the run handled.
# With --on-miss skip, every user read is in exactly one of sent, misses, corrupt, not_in_experiment,
# no_recommendation, material_not_found, already_sent, earlier_hour (no marker, a row at an earlier hour of
# the date: that hour's user), not_processed (dropped after a signal), expired (its hour's window closed),
# unservable (a uid no job can serve) or `failed` (per reason, e.g. undelivered);
# `remaining` = the hours' users (`total`) never read (a stop came first). stale and live_budget_exhausted
# are parts of misses. With --on-miss live, `live` counts the missed or corrupt users computed on the spot;
# each of those is also counted by its new outcome (sent, ...). `recovered`: users marked sent from the
# topic before reading any user (an earlier run of the hour died after Kafka took their message;
# jobs/push/recovery.py); they then count as already_sent. The figures include the hours this run marked
# expired (read and sorted, nobody sent: day_run.py). The report's `hours` lists each hour handled.
REPORT_KEYS = (
    "users",
    "sent",
    "misses",
    "stale",
    "corrupt",
    "not_in_experiment",
    "no_recommendation",
    "material_not_found",
    "already_sent",
    "earlier_hour",
    "live",
    "live_budget_exhausted",
    "not_processed",
    "unservable",
    "recovered",
    "expired",
)
STATUS_RANK = ("ok", "failures", "expired", "interrupted")  # a run of several hours ends with the worst


@dataclass(frozen=True)
class PushOptions:
    """The push's command line, checked: the hour and shard, dry run and its output, misses, waits."""

    scope: RunScope  # the own hour (date, hour) and the shard
    dry_run: bool
    output: str | None
    force: bool
    on_miss: str
    report_path: str | None
    lock_wait: float
    wait_seconds: float = 0.0  # for the prewarm's marker (jobs/push/wait.py)
    scheduled: bool = False  # no --date/--hour: expire and catch up earlier hours first (day_run.py)
    allow_late: bool = False  # --allow-late: send an hour whose window has closed
    clock: Clock | None = None  # --now, else the wall clock


def run_push(settings: Settings, **options: Any) -> int:
    """The `push` command: check the options (`push_options`, its keyword arguments), run the hour(s),
    return the exit code."""
    return run_job(PushJob(settings, push_options(settings, **options)))


def push_options(
    settings: Settings,
    *,
    date: str | None,
    hour: int | None,
    dry_run: bool,
    output: str | None,
    force: bool,
    on_miss: str,
    report_path: str | None,
    lock_wait: float | None = None,
    wait: float | None = None,
    now: str | None = None,
    allow_late: bool = False,
    shard: str | None = None,
) -> PushOptions:
    """Checked options, the run's scope built once. Without --date and --hour the run is scheduled: date
    and hour are one reading of the clock (`now`, else the wall clock) in the configured zone; either
    given, the run is that hour, refused when its window has closed unless `allow_late` (a dry run is never
    refused: it sends nothing). The shard: `shard` (--shard K/N), else JOB_COMPLETION_INDEX (core/scope.py).
    The wait for the prewarm: `wait`, else the config's (0 for a dry run: it must not block)."""
    if output is not None and not dry_run:
        raise UsageError("--output only goes with --dry-run (a real run sends to Kafka); add --dry-run")
    if on_miss not in ("skip", "live"):
        raise UsageError(f"--on-miss: expected skip or live, got {on_miss!r}")
    if hour is not None and not 0 <= hour <= 23:
        raise UsageError(f"--hour: expected 0-23, got {hour}")
    if report_path:
        check_report_path(report_path)
    clock = Clock.parse(now, settings.zone)
    schedule, scheduled = Schedule.of(settings), date is None and hour is None
    if scheduled and allow_late:
        raise UsageError(
            "--allow-late goes with --hour (a scheduled run never sends an hour whose window has "
            "closed); add --hour H, or drop --allow-late"
        )
    own = schedule.current(clock.now())
    target = Hour(parse_date(date, settings.zone) if date is not None else own.date, own.hour if hour is None else hour)
    if not scheduled and not dry_run:
        schedule.refuse_if_closed(target, clock.now(), allow_late)
    if wait is not None and wait < 0:
        raise UsageError(f"--wait: expected seconds >= 0, got {wait:g}")
    wait_seconds = wait if wait is not None else 0.0 if dry_run else settings.push.wait_for_prewarm_seconds
    scope = RunScope(target.date, target.hour, parse_shard(shard, settings.shards.count))
    return PushOptions(
        scope,
        dry_run,
        output,
        force,
        on_miss,
        report_path,
        settings.lock.wait_seconds if lock_wait is None else lock_wait,
        wait_seconds,
        scheduled=scheduled,
        allow_late=allow_late,
        clock=clock,
    )


class PushJob:
    """The push's part of the lifecycle (see `jobs.lifecycle.Job`)."""

    name = JOB
    report_keys: tuple[str, ...] = REPORT_KEYS
    fence: JobLock | None = None  # the own hour's lock, set by the lifecycle

    def __init__(self, settings: Settings, options: PushOptions) -> None:
        self.settings, self.options = settings, options
        self.report_path, self.lock_wait, self.scope = options.report_path, options.lock_wait, options.scope
        self.summary = Summary(JOB, options.scope.date, options.scope.hour)
        self.summary.extra.update(
            dry_run=options.dry_run,
            force=options.force,
            on_miss=options.on_miss,
            shard=options.scope.shard.label,
            scheduled=options.scheduled,
            allow_late=options.allow_late,
            topic=None if options.dry_run else settings.kafka.topic,
        )
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
        """The own hour's lock (a scheduled run takes the lock of each earlier hour it handles itself)."""
        return None if self.options.dry_run else (Keys.lock(JOB, self.scope), self.scope.describe(JOB))

    async def work(self, conns: PushConnections, shutdown: Shutdown) -> str:
        """The run's hours (the own one; for a scheduled run, those before it first); the worst status.
        The lifecycle holds the own hour's lock around this."""
        self.shutdown = shutdown
        options = self.options
        ctx = PushContext(
            self.settings,
            options,
            conns,
            self.summary,
            shutdown,
            options.clock or Clock(self.settings.zone),
            Schedule.of(self.settings),
            self.stream,
            fence=self.fence,
        )
        try:
            if options.scheduled:
                statuses = await day_run.run_scheduled(ctx)
            else:
                statuses = [await day_run.run_hour(ctx, options.scope.slot)]
        finally:
            _conclude_services(ctx)
        if not options.dry_run:
            await _ledger_view(ctx)
        if shutdown.stopping:
            return "interrupted"
        statuses.append("failures" if self.summary.failures else "ok")
        return max(statuses, key=STATUS_RANK.index)

    def stop_error(self) -> LaterReadError | None:
        """None: the push raises what stops it (ServiceDown, a broker error), so the CLI prints it."""
        return None

    def alert(self, error: BaseException | None) -> None:
        """The push's closing alert: only an interrupted run needs one (the others have their own lines)."""
        if self.summary.status == "interrupted" and self.shutdown is not None:
            alert(
                log,
                "push.interrupted",
                signal=self.shutdown.signal_name,
                date=self.scope.date,
                hour=self.scope.hour,
                fix="rerun the same hour: users already sent are skipped",
            )


def _open_output(stack: contextlib.ExitStack, options: PushOptions):
    """The --output file (opened before anything else, so a bad path fails first), else None."""
    if options.output is None:
        return None
    try:
        return stack.enter_context(open(options.output, "wb"))
    except OSError as exc:
        raise UsageError(f"--output: cannot write {options.output}: {exc.strerror}") from None


async def _ledger_view(ctx: PushContext) -> None:
    """For the metrics: this shard's hours of the last 24 h per verdict once the run is done (one MGET of
    its ledger); `late_minutes` (set by day_run.run_hour) 0 when the run began no hour."""
    now = ctx.clock.now()
    entries = await day_run.shard_ledger(ctx, now)
    ctx.summary.extra["hours_by_verdict"] = ledger.verdicts(entries, ctx.schedule, now)
    ctx.summary.extra.setdefault("late_minutes", 0)


def _conclude_services(ctx: PushContext) -> None:
    """The run's service figures and savings over every hour it handled."""
    summary = ctx.summary
    users = summary.counts["users"]
    summary.extra["miss_ratio"] = round(summary.counts["misses"] / max(users, 1), 6)
    summary.services = with_old_flow(ctx.conns.services.summary(), users)
    summary.extra["peak_calls_saved"] = peak_calls_saved(summary.services, users)
