"""Progress lines and the JSON report file, shared by every job.

On a terminal: a bar redrawn in place with rate and ETA. Otherwise (cron, Kubernetes): one
`<job>.progress done=... rate=... eta=...` line every `interval` seconds, so logs stay greppable.
`done` is read from the run's recorder (core/counts.py `RunCounts.settled`): the users settled since the
progress began; nothing feeds it per user.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import anyio
import orjson

from later_read.core.counts import RunCounts
from later_read.errors import UsageError
from later_read.files import write_atomic
from later_read.log import event, get_logger


class Progress:
    def __init__(
        self, job: str, interval: float, counts: RunCounts, total: int | None = None, stream: IO[str] | None = None
    ) -> None:
        self.job, self.interval, self.total = job, interval, total
        self.counts, self.base = counts, counts.settled  # `done` counts from here (the push: per hour)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.log = get_logger(job)
        self.extra: Callable[[], dict[str, Any]] | None = None  # more fields for each line (adaptive)

    @property
    def done(self) -> int:
        """Users settled since the progress began."""
        return self.counts.settled - self.base

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        rate = self.rate()
        if not self.total or not rate:
            return None
        return max(self.total - self.done, 0) / rate

    async def run(self) -> None:
        """Report until cancelled (run it in the job's task group)."""
        period = 0.5 if self.tty else self.interval
        while True:
            await anyio.sleep(period)
            self.report()

    def report(self) -> None:
        eta = self.eta_seconds()
        if self.tty:
            self.stream.write("\r" + self._bar(eta))
            self.stream.flush()
        else:
            event(
                self.log,
                f"{self.job}.progress",
                done=self.done,
                total=self.total or "?",
                rate=round(self.rate(), 1),
                eta_seconds=round(eta) if eta is not None else "?",
                **(self.extra() if self.extra is not None else {}),
            )

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + self._bar(0.0) + "\n")
            self.stream.flush()

    def _bar(self, eta: float | None) -> str:
        width = 30
        if self.total:
            filled = min(width, int(width * self.done / self.total))
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
        else:
            bar = f"{self.done}"
        eta_text = f" ETA {eta:.0f}s" if eta is not None else ""
        extra = "".join(f" {k}={v}" for k, v in self.extra().items()) if self.extra is not None else ""
        return f"{self.job} {bar} {self.rate():.0f}/s{eta_text}{extra}   "


def check_report_path(path: str) -> None:
    """Fail now, not after an hour of work, when the report cannot be written."""
    folder = Path(path).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(
            f"--report: cannot write {path}: {folder} is not a writable directory; create it or pick another path"
        )


def write_report(path: str | Path, data: dict) -> None:
    """Write the JSON report atomically (a reader never sees half a file; files.atomic_file)."""
    write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
