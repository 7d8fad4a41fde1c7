"""`later-read prewarm`: compute every user's recommendation for a day and store it in Redis.

`run_prewarm` checks the inputs (exit 2 before anything is touched) and hands a `PrewarmJob` to the
shared lifecycle (`jobs/lifecycle.py`: signals, connections, the date's lock, summary, report, metrics,
exit code). The job's own part: the fan-out (`fanout`), the completion marker, its summary counts and
its closing alert line.

- The completion marker `later_read:prewarm:done:{<date>}` (the run's report minus per-service stats) is
  written only when the run went through every user of the day: status `ok` (exit 0) or `failures`
  (exit 1). Never when interrupted, stopped by a down service or an error, nor by a `--uids-file` run.
- Rerun-safe: a user is skipped when its value parses and its `date` is the run's date (`--force`
  recomputes everyone); a corrupt value or another date's value is recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from later_read import runtime
from later_read.clients.adaptive import AdaptiveGate, AdaptiveLimit
from later_read.clients.starrocks import StarRocks, UserQuery
from later_read.config.settings import Settings
from later_read.connections import JobConnections, Services, open_job
from later_read.core.counts import CACHED, UNFINISHED, UNSERVABLE
from later_read.core.scope import RunScope, parse_shard
from later_read.errors import LaterReadError
from later_read.inputs import parse_date, read_uids_file
from later_read.jobs.lifecycle import run_job
from later_read.jobs.prewarm.fanout import (
    SERVICES_PER_USER,
    STOP_ERROR,
    STOP_INTERRUPTED,
    STOP_SERVICE_DOWN,
    Fanout,
    FanoutPlan,
)
from later_read.jobs.progress import check_report_path
from later_read.jobs.saving import with_old_flow
from later_read.jobs.summary import Summary
from later_read.log import alert, event, get_logger
from later_read.runtime import Shutdown
from later_read.store.keys import Keys
from later_read.store.lock import JobLock

JOB = "prewarm"
# The report's counters. `users` = the users this run looked at, each counted once in exactly one of
# the others or in `failed`; `remaining` = the day's users (`total`, the count query) never started (a
# stop came first; the rerun does them), so users + remaining = total. `unservable`: rows whose uid no
# job can serve (empty, too long), counted and alerted, never sent to A/B.
# The names are the recorder's (core/counts.py): a stored recommendation is counted `cached` as it happens.
REPORT_KEYS = ("users", CACHED, "not_in_experiment", "no_recommendation", "skipped_existing", UNFINISHED, UNSERVABLE)

BAD_HOUR_ROWS = 1000  # push_hour rows named per run: enough to fix them, bounded if the column is all bad
# The adaptive limit's stalls (its job's event loop frozen for 2 round trips): quiet runs here see 0-1 in
# 8 s, a VM whose CPU is stolen 3-6 a second, and then the limit holds fewer calls than the services take
# (docs/design.md, "Adaptive concurrency"). About one a second, at least 10, is worth a warning. A CPU-bound
# neighbour sharing the core fairly freezes the loop for less and is not caught (docs/alerting.md).
STARVED_STALLS_PER_SECOND = 1.0
STARVED_MIN_STALLS = 10
log = get_logger(JOB)


@dataclass(frozen=True)
class PrewarmOptions:
    """The prewarm's command line, checked: the day and shard, the users (all, or named), the report."""

    scope: RunScope  # the date and the shard (no hour: the prewarm's is the whole day)
    concurrency: int
    force: bool
    uids: list[str] | None
    uids_file: str | None
    report_path: str | None
    lock_wait: float


def run_prewarm(
    settings: Settings,
    *,
    date: str | None,
    concurrency: int | None,
    force: bool,
    uids_file: str | None,
    report_path: str | None,
    lock_wait: float | None = None,
    shard: str | None = None,
) -> int:
    """The CLI's entry point: the exit code. Bad input raises UsageError (exit 2) before any connection."""
    if report_path:
        check_report_path(report_path)
    options = PrewarmOptions(
        scope=RunScope(parse_date(date, settings.zone), None, parse_shard(shard, settings.shards.count)),
        concurrency=concurrency or settings.prewarm.concurrency,
        force=force,
        uids=read_uids_file(uids_file) if uids_file else None,
        uids_file=uids_file,
        report_path=report_path,
        lock_wait=settings.lock.wait_seconds if lock_wait is None else lock_wait,
    )
    return run_job(PrewarmJob(settings, options))


class PrewarmJob:
    """The prewarm's part of the lifecycle (see `jobs.lifecycle.Job`)."""

    name = JOB
    report_keys: tuple[str, ...] = REPORT_KEYS
    fence: JobLock | None = None  # the date's lock, set by the lifecycle: the markers are fenced by it

    def __init__(self, settings: Settings, options: PrewarmOptions) -> None:
        self.settings, self.options = settings, options
        self.report_path, self.lock_wait, self.scope = options.report_path, options.lock_wait, options.scope
        self.summary = Summary(
            JOB,
            options.scope.date,
            extra={
                "concurrency": options.concurrency,
                "force": options.force,
                "uids_file": options.uids_file,
                "shard": options.scope.shard.label,
            },
        )
        self.fanout: Fanout | None = None

    def connect(self) -> AbstractAsyncContextManager[JobConnections]:
        # one pool for both services: `concurrency` connections to each
        return open_job(self.settings, http_connections=self.options.concurrency * SERVICES_PER_USER)

    def lock(self) -> tuple[str, str]:
        return Keys.lock(JOB, self.scope), self.scope.describe(JOB)

    async def work(self, conns: JobConnections, shutdown: Shutdown) -> str:
        """The fan-out over the day's users, then the completion marker when every user was gone through.
        The day's count and the rows no push hour reaches are read beside it (`_census`), not before."""
        settings, options, scope = self.settings, self.options, self.scope
        query = UserQuery.of(settings, scope, options.uids)
        census = conns.starrocks.twin()  # its own connection, opening now
        plan = FanoutPlan(scope, query, options.concurrency, options.force, settings.prewarm.grace_seconds)
        fanout = self.fanout = Fanout(conns, plan, shutdown, self.fence)
        if settings.prewarm.adaptive:
            fanout.progress.extra = _adaptive(conns.services, options.concurrency)
        try:
            async with runtime.task_group() as tg:
                tg.start_soon(self._census, census, query, fanout)
                try:
                    await fanout.run()
                finally:
                    fanout.progress.close()
        finally:
            census.close()
            self._count(fanout)  # after the census too: its unservable rows are counted in the users
        if fanout.stop_reason == STOP_ERROR and fanout.error is not None:
            raise fanout.error
        status = fanout.stop_reason or ("failures" if fanout.counts.failures else "ok")
        if status in ("ok", "failures") and options.uids is None:
            await conns.store.put_prewarm_done(scope, self._marker(status), self.fence)
        return status

    def _count(self, fanout: Fanout) -> None:
        """The fan-out's counts, failures and named users, and per-service stats, into the summary. Every
        report key is a count (0 when nothing had that outcome): the metrics write each outcome's series."""
        summary = self.summary
        summary.run_counts.merge(fanout.counts)
        summary.counts.update(dict.fromkeys(REPORT_KEYS[1:], 0))
        summary.counts["users"] = sum(summary.counts[k] for k in REPORT_KEYS[1:]) + sum(summary.failures.values())
        services = {name: stats for name, stats in fanout.services.summary().items() if name in ("ab", "rec")}
        gates = _gates(fanout.services)
        for name, gate in gates.items():
            services[name].update({f"adaptive_{k}": v for k, v in gate.snapshot().items()})
        warn_if_starved(gates)
        summary.services = with_old_flow(services, summary.counts["users"] - summary.counts["skipped_existing"])
        summary.extra["hours"] = fanout.hours.report()
        summary.extra["written"] = fanout.writer.written
        summary.extra.update(fanout.feed.report())  # workers idle waiting for the reader (feed.py)
        if fanout.writer.lost:
            summary.extra["not_written"] = fanout.writer.lost

    async def _census(self, census: StarRocks, query: UserQuery, fanout: Fanout) -> None:
        """The day's user count (progress, report, the `prewarm.start` line) and the push-hour check, on
        `census`'s connection while the fan-out runs; a failure stops the fan-out as its own errors do."""
        options = self.options
        try:
            total = self.summary.total = fanout.progress.total = await census.count(query)
            event(
                log,
                "prewarm.start",
                date=self.scope.date,
                shard=self.scope.shard.label,
                users=total,
                concurrency=options.concurrency,
                force=options.force,
                uids_file=options.uids_file or "-",
                adaptive=self.settings.prewarm.adaptive,
            )
            await self._check_hours(census, query)
        except LaterReadError as exc:
            fanout.request_stop(STOP_ERROR, exc)

    async def _check_hours(self, starrocks: StarRocks, query: UserQuery) -> None:
        """Rows with a push_hour outside 0-23: the prewarm (which reads hour by hour) and the push never
        reach them. Count them as unservable, name and alert them (up to BAD_HOUR_ROWS; the alert says
        when there are more). A uid that also has a row with a valid hour is counted here too."""
        rows = await starrocks.query(*query.bad_hours(BAD_HOUR_ROWS + 1))
        if not rows:
            return
        for uid, _ in rows[:BAD_HOUR_ROWS]:
            self.summary.run_counts.done(UNSERVABLE, str(uid), "push_hour_out_of_range")
        self.summary.extra["push_hour_out_of_range"] = len(rows[:BAD_HOUR_ROWS])
        alert(
            log,
            "prewarm.unservable_rows",
            date=self.scope.date,
            reason="push_hour_out_of_range",
            rows=len(rows) if len(rows) <= BAD_HOUR_ROWS else f"more than {BAD_HOUR_ROWS}",
            first_uid=str(rows[0][0]),
            push_hour=rows[0][1],
            fix="fix push_hour (0-23) in StarRocks; no prewarm or push reaches these users",
        )

    def _marker(self, status: str) -> dict:
        """The completion marker: the report as it will be once the run is concluded, minus services."""
        self.summary.finish(status)
        data = self.summary.report(REPORT_KEYS)
        data.pop("services", None)
        data.pop("hours", None)  # per-hour readiness has its own markers
        return data

    def stop_error(self) -> LaterReadError | None:
        """The breaker's ServiceDown when a service tripped it: the run's last line names it."""
        error = self.fanout.error if self.fanout is not None else None
        if self.summary.status == STOP_SERVICE_DOWN and isinstance(error, LaterReadError):
            return error
        return None

    def alert(self, error: BaseException | None) -> None:
        """One line per run: an alert when a person must act, an INFO `prewarm.done` otherwise."""
        summary, fanout = self.summary, self.fanout
        counts, date = summary.counts, summary.date
        done = counts["cached"] + counts["not_in_experiment"] + counts["no_recommendation"]
        if summary.status == STOP_SERVICE_DOWN and fanout is not None:
            alert(
                log,
                "prewarm.service_down",
                date=date,
                service=fanout.tripped_service(),
                done=done,
                unfinished=counts["unfinished"],
                error=fanout.error,
                fix="check the service, then rerun the prewarm (finished users are skipped)",
            )
        elif summary.status == STOP_INTERRUPTED:
            alert(
                log,
                "prewarm.interrupted",
                date=date,
                signal=_signal_name(fanout),
                done=done,
                unfinished=counts["unfinished"],
                fix="rerun the prewarm (finished users are skipped)",
            )
        elif summary.status == STOP_ERROR:
            alert(
                log,
                "prewarm.error",
                date=date,
                done=done,
                error=error,
                fix="fix the dependency named in the error, then rerun the prewarm",
            )
        elif summary.status == "lock_lost":
            pass  # its `lock.lost` line and the error line say it all
        elif summary.status == "failures":
            alert(
                log,
                "prewarm.failed_users",
                date=date,
                failed=sum(summary.failures.values()),
                reasons=",".join(f"{k}:{v}" for k, v in sorted(summary.failures.items())),
                uids_file=summary.uids_path or "-",
                fix="rerun the prewarm (only users not done are retried; --uids-file UIDS_FILE for just them)",
            )
        else:
            event(
                log,
                "prewarm.done",
                logging.INFO,
                date=date,
                users=counts["users"],
                done=done,
                skipped_existing=counts["skipped_existing"],
                duration_seconds=summary.duration_seconds,
            )
        self._alert_unservable()

    def _alert_unservable(self) -> None:
        summary = self.summary
        reasons = {r: len(u) for r, u in summary.named.items() if r.startswith("uid_") and u}
        if not reasons:  # rows with a bad push_hour had their own alert (prewarm.unservable_rows)
            return
        alert(
            log,
            "prewarm.unservable",
            date=summary.date,
            count=sum(reasons.values()),
            reasons=",".join(f"{k}:{v}" for k, v in sorted(reasons.items())),
            first_uid=summary.named[min(reasons)][0],
            fix="fix source_uid in StarRocks (empty or longer than 1024 bytes); no job can serve them",
        )


def _adaptive(services: Services, concurrency: int) -> Callable[[], dict[str, object]]:
    """Adaptive concurrency for A/B and recommend, `concurrency` as the upper bound; returns the progress
    lines' extra fields (each service's calls in flight and limit)."""
    for client in (services.ab, services.rec):
        client.caller.gate = AdaptiveGate(AdaptiveLimit(max_limit=concurrency))
    gates = _gates(services)
    return lambda: {
        f"{name}_{key}": value
        for name, gate in gates.items()
        for key, value in (("inflight", gate.in_flight), ("limit", gate.limiter.current))
    }


def warn_if_starved(gates: dict[str, AdaptiveGate]) -> None:
    """A warning per service whose adaptive limit saw the job's loop stall about once a second: the
    host took the job's CPU, which the limit cannot tell from a slower service, so it held fewer calls
    than the service could take (the report's `adaptive_stalls` and `adaptive_mean_in_flight` say how
    many)."""
    for name, gate in gates.items():
        stalls, seconds = gate.limiter.stalls, gate.elapsed()
        if stalls >= max(STARVED_MIN_STALLS, STARVED_STALLS_PER_SECOND * seconds):
            event(
                log,
                "prewarm.adaptive_starved",
                logging.WARNING,
                service=name,
                stalls=stalls,
                seconds=round(seconds, 1),
                mean_in_flight=round(gate.mean_in_flight(), 1),
                fix="the host took this job's CPU; the adaptive limit reads that as a slower service and "
                "holds fewer calls than it can take: give the job CPU of its own or set [prewarm] "
                "adaptive = false",
            )


def _gates(services: Services) -> dict[str, AdaptiveGate]:
    return {
        name: client.caller.gate
        for name, client in (("ab", services.ab), ("rec", services.rec))
        if client.caller.gate is not None
    }


def _signal_name(fanout: Fanout | None) -> str:
    return (fanout.shutdown.signal_name or "?") if fanout is not None else "?"
