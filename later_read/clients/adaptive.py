"""Adaptive concurrency: how many calls to one service may be in flight, found while the job runs.

No maintained Python library does this (docs/design.md, "Adaptive concurrency"). This is a small windowed
limit after BBR (Cardwell et al., "BBR: Congestion-Based Congestion Control", ACM Queue 2016), which a
service that queues fits as well as a network path does, with the AIMD backoff of Netflix's
concurrency-limits and the periodic minimum-RTT measurement of Envoy's adaptive concurrency filter:

- Every completed call is a sample (its round trip, whether it was *dropped*: a 429, a 5xx, a timeout, a
  connection error). Samples are gathered in windows of at least WINDOW_SECONDS and WINDOW_SAMPLES; a
  round trip of a call started before the limit last changed is ignored (it says nothing about the new
  limit), but every answered call counts towards the window's *delivery rate* (calls answered per second).
- A service serving K calls at once in `s` seconds each answers at most K / s calls per second, however
  many calls it is sent: past K they only queue. So the in-flight count it sustains without queueing is
  its bandwidth-delay product, `bdp = max_rate x min_rtt`: `max_rate` the highest delivery rate of the
  last RATE_WINDOWS windows (once started up, each measured over its window and the one before: the
  highest of ten noisy single windows sits ~10 % above what the service delivers, which the limit would
  hold as calls queued), `min_rtt` the lowest window round trip (a window's median, Envoy's
  `sample_aggregate_percentile`) since the last probe.
- The limit is `bdp x gain + alpha` (alpha = 2 x max(1, int(log10(limit))) calls: Netflix Vegas' headroom
  for the calls on their way). The gain is 2 until the rate stops growing by 25 % for FULL_WINDOWS windows
  in a row, or for one window whose round trip reaches STARTUP_EXIT_RTT x `min_rtt` (BBR's start-up with
  HyStart's delay exit, which on a round trip alone ends start-up on the host's noise), then cycles: one
  window in CYCLE_WINDOWS at PROBE_GAIN (is there more rate to be had?) and the others at 1; a probe whose
  window delivered PROBE_GREW more than the filter's mean probes again in the next. While the service has
  spare slots the probes raise the rate and with it `bdp`, window after window; once it is full the rate
  stays at K / s and the limit stays at about K + alpha. The probe is a tenth, not BBR's quarter: its
  queue is what the service's p99 sees (one window in 8 is 12 % of the calls).
- Why the rate and not the round trip alone (a Vegas limit, this module's first version): the job's own
  delays (its event loop on a busy host) inflate every round trip the way a queue at the service would,
  and a Vegas limit read them as a queue and shrank to a fraction of what the service could take. A
  queue flattens the rate; the job's own delay does not stop the rate rising with the limit.
- Backing off: more than DROP_TOLERANCE of a window's samples dropped -> `limit x BACKOFF` (Netflix
  AIMD's ratio), the remembered rate is forgotten (it must be earned again) and, once the drops stop,
  the limit starts up again. FLUSH_WINDOWS windows in a row whose round trip is FLUSH_RTT_RATIO x
  `min_rtt` are a queue as long as the calls in service (the service got smaller) or a service that got
  slower: the next window is the min-RTT probe below, and then the rate is forgotten but for what the
  slow windows delivered, the limit `that rate x the probe's round trip`. Smaller: the queue is gone at a
  quarter of the calls, the limit falls to the new capacity (a cut is followed in ~0.3 s, not after
  RATE_WINDOWS windows). Slower: the probe's round trip is as slow, the limit stays (the service's slots
  did not change; halving it at each slow spell of a busy host left 0.3 of what the service could do).
  A window whose round trip is FASTER_RTT_RATIO x `min_rtt` ends such a spell: the rate measured in it
  is too low for the faster service, and the limit starts up again.
- A window in which the job used fewer than half its permits leaves the limit alone (the job, not the
  service, was the bound). An answer read STALL_RTTS round trips after the one before, while calls were
  out, comes out of a stall of the job's loop (a host that took its CPU): that window is dropped, and the
  next starts once the calls caught in the stall are back.
- Every PROBE_SECONDS (jittered down to half) the limit is pinned to a quarter for one window whose round
  trip becomes the new `min_rtt` (Envoy's minRTT recalculation), so a service that got permanently slower
  is not mistaken for a queue forever.

`AdaptiveLimit` is the algorithm alone (time is passed in: unit-tested without a clock); `AdaptiveGate`
hands out the permits to coroutines in FIFO order.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

WINDOW_SECONDS = 0.1  # Envoy's sample window; ~5 round trips of a 20 ms service per window
WINDOW_SAMPLES = 10  # Netflix WindowedLimit's minimum window size: fewer samples are noise
WINDOW_PERCENTILE = 50  # a window's round trip is its median (Envoy's default aggregate)
RATE_WINDOWS = 10  # the rate filter's length: BBR's 10 rounds; > CYCLE_WINDOWS, so it spans a probe
CYCLE_WINDOWS = 8  # one probing window in 8, as BBR's pacing-gain cycle
PROBE_GAIN = 1.1  # a tenth more in flight than the rate explains (BBR: 1.25, whose probe
# queue alone put the service's p99 at 1.65 x its base; docs/design.md)
PROBE_GREW = 1.05  # a probe whose window delivered this much more probes again at once
STARTUP_GAIN = 2.0  # doubling while the rate keeps up (BBR's start-up uses 2/ln 2 ~ 2.89)
FULL_WINDOWS = 3  # BBR: the pipe is full after 3 rounds without 25 % more rate
STARTUP_EXIT_RTT = 1.1  # or when the round trip is a tenth above min_rtt (HyStart's delay exit)
FLUSH_RTT_RATIO = 2.0  # a window median twice min_rtt: as many calls queued as served...
FLUSH_WINDOWS = 2  # ...in two windows in a row (one is a hiccup of the host, not a smaller service)
FASTER_RTT_RATIO = 0.75  # a round trip a quarter below min_rtt: the service sped up (a slow spell ended)
STALL_RTTS = 2.0  # no answer read for 2 round trips with calls out: the job's loop was frozen
DROP_TOLERANCE = 0.02  # a few stray 5xx are faults, not overload; a storm is well above 2 %
BACKOFF = 0.9  # Netflix AIMDLimit's default backoff ratio
PROBE_SECONDS = 30.0  # re-measure min_rtt this often (jittered 0.5-1x): ~1 % of windows pinned low
INITIAL_LIMIT = 20  # Netflix's default initial limit
MIN_LIMIT = 2  # never stop calling altogether: the limit can only grow again from samples


def _log10_root(limit: float) -> int:
    return max(1, int(math.log10(max(limit, 1))))


class AdaptiveLimit:
    """The limit and its state; `sample()` after each call, `current` is the permits allowed now."""

    def __init__(
        self,
        max_limit: int,
        initial: int = INITIAL_LIMIT,
        min_limit: int = MIN_LIMIT,
        probe_seconds: float = PROBE_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.max_limit, self.min_limit = max_limit, min(min_limit, max_limit)
        self.limit = float(max(self.min_limit, min(initial, max_limit)))
        self.min_rtt = 0.0
        self.probe_seconds = probe_seconds
        self._rng = rng or random.Random()
        self.changed_at = -math.inf  # round trips of calls started before this are ignored
        self.backoffs = 0  # windows that backed off on drops (for the report)
        self.rates: deque[float] = deque(maxlen=RATE_WINDOWS)  # delivery rate per window, calls/s
        self._start_up_again()
        self._phase = self._rng.randrange(CYCLE_WINDOWS)
        self._probed_at: float | None = None
        self._previous = (0, 0.0)  # the last measured window: (answered, seconds)
        self._slow = 0  # windows in a row at FLUSH_RTT_RATIO
        self._slow_rate: float | None = None  # what two slow windows delivered, until the probe decides
        self._probing: float | None = None  # the limit to go back to after a min_rtt probe window
        self._next_probe: float | None = None
        self.stalls = 0  # gaps the limit ignored (for the report)
        self._last_answer = -math.inf
        self._typical_rtt = 0.0  # the last window's round trip: the gap a stall is measured against
        self._resume_at = -math.inf
        self._open_window(-math.inf)

    @property
    def current(self) -> int:
        return int(self.limit)

    @property
    def max_rate(self) -> float:
        return max(self.rates, default=0.0)

    def _open_window(self, now: float) -> None:
        self._window_start, self._drops, self._peak, self._answered = now, 0, 0, 0
        self._rtts: list[float] = []

    def _window_rtt(self) -> float:
        rtts = sorted(self._rtts)
        return rtts[len(rtts) * WINDOW_PERCENTILE // 100]

    def sample(self, now: float, started: float, rtt: float, in_flight: int, dropped: bool) -> None:
        """One finished call: its start, round trip, the in-flight count as it ended, dropped or not."""
        if self._window_start == -math.inf:
            self._window_start = now
            if self._next_probe is None:
                self._schedule_probe(now)
        if self._stalled(now, started, in_flight):
            return
        self._answered += not dropped
        if started < self.changed_at:
            return
        if dropped:
            self._drops += 1
        else:
            self._rtts.append(rtt)
        self._peak = max(self._peak, in_flight)
        if now - self._window_start >= WINDOW_SECONDS and len(self._rtts) + self._drops >= WINDOW_SAMPLES:
            self._close_window(now)

    def _stalled(self, now: float, started: float, in_flight: int) -> bool:
        """Whether this answer comes out of a stall: no answer for STALL_RTTS round trips while calls
        were out, which a service that still serves does not do (a smaller one answers more slowly,
        not in bursts), a job whose loop the host froze does. The window is dropped and sampling resumes
        STALL_RTTS round trips later: the calls caught in the stall come back in one burst with the stall
        in their round trips, and would read as a queue and then as a rate the service never had."""
        last, self._last_answer = self._last_answer, now
        # this call was out (nearly) the whole gap and is not the only one: not a job that was idle
        out_all_along = in_flight > 1 and now - started >= 0.9 * (now - last)
        if self._typical_rtt and out_all_along and now - last >= STALL_RTTS * self._typical_rtt:
            self.stalls += 1
            self._resume_at = now + STALL_RTTS * self._typical_rtt
        if now < self._resume_at:
            self._open_window(now)
            return True
        return False

    def _close_window(self, now: float) -> None:
        before = self.limit
        if self._probing is not None:
            self._end_probe()
        elif self._next_probe is not None and now >= self._next_probe:
            self._start_probe(now)
        else:
            self.limit = self._clamp(self._next_limit(now))
            if self._slow_rate is not None:
                self._start_probe(now)
        if int(self.limit) != int(before):
            self.changed_at = now
        self._open_window(now)

    def _next_limit(self, now: float) -> float:
        limit, total = self.limit, len(self._rtts) + self._drops
        rate, paired = self._rates(now)
        if self._drops > DROP_TOLERANCE * total:
            self.backoffs += 1
            self._forget(rate)
            self._start_up_again()  # once the storm is over
            return limit * BACKOFF
        if not self._rtts:
            return limit
        rtt = self._typical_rtt = self._window_rtt()
        if self.min_rtt and rtt < FASTER_RTT_RATIO * self.min_rtt and self.started_up:
            self._start_up_again()  # the service is faster than the rate was measured at: earn it anew
        if not self.min_rtt or rtt < self.min_rtt:
            self.min_rtt = rtt
        self._slow = self._slow + 1 if rtt >= FLUSH_RTT_RATIO * self.min_rtt else 0
        if self._slow >= FLUSH_WINDOWS:
            self._slow_rate = rate  # a queue, or a slower service: the min_rtt probe tells (_end_probe)
            return limit
        if self._peak * 2 < limit:
            return limit  # app-limited: the job cannot use the permits it has, its rate says nothing
        self.rates.append(paired if self.started_up else rate)  # start-up: each doubling counts
        return self._bdp_limit(self._gain(rtt, rate), limit)

    def _bdp_limit(self, gain: float, limit: float) -> float:
        """`bdp x gain + alpha`: the calls the remembered rate and min_rtt explain, with Vegas' headroom."""
        return self.max_rate * self.min_rtt * gain + 2 * _log10_root(limit)

    def _clamp(self, limit: float) -> float:
        return max(self.min_limit, min(self.max_limit, limit))

    def _rates(self, now: float) -> tuple[float, float]:
        """This window's delivery rate, and the rate over it and the window before: the one the filter
        keeps once started up. A window of ~250 answers is off by ~6 % either way (Poisson), and the highest
        of ten such draws sits ~10 % above what the service delivers, which the limit would hold as calls
        queued; two windows halve the variance (docs/design.md has the model's figures)."""
        seconds = max(now - self._window_start, 1e-9)
        answered, before = self._previous
        self._previous = (self._answered, seconds)
        return self._answered / seconds, (self._answered + answered) / (seconds + before)

    def _forget(self, rate: float) -> None:
        """The service answers less than it did: the rate it answers now is all that is known."""
        self.rates.clear()
        self.rates.append(rate)
        self._slow = 0

    def _start_up_again(self) -> None:
        """BBR's start-up: STARTUP_GAIN until the pipe is full (`started_up`: the rate stopped growing)."""
        self.started_up, self._full_rate, self._flat = False, 0.0, 0

    def _gain(self, rtt: float, rate: float) -> float:
        """STARTUP_GAIN until the rate stops growing or calls start to queue, then PROBE_GAIN one window
        in CYCLE_WINDOWS, and again at once while a probe's window (`rate`) delivered more: room at the
        service is taken in a few windows, not one step per cycle."""
        if not self.started_up:
            if self.max_rate >= self._full_rate * 1.25:
                self._full_rate, self._flat = self.max_rate, 0
            else:
                self._flat += 1
            queued = rtt >= STARTUP_EXIT_RTT * self.min_rtt and self._flat > 0  # not a noisy round trip
            self.started_up = self._flat >= FULL_WINDOWS or queued
            if not self.started_up:
                return STARTUP_GAIN
        grew = self._probed_at is not None and rate >= self._probed_at * PROBE_GREW
        self._phase = 0 if grew else (self._phase + 1) % CYCLE_WINDOWS
        # the rate a probe must beat: the filter's mean, not its maximum (biased up by the noise)
        self._probed_at = math.fsum(self.rates) / len(self.rates) if self._phase == 0 and self.rates else None
        return PROBE_GAIN if self._phase == 0 else 1.0

    def _schedule_probe(self, now: float) -> None:
        self._next_probe = now + self.probe_seconds * self._rng.uniform(0.5, 1.0)

    def _start_probe(self, now: float) -> None:
        self._probing = self.limit
        self.limit = self._clamp(self.limit / 4)
        self._schedule_probe(now)

    def _end_probe(self) -> None:
        """The probe window's round trip is the new `min_rtt`. After slow windows, the rate they delivered
        is all that is known: `bdp = that rate x the new min_rtt` is the limit. A queue (the service got
        smaller) vanished at a quarter of the calls: min_rtt is the old one and the limit falls to the
        new capacity; a service that got slower is as slow at a quarter: min_rtt is its new round trip and
        the limit stays where it was (its slots did not change)."""
        limit, self._probing = self._probing or self.limit, None
        if self._rtts:
            self.min_rtt = self._window_rtt()
        if self._slow_rate is not None and self._rtts:
            self._forget(self._slow_rate)
            self.started_up = True  # calls queued or the service slowed: start-up is over, if it was not
            limit = self._bdp_limit(1.0, limit)
        self.limit, self._slow_rate = self._clamp(limit), None


class AdaptiveGate:
    """Permits for calls to one service, `AdaptiveLimit.current` at a time, waiters served first come first.

    `acquire()` returns the call's start time; pass it to `release()` with "ok", "drop" or None (no
    verdict: a permanent error or a cancellation, not a load signal).
    """

    def __init__(self, limit: AdaptiveLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter = limit
        self.clock = clock
        self.in_flight = 0
        self.peak_in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._area = 0.0  # integral of in_flight over time, for the mean
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
                self._add(-1)  # granted just as we were cancelled: give the permit back
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
                self._add(1)  # the permit is taken on the waiter's behalf
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

    def elapsed(self) -> float:
        """Seconds since the gate was made (the job's start)."""
        return self.clock() - self._first

    def snapshot(self) -> dict[str, Any]:
        """The figures the progress lines and the report show."""
        return {
            "in_flight": self.in_flight,
            "limit": self.limiter.current,
            "mean_in_flight": round(self.mean_in_flight(), 1),
            "peak_in_flight": self.peak_in_flight,
            "min_rtt_ms": round(self.limiter.min_rtt * 1000, 2),
            "max_rate": round(self.limiter.max_rate),
            "backoffs": self.limiter.backoffs,
            "stalls": self.limiter.stalls,
        }
