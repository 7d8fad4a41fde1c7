"""The adaptive concurrency limit (later_read/clients/adaptive.py) against a model of a service.

Pure unit tests of the algorithm (no process boundary is crossed): `Service` is a closed-loop model of a
service that serves `capacity` calls at once in `base` seconds each and queues the rest, so a client
keeping L calls in flight sees a round trip of base x max(1, L / capacity) and a throughput of
min(L, capacity) / base (Little's law). `client_delay` adds the job's own delay to every round trip (its
event loop on a busy host): the calls spend it in the client, not at the service. Time is simulated in
1 ms steps; nothing here is timed.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics

import pytest

from later_read.clients.adaptive import MIN_LIMIT, PROBE_GAIN, STARTUP_GAIN, AdaptiveGate, AdaptiveLimit

STEP = 0.001


class Service:
    """The steady-state behaviour of a service with `capacity` slots and `base` seconds per call."""

    def __init__(
        self, capacity: int, base: float, drop_ratio: float = 0.0, client_delay: float = 0.0, seed: int = 7
    ) -> None:
        self.capacity, self.base, self.drop_ratio = capacity, base, drop_ratio
        self.client_delay = client_delay  # up to this many seconds of the job's own delay, per 100 ms
        self.rng = random.Random(seed)
        self.delay, self._delay_until = 0.0, -1.0

    def _delay(self, now: float) -> float:
        if now >= self._delay_until:  # the host's noise changes every 100 ms, not every call
            self.delay, self._delay_until = self.rng.uniform(0, self.client_delay), now + 0.1
        return self.delay

    def throughput(self, in_flight: int, now: float = 0.0) -> float:
        return min(in_flight / (self.base + self._delay(now)), self.capacity / self.base)

    def rtt(self, in_flight: int, now: float = 0.0) -> float:
        return in_flight / self.throughput(in_flight, now)

    def at_service(self, in_flight: int, now: float = 0.0) -> float:
        """Calls at the service itself (in service or queued), the rest being in the client."""
        return in_flight * (self.rtt(in_flight, now) - self._delay(now)) / self.rtt(in_flight, now)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; the means here are a few answers per step)."""
    threshold, count, product = math.exp(-mean), 0, rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def run(
    limit: AdaptiveLimit,
    service: Service,
    seconds: float,
    start: float = 0.0,
    in_flight: int | None = None,
    stalls: tuple[tuple[float, float], ...] = (),
    noisy: bool = False,
    waits: list[float] | None = None,
) -> list[tuple[float, int]]:
    """Drive `limit` for `seconds` of simulated time; the job keeps `in_flight` (default: the limit) busy.

    `stalls` are (at, seconds) during which the job's event loop is frozen (the host did not run it): the
    service answers the calls in flight but the job reads none of them, then reads them all at once, their
    round trips swollen by the stall. `noisy`: the answers of a step are a Poisson draw around the
    throughput (as a real service's are: a 0.1 s window of 250 answers is off by ~6 %), not its exact
    share. `waits` collects each answer's queue wait (its round trip less the base and the job's delay).
    Returns (time, limit) after every step.
    """
    history, due, now = [], 0.0, start
    while now < start + seconds:
        now += STEP
        frozen = next(((at, length) for at, length in stalls if at <= now < at + length), None)
        if frozen:
            history.append((now, limit.current))
            if now + STEP >= frozen[0] + frozen[1]:
                busy = limit.current
                for n in range(busy):  # the calls out when the loop froze, read late in one burst
                    started = frozen[0] - service.base * (n + 1) / busy
                    limit.sample(now + STEP, started, now + STEP - started, busy - n, False)
            continue
        busy = min(limit.current, in_flight) if in_flight is not None else limit.current
        expected = service.throughput(busy, now) * STEP
        due += expected
        answers = poisson(service.rng, expected) if noisy else int(due)
        due -= int(due)
        rtt = service.rtt(busy, now)
        for _ in range(answers):
            dropped = service.rng.random() < service.drop_ratio
            limit.sample(now, now - rtt, rtt, busy, dropped)
            if waits is not None:
                waits.append(rtt - service.base - service._delay(now))
        history.append((now, limit.current))
    return history


def settled(history: list[tuple[float, int]], last_seconds: float) -> list[int]:
    end = history[-1][0]
    return [value for at, value in history if at > end - last_seconds]


def assert_cruises(values: list[int], low: float, high: float) -> None:
    """Most of the time between low and high; the probing windows (one in 8) at most PROBE_GAIN above."""
    within = sum(low <= value <= high for value in values) / len(values)
    assert within >= 0.8, (within, min(values), statistics.median(values), max(values))
    assert low <= min(values) and max(values) <= high * PROBE_GAIN + 2, (min(values), max(values))


def test_finds_the_capacity_of_a_service_that_queues():
    """capacity 50 at 20 ms, upper bound 400: the limit cruises a few calls above 50, not at 400."""
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    history = run(limit, Service(50, 0.020), 10)
    assert_cruises(settled(history, 5), 50, 56)
    assert 0.019 < limit.min_rtt < 0.021 and 2400 < limit.max_rate < 2600


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_queue_it_keeps_is_short_at_the_99th_percentile(seed):
    """The issue's bar, in the model with answers as noisy as a real service's: capacity 50 at 20 ms, the
    p99 of the time calls wait in the service's queue at most a third of the base (p99 latency <= 1.33 x
    base; the bar is 1.5 x), and the service still at least 0.97 busy. A probe at BBR's 1.25 with a rate
    filter over single windows waited 9.2-10.4 ms at the p99 here (the highest of ten noisy windows held
    as calls queued, and one window in 8 probing a quarter above it)."""
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(seed))
    service, waits = Service(50, 0.020, seed=seed), []
    run(limit, service, 2, noisy=True)
    history = run(limit, service, 20, start=2, noisy=True, waits=waits)
    waits.sort()
    assert waits[len(waits) * 99 // 100] <= 0.020 / 3, waits[len(waits) * 99 // 100]
    served = statistics.fmean(service.throughput(value) for _, value in history)
    assert served >= 0.97 * 50 / 0.020, served


def test_follows_a_capacity_cut_within_a_second_of_simulated_time():
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    run(limit, Service(50, 0.020), 5)
    history = run(limit, Service(25, 0.020), 5, start=5)
    reached = next(at for at, value in history if value <= 30)
    assert reached < 5.3, reached
    assert_cruises([value for at, value in history if at > 6], 25, 30)


class SlowSpells(Service):
    """A service whose calls take twice as long for 0.5 s out of every 1.5 s (its host is busy): the same
    slots, so at twice the round trip it still serves `capacity` calls at once, without a queue."""

    def throughput(self, in_flight: int, now: float = 0.0) -> float:
        self.base = 0.040 if now % 1.5 < 0.5 else 0.020
        return super().throughput(in_flight, now)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_service_that_slows_down_for_a_while_keeps_its_slots_filled(seed):
    """Slow spells double the round trip and halve the rate, as a capacity cut does; the min-RTT probe
    that follows finds the round trip as slow at a quarter of the calls, so the limit stays near 50, and
    when the spell ends (a round trip a quarter below min_rtt) the limit starts up again. Read as a cut
    each time, the limit sank to ~13 and the service did 0.26-0.33 of what it could; with the probe but
    without the start-up, 0.89-0.90; with both 0.96-0.97."""
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(seed))
    service = SlowSpells(50, 0.020, seed=seed)
    history = [(at, value) for at, value in run(limit, service, 20, noisy=True) if at > 5]
    served = statistics.fmean(service.throughput(value, at) for at, value in history)
    possible = statistics.fmean(service.throughput(400, at) for at, value in history)
    assert served >= 0.93 * possible, served / possible
    assert 45 <= statistics.median(value for _, value in history) <= 62


def test_grows_back_when_capacity_returns():
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    run(limit, Service(25, 0.020), 5)
    history = run(limit, Service(80, 0.020), 5, start=5)
    assert_cruises(settled(history, 2), 80, 88)


def test_keeps_the_service_full_when_the_job_itself_adds_delay():
    """The job's own delay (up to 3 ms on a 20 ms call, changing every 100 ms) inflates every round trip as
    a queue would, but the calls at the service stay below its 50 slots: the rate still grows with the
    limit, so the limit keeps the service full (a Vegas limit read that delay as a queue and shrank)."""
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    service = Service(50, 0.020, client_delay=0.003)
    history = run(limit, service, 20)
    at_service = [service.at_service(value, at) for at, value in history if at > 10]
    served = [service.throughput(value, at) for at, value in history if at > 10]
    assert statistics.fmean(served) >= 0.9 * 50 / 0.020, statistics.fmean(served)
    assert 40 <= statistics.fmean(at_service) <= 60, statistics.fmean(at_service)


def test_a_host_that_freezes_the_job_is_not_a_smaller_service():
    """The host stops the job's loop for 120-250 ms at a time (a VM whose CPU is stolen): no answer is read
    for several round trips, then all of them at once, each round trip swollen by the stall. Nothing
    changed at the service: the limit must not fall to a fraction of its 50 slots and crawl back."""
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    rng = random.Random(5)
    stalls = tuple((5 + 0.6 * n + rng.uniform(0, 0.2), rng.uniform(0.12, 0.25)) for n in range(15))
    history = run(limit, Service(50, 0.020), 15, stalls=stalls)
    after = [value for at, value in history if at > 5]
    assert min(after) >= 40, (min(after), statistics.median(after))
    assert_cruises(settled(history, 4), 50, 56)


def test_a_job_starved_of_cpu_says_so_once_per_service_and_a_quiet_one_does_not(caplog):
    """The limit cannot tell a host that takes the job's CPU from a slower service (docs/design.md), so
    the job says it at the end: one `prewarm.adaptive_starved` warning per service whose limit saw its
    loop stall about once a second, with the fix. 15 stalls in 10 s warn; the same run without stalls
    does not, nor do 5 stalls (under the floor of 10)."""
    from later_read.jobs.prewarm.job import warn_if_starved

    def gate_after(stall_count: int) -> AdaptiveGate:
        limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
        rng = random.Random(5)
        stalls = tuple((0.5 + 0.6 * n + rng.uniform(0, 0.2), rng.uniform(0.12, 0.25)) for n in range(stall_count))
        run(limit, Service(50, 0.020), 10, stalls=stalls)
        now = [0.0]
        gate = AdaptiveGate(limit, clock=lambda: now[0])
        now[0] = 10.0
        return gate

    starved = gate_after(15)
    assert starved.limiter.stalls >= 10
    with caplog.at_level("WARNING"):
        warn_if_starved({"ab": starved, "rec": gate_after(0), "other": gate_after(5)})
    warnings = [r.getMessage() for r in caplog.records if "prewarm.adaptive_starved" in r.getMessage()]
    assert len(warnings) == 1 and "service=ab" in warnings[0], warnings
    assert f"stalls={starved.limiter.stalls}" in warnings[0] and "adaptive = false" in warnings[0]


def test_starts_up_by_doubling_until_calls_queue():
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    history = run(limit, Service(1000, 0.020), 1)
    steps = sorted({value for _, value in history})
    assert steps[0] == 20 and all(b >= STARTUP_GAIN * a for a, b in itertools.pairwise(steps[:4])), steps
    assert limit.current == 400


@pytest.mark.parametrize("seed", range(1, 11))
def test_a_noisy_round_trip_does_not_end_start_up(seed):
    """Capacity 200 and a job whose own delay varies by up to 6 ms: a window's round trip can be a tenth
    above the first one's with nothing queued. Start-up ends on a slower round trip only when the rate
    stopped growing too (a queue flattens the rate; noise does not), so it still reaches ~200 within
    0.5 s. On the round trip alone, 5 of these 10 seeds had ended start-up at 36-113 after 1 s."""
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(seed))
    history = run(limit, Service(200, 0.020, client_delay=0.006, seed=seed), 1, noisy=True)
    reached = next((at for at, value in history if value >= 180), None)
    assert reached is not None and reached < 0.5, (reached, limit.current)


def test_backs_off_on_drops_and_starts_up_again_after():
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    run(limit, Service(50, 0.020), 5)
    storm = run(limit, Service(50, 0.020, drop_ratio=0.5), 3, start=5)
    assert min(value for _, value in storm) == MIN_LIMIT and limit.backoffs > 0
    after = run(limit, Service(50, 0.020), 5, start=8)
    back = next(at for at, value in after if value >= 50)
    assert back < 9, back  # within a second: start-up, not +2 a window
    assert_cruises(settled(after, 2), 50, 56)


def test_a_few_stray_errors_are_not_a_storm():
    limit = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    history = run(limit, Service(50, 0.020, drop_ratio=0.005), 10)
    assert min(settled(history, 5)) >= 50 and limit.backoffs <= 5


def test_never_above_the_upper_bound_nor_below_the_minimum():
    limit = AdaptiveLimit(max_limit=100, rng=random.Random(1))
    history = run(limit, Service(1000, 0.020), 5)
    assert max(value for _, value in history) == 100 and limit.current == 100
    tiny = AdaptiveLimit(max_limit=400, rng=random.Random(1))
    run(tiny, Service(1, 0.020), 5)
    assert tiny.current >= MIN_LIMIT


def test_does_not_grow_when_the_job_cannot_use_its_permits():
    limit = AdaptiveLimit(max_limit=400, initial=40, rng=random.Random(1))
    run(limit, Service(1000, 0.020), 5, in_flight=10)
    assert limit.current == 40


def test_a_service_that_got_slower_is_relearned_by_the_probe():
    """Base latency 20 -> 60 ms with plenty of capacity: first read as a queue (back off), then the probe
    measures the new no-load round trip and the limit climbs again."""
    limit = AdaptiveLimit(max_limit=400, probe_seconds=4, rng=random.Random(3))
    run(limit, Service(1000, 0.020), 10)
    high = limit.current
    slow = run(limit, Service(1000, 0.060), 20, start=10)
    assert min(value for _, value in slow) < high / 2
    assert limit.min_rtt > 0.055 and limit.current >= high


def test_round_trips_of_calls_started_before_a_change_are_ignored():
    limit = AdaptiveLimit(max_limit=400, initial=20, rng=random.Random(1))
    for n in range(110):  # a first window: 20 in flight at 20 ms (1,000 calls/s): start-up doubles
        limit.sample(0.001 * (n + 1), 0.001 * (n + 1) - 0.02, 0.02, 20, False)
    assert limit.current == 42 and limit.changed_at == pytest.approx(0.1, abs=0.002)
    for n in range(50):  # terribly slow, but started before the change: not a signal
        limit.sample(0.2 + 0.005 * n, 0.05, 1.0, 24, True)
    assert limit.current == 42 and limit.backoffs == 0


# The gate -----------------------------------------------------------------------------------------
def test_the_gate_hands_out_permits_in_order_and_follows_the_limit():
    async def scenario() -> None:
        limit = AdaptiveLimit(max_limit=10, initial=2, min_limit=1)
        gate = AdaptiveGate(limit)
        order: list[int] = []

        async def call(n: int, release: asyncio.Event) -> None:
            started = await gate.acquire()
            order.append(n)
            await release.wait()
            gate.release(started, "ok")

        events = [asyncio.Event() for _ in range(5)]
        tasks = [asyncio.create_task(call(n, events[n])) for n in range(5)]
        await asyncio.sleep(0.01)
        assert order == [0, 1] and gate.in_flight == 2
        events[0].set()
        await asyncio.sleep(0.01)
        assert order == [0, 1, 2] and gate.in_flight == 2
        tasks[4].cancel()  # a waiter that gives up leaves the queue
        limit.limit = 4.0  # a higher limit lets the next waiters in on the next release
        events[1].set()
        await asyncio.sleep(0.01)
        assert order == [0, 1, 2, 3] and gate.in_flight == 2
        for event in events[2:4]:
            event.set()
        await asyncio.gather(*tasks[:4])
        assert gate.in_flight == 0 and gate.peak_in_flight == 2
        assert 0 < gate.mean_in_flight() <= 2

    asyncio.run(scenario())


def test_a_permit_granted_to_a_cancelled_waiter_goes_back():
    async def scenario() -> None:
        gate = AdaptiveGate(AdaptiveLimit(max_limit=1, initial=1, min_limit=1))
        first = await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release(first, None)  # grants the waiter's permit...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.in_flight == 0
        assert await gate.acquire() is not None and gate.in_flight == 1

    asyncio.run(scenario())
