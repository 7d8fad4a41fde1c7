"""Service capacity of the simulator: K requests served at once, the rest wait in a FIFO queue.

A real service has a bounded number of workers: past that, requests queue and the latency a client sees
grows with the load (Little's law: at K in service, a client keeping L > K in flight sees about
latency x L / K). `Station` models exactly that for one simulated service. A request's service time is its
drawn latency; it starts when a slot is free, so its reply leaves at start + latency. `capacity = 0` means
no limit (every request starts on arrival, the simulator's behaviour without the knob).

`max_queue` (0 = unbounded) sheds load as a service with a bounded queue does: a request that finds the
queue full is refused at once, which the app answers with a 429 (an overload storm that depends on load,
unlike `error_429_rate`).

Both knobs can change while requests are in flight: more capacity starts queued requests at once; less
capacity lets the requests in service finish and starts no new one until fewer than K are busy.

A client that disconnects cancels its request: a queued one leaves the queue, one in service keeps its slot
until its service time is over (the work was started; a real worker would finish it too).

`sojourn` is the latency as the service itself sees it (arrival to reply: queue wait plus service time),
log-bucketed since the last reset; benchmarks compare it with the client's round trips, which also hold
the client's own delays. `wait` is the queue wait alone (arrival to the start of service): the part a
client's load causes. On a busy host the sojourn also holds the simulator's own lateness (a reply timer
that fires late), which no client causes: `late` is that lateness (the reply's time less its due time).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from later_read.clients.latency import LatencyHistogram
from later_read_sandbox.simulator.timer import Clock


class _Job:
    """One request at the station: its service time, what to call when served, whether it still waits."""

    __slots__ = ("delay", "callback", "queued", "arrived", "due")

    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.arrived, self.due = delay, time.monotonic(), 0.0
        self.callback: Callable[[], None] | None = callback
        self.queued = True


class Occupancy:
    """Requests in service and their most at once since the last reset: one station's, or all the
    stations' together (a client that keeps C calls in flight to each of two services shows up to 2 C)."""

    def __init__(self) -> None:
        self.busy = self.max_busy = 0

    def add(self, delta: int) -> None:
        self.busy += delta
        if self.busy > self.max_busy:
            self.max_busy = self.busy

    def reset_peak(self) -> None:
        self.max_busy = self.busy


class Station:
    """K parallel servers in front of a FIFO queue, driven by the simulator's precise clock."""

    def __init__(self, clock: Clock, capacity: int = 0, max_queue: int = 0, together: Occupancy | None = None) -> None:
        self._clock = clock
        self.in_service = Occupancy()  # this station's requests in service, and their peak
        self.together = together or Occupancy()
        self.capacity = capacity
        self.max_queue = max_queue
        self.queued = 0  # live jobs waiting (cancelled ones are skipped, not counted)
        self.max_queued = 0
        self.served = 0
        self.sojourn = LatencyHistogram()
        self.wait = LatencyHistogram()
        self.late = LatencyHistogram()
        self._queue: deque[_Job] = deque()

    def full(self) -> bool:
        """True when a new request would be refused (a bounded queue with no room left)."""
        return self.capacity > 0 and self.max_queue > 0 and self.queued >= self.max_queue and self.busy >= self.capacity

    def submit(self, delay: float, callback: Callable[[], None]) -> _Job:
        """Serve a request of `delay` seconds now if a slot is free, else queue it; `callback` at the end."""
        job = _Job(delay, callback)
        if self.capacity <= 0 or self.busy < self.capacity:
            self._start(job)
        else:
            self._queue.append(job)
            self.queued += 1
            self.max_queued = max(self.max_queued, self.queued)
        return job

    def cancel(self, job: _Job) -> None:
        """The client went away: drop a queued job; one in service keeps its slot until its time is up."""
        if job.callback is None:
            return
        job.callback = None
        if job.queued:
            self.queued -= 1

    def resize(self, capacity: int, max_queue: int) -> None:
        """New knob values; more capacity starts waiting requests at once."""
        self.capacity, self.max_queue = capacity, max_queue
        self._drain()

    def _start(self, job: _Job) -> None:
        job.queued = False
        self.in_service.add(1)
        self.together.add(1)
        now = time.monotonic()
        self.wait.add(now - job.arrived)
        job.due = now + job.delay
        self._clock.call_at(job.due, lambda: self._finish(job))

    def _finish(self, job: _Job) -> None:
        self.in_service.add(-1)
        self.together.add(-1)
        self.served += 1
        callback, job.callback = job.callback, None
        if callback is not None:
            now = time.monotonic()
            self.sojourn.add(now - job.arrived)
            self.late.add(now - job.due)
            callback()
        self._drain()

    def _drain(self) -> None:
        queue = self._queue
        while queue and (self.capacity <= 0 or self.busy < self.capacity):
            job = queue.popleft()
            if job.callback is not None:
                self.queued -= 1
                self._start(job)

    @property
    def busy(self) -> int:
        """The requests in service now."""
        return self.in_service.busy

    def snapshot(self) -> dict[str, Any]:
        """The station's state for `GET /_sim/stats` (not zeroed by `/_sim/reset` but the peaks)."""
        return {
            "capacity": self.capacity,
            "in_service": self.busy,
            "queued": self.queued,
            "max_queued": self.max_queued,
            "max_in_service": self.in_service.max_busy,
            "max_in_service_together": self.together.max_busy,  # at all the stations at once
            "sojourn_p50_ms": round(self.sojourn.percentile(50), 2),
            "sojourn_p99_ms": round(self.sojourn.percentile(99), 2),
            "wait_p99_ms": round(self.wait.percentile(99), 2),
            "late_p99_ms": round(self.late.percentile(99), 2),
        }

    def reset_peaks(self) -> None:
        """`/_sim/reset`: peaks and the latency histograms start again (the requests in flight stay)."""
        self.max_queued = self.queued
        self.in_service.reset_peak()
        self.together.reset_peak()
        self.sojourn = LatencyHistogram()
        self.wait = LatencyHistogram()
        self.late = LatencyHistogram()
