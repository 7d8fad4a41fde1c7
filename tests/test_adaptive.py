"""The adaptive concurrency limit (later_read/clients/adaptive.py) against a model of a service.

Pure unit tests of the algorithm (no process boundary is crossed): `Service` is a closed-loop model of a
service that serves `capacity` calls at once in `base` seconds each and queues the rest, so a client
keeping L calls in flight sees a round trip of base x max(1, L / capacity) and a throughput of
min(L, capacity) / base (Little's law). Time is simulated in 1 ms steps; nothing here is timed.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from later_read.clients.adaptive import MIN_LIMIT, RAMP_AFTER, AdaptiveGate, VegasLimit

STEP = 0.001


class Service:
    """The steady-state behaviour of a service with `capacity` slots and `base` seconds per call."""

    def __init__(self, capacity: int, base: float, drop_ratio: float = 0.0) -> None:
        self.capacity, self.base, self.drop_ratio = capacity, base, drop_ratio
        self.rng = random.Random(7)

    def rtt(self, in_flight: int) -> float:
        return self.base * max(1.0, in_flight / self.capacity)

    def throughput(self, in_flight: int) -> float:
        return min(in_flight, self.capacity) / self.base


def run(limit: VegasLimit, service: Service, seconds: float, start: float = 0.0,
        in_flight: int | None = None) -> list[tuple[float, int]]:
    """Drive `limit` for `seconds` of simulated time; the job keeps `in_flight` (default: the limit) busy.

    Returns (time, limit) after every step.
    """
    history, due, now = [], 0.0, start
    while now < start + seconds:
        now += STEP
        busy = min(limit.current, in_flight) if in_flight is not None else limit.current
        due += service.throughput(busy) * STEP
        while due >= 1:
            due -= 1
            rtt = service.rtt(busy)
            dropped = service.rng.random() < service.drop_ratio
            limit.sample(now, now - rtt, rtt, busy, dropped)
        history.append((now, limit.current))
    return history


def settled(history: list[tuple[float, int]], last_seconds: float) -> list[int]:
    end = history[-1][0]
    return [value for at, value in history if at > end - last_seconds]


def test_finds_the_capacity_of_a_service_that_queues():
    """capacity 50 at 20 ms, upper bound 400: the limit settles a few calls above 50 (alpha..beta queued),
    not at 400."""
    limit = VegasLimit(max_limit=400, rng=random.Random(1))
    history = run(limit, Service(50, 0.020), 10)
    steady = settled(history, 5)
    assert 50 <= min(steady) and max(steady) <= 55, (min(steady), max(steady))
    assert 0.019 < limit.min_rtt < 0.021


def test_follows_a_capacity_cut_within_a_second_of_simulated_time():
    limit = VegasLimit(max_limit=400, rng=random.Random(1))
    run(limit, Service(50, 0.020), 5)
    history = run(limit, Service(25, 0.020), 5, start=5)
    after_one_second = [value for at, value in history if at > 6]
    assert 25 <= min(after_one_second) and max(after_one_second) <= 30, after_one_second[:5]


def test_grows_back_when_capacity_returns():
    limit = VegasLimit(max_limit=400, rng=random.Random(1))
    run(limit, Service(25, 0.020), 5)
    history = run(limit, Service(80, 0.020), 5, start=5)
    assert 80 <= min(settled(history, 2)) and max(settled(history, 2)) <= 88


def test_after_a_decrease_it_grows_by_one_root_until_calm_for_a_few_windows():
    """The fast ramp (+beta a window) is for a limit far below the capacity; right after a decrease, growth
    is +1 x root a window until RAMP_AFTER calm windows in a row (the Vegas band is 2..4 calls wide, a +4
    step would jump across it and oscillate)."""
    limit = VegasLimit(max_limit=400, rng=random.Random(1))
    run(limit, Service(50, 0.020), 5)
    run(limit, Service(25, 0.020), 1, start=5)      # decreased to about 25
    history = run(limit, Service(1000, 0.020), 2, start=6)
    steps = [b - a for (_, a), (_, b) in zip(history, history[1:]) if b != a]
    assert steps[:RAMP_AFTER + 1] == [1] * RAMP_AFTER + [4], steps[:8]   # then beta again


def test_backs_off_on_drops_and_probes_back_up():
    limit = VegasLimit(max_limit=400, rng=random.Random(1))
    run(limit, Service(50, 0.020), 5)
    storm = run(limit, Service(50, 0.020, drop_ratio=0.5), 3, start=5)
    assert min(value for _, value in storm) == MIN_LIMIT and limit.backoffs > 0
    after = run(limit, Service(50, 0.020), 5, start=8)
    assert 50 <= min(settled(after, 2)) and max(settled(after, 2)) <= 60


def test_a_few_stray_errors_are_not_a_storm():
    limit = VegasLimit(max_limit=400, rng=random.Random(1))
    history = run(limit, Service(50, 0.020, drop_ratio=0.005), 10)
    assert 50 <= min(settled(history, 5)) and limit.backoffs <= 5


def test_never_above_the_upper_bound_nor_below_the_minimum():
    limit = VegasLimit(max_limit=100, rng=random.Random(1))
    history = run(limit, Service(1000, 0.020), 5)
    assert max(value for _, value in history) == 100 and limit.current == 100
    tiny = VegasLimit(max_limit=400, rng=random.Random(1))
    run(tiny, Service(1, 0.020), 5)
    assert tiny.current >= MIN_LIMIT


def test_does_not_grow_when_the_job_cannot_use_its_permits():
    limit = VegasLimit(max_limit=400, initial=40, rng=random.Random(1))
    run(limit, Service(1000, 0.020), 5, in_flight=10)
    assert limit.current == 40


def test_a_service_that_got_slower_is_relearned_by_the_probe():
    """Base latency 20 -> 60 ms with plenty of capacity: first read as a queue (back off), then the probe
    measures the new no-load round trip and the limit climbs again."""
    limit = VegasLimit(max_limit=400, probe_seconds=4, rng=random.Random(3))
    run(limit, Service(1000, 0.020), 10)
    high = limit.current
    slow = run(limit, Service(1000, 0.060), 20, start=10)
    assert min(value for _, value in slow) < high / 2
    assert limit.min_rtt > 0.055 and limit.current >= high


def test_samples_of_calls_started_before_a_change_are_ignored():
    limit = VegasLimit(max_limit=400, initial=20, rng=random.Random(1))
    for n in range(22):  # a first window (0.005 .. 0.11 s): 20 ms each, no queue: the limit grows by beta (4)
        limit.sample(0.005 * (n + 1), 0.005 * (n + 1) - 0.02, 0.02, 20, False)
    assert limit.current == 24 and limit.changed_at == pytest.approx(0.11)
    for n in range(50):  # terribly slow, but started before the change: not a signal
        limit.sample(0.2 + 0.005 * n, 0.05, 1.0, 24, True)
    assert limit.current == 24 and limit.backoffs == 0


# The gate -----------------------------------------------------------------------------------------
def test_the_gate_hands_out_permits_in_order_and_follows_the_limit():
    async def scenario() -> None:
        limit = VegasLimit(max_limit=10, initial=2, min_limit=1)
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
        tasks[4].cancel()                     # a waiter that gives up leaves the queue
        limit.limit = 4.0                     # a higher limit lets the next waiters in on the next release
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
        gate = AdaptiveGate(VegasLimit(max_limit=1, initial=1, min_limit=1))
        first = await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release(first, None)     # grants the waiter's permit...
        waiter.cancel()               # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.in_flight == 0
        assert await gate.acquire() is not None and gate.in_flight == 1

    asyncio.run(scenario())
