"""How a job runs: the event loop (anyio on asyncio, uvloop when installed) and graceful shutdown."""

from __future__ import annotations

import functools
import gc
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup

from later_read.log import alert, get_logger

log = get_logger("runtime")


# The cyclic GC's first generation is collected after this many container allocations (CPython: 700).
# A job allocates several tuples per user and frees them by reference counting; at 700 the collector ran
# every few users and took a tenth of the push's CPU (docs/design.md, "Where the push's time goes").
GC_FIRST_GENERATION = 50_000


def run(main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run `main(*args)` to completion on a fresh event loop."""
    gc.set_threshold(GC_FIRST_GENERATION, *gc.get_threshold()[1:])
    try:
        import uvloop  # noqa: F401

        options = {"use_uvloop": True}
    except ImportError:
        options = {}
    return anyio.run(main, *args, backend="asyncio", backend_options=options)


def retry_context(**options: Any) -> Any:
    """`stamina.retry_context(**options)`: the retry loop of the services' client (after a first attempt
    failed) and of the Store (through a failover). stamina is imported at the first retry a process needs,
    not at start-up: most runs never retry, and its import is ~10 ms of every job's start (the
    prewarm's first call waits for it)."""
    return _stamina().retry_context(**options)


@functools.cache
def _stamina() -> Any:
    """stamina, imported once, with its per-retry log lines off: retries are counted and reported in the
    job summary, and a warning per transient failure would be thousands of lines when a service hiccups."""
    import stamina
    import stamina.instrumentation

    stamina.instrumentation.set_on_retry_hooks([])
    return stamina


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """anyio's task group, whose failure comes out as the exception that failed it rather than inside an
    ExceptionGroup: the first one raised (a failure cancels the group, so later ones are its echoes)."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


class Shutdown:
    """SIGTERM/SIGINT handling: the first signal asks the job to stop taking new users; a second one
    (or the job's grace period running out) cancels what is still in flight."""

    def __init__(self) -> None:
        self.requested = anyio.Event()
        self.signal_name: str | None = None
        self.force = anyio.CancelScope()

    @property
    def stopping(self) -> bool:
        return self.requested.is_set()

    async def watch(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stopping:
                    alert(log, "shutdown.forced", signal=name)
                    self.force.cancel()
                    return
                self.signal_name = name
                alert(log, "shutdown.requested", signal=name)
                self.requested.set()
