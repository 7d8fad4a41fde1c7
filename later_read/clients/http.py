"""The HTTP plumbing shared by the three service clients.

One `HttpPool` per job (`wire.py`: keep-alive HTTP/1.1 on asyncio, a third of aiohttp's CPU per request
here; docs/design.md, "HTTP stack"). `ServiceCaller` wraps it for one service: a per-request timeout,
retries of transient failures with exponential backoff and jitter (stamina, declared at the call), an
optional request-rate cap, an optional bound on its calls in flight (`slots`, fixed, or `gate`, the
adaptive one of clients/adaptive.py), a circuit breaker, and per-reason counters and a latency histogram
for the job summary. Wire errors are translated into `later_read.errors` here and nowhere else: a reply
over `[services] max_reply_bytes` (and, in the contract parsers, a field over its bound: core/bounds.py)
is the permanent reason `oversize_reply`, never retried, a failed call for the breaker as a malformed
reply is, and no overload signal for `gate`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson

from later_read import runtime
from later_read.clients.adaptive import AdaptiveGate
from later_read.clients.latency import LatencyHistogram
from later_read.clients.rate import RateLimiter
from later_read.clients.wire import HttpPool, Origin, WireError, WireTimeout, WireTooLarge
from later_read.config.settings import ServiceSettings
from later_read.core.bounds import OVERSIZE
from later_read.errors import PermanentServiceError, ServiceDown, ServiceError, TransientServiceError

T = TypeVar("T")


def open_session(connections: int, settings: ServiceSettings, timeout_seconds: float | None = None) -> HttpPool:
    """The job's one HTTP pool: keep-alive connections sized to the concurrency, the per-request timeout
    (`timeout_seconds`, else [services] timeout_seconds) and the reply bound ([services] max_reply_bytes)."""
    timeout = settings.timeout_seconds if timeout_seconds is None else timeout_seconds
    return HttpPool(limit=connections, timeout_seconds=timeout, max_reply_bytes=settings.max_reply_bytes)


class Breaker:
    """Trips when more than `ratio` of the last `window` attempts (at least `min_calls`) failed."""

    def __init__(self, window: int, min_calls: int, ratio: float) -> None:
        self.results: deque[bool] = deque(maxlen=window)
        self.failures = 0
        self.min_calls = min(min_calls, window)
        self.ratio = ratio
        self.tripped = False

    def record(self, ok: bool) -> None:
        if len(self.results) == self.results.maxlen and not self.results[0]:
            self.failures -= 1
        self.results.append(ok)
        self.failures += not ok
        if len(self.results) >= self.min_calls and self.failures / len(self.results) > self.ratio:
            self.tripped = True

    @property
    def failure_ratio(self) -> float:
        return self.failures / len(self.results) if self.results else 0.0


@dataclass
class CallStats:
    """One service's figures for the job summary: calls, retries, final failures per reason, latency, peak rate."""

    calls: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)  # final failures per reason
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    peak_qps: int = 0  # the most calls started within one wall-clock second
    _second: int = -1
    _in_second: int = 0

    def count_call(self) -> None:
        """One more call (every attempt is a call the service serves), counted per second for peak_qps."""
        self.calls += 1
        second = int(time.time())
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        if self._in_second > self.peak_qps:
            self.peak_qps = self._in_second

    def summary(self) -> dict:
        return {
            "calls": self.calls,
            "peak_qps": self.peak_qps,
            "retries": self.retries,
            "failures": dict(self.failures),
            **self.latency.summary(),
        }


class ServiceCaller:
    """POSTs JSON to one service endpoint with the job's retry, rate and breaker policy."""

    def __init__(
        self, name: str, url: str, session: HttpPool, settings: ServiceSettings, qps: float = 0.0, limiter=None
    ) -> None:
        """`limiter` (a SharedRateLimiter, the cap shared by all shards) replaces the local one."""
        self.name, self.url, self.session, self.settings = name, url, session, settings
        self.origin = Origin.parse(url)
        self.breaker = Breaker(settings.breaker_window, settings.breaker_min_calls, settings.breaker_failure_ratio)
        # None when uncapped: the hot path then makes no limiter call at all
        self.limiter = limiter or (RateLimiter(qps) if qps > 0 else None)
        self.stats = CallStats()
        self.gate: AdaptiveGate | None = None  # adaptive concurrency (the prewarm's `adaptive = true`)
        self.slots: asyncio.Semaphore | None = None  # a fixed bound on the calls in flight (bound_calls)

    def bound_calls(self, limit: int) -> None:
        """At most `limit` calls to this service in flight at once, whoever makes them (the prewarm's
        `concurrency`, per service); the waiters are served first come first. `gate` replaces it."""
        self.slots = asyncio.Semaphore(limit)

    async def post(self, body: dict, parse: Callable[[dict | None], T]) -> T:
        """`parse` of the decoded reply (None for 404); ServiceError when every attempt failed.

        The first attempt runs outside stamina so the common case costs no retry machinery; when it
        fails, stamina's loop starts by re-raising that failure, so even the first retry waits its
        backoff with jitter (tests switch the waits off with `stamina.set_testing`).
        """
        try:
            return await self._attempt(body, parse)
        except TransientServiceError as exc:
            if self.settings.max_attempts <= 1:
                self.stats.failures[exc.reason] += 1
                raise
            first: TransientServiceError | None = exc
        try:
            async for attempt in runtime.retry_context(
                on=TransientServiceError,
                attempts=self.settings.max_attempts,
                timeout=None,
                wait_initial=self.settings.backoff_initial_seconds,
                wait_max=self.settings.backoff_max_seconds,
                wait_jitter=self.settings.backoff_initial_seconds,
            ):
                with attempt:
                    if first is not None:
                        failed, first = first, None
                        raise failed
                    self.stats.retries += 1
                    return await self._attempt(body, parse)
        except TransientServiceError as exc:
            self.stats.failures[exc.reason] += 1
            raise
        raise AssertionError("unreachable: stamina either returns or raises")

    async def _attempt(self, body: dict, parse: Callable[[dict | None], T]) -> T:
        if self.breaker.tripped:
            raise ServiceDown(
                f"{self.name} service looks down: {self.breaker.failure_ratio:.0%} of its "
                f"last {len(self.breaker.results)} calls failed ({self.url}); "
                "check the service, then rerun (finished users are kept)"
            )
        if self.limiter is not None:
            await self.limiter.wait()
        if self.gate is not None:
            return await self._gated(body, parse, self.gate)
        if self.slots is not None:
            async with self.slots:
                return await self._call(body, parse)
        return await self._call(body, parse)

    async def _call(self, body: dict, parse: Callable[[dict | None], T]) -> T:
        self.stats.count_call()
        started = time.perf_counter()
        try:
            result = parse(await self._request(body))
        except ServiceError as exc:
            self.breaker.record(False)
            if isinstance(exc, PermanentServiceError):
                self.stats.failures[exc.reason] += 1
            raise
        self.breaker.record(True)
        self.stats.latency.add(time.perf_counter() - started)
        return result

    async def _gated(self, body: dict, parse: Callable[[dict | None], T], gate: AdaptiveGate) -> T:
        """One attempt under an adaptive permit; its round trip and verdict are the limit's sample.

        Transient failures (429, 5xx, timeouts, connection errors) are "drop" (overload); a permanent
        error or a cancellation is no signal. The latency histogram starts with the permit, not the wait.
        """
        started = await gate.acquire()
        verdict: str | None = None
        self.stats.count_call()
        try:
            result = parse(await self._request(body))
            verdict = "ok"
        except TransientServiceError:
            verdict = "drop"
            self.breaker.record(False)
            raise
        except ServiceError as exc:
            self.breaker.record(False)
            self.stats.failures[exc.reason] += 1
            raise
        finally:
            gate.release(started, verdict)
        self.breaker.record(True)
        self.stats.latency.add(gate.clock() - started)
        return result

    async def _request(self, body: dict) -> dict | None:
        try:
            status, raw = await self.session.post(self.origin, orjson.dumps(body))
        except WireTimeout:
            raise TransientServiceError(self.name, "timeout") from None
        except WireTooLarge as exc:  # never retried: the same request gets the same reply
            raise PermanentServiceError(self.name, OVERSIZE, str(exc)) from None
        except WireError as exc:
            raise TransientServiceError(self.name, "connection", str(exc)) from None
        if status == 200:
            return self._decode(raw)
        if status == 404:
            return None
        if status == 429 or status >= 500:
            raise TransientServiceError(self.name, f"http_{status}")
        raise PermanentServiceError(self.name, f"http_{status}", raw[:100].decode("utf-8", "replace"))

    def _decode(self, raw: bytes | bytearray) -> dict:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PermanentServiceError(self.name, "malformed", "body is not JSON") from None
        if not isinstance(data, dict):
            raise PermanentServiceError(self.name, "malformed", "body is not a JSON object")
        return data


def malformed(service: str, what: str) -> PermanentServiceError:
    """The error for a reply that parsed but lacks a field the contract requires."""
    return PermanentServiceError(service, "malformed", what)
