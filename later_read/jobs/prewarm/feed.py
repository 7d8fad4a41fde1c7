"""UserFeed: the prewarm's reader hands users to its workers a page at a time, workers take them one by one.

    reader: await feed.put(page) ... feed.close()
    worker: hour, user = feed.items.popleft()     # while feed.items; else `await feed.wait()`

An anyio memory object stream costs two event-loop turns per user (`send` and `receive` each begin with
a checkpoint) plus a coroutine per call; here a worker takes its next user with a deque `popleft` and
awaits only when the feed is empty, the slow path that should not happen while the reader keeps ahead.
`put` returns as soon as fewer than `capacity` users are waiting (about one page), so the reader reads
the next page while the workers still have the current one, and memory stays at about two pages.

`idle_seconds` adds up the time workers waited for users while the reader was still reading (a stalled
pipeline: the reader fell behind), `starved` how many times that happened; both go to the run's report.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import anyio


class UserFeed:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[tuple[int, Any]] = deque()
        self.closed = False
        self.reader_waiting = False  # the reader waits for room: a worker that takes a user calls room()
        self.idle_seconds = 0.0
        self.starved = 0
        self._more = anyio.Event()  # set when users were added or the feed closed
        self._room = anyio.Event()

    async def put(self, items: list[tuple[int, Any]]) -> None:
        """Add a page of (hour, user); waits first while `capacity` or more users are still waiting."""
        while len(self.items) >= self.capacity and not self.closed:
            self._room = anyio.Event()
            self.reader_waiting = True
            try:
                await self._room.wait()
            finally:
                self.reader_waiting = False
        if items:
            self.items.extend(items)
            self._more.set()

    def room(self) -> None:
        """A worker's call after taking a user while the reader waits: wake it once there is room."""
        if len(self.items) < self.capacity:
            self._room.set()

    def close(self) -> None:
        """No more users: workers drain what is left, then `wait()` returns False."""
        self.closed = True
        self._more.set()

    async def wait(self) -> bool:
        """Wait until users are there (True) or the feed is closed and empty (False)."""
        started = None
        while not self.items:
            if self.closed:
                return False
            if started is None:
                started = time.monotonic()
                self.starved += 1
            if self._more.is_set():
                self._more = anyio.Event()
            await self._more.wait()
        if started is not None:
            self.idle_seconds += time.monotonic() - started
        return True

    def report(self) -> dict[str, float | int]:
        return {"worker_idle_seconds": round(self.idle_seconds, 3), "workers_starved": self.starved}
