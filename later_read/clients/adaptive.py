"""Adaptive concurrency: how many calls to one service may be in flight, found while the job runs.

No maintained Python library does this (docs/design.md, "Adaptive concurrency"), so this is a small
windowed variant of the Vegas limit of Netflix's concurrency-limits (`VegasLimit`, `WindowedLimit`), with
the multiplicative decrease of its `Gradient2Limit` and the periodic minimum-RTT measurement of Envoy's
adaptive concurrency filter (`min_rtt_calc_params`):

- Every completed call is a sample (its round trip, whether it was *dropped*: a 429, a 5xx, a timeout, a
  connection error). Samples are gathered in windows of at least WINDOW_SECONDS and WINDOW_SAMPLES; a
  sample of a call started before the limit last changed is ignored (it says nothing about the new limit).
- A window's round trip `rtt` is its median (Envoy's `sample_aggregate_percentile`, default p50), and the
  no-load round trip `min_rtt` the lowest window `rtt`. A window whose `rtt` is above it means calls queue:
  Vegas estimates the queue as `limit x (1 - min_rtt / rtt)`. A lower percentile (p10 was tried) hides the
  queue: arrivals come in bursts, so a tenth of the calls find a free slot even while the service keeps a
  queue, and the limit settled 20-40 % above the capacity; the median settles within a few percent of it.
- Per window: more than DROP_TOLERANCE of the samples dropped -> `limit x BACKOFF` (Netflix AIMD's
  backoff ratio); queue > beta -> `limit x max(0.5, min_rtt / rtt) + alpha` (Gradient2's form: at a
  service serving K at once this lands on about K + alpha at once); queue <= threshold -> grow (unless
  fewer than half the permits were used: the job, not the service, is the bound) by beta after RAMP_AFTER
  calm windows in a row, else by threshold; threshold < queue < alpha -> `+ threshold`; otherwise (alpha..
  beta queued) the limit is right. alpha, beta and threshold are 2, 4 and 1 x max(1, int(log10(limit)))
  (Netflix's Vegas uses 3, 6, 1: a queue of 6 is 24 % of a 25-slot service, past the 20 % the prewarm
  allows itself). Growing by beta right after a decrease would jump across the 2-wide band and oscillate.
- Every PROBE_SECONDS (jittered down to half, like Netflix's probe) the limit is pinned to a quarter for
  one window and that window's `rtt` becomes the new `min_rtt` (Envoy's minRTT recalculation), so a
  service that got permanently slower is not mistaken for a queue forever.

`VegasLimit` is the algorithm alone (time is passed in: unit-tested without a clock); `AdaptiveGate`
hands out the permits to coroutines in FIFO order.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from typing import Any, Callable

WINDOW_SECONDS = 0.1     # Envoy's sample window; ~5 round trips of a 20 ms service per window
WINDOW_SAMPLES = 10      # Netflix WindowedLimit's minimum window size: fewer samples are noise
WINDOW_PERCENTILE = 50   # the window's round trip: its median (see the module docstring)
RAMP_AFTER = 3           # calm windows in a row (no queue) before growing by beta again, not by 1 x root
DROP_TOLERANCE = 0.02    # a few stray 5xx are faults, not overload; a storm is well above 2 %
BACKOFF = 0.9            # Netflix AIMDLimit's default backoff ratio
PROBE_SECONDS = 30.0     # re-measure min_rtt this often (jittered 0.5-1x): ~1 % of windows pinned low
INITIAL_LIMIT = 20       # Netflix's default initial limit
MIN_LIMIT = 2            # never stop calling altogether: the limit can only grow again from samples


def _log10_root(limit: float) -> int:
    return max(1, int(math.log10(max(limit, 1))))


class VegasLimit:
    """The limit and its state; `sample()` after each call, `current` is the permits allowed now."""

    def __init__(self, max_limit: int, initial: int = INITIAL_LIMIT, min_limit: int = MIN_LIMIT,
                 probe_seconds: float = PROBE_SECONDS, rng: random.Random | None = None) -> None:
        self.max_limit, self.min_limit = max_limit, min(min_limit, max_limit)
        self.limit = float(max(self.min_limit, min(initial, max_limit)))
        self.min_rtt = 0.0
        self.probe_seconds = probe_seconds
        self._rng = rng or random.Random()
        self.changed_at = -math.inf   # samples of calls started before this are ignored
        self.backoffs = 0             # windows that backed off on drops (for the report)
        self._probing: float | None = None  # the limit to go back to after a probe window
        self._next_probe: float | None = None
        self._calm = RAMP_AFTER     # calm windows in a row: the first ramp is fast
        self._open_window(-math.inf)

    @property
    def current(self) -> int:
        return int(self.limit)

    def _open_window(self, now: float) -> None:
        self._window_start, self._drops, self._peak = now, 0, 0
        self._rtts: list[float] = []

    def _window_rtt(self) -> float:
        rtts = sorted(self._rtts)
        return rtts[len(rtts) * WINDOW_PERCENTILE // 100]

    def sample(self, now: float, started: float, rtt: float, in_flight: int, dropped: bool) -> None:
        """One finished call: its start, round trip, the in-flight count as it ended, dropped or not."""
        if started < self.changed_at:
            return
        if self._window_start == -math.inf:
            self._window_start = now
            if self._next_probe is None:
                self._schedule_probe(now)
        if dropped:
            self._drops += 1
        else:
            self._rtts.append(rtt)
        self._peak = max(self._peak, in_flight)
        if now - self._window_start >= WINDOW_SECONDS and len(self._rtts) + self._drops >= WINDOW_SAMPLES:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        before = self.limit
        if self._probing is not None:
            self._end_probe()
        elif self._next_probe is not None and now >= self._next_probe:
            self._start_probe(now)
        else:
            self.limit = max(self.min_limit, min(self.max_limit, self._next_limit()))
        if int(self.limit) != int(before):
            self.changed_at = now
        self._open_window(now)

    def _next_limit(self) -> float:
        limit, total = self.limit, len(self._rtts) + self._drops
        if self._drops > DROP_TOLERANCE * total:
            self.backoffs += 1
            return limit * BACKOFF
        if not self._rtts:
            return limit
        rtt = self._window_rtt()
        if not self.min_rtt or rtt < self.min_rtt:
            self.min_rtt = rtt
        queue = limit * (1 - self.min_rtt / rtt)
        root = _log10_root(limit)
        alpha, beta, threshold = 2 * root, 4 * root, root
        calm, self._calm = self._calm, 0
        if queue > beta:
            return limit * max(0.5, self.min_rtt / rtt) + alpha
        if self._peak * 2 < limit:
            return limit   # app-limited: the job cannot use the permits it has
        if queue <= threshold:
            self._calm = calm + 1
            return limit + (beta if self._calm > RAMP_AFTER else threshold)
        if queue < alpha:
            return limit + threshold
        return limit

    def _schedule_probe(self, now: float) -> None:
        self._next_probe = now + self.probe_seconds * self._rng.uniform(0.5, 1.0)

    def _start_probe(self, now: float) -> None:
        self._probing = self.limit
        self.limit = max(self.min_limit, self.limit / 4)
        self._schedule_probe(now)

    def _end_probe(self) -> None:
        if self._rtts:
            self.min_rtt = self._window_rtt()
        self.limit, self._probing = self._probing or self.limit, None


class AdaptiveGate:
    """Permits for calls to one service, `VegasLimit.current` at a time, waiters served first come first.

    `acquire()` returns the call's start time; pass it to `release()` with "ok", "drop" or None (no
    verdict: a permanent error or a cancellation, not a load signal).
    """

    def __init__(self, limit: VegasLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter = limit
        self.clock = clock
        self.in_flight = 0
        self.peak_in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._area = 0.0              # integral of in_flight over time, for the mean
        self._since = self._first = clock()

    async def acquire(self) -> float:
        if self.in_flight < self.limiter.current and not self._waiters:
            self._add(1)
            return self.clock()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._add(-1)     # granted just as we were cancelled: give the permit back
                self._wake()
            else:
                self._waiters.remove(waiter)
            raise
        return self.clock()

    def release(self, started: float, verdict: str | None) -> None:
        in_flight = self.in_flight
        self._add(-1)
        if verdict is not None:
            now = self.clock()
            self.limiter.sample(now, started, now - started, in_flight, verdict == "drop")
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self.in_flight < self.limiter.current:
            waiter = waiters.popleft()
            if not waiter.done():
                self._add(1)      # the permit is taken on the waiter's behalf
                waiter.set_result(None)

    def _add(self, delta: int) -> None:
        now = self.clock()
        self._area += self.in_flight * (now - self._since)
        self._since = now
        self.in_flight += delta
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def mean_in_flight(self) -> float:
        elapsed = self._since - self._first
        return self._area / elapsed if elapsed > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        """The figures the progress lines and the report show."""
        return {"in_flight": self.in_flight, "limit": self.limiter.current,
                "mean_in_flight": round(self.mean_in_flight(), 1), "peak_in_flight": self.peak_in_flight,
                "min_rtt_ms": round(self.limiter.min_rtt * 1000, 2), "backoffs": self.limiter.backoffs}
