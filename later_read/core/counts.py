"""How a run counts what happened to each user it looked at (`RunCounts`), and how it spells a failure.

`RunCounts` is the one recorder both jobs use: a user's outcome (or its failure and reason) is recorded by
one call, which counts it, names the uid when the run did not finish it, and feeds what follows the run as
it goes (the progress lines read `settled`; the prewarm's per-hour readiness is told of each failure).
The summary, the JSON report, the metrics and the push's ledger entries read its figures:

    counts     users per outcome (`done`), and figures noted on the way (`note`: users read, misses, users
               left for the rerun), under the names the report prints (the prewarm's stored
               recommendations are `cached`, whatever the value's own outcome field says)
    failures   failed users per reason (`failed`, `failed_after`)
    named      reason -> the uids a run did not finish for it, in order (the uids file lists them all, the
               JSON report the first few of each: jobs/summary.py)
    settled    users the run is through with: what the progress lines count (jobs/progress.py)

A failure is counted per reason in the summary's `failures` (the report, the metrics' `reason` label, the
ledger's `failed`) and its users are named per reason (the uids file next to `--report`). A service's
failure reason is the client's (`ServiceError.reason`: `timeout`, `http_503`, `oversize_reply`, ...)
spelled by where the call was made:

    prewarm, a user's A/B or recommend call       <service>.<reason>          ab.http_503, rec.malformed
    push --on-miss live, the same calls           live_<service>_<reason>     live_ab_timeout
    push, the user's card (material service)      material_<reason>           material_http_503

These names are what operators, alert rules and the documented reports read (docs/alerting.md,
tests/test_hostile_services.py, tests/test_prewarm.py), so they are kept as they are; every job spells
them through the functions below and the constants, never by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

# A user the run did not get to, by why (counts, and the named uids per reason).
UNFINISHED = "unfinished"  # prewarm: a stop (down service, signal) came before the user was done
NOT_PROCESSED = "not_processed"  # push: taken after a stop; the rerun sends it
EXPIRED = "expired"  # push: its hour's window closed before it was sent
UNDELIVERED = "undelivered"  # push: produced, never confirmed by Kafka (no sent marker)

# Outcome counts whose name is not a value's outcome: the report's, the metrics' `outcome` label.
CACHED = "cached"  # prewarm: a recommendation computed and stored (the value's outcome "rec")
UNSERVABLE = "unservable"  # both jobs: a uid no job can serve (core/uids.py), named per uid_* reason


def service_failure(service: str, reason: str) -> str:
    """The prewarm's failure reason for a user whose `service` call ("ab", "rec") failed with `reason`."""
    return f"{service}.{reason}"


def live_failure(service: str, reason: str) -> str:
    """The push's failure reason for a missed user computed on the spot (`--on-miss live`) whose `service`
    call failed with `reason`."""
    return f"live_{service}_{reason}"


def material_failure(reason: str) -> str:
    """The push's failure reason for a user whose card fetch failed with `reason`."""
    return f"material_{reason}"


def undelivered(reason: str) -> str:
    """The name under which the push lists a user whose message Kafka reported undelivered for `reason`."""
    return f"{UNDELIVERED}_{reason}"


class RunCounts:
    """What one run did to the users it looked at, one call per user (module docstring). Plain counters:
    the push records every user it reads through here, so each call is a few increments, nothing built."""

    __slots__ = ("counts", "failures", "named", "settled", "hour_failed")

    def __init__(
        self,
        counts: Mapping[str, int] | None = None,
        failures: Mapping[str, int] | None = None,
        *,
        hour_failed: Callable[[int], None] | None = None,
    ) -> None:
        self.counts: Counter[str] = Counter(counts or {})
        self.failures: Counter[str] = Counter(failures or {})
        self.named: dict[str, list[str]] = {}
        self.settled = 0
        self.hour_failed = hour_failed  # the prewarm's HourTracker.user_failed: a failed user settles its hour

    def done(self, outcome: str, uid: str | None = None, reason: str | None = None, n: int = 1) -> None:
        """`n` users the run is through with, counted under `outcome`; `uid` is named under `reason`
        (default: the outcome) when the run did not serve it (unservable, expired)."""
        self.counts[outcome] += n
        self.settled += n
        if uid is not None:
            self.name(reason or outcome, uid)

    def note(self, key: str, uid: str | None = None, reason: str | None = None, n: int = 1) -> None:
        """`n` users counted under `key` that the run is not through with: read, missed (to be computed
        or dropped), or left for the rerun (unfinished, not_processed). `uid` named as in `done`."""
        self.counts[key] += n
        if uid is not None:
            self.name(reason or key, uid)

    def failed(self, reason: str, uid: str | None = None, hour: int | None = None) -> None:
        """A user the run is through with that failed for `reason` (spelled by the functions above): counted
        per reason, `uid` named under it, and its push hour `hour` told (the prewarm's readiness)."""
        self.failures[reason] += 1
        self.settled += 1
        if uid is not None:
            self.name(reason, uid)
        if hour is not None and self.hour_failed is not None:
            self.hour_failed(hour)

    def settle(self, n: int = 1) -> None:
        """`n` users the run is through with whose outcome is counted when it is known (the push's message
        handed to Kafka: `sent` once confirmed, else a failure) or was counted already (a miss dropped)."""
        self.settled += n

    def failed_after(self, reason: str, n: int, named: Iterable[tuple[str, str]] = ()) -> None:
        """`n` users already settled that failed afterwards for `reason` (a message Kafka did not confirm);
        `named`: (reason, uid) pairs naming them. Nothing counted when `n` is 0."""
        if n:
            self.failures[reason] += n
        for found, uid in named:
            self.name(found, uid)

    def moved(self, source: str, target: str, n: int) -> None:
        """`n` users counted under `source` that belong under `target` (the push's expiry pass: users an
        earlier run found without a card are not expired)."""
        self.counts[source] -= n
        self.counts[target] += n

    def name(self, reason: str, uid: str) -> None:
        """Remember that `uid` was not finished for `reason`."""
        found = self.named.get(reason)
        if found is None:
            self.named[reason] = [uid]
        else:
            found.append(uid)

    def merge(self, other: RunCounts) -> None:
        """Add another recorder's figures to these (a job's part into its run's summary)."""
        self.counts.update(other.counts)
        self.failures.update(other.failures)
        for reason, uids in other.named.items():
            self.named.setdefault(reason, []).extend(uids)
        self.settled += other.settled
