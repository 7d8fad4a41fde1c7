"""Summary: what one run of a job did (outcome counts, failures per reason, per-service figures, timing).

The jobs fill it while they run; it becomes the summary lines, the JSON report and the metrics.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from later_read.log import fields


@dataclass
class Summary:
    """What a run did: outcome counts, failures per reason, per-service latency, timing."""

    job: str
    date: str
    hour: int | None = None
    counts: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    services: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    status: str = "running"   # ok | failures | service_down | interrupted | error
    extra: dict[str, Any] = field(default_factory=dict)

    def finish(self, status: str) -> None:
        self.status = status
        self.finished_at = time.time()

    @property
    def duration_seconds(self) -> float:
        return round((self.finished_at or time.time()) - self.started_at, 3)

    def report(self, keys: tuple[str, ...]) -> dict:
        """The JSON report: `keys` are the outcome counters the job promises (0 when absent)."""
        data: dict[str, Any] = {"job": self.job, "date": self.date}
        if self.hour is not None:
            data["hour"] = self.hour
        data.update({k: self.counts.get(k, 0) for k in keys})
        data.update(failed=sum(self.failures.values()), failures=dict(self.failures),
                    duration_seconds=self.duration_seconds, status=self.status,
                    users_per_second=round(self.counts.get("users", 0) / max(self.duration_seconds, 1e-9), 1),
                    services=self.services, started_at=self.started_at, finished_at=self.finished_at,
                    **self.extra)
        return data

    def lines(self, keys: tuple[str, ...]) -> list[str]:
        """Human summary: one `<job>.summary` line with every count, then one line per service."""
        data = self.report(keys)
        head = {k: data[k] for k in ("date", "hour", *keys, "failed") if k in data}
        out = [f"{self.job}.summary status={self.status} {fields(**head)} "
               f"duration_seconds={self.duration_seconds} users_per_second={data['users_per_second']}"
               + (f" peak_calls_saved={self.extra['peak_calls_saved']}" if "peak_calls_saved" in self.extra
                  else "")]
        if self.failures:
            out.append(f"{self.job}.failures {fields(**dict(self.failures))}")
        for name, stats in self.services.items():
            flat = {k: v for k, v in stats.items() if k != "failures"}
            out.append(f"{self.job}.service name={name} {fields(**flat)}")
        return out
