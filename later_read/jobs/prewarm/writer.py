"""BatchWriter: the prewarm's results reach Redis in batches, one round trip per batch, never one per user.

Workers hand each finished user to `add()` (a list append: the per-user hot path stays cheap); one writer
task sends `Store.put_values` (one SET-EX-many call, see store.py) every `batch_size` results or every
`interval` seconds, whichever comes first, so a slow night still lands its results within ~0.1 s and a
kill -9 loses at most that much work. `close()` makes the task write everything still buffered and
return: results are written before the job exits in every case but kill -9. After each batch is in Redis,
`on_written` gets its (uid, value, hour) items (the hour tracker settles them: hours.py).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from later_read.errors import LaterReadError
from later_read.store import Store

FLUSH_INTERVAL_SECONDS = 0.1


class BatchWriter:
    def __init__(
        self,
        store: Store,
        batch_size: int,
        on_error: Callable[[LaterReadError], None],
        on_written: Callable[[list[tuple[str, bytes, int]]], None] | None = None,
        interval: float = FLUSH_INTERVAL_SECONDS,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.interval = interval
        self.on_error = on_error
        self.on_written = on_written
        self.written = 0
        self._failed = 0  # results whose write failed
        self._pending: list[tuple[str, bytes, int]] = []
        self._wake = anyio.Event()
        self._closed = False

    def add(self, uid: str, raw: bytes, hour: int = 0) -> None:
        """Queue one user's encoded value (of push hour `hour`); wakes the writer when a batch is waiting."""
        pending = self._pending
        pending.append((uid, raw, hour))
        if len(pending) >= self.batch_size:
            self._wake.set()

    def close(self) -> None:
        """No more results: the writer task writes what is buffered, then returns."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """The writer task. A Redis failure is handed to `on_error` (the job stops) and ends the task."""
        try:
            while True:
                with anyio.move_on_after(self.interval):
                    await self._wake.wait()
                self._wake = anyio.Event()
                await self._flush()
                if self._closed and not self._pending:
                    return
        except LaterReadError as exc:
            self.on_error(exc)

    @property
    def lost(self) -> int:
        """Results not written: their write failed, or they arrived after the writer stopped on an error."""
        return self._failed + len(self._pending)

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self.batch_size]
            del self._pending[: self.batch_size]
            try:
                await self.store.put_values([(uid, raw) for uid, raw, _ in batch])
            except LaterReadError:
                self._failed += len(batch)
                raise
            self.written += len(batch)
            if self.on_written is not None:
                self.on_written(batch)
