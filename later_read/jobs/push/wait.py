"""The push's wait for the prewarm: hour H needs only hour H's readiness marker (or the day's marker).

The prewarm goes through the day hour by hour and marks each push hour ready as soon as its users are
stored (`later_read:prewarm:ready:{<date>}:<HH>`, jobs/prewarm/hours.py), so the 00:00 push started
before the 00:01 prewarm waits for hour 0 only, seconds instead of the whole day. While it waits it
polls Redis every POLL_SECONDS (one MGET of the 24 hour markers and the day's marker) and writes a
`push.waiting_for_prewarm` line every PROGRESS_SECONDS with how long it has waited and how many hours
are ready, so a person reading the log sees it is alive. The wait is `push --wait SECONDS` (default
`[push] wait_for_prewarm_seconds`); past it, one alert line and the push goes on with what is cached.
"""

from __future__ import annotations

import anyio

from later_read.connections import PushConnections
from later_read.core.scope import RunScope
from later_read.log import alert, event, get_logger
from later_read.runtime import Shutdown

POLL_SECONDS = 1.0  # an hour's marker is seen within a second of being written
PROGRESS_SECONDS = 5.0  # one line every 5 s while waiting: alive, without flooding the log

log = get_logger("push")


async def wait_for_prewarm(
    conns: PushConnections, scope: RunScope, wait_seconds: float, shutdown: Shutdown
) -> dict | None:
    """The marker that lets the scope's hour go (the hour's, else the day's), waiting up to `wait_seconds`.
    With the scope sharded the prewarm ran as its split's shards: an hour (a day) is ready when every
    shard's marker for it is there (or the unsharded one).

    None when neither appeared in time (alerted): whatever the prewarm wrote is still pushed, and every
    user it did not reach is counted (and alerted) as a miss.
    """
    date, hour = scope.date, scope.hour
    started = anyio.current_time()
    marker, ready = await _poll(conns, scope)
    last_line = started - PROGRESS_SECONDS
    while marker is None and not shutdown.stopping and anyio.current_time() - started < wait_seconds:
        now = anyio.current_time()
        if now - last_line >= PROGRESS_SECONDS:
            event(
                log,
                "push.waiting_for_prewarm",
                date=date,
                hour=hour,
                waited_seconds=round(now - started, 1),
                wait_seconds=wait_seconds,
                hours_ready=ready,
            )
            last_line = now
        with anyio.move_on_after(min(POLL_SECONDS, max(wait_seconds - (now - started), 0))):
            await shutdown.requested.wait()
        marker, ready = await _poll(conns, scope)
    waited = round(anyio.current_time() - started, 1)
    if marker is None and not shutdown.stopping:
        alert(
            log,
            "push.prewarm_unfinished",
            date=date,
            hour=hour,
            waited_seconds=waited,
            hours_ready=ready,
            fix="check the prewarm's log and rerun `later-read prewarm`; pushing what is cached",
        )
    elif marker is not None:
        event(log, "push.prewarm_ready", date=date, hour=hour, marker=marker["_which"], waited_seconds=waited)
    return marker


async def _poll(conns: PushConnections, scope: RunScope) -> tuple[dict | None, int]:
    assert conns.store is not None
    hour_marker, day_marker, ready = await conns.store.get_prewarm_ready(scope)
    if hour_marker is not None:
        return {**hour_marker, "_which": "hour"}, ready
    if day_marker is not None:
        return {**day_marker, "_which": "day"}, ready
    return None, ready
