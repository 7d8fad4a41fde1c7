"""`later-read prewarm`: compute every user's recommendation for a day and store it in Redis.

This module is the job's frame: check the inputs (exit 2 before anything is touched), open the
connections, take the date's lock, run the fan-out (`fanout`), then conclude: the completion
marker, the summary on stderr, `--report`, metrics, one alert line when something needs a person, and
the exit code.

Decisions (docs/design.md has the keys and codes):
- The completion marker `later_read:prewarm:done:<date>` (the run's report minus per-service stats) is
  written only when the run went through every user of the day: status `ok` (exit 0) or `failures`
  (exit 1, the failed users counted in the marker). Never when interrupted, stopped by a down service or
  by an error, and never by a `--uids-file` run, which covers only some users.
- Rerun-safe: a user is skipped when its value parses and its `date` is the run's date (`--force`
  recomputes everyone); a corrupt value or another date's value is recomputed.
- After a kill -9 the lock expires within `constants.LOCK_TTL_SECONDS` (60 s); deleting the lock key
  by hand is the documented shortcut.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import click

from later_read import runtime
from later_read.config import Settings
from later_read.connections import Connections, open_connections
from later_read.errors import (EXIT_FAILURES, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_SERVICE_DOWN,
                               LaterReadError)
from later_read.inputs import parse_date, read_uids_file
from later_read.jobs.prewarm.fanout import (STOP_ERROR, STOP_INTERRUPTED, STOP_SERVICE_DOWN, Fanout,
                                            FanoutPlan)
from later_read.jobs.progress import Progress, check_report_path, write_report
from later_read.summary import Summary
from later_read.log import alert, event, get_logger
from later_read.metrics import record_job
from later_read.runtime import Shutdown
from later_read.users import UserQuery, task_ids_for

JOB = "prewarm"
# The report's counters. `users` = the users this run looked at, each counted once in exactly one of
# the other five or in `failed`; users still queued when a stop came are not counted (the rerun does them).
REPORT_KEYS = ("users", "cached", "not_in_experiment", "no_recommendation", "skipped_existing",
               "unfinished")
_OUTCOME_COUNT = {"rec": "cached", "not_in_experiment": "not_in_experiment",
                  "no_recommendation": "no_recommendation"}
_EXIT = {"ok": EXIT_OK, "failures": EXIT_FAILURES, STOP_SERVICE_DOWN: EXIT_SERVICE_DOWN,
         STOP_INTERRUPTED: EXIT_INTERRUPTED}

log = get_logger(JOB)


@dataclass(frozen=True)
class PrewarmOptions:
    date: str
    concurrency: int
    force: bool
    uids: list[str] | None
    uids_file: str | None
    report_path: str | None


def run_prewarm(settings: Settings, *, date: str | None, concurrency: int | None, force: bool,
                uids_file: str | None, report_path: str | None) -> int:
    """The CLI's entry point: the exit code. Bad input raises UsageError (exit 2) before any connection."""
    if report_path:
        check_report_path(report_path)
    options = PrewarmOptions(
        date=parse_date(date, settings.zone),
        concurrency=concurrency or settings.prewarm.concurrency,
        force=force,
        uids=read_uids_file(uids_file) if uids_file else None,
        uids_file=uids_file,
        report_path=report_path)
    return runtime.run(_main, settings, options)


async def _main(settings: Settings, options: PrewarmOptions) -> int:
    """Watch signals for the whole run; errors are re-raised outside the task group, unwrapped."""
    shutdown = Shutdown()
    result: int | Exception
    async with anyio.create_task_group() as tg:
        await tg.start(shutdown.watch)
        try:
            result = await _prewarm(settings, options, shutdown)
        except Exception as exc:  # noqa: BLE001 - re-raised below, so the CLI maps it to its exit code
            result = exc
        tg.cancel_scope.cancel()
    if isinstance(result, Exception):
        raise result
    return result


async def _prewarm(settings: Settings, options: PrewarmOptions, shutdown: Shutdown) -> int:
    summary = Summary(JOB, options.date, extra={
        "concurrency": options.concurrency, "force": options.force, "uids_file": options.uids_file})
    async with open_connections(settings, redis=True, starrocks=True, services=True,
                                http_connections=options.concurrency) as conns:
        assert conns.store is not None
        async with conns.store.lock(JOB, options.date):
            # Nothing may raise in here: the lock's task group would wrap it in an ExceptionGroup.
            fanout, error = await _run_locked(conns, options, shutdown, summary)
    return _conclude(settings, options, summary, fanout, error)


async def _run_locked(conns: Connections, options: PrewarmOptions, shutdown: Shutdown,
                      summary: Summary) -> tuple[Fanout | None, Exception | None]:
    """Run the fan-out and write the completion marker; returns the fatal error instead of raising it."""
    settings = conns.settings
    query = UserQuery(settings.starrocks.table, task_ids_for(settings.tasks.ids, options.date),
                      uids=options.uids)
    fanout: Fanout | None = None
    try:
        assert conns.starrocks is not None and conns.store is not None
        total = await conns.starrocks.count(query)
        plan = FanoutPlan(options.date, query, options.concurrency, options.force,
                          settings.prewarm.grace_seconds)
        fanout = Fanout(conns, plan, shutdown,
                        Progress(JOB, settings.prewarm.progress_interval_seconds, total))
        event(log, "prewarm.start", date=options.date, users=total, concurrency=options.concurrency,
              force=options.force, uids_file=options.uids_file or "-")
        try:
            await fanout.run()
        finally:
            fanout.progress.close()
        _fill_summary(summary, fanout)
        if summary.status in ("ok", "failures") and options.uids is None:
            await conns.store.put_prewarm_done(options.date, _marker(summary))
    except Exception as exc:  # noqa: BLE001 - concluded (summary, alert) and re-raised by the caller
        if fanout is not None and summary.finished_at is None:
            _fill_summary(summary, fanout)
        summary.finish(STOP_ERROR)
        return fanout, exc
    return fanout, fanout.error


def _fill_summary(summary: Summary, fanout: Fanout) -> None:
    """Counts, failures and per-service stats of the run; the status from why it stopped."""
    counts = fanout.counts
    for outcome, key in _OUTCOME_COUNT.items():
        summary.counts[key] = counts.get(outcome, 0)
    summary.counts["skipped_existing"] = counts.get("skipped_existing", 0)
    summary.counts["unfinished"] = counts.get("unfinished", 0)
    summary.failures.update(fanout.failures)
    summary.counts["users"] = sum(summary.counts[k] for k in REPORT_KEYS[1:]) + sum(fanout.failures.values())
    summary.services = {name: stats for name, stats in fanout.services.summary().items()
                        if name in ("ab", "rec")}
    summary.extra["written"] = fanout.writer.written
    if fanout.writer.lost:
        summary.extra["not_written"] = fanout.writer.lost
    status = fanout.stop_reason or ("failures" if fanout.failures else "ok")
    summary.finish(status)


def _marker(summary: Summary) -> dict:
    data = summary.report(REPORT_KEYS)
    data.pop("services", None)
    return data


def _conclude(settings: Settings, options: PrewarmOptions, summary: Summary, fanout: Fanout | None,
              error: Exception | None) -> int:
    """Summary on stderr, --report, metrics, the alert line; the exit code (or the fatal error raised)."""
    for line in summary.lines(REPORT_KEYS):
        click.echo(line, err=True)
    if summary.status == STOP_ERROR:
        code = error.exit_code if isinstance(error, LaterReadError) else EXIT_INTERNAL
    else:
        code = _EXIT[summary.status]
    data = summary.report(REPORT_KEYS)
    data["exit_code"] = code
    if options.report_path:
        try:
            write_report(options.report_path, data)
        except OSError as exc:
            alert(log, "prewarm.report_failed", path=options.report_path, error=exc.strerror)
    record_job(settings, JOB, summary)  # metrics: never raises
    _alert(summary, fanout, error)
    if summary.status == STOP_ERROR and error is not None:
        raise error
    return code


def _alert(summary: Summary, fanout: Fanout | None, error: Exception | None) -> None:
    """One line per run: an alert when a person must act, an INFO `prewarm.done` otherwise."""
    counts, date = summary.counts, summary.date
    done = counts["cached"] + counts["not_in_experiment"] + counts["no_recommendation"]
    if summary.status == STOP_SERVICE_DOWN and fanout is not None:
        alert(log, "prewarm.service_down", date=date, service=fanout.tripped_service(), done=done,
              unfinished=counts["unfinished"], error=fanout.error,
              fix="check the service, then rerun the prewarm (finished users are skipped)")
    elif summary.status == STOP_INTERRUPTED:
        alert(log, "prewarm.interrupted", date=date, signal=_signal_name(fanout), done=done,
              unfinished=counts["unfinished"], fix="rerun the prewarm (finished users are skipped)")
    elif summary.status == STOP_ERROR:
        alert(log, "prewarm.error", date=date, done=done, error=error,
              fix="fix the dependency named in the error, then rerun the prewarm")
    elif summary.status == "failures":
        alert(log, "prewarm.failed_users", date=date, failed=sum(summary.failures.values()),
              reasons=",".join(f"{k}:{v}" for k, v in sorted(summary.failures.items())),
              fix="rerun the prewarm (only users not done are retried)")
    else:
        event(log, "prewarm.done", logging.INFO, date=date, users=counts["users"], done=done,
              skipped_existing=counts["skipped_existing"], duration_seconds=summary.duration_seconds)


def _signal_name(fanout: Fanout | None) -> str:
    return (fanout.shutdown.signal_name or "?") if fanout is not None else "?"
