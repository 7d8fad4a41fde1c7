"""Hour-first prewarm bookkeeping: which push hours are done, and their readiness markers.

The prewarm reads the day hour by hour (0, 1, ... 23), each user under its earliest push hour, so the
push of hour H can start as soon as hour H's users are stored instead of waiting for the whole day
(docs/design.md, "Hour-first prewarm"). `HourTracker` counts, per hour, the users sent to the workers and
not yet settled (their value written to Redis, or failed); hour H is *ready* when its pages are all read,
none of its users is pending, and every hour before it is ready (hour H's push also reads users handled
under an earlier hour). Each ready hour gets `later_read:prewarm:ready:{<date>}:<HH>` (JSON: users,
failed, skipped, seconds since the run started), written by `run()`, the tracker's task, in hour order.

A user that failed still settles its hour (the push counts it as a miss, or computes it with
`--on-miss live`); a user left unfinished by a stop does not, so a stopped run marks no hour it did not
finish. A `--uids-file` run covers only some users and writes no marker (`enabled=False`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from later_read.core.scope import RunScope
from later_read.errors import LaterReadError
from later_read.log import event, get_logger
from later_read.store import Store

HOURS = tuple(range(24))

log = get_logger("prewarm")


class HourTracker:
    def __init__(
        self,
        store: Store,
        scope: RunScope,
        enabled: bool,
        on_error: Callable[[LaterReadError], None],
        fence: Any = None,
    ) -> None:
        # the prewarm's date and shard: each shard marks its own hours
        self.store, self.scope, self.enabled, self.on_error = store, scope, enabled, on_error
        self.fence = fence  # the prewarm's lock: a marker is written only while the run holds it
        self.pending = [0] * 24
        self.users = [0] * 24  # users sent to the workers, per hour
        self.skipped = [0] * 24  # users already done before this run (rerun), per hour
        self.failed = [0] * 24
        self.ready_seconds: dict[int, float] = {}
        self.next_hour = 0  # the first hour not ready yet
        self._closed: set[int] = set()
        self._to_write: list[int] = []
        self._wake = anyio.Event()
        self._finished = False
        self._started = time.monotonic()

    # Fed by the reader, the recorder (a failed user) and the writer ---------------------------------
    def sent(self, hour: int, count: int, skipped: int) -> None:
        self.pending[hour] += count
        self.users[hour] += count
        self.skipped[hour] += skipped

    def close(self, hour: int) -> None:
        """Every page of `hour` has been read and handed on."""
        self._closed.add(hour)
        self._advance()

    def settled(self, hour: int, failed: bool = False) -> None:
        self.pending[hour] -= 1
        if failed:
            self.failed[hour] += 1
        if not self.pending[hour] and hour == self.next_hour:
            self._advance()

    def user_failed(self, hour: int) -> None:
        """The recorder's callback (core/counts.py `RunCounts.failed`): a user of `hour` failed."""
        self.settled(hour, failed=True)

    def written(self, items: list[tuple[str, bytes, int]]) -> None:
        """The writer's callback: these users' values are in Redis."""
        for _, _, hour in items:
            self.settled(hour)

    def _advance(self) -> None:
        while self.next_hour < 24 and self.next_hour in self._closed and not self.pending[self.next_hour]:
            self.ready_seconds[self.next_hour] = round(time.monotonic() - self._started, 3)
            self._to_write.append(self.next_hour)
            self.next_hour += 1
        if self._to_write:
            self._wake.set()

    # The marker task -------------------------------------------------------------------------------
    def finish(self) -> None:
        """No more results will come: `run()` writes what is due and returns."""
        self._finished = True
        self._wake.set()

    async def run(self) -> None:
        """Write each hour's marker as it becomes ready; a Redis failure goes to `on_error` and ends it."""
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                hours, self._to_write = self._to_write, []
                for hour in hours:
                    await self._mark(hour)
                if self._finished and not self._to_write:
                    return
        except LaterReadError as exc:
            self.on_error(exc)

    async def _mark(self, hour: int) -> None:
        info = self.hour_info(hour)
        if self.enabled:
            await self.store.put_prewarm_ready(
                self.scope, hour, {"date": self.scope.date, "hour": hour, **info, "at": time.time()}, self.fence
            )
        event(log, "prewarm.hour_ready", hour=hour, marker=self.enabled, **info)

    def hour_info(self, hour: int) -> dict[str, Any]:
        return {
            "users": self.users[hour],
            "skipped": self.skipped[hour],
            "failed": self.failed[hour],
            "seconds": self.ready_seconds.get(hour),
        }

    def report(self) -> dict[str, Any]:
        """Per hour (HH): users, skipped, failed and when it became ready (seconds into the run, or None)."""
        return {f"{hour:02d}": self.hour_info(hour) for hour in HOURS}
