"""Latency percentiles in constant memory, shared by the job's service calls and the simulator's stations."""

from __future__ import annotations

import math
from collections import Counter


class LatencyHistogram:
    """Log-bucketed latencies (2 % wide buckets): constant memory for any number of calls."""

    _BASE = math.log(1.02)

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, seconds: float) -> None:
        self.buckets[int(math.log(max(seconds, 1e-6) * 1e6) / self._BASE)] += 1
        self.count += 1

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) in milliseconds, 0.0 when empty."""
        if not self.count:
            return 0.0
        rank, seen = q / 100 * self.count, 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return math.exp((bucket + 0.5) * self._BASE) / 1e3
        return 0.0

    def summary(self) -> dict[str, float]:
        return {f"p{q}_ms": round(self.percentile(q), 2) for q in (50, 95, 99)}
