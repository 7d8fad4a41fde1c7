"""The project's exception tree. Library errors are translated into these at the boundary.

    LaterReadError                     base; exit_code 70 (internal error)
    ├── UsageError                     exit 2: bad command-line input (date, hour, uid, uids file)
    │   └── ConfigError                exit 2: bad config file, key, type or value
    ├── DependencyError                exit 3: a dependency is unreachable or answers nonsense
    │   ├── RedisUnavailable           Redis refused, timed out or failed a command
    │   ├── StarRocksError             StarRocks (MySQL protocol) refused or failed a query
    │   └── KafkaUnavailable           the Kafka cluster cannot be reached / topic missing
    ├── ServiceError                   one HTTP call to A/B, recommend or material failed
    │   ├── TransientServiceError      5xx, 429, timeout, connection error: retried
    │   └── PermanentServiceError      other 4xx, malformed body: not retried
    ├── ServiceDown                    exit 4: a service's failure ratio crossed the threshold; job stopped
    ├── CorruptValue                   a cached Redis value does not parse (counted per user, never fatal)
    ├── LockHeld                       exit 5: another run of the same job and date held the lock past the wait
    ├── Interrupted                    exit 6: SIGTERM/SIGINT; work done is kept, rerun to finish
    └── LockLost                       exit 8: the run's lock expired or was taken while it ran; it stopped
                                       producing and writing (docs/design.md, "The job lock")

Every message is one line that names the problem and the fix. Jobs that finish with failed users exit 1
(`EXIT_FAILURES`), and a push that left an hour's users unsent because the hour's window closed exits 7
(`EXIT_EXPIRED`); those are outcomes, not exceptions.
"""

from __future__ import annotations

import traceback

from later_read.redact import redact

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_DEPENDENCY = 3
EXIT_SERVICE_DOWN = 4
EXIT_LOCKED = 5
EXIT_INTERRUPTED = 6
EXIT_EXPIRED = 7  # the push counted users of an hour expired: its window closed before they were sent
EXIT_LOCK_LOST = 8  # the run found its lock gone or held by another run: it stopped producing and writing
EXIT_INTERNAL = 70


class LaterReadError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = EXIT_INTERNAL


class UsageError(LaterReadError):
    """Bad command-line input: a date, hour, uid or uids file that cannot be right."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """The configuration cannot be used; raised before anything is done."""


class DependencyError(LaterReadError):
    """A dependency the job cannot work without is unreachable or broken."""

    exit_code = EXIT_DEPENDENCY


class RedisUnavailable(DependencyError):
    pass


class StarRocksError(DependencyError):
    pass


class KafkaUnavailable(DependencyError):
    pass


class ServiceError(LaterReadError):
    """One call to a downstream HTTP service failed; `reason` is a short stable label for counting."""

    def __init__(self, service: str, reason: str, detail: str = "") -> None:
        self.service = service
        self.reason = reason
        self.detail = detail
        super().__init__(f"{service}: {reason}" + (f" ({detail})" if detail else ""))


class TransientServiceError(ServiceError):
    """5xx, 429, timeout or connection error: worth retrying."""


class PermanentServiceError(ServiceError):
    """Another 4xx or a malformed body: retrying will not help."""


class ServiceDown(LaterReadError):
    exit_code = EXIT_SERVICE_DOWN


class CorruptValue(LaterReadError):
    """A Redis value that does not parse as a later-read value."""


class LockHeld(LaterReadError):
    exit_code = EXIT_LOCKED


class Interrupted(LaterReadError):
    exit_code = EXIT_INTERRUPTED


class LockLost(LaterReadError):
    """The run's lock is no longer its own (expired while Redis or the process stalled, taken by another
    run, deleted): the run stopped producing and its fenced writes were refused."""

    exit_code = EXIT_LOCK_LOST


INTERNAL_ERROR_LINE = "later-read: internal error (a bug); the traceback is above"


def error_line(error: LaterReadError) -> str:
    """The one stderr line the CLI ends with for a project error, redacted (`redact`)."""
    return redact(f"later-read: error: {error}")


def traceback_text(error: BaseException) -> str:
    """A bug's traceback as printed before INTERNAL_ERROR_LINE, redacted (an exception's text or a frame's
    source line may hold a URL with its password)."""
    return redact("".join(traceback.format_exception(error)))
