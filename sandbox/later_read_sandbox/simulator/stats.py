"""Call counters of the simulator, read by tests through `GET /_sim/stats` and `GET /_sim/calls`.

A request is counted when it is decided (its status and fault are drawn on arrival), so a test that has
received every answer, or given up waiting for a held one, reads final numbers. `peak_qps` is the one
figure taken at completion: the most responses written within one wall-clock second (per-second buckets).
`first_at`/`last_at` are the wall-clock arrival times of the first and last request: a rate cap's floor
on the span (N calls under a cap of C/s cannot arrive within less than (N - C)/C s) holds however the
host delays single requests, where a per-second count moves with every stall of the simulator's loop.
"""

from __future__ import annotations

import time
from typing import Any

FAULTS = ("none", "5xx", "429", "timeout", "malformed", "shed", "hostile")  # shed: refused by a full queue


class EndpointStats:
    """Counters of one endpoint ("ab", "rec" or "material")."""

    __slots__ = (
        "calls",
        "by_status",
        "by_fault",
        "per_uid",
        "peak_qps",
        "first_at",
        "last_at",
        "_second",
        "_in_second",
    )

    def __init__(self) -> None:
        self.calls = 0
        self.by_status: dict[int, int] = {}
        self.by_fault: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self.per_uid: dict[str, int] = {}
        self.peak_qps = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._second = -1
        self._in_second = 0

    def decided(self, uid: str | None, status: int, fault: str) -> None:
        now = time.time()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.calls += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.by_fault[fault] += 1
        if uid is not None:
            self.per_uid[uid] = self.per_uid.get(uid, 0) + 1

    def completed(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        if self._in_second > self.peak_qps:
            self.peak_qps = self._in_second

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
            "by_fault": dict(self.by_fault),
            "distinct_uids": len(self.per_uid),
            "peak_qps": self.peak_qps,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "max_calls_per_uid": max(self.per_uid.values(), default=0),
        }


class SimulatorStats:
    """One EndpointStats per simulated service; replaced wholesale by `/_sim/reset`."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self.endpoints = {name: EndpointStats() for name in endpoints}

    def to_dict(self) -> dict[str, Any]:
        return {name: stats.to_dict() for name, stats in self.endpoints.items()}
