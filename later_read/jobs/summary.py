"""Summary: what one run of a job did (outcome counts, failures per reason, per-service figures, timing).

The jobs fill it while they run (its per-user figures through its `run_counts`, core/counts.py); it becomes
the summary lines, the JSON report and the metrics.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from later_read.core import uids as uid_rule
from later_read.core.counts import RunCounts
from later_read.log import alert, fields, get_logger

NAMED_IN_JSON = 20  # uids per reason in the JSON report and its alert; the full list goes to a uids file


@dataclass
class Summary:
    """What a run did: outcome counts, failures per reason, per-service latency, timing."""

    job: str
    date: str
    hour: int | None = None
    run_counts: RunCounts = field(default_factory=RunCounts)  # counts, failures, named: recorded per user
    services: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    status: str = "running"  # ok | failures | expired | service_down | interrupted | lock_lost | error
    extra: dict[str, Any] = field(default_factory=dict)
    total: int | None = None  # the day's (or the hour's) users by the count query, when known
    uids_path: str | None = None

    @property
    def counts(self) -> Counter[str]:
        """Users per outcome (and the figures noted on the way), as recorded."""
        return self.run_counts.counts

    @property
    def failures(self) -> Counter[str]:
        """Failed users per reason, as recorded."""
        return self.run_counts.failures

    @property
    def named(self) -> dict[str, list[str]]:
        """Reason -> the uids not finished for it (failed, missed, unservable, unfinished), as recorded."""
        return self.run_counts.named

    def save_uids(self, report_path: str | None) -> None:
        """Write every named uid next to the report (`<report>.uids.txt`, read by --uids-file)."""
        if not report_path or not self.named:
            return
        path = f"{report_path.removesuffix('.json')}.uids.txt"
        try:
            uid_rule.write_file(path, ((uid, reason) for reason, found in sorted(self.named.items()) for uid in found))
        except OSError as exc:
            alert(get_logger(self.job), f"{self.job}.uids_file_failed", path=path, error=exc.strerror)
            return
        self.uids_path = path

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
        if self.total is not None:
            data.update(total=self.total, remaining=max(self.total - self.counts.get("users", 0), 0))
        data["uids"] = {reason: found[:NAMED_IN_JSON] for reason, found in sorted(self.named.items())}
        data["uids_count"] = {reason: len(found) for reason, found in sorted(self.named.items())}
        if self.uids_path:
            data["uids_file"] = self.uids_path
        data.update(
            failed=sum(self.failures.values()),
            failures=dict(self.failures),
            duration_seconds=self.duration_seconds,
            status=self.status,
            users_per_second=round(self.counts.get("users", 0) / max(self.duration_seconds, 1e-9), 1),
            services=self.services,
            started_at=self.started_at,
            finished_at=self.finished_at,
            **self.extra,
        )
        return data

    def lines(self, keys: tuple[str, ...]) -> list[str]:
        """Human summary: one `<job>.summary` line with every count, then one line per service."""
        data = self.report(keys)
        head = {k: data[k] for k in ("date", "hour", *keys, "failed", "remaining", "total") if k in data}
        if self.extra.get("dry_run") and "sent" in head:
            head["would_send"] = head.pop("sent")  # a dry run sends nothing
        out = [
            f"{self.job}.summary status={self.status} {fields(**head)} "
            f"duration_seconds={self.duration_seconds} users_per_second={data['users_per_second']}"
            + (f" peak_calls_saved={self.extra['peak_calls_saved']}" if "peak_calls_saved" in self.extra else "")
        ]
        if self.failures:
            out.append(f"{self.job}.failures {fields(**dict(self.failures))}")
        for reason, found in sorted(self.named.items()):
            out.append(
                f"{self.job}.uids "
                + fields(reason=reason, count=len(found), first=found[0], uids_file=self.uids_path or "-")
            )
        for name, stats in self.services.items():
            flat = {k: v for k, v in stats.items() if k != "failures"}
            out.append(f"{self.job}.service name={name} {fields(**flat)}")
        return out
