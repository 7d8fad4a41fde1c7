"""Dead-man's switch pings around a job run, healthchecks.io style: `<url>/start` as the run starts, then
`<url>` when it exits 0 or `<url>/fail` when it exits with anything else.

    pings = Pings.begin("push", settings.monitor.push_ping_url, settings.monitor)   # /start, in the background
    ...                                                                            # the run
    await pings.end(code, last_line)                                               # <url> or <url>/fail

Each ping is one POST sent by the standard library's urllib (https included: ping services live on the
internet) from a daemon thread of its own, so a ping never holds up the job, and one that hangs is left
behind when the process exits. The closing ping waits for the start ping first (within the timeout), so the
service sees them in order. Bodies are text: empty for the start; `exit_code=N`, a newline and the run's last
line (its summary line, or its error line) for the closing ping, redacted.

A ping never changes the run's outcome or exit code: one that fails (refused, an HTTP error status, no
answer within `[monitor] ping_timeout_seconds`) is one `monitor.ping_failed` warning with the URL redacted
(docs/alerting.md). Why pings and why this way: docs/design.md, "Dead-man's switch".
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import anyio

from later_read import __version__
from later_read.config.settings import MonitorSettings
from later_read.log import event, get_logger
from later_read.redact import redact

log = get_logger("monitor")
READ_LIMIT = 4096  # of a ping's reply body: read and dropped (healthchecks answers "OK")


def ping_url(url: str, suffix: str) -> str:
    """`url` with `/suffix` appended to its path (its query kept): `<url>/start`, `<url>/fail`."""
    if not suffix:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + suffix))


@dataclass
class Ping:
    """One POST in a daemon thread; `error` says why it failed once the thread is done."""

    job: str
    kind: str  # start, success, fail
    url: str
    body: bytes
    timeout: float
    error: str | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._send, name=f"ping-{self.kind}", daemon=True)
        self.thread.start()

    def _send(self) -> None:
        import urllib.error  # here, in the ping's thread: ~5 ms of start-up for runs that ping nothing
        import urllib.request

        request = urllib.request.Request(
            self.url,
            data=self.body,
            method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8", "User-Agent": f"later-read/{__version__}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(READ_LIMIT)
        except urllib.error.HTTPError as exc:
            self.error = f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            self.error = self._silent() if isinstance(exc.reason, TimeoutError) else str(exc.reason)
        except TimeoutError:
            self.error = self._silent()
        except Exception as exc:  # noqa: BLE001 - a ping must never fail the job
            self.error = f"{type(exc).__name__}: {exc}"

    def _silent(self) -> str:
        return f"no answer within {self.timeout:g} s"

    async def wait(self, seconds: float) -> None:
        """Wait for the ping up to `seconds`; say once why it failed (or that it never answered)."""
        await anyio.to_thread.run_sync(self.thread.join, max(seconds, 0.0), abandon_on_cancel=True)
        if self.thread.is_alive():
            self.error = self._silent()
        if self.error is not None:
            event(
                log,
                "monitor.ping_failed",
                logging.WARNING,
                job=self.job,
                ping=self.kind,
                url=redact(self.url),
                error=self.error[:200],
                fix=f"the run itself is unaffected; check [monitor] {self.job}_ping_url and the ping service",
            )


class Pings:
    """The pings of one run (nothing at all when the job has no ping URL)."""

    def __init__(self, job: str, url: str, timeout: float) -> None:
        self.job, self.url, self.timeout = job, url, timeout
        self.started: Ping | None = None

    @classmethod
    def begin(cls, job: str, url: str, settings: MonitorSettings) -> Pings:
        """Send `<url>/start` in the background (when `url` is set)."""
        pings = cls(job, url, settings.ping_timeout_seconds)
        if url:
            pings.started = Ping(job, "start", ping_url(url, "start"), b"", pings.timeout)
        return pings

    async def end(self, code: int, last_line: str) -> None:
        """`<url>` for exit code 0, else `<url>/fail`, with `exit_code=N` and the last line; returns within
        twice the timeout (the start ping's wait, then this one's) whatever the service does."""
        if not self.url:
            return
        if self.started is not None:
            await self.started.wait(self.timeout)
        kind = "success" if code == 0 else "fail"
        body = redact(f"exit_code={code}\n{last_line}\n").encode("utf-8")
        began = time.monotonic()
        closing = Ping(self.job, kind, ping_url(self.url, "" if code == 0 else "fail"), body, self.timeout)
        await closing.wait(self.timeout - (time.monotonic() - began))
