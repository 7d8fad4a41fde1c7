"""The hours one push run handles: its own, and in a scheduled run (`later-read push` without --date or
--hour) the earlier ones the schedule says are its business (later_read/core/schedule.py, `Schedule.plan`).

    plan      this shard's ledger of the last LEDGER_DAYS dates (one MGET) -> hours to expire, hours to
              catch up, whether the own hour is already done
    expire    each not-done hour whose window closed: its lock (not waited for: a live holder counts what it
              leaves expired itself), a dead run's deliveries marked from the topic, its users read and
              sorted without sending (hour.py `expire_hour`), the ledger entry `expired` (final), one
              `push.hour_expired` alert line
    catch up  each earlier not-done hour whose window is open, oldest first: its own lock (waited for like
              the own hour's), then the push's one path for an hour (hour.py), one `push.caught_up` line
    own hour  unless final: done (a retry, the second pass of a doubled local hour) or expired (a retry of
              a run its window closed on); the lifecycle holds its lock

Each handled hour returns a status (ok, failures, expired); the run's is the worst (job.py). An explicit
run (`--date` or `--hour`) handles exactly its hour: `run_hour`. Every hour's writes are fenced by that
hour's lock: the own hour's is the lifecycle's (`ctx.fence`), an earlier hour's the one `holding` took.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from later_read.core import ledger
from later_read.core.schedule import FINAL, Hour, Plan
from later_read.errors import LockHeld
from later_read.jobs.push.hour import JOB, PushContext, expire_hour, push_hour
from later_read.log import alert, event, get_logger
from later_read.store.keys import LEDGER_DAYS, Keys
from later_read.store.lock import JobLock, holding

log = get_logger("push")


async def run_scheduled(ctx: PushContext) -> list[str]:
    """Expire, catch up, then the own hour, as `plan` says; the status of each hour handled."""
    plan = await make_plan(ctx)
    statuses: list[str] = []
    for hour in plan.expire:
        if ctx.shutdown.stopping:
            return statuses
        statuses.append(await expire(ctx, hour, locked=hour == plan.own))
    for hour in plan.catch_up:
        if ctx.shutdown.stopping:
            return statuses
        statuses.append(await catch_up(ctx, hour))
    if plan.own in plan.expire or ctx.shutdown.stopping:
        return statuses
    if plan.own_final is not None:  # push.hour_already_done / push.hour_already_expired
        event(
            log,
            f"push.hour_already_{plan.own_final}",
            date=plan.own.date,
            hour=plan.own.hour,
            note=f"the ledger says {plan.own_final}: nothing to send",
        )
        _record(ctx, plan.own, {"state": plan.own_final, "already": True}, False)
        return statuses
    return [*statuses, await run_hour(ctx, plan.own)]


async def shard_ledger(ctx: PushContext, now: dt.datetime) -> dict[Hour, dict | None]:
    """This shard's ledger over its memory (LEDGER_DAYS dates up to `now`'s), one MGET."""
    today = ctx.schedule.local(now).date()
    dates = [(today - dt.timedelta(days=back)).strftime("%Y%m%d") for back in range(LEDGER_DAYS)]
    scope = ctx.options.scope
    found = await ctx.conns.store.get_ledger(scope.at(Hour(d, h)) for d in dates for h in range(24))
    return {run.slot: entry for run, entry in found.items()}


async def make_plan(ctx: PushContext) -> Plan:
    """The plan at the clock's now, from this shard's ledger over its memory (LEDGER_DAYS dates)."""
    now = ctx.clock.now()
    entries = await shard_ledger(ctx, now)
    plan = ctx.schedule.plan(
        now,
        {h: ledger.state_of(e) for h, e in entries.items() if e is not None},
        ledger.tracked_since(entries, ctx.schedule),
    )
    if plan.expire or plan.catch_up:
        event(
            log,
            "push.plan",
            date=plan.own.date,
            hour=plan.own.hour,
            expire=_hours(plan.expire),
            catch_up=_hours(plan.catch_up),
            dry_run=ctx.options.dry_run,
        )
    return plan


async def run_hour(ctx: PushContext, hour: Hour, caught_up: bool = False, fence: Any = None) -> str:
    """Push one hour (hour.py) under its lock `fence` (default: the own hour's), record it in the summary,
    say so; its status."""
    entry = await push_hour(ctx, hour, caught_up, fence if fence is not None else ctx.fence)
    _record(ctx, hour, entry, caught_up)
    late = (entry or {}).get("late_minutes")
    if isinstance(late, (int, float)):  # the metrics' later_read_push_late_minutes: the latest start of the run
        ctx.summary.extra["late_minutes"] = max(ctx.summary.extra.get("late_minutes", 0), late)
    if entry is not None and entry["state"] == ledger.EXPIRED and entry["expired"]:
        alert(
            log,
            "push.hour_expired",
            date=hour.date,
            hour=hour.hour,
            users=entry["expired"],
            sent=entry["sent"],
            window_closed_at=_closed_at(ctx, hour),
            **_shard(ctx),
            note="the hour's window closed while this run was sending; the rest is never sent",
        )
    if caught_up:
        event(
            log,
            "push.caught_up",
            date=hour.date,
            hour=hour.hour,
            minutes_late=(entry or {}).get("late_minutes", ctx.schedule.late_minutes(hour, ctx.clock.now())),
            users=(entry or {}).get("users", "-"),
            sent=(entry or {}).get("sent", "-"),
            state=(entry or {}).get("state", "dry_run"),
            **_shard(ctx),
        )
    if ctx.options.dry_run or entry is None:
        return "ok"
    if entry["state"] == ledger.EXPIRED and entry["expired"]:
        return "expired"
    return "failures" if entry["failed"] else "ok"


async def catch_up(ctx: PushContext, hour: Hour) -> str:
    """An earlier hour whose window is open: under its own lock, unless another run holds it throughout
    the wait (then that run is doing it) or finished it meanwhile."""
    if ctx.options.dry_run:
        return await run_hour(ctx, hour, caught_up=True)
    try:
        async with holding(_lock(ctx, hour, ctx.options.lock_wait), ctx.shutdown.requested) as lock:
            _, entry = await ctx.conns.store.get_push_run(ctx.options.scope.at(hour))
            if ledger.state_of(entry) in FINAL:
                return "ok"
            return await run_hour(ctx, hour, caught_up=True, fence=lock)
    except LockHeld as held:
        event(log, "push.catch_up_skipped", date=hour.date, hour=hour.hour, reason=str(held))
        return "ok"


async def expire(ctx: PushContext, hour: Hour, locked: bool = False) -> str:
    """An hour whose window closed before it was done: counted expired, never sent. `locked`: the run
    already holds the hour's lock (its own hour)."""
    if ctx.options.dry_run:
        event(log, "push.would_expire", date=hour.date, hour=hour.hour, window_closed_at=_closed_at(ctx, hour))
        _record(ctx, hour, None, False)
        return "ok"
    try:
        if locked:
            entry = await expire_hour(ctx, hour, ctx.fence)
        else:
            async with holding(_lock(ctx, hour, 0), ctx.shutdown.requested) as lock:
                entry = await expire_hour(ctx, hour, lock)
    except LockHeld as held:
        event(log, "push.expire_skipped", date=hour.date, hour=hour.hour, reason=str(held))
        return "ok"
    if entry is None:
        return "ok"
    _record(ctx, hour, entry, False)
    fields = dict(
        date=hour.date,
        hour=hour.hour,
        users=entry["expired"],
        hour_users=entry["users"],
        window_closed_at=_closed_at(ctx, hour),
        **_shard(ctx),
    )
    if not entry["expired"]:
        event(log, "push.hour_expired", **fields, note="nobody with a message to send was left unsent")
        return "ok"
    alert(
        log,
        "push.hour_expired",
        **fields,
        fix=f"its users are not sent (too late); find why its runs did not happen (`later-read day --date "
        f"{hour.date}`); to send anyway: later-read push --date {hour.date} --hour {hour.hour} --allow-late",
    )
    return "expired"


def _lock(ctx: PushContext, hour: Hour, wait: float) -> JobLock:
    scope = ctx.options.scope.at(hour)
    return JobLock(
        ctx.conns.store.client,
        Keys.lock(JOB, scope),
        scope.describe(JOB),
        dataclasses.replace(ctx.settings.lock, wait_seconds=wait),
    )


def _record(ctx: PushContext, hour: Hour, entry: dict | None, caught_up: bool) -> None:
    """The hour in the run's report (`hours`): what happened to it, in the ledger's words."""
    shown = {
        k: entry[k]
        for k in ("state", "users", "sent", "recovered", "already_sent", "failed", "expired", "late_minutes", "already")
        if entry is not None and k in entry
    }
    ctx.summary.extra.setdefault("hours", []).append(
        {
            "date": hour.date,
            "hour": hour.hour,
            "caught_up": caught_up,
            **(shown or {"state": "dry_run" if ctx.options.dry_run else ledger.PENDING}),
        }
    )


def _closed_at(ctx: PushContext, hour: Hour) -> str:
    return ctx.schedule.iso(ctx.schedule.window_end(hour))


def _shard(ctx: PushContext) -> dict:
    shard = ctx.options.scope.shard
    return {"shard": shard.label} if shard.sharded else {}


def _hours(hours: list[Hour]) -> str:
    return ",".join(f"{h.date}:{h.hour:02d}" for h in hours) or "-"
