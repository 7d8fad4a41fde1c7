"""One lifecycle for the prewarm and the push: signals, connections, lock, work, then the conclusion.

    sys.exit(run_job(PrewarmJob(settings, options)))

`run_job` owns the run the way arq's `Worker` does: it pings `[monitor] <job>_ping_url`'s `/start`
(`monitor.Pings`, in the background), watches SIGTERM/SIGINT for the whole run (`Shutdown`), opens the
job's typed connections, takes the job's lock (waiting `lock_wait` seconds for a holder, `JobLock`) and
refreshes it in its own task group, hands it to the job as its `fence` (its fenced writes, lock.py), awaits
`job.work` under the lock's guard (a lost lock cancels the work: LockLost, exit 8), then concludes once:
the summary on stderr, `--report` (redacted), metrics, the job's alert line, the closing ping (success, or
`/fail` with the exit code: it never changes it), then the one-line error, always the run's last line,
and the exit code.
The work raises its errors plainly; they are caught here, never inside a task group of the lock.

A job is any object with the attributes and methods of `Job` below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import anyio
import click
from anyio.abc import TaskGroup

from later_read import runtime
from later_read.config.settings import Settings
from later_read.core.scope import RunScope
from later_read.errors import (
    EXIT_EXPIRED,
    EXIT_FAILURES,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVICE_DOWN,
    INTERNAL_ERROR_LINE,
    Interrupted,
    LaterReadError,
    LockLost,
    ServiceDown,
    error_line,
    traceback_text,
)
from later_read.jobs.monitor import Pings
from later_read.jobs.progress import write_report
from later_read.jobs.summary import Summary
from later_read.log import alert, get_logger, summary as log_summary
from later_read.redact import redact_data
from later_read.runtime import Shutdown
from later_read.store.lock import JobLock

log = get_logger("lifecycle")

STATUS_EXIT = {
    "ok": EXIT_OK,
    "failures": EXIT_FAILURES,
    "service_down": EXIT_SERVICE_DOWN,
    "interrupted": EXIT_INTERRUPTED,
    "expired": EXIT_EXPIRED,
}
_ERROR_STATUS: dict[type[BaseException], str] = {  # else "error"
    ServiceDown: "service_down",
    Interrupted: "interrupted",
    LockLost: "lock_lost",
}


class Job(Protocol):
    name: str  # "prewarm" or "push": log names, metric names
    settings: Settings
    summary: Summary
    report_keys: tuple[str, ...]  # the report's counters
    report_path: str | None
    lock_wait: float  # seconds to wait for a held lock; 0 = fail at once
    scope: RunScope  # the date (and hour) and the shard of users this run works on
    fence: JobLock | None  # set by the lifecycle: the lock it holds for the run (None: no lock)

    def connect(self) -> AbstractAsyncContextManager[Any]:
        """The job's typed connections (an object with a `store`)."""

    def lock(self) -> tuple[str, str] | None:
        """(Redis key, "<job> run for <date>[ hour <h>]") of the job's lock, or None for no lock."""

    async def work(self, conns: Any, shutdown: Shutdown) -> str:
        """Do the job, filling `summary`; the status: ok, failures, expired, service_down or interrupted."""

    def alert(self, error: BaseException | None) -> None:
        """The run's one closing line: an alert when a person must act, else an INFO `<job>.done`."""

    def stop_error(self) -> LaterReadError | None:
        """The error that stopped `work` early without raising (the prewarm's tripped breaker), else None."""


def run_job(job: Job) -> int:
    """Run `job` on a fresh event loop; the process's exit code (the error line already printed)."""
    return runtime.run(_run, job)


async def _run(job: Job) -> int:
    shutdown = Shutdown()
    pings = Pings.begin(job.name, getattr(job.settings.monitor, f"{job.name}_ping_url", ""), job.settings.monitor)
    async with anyio.create_task_group() as tg:
        await tg.start(shutdown.watch)
        code, stopped = await _lifecycle(job, shutdown, tg)
        await pings.end(code, _last_line(job, code, stopped))
        if stopped is not None:
            say_error(stopped)  # the run's last line, after any ping warning
        tg.cancel_scope.cancel()
    return code


async def _lifecycle(job: Job, shutdown: Shutdown, tg: TaskGroup) -> tuple[int, BaseException | None]:
    """Connections, lock, work; every failure is concluded here, once. The exit code, and the error that
    stopped the run (raised, or the job's `stop_error`) for the last line."""
    started = False
    try:
        async with job.connect() as conns, _locked(job, conns, shutdown, tg):
            started = True
            status = await job.work(conns, shutdown)
    except Exception as error:  # noqa: BLE001 - concluded below: report, metrics, one line, exit code
        job.summary.finish(_ERROR_STATUS.get(type(error), "error"))
        return _conclude(job, started, error), error
    job.summary.finish(status)
    return _conclude(job, started, None), job.stop_error()


@asynccontextmanager
async def _locked(job: Job, conns: Any, shutdown: Shutdown, tg: TaskGroup) -> AsyncIterator[None]:
    """Hold the job's lock around the block (cancelled, LockLost, once it is lost); its refresh runs in
    the lifecycle's task group; the job gets it as its `fence`."""
    spec = job.lock()
    if spec is None:
        yield
        return
    key, what = spec
    settings = dataclasses.replace(job.settings.lock, wait_seconds=job.lock_wait)
    lock = JobLock(conns.store.client, key, what, settings)
    await lock.acquire(shutdown.requested)
    lock.refresh_in(tg)
    job.fence = lock
    try:
        with lock.guard():
            yield
    finally:
        await lock.release()


def _conclude(job: Job, started: bool, error: BaseException | None) -> int:
    """Summary lines, --report (redacted), metrics, the alert line; the exit code. The error line comes
    last, from `_run`."""
    summary = job.summary
    code = exit_code(summary.status, error)
    summary.save_uids(job.report_path)
    if started and (error is None or summary.counts["users"]):
        for line in summary.lines(job.report_keys):
            log_summary(log, line)
    if job.report_path:
        data = summary.report(job.report_keys)
        data["exit_code"] = code
        try:
            write_report(job.report_path, redact_data(data))
        except OSError as exc:
            alert(log, f"{job.name}.report_failed", path=job.report_path, error=exc.strerror)
    if job.settings.metrics.enabled:  # prometheus_client: imported at the end, and only then
        from later_read.jobs.metrics import record_job

        record_job(job.settings, job.name, summary, job.scope.shard)  # metrics: never raises
    if started:
        job.alert(error)
    return code


def _last_line(job: Job, code: int, stopped: BaseException | None) -> str:
    """The run's last line for the closing ping: its error line, else its summary line."""
    if stopped is not None:
        return error_line(stopped) if isinstance(stopped, LaterReadError) else INTERNAL_ERROR_LINE
    return next(iter(job.summary.lines(job.report_keys)), f"{job.name} exited {code}")


def exit_code(status: str, error: BaseException | None) -> int:
    if error is None:
        return STATUS_EXIT[status]
    return error.exit_code if isinstance(error, LaterReadError) else EXIT_INTERNAL


def say_error(error: BaseException) -> None:
    """The CLI's last line for an error: one line for the project's errors, the traceback for a bug."""
    if isinstance(error, LaterReadError):
        click.echo(error_line(error), err=True)
    else:
        click.echo(traceback_text(error), err=True, nl=False)
        click.echo(INTERNAL_ERROR_LINE, err=True)
