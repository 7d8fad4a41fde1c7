"""Replies sent at their deadline, to the microsecond, without spinning the simulator's CPU.

- `TimerfdClock` (Linux): one `timerfd` armed with an absolute CLOCK_MONOTONIC deadline in nanoseconds,
  watched by the loop like a socket; each wake-up sends every reply due by then.
- `SpinClock` (elsewhere): a loop timer armed SPIN_SECONDS early, the last stretch waited out with
  `call_soon` against the precise clock (spins the loop while a reply is due within SPIN_SECONDS).

Both give latency_ms as a floor: a reply never leaves before its deadline. Why the loop's own timers do
not do: docs/design.md, "The simulator's clock".
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

SPIN_SECONDS = 0.0015
_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class Clock(Protocol):
    def call_at(self, deadline: float, callback: Callable[[], None]) -> Any: ...  # a handle for cancel()
    def cancel(self, handle: Any) -> None: ...
    def close(self) -> None: ...


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerfdClock:
    """Callbacks at `time.monotonic()` deadlines, woken by one Linux timerfd (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd, self._loop = fd, loop
        self._spec = _Itimerspec()
        self._heap: list[list] = []  # [deadline, seq, callback-or-None]
        self._seq = itertools.count()
        self._armed = float("inf")
        loop.add_reader(fd, self._fire)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> list:
        entry = [deadline, next(self._seq), callback]
        heapq.heappush(self._heap, entry)
        if deadline < self._armed:
            self._arm(deadline)
        return entry

    def cancel(self, handle: list) -> None:
        handle[2] = None  # dropped when its deadline comes up

    def _arm(self, deadline: float) -> None:
        self._armed = deadline
        sec, frac = divmod(max(deadline, 1e-9), 1.0)
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = int(sec), int(frac * 1e9) or 1
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            pass
        heap, now = self._heap, time.monotonic()
        self._armed = float("inf")
        while heap and heap[0][0] <= now:
            callback = heapq.heappop(heap)[2]
            if callback is not None:
                callback()
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._heap.clear()


class SpinClock:
    """The portable fallback: a loop timer SPIN_SECONDS early, then call_soon until the deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def call_at(self, deadline: float, callback: Callable[[], None]) -> list:
        handle: list = [None]
        self._schedule(handle, deadline, callback)
        return handle

    def _schedule(self, handle: list, deadline: float, callback: Callable[[], None]) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            handle[0] = None
            callback()
        elif remaining > SPIN_SECONDS:
            handle[0] = self._loop.call_later(remaining - SPIN_SECONDS, self._schedule, handle, deadline, callback)
        else:
            handle[0] = self._loop.call_soon(self._schedule, handle, deadline, callback)

    def cancel(self, handle: list) -> None:
        if handle[0] is not None:
            handle[0].cancel()

    def close(self) -> None:
        pass


def precise_clock(loop: asyncio.AbstractEventLoop) -> Clock:
    """A TimerfdClock where the platform has timerfd, else a SpinClock."""
    try:
        return TimerfdClock(loop)
    except (OSError, AttributeError, NotImplementedError):
        return SpinClock(loop)
