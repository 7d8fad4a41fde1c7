"""Sorting the hour's users by what Redis says about them: who gets a message, who is skipped, why.

For each user (one MGET pipeline per batch reads the value and the sent marker):

    sent marker present (and no --force)      already_sent          quiet
    no marker, a row at an earlier hour       earlier_hour          quiet: that hour's user (its runs
                                                                    alone send it, or count it expired)
    value absent, or computed for another day misses (+ stale)      alert line, rate-limited
    value does not parse                      corrupt               alert line, rate-limited
    "not in experiment" / "no recommendation" the outcome's name    quiet
    uid no job can serve (empty, too long)    unservable            one total line
    a recommendation                          a Hit                 goes on to material and Kafka

Misses and corrupt values are returned separately so `--on-miss live` can compute them on the spot.
Per-user alert lines stop after `push.miss_log_limit` (a million misses must not write a million lines);
`alert_totals` then writes one line with the exact count and ratio, which is what alert rules match. The
expiry pass (nobody is sent) sorts with `alerts=False`: it counts, it does not alert per user. Each user is
recorded by one call to the run's RunCounts (core/counts.py), which the progress lines read.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import NamedTuple

from later_read.core.counts import UNSERVABLE, RunCounts
from later_read.core.uids import unservable
from later_read.core.users import TaskUser
from later_read.core.value import ABSENT, STALE, USABLE, CachedValue, Verdict, judge, new_tuple
from later_read.log import alert, get_logger

log = get_logger("push")


class Hit(NamedTuple):
    """A user with today's recommendation: the material is fetched and a message produced."""

    user: TaskUser
    value: CachedValue


class AlertLimiter:
    """Alert lines for the first `limit` events of a kind, then one line saying the rest are counted."""

    def __init__(self, name: str, limit: int, **context: object) -> None:
        self.name, self.limit, self.context = name, limit, context
        self.count = 0

    def __call__(self, **values: object) -> None:
        self.count += 1
        if self.count <= self.limit:
            alert(log, self.name, **values, **self.context)
        elif self.count == self.limit + 1:
            alert(
                log,
                f"{self.name}_suppressed",
                after=self.limit,
                **self.context,
                note="further lines suppressed; the total is in the summary",
            )


class Sorter:
    def __init__(
        self,
        date: str,
        hour: int,
        force: bool,
        counts: RunCounts,
        miss_log_limit: int,
        names: bool = True,
        alerts: bool = True,
    ) -> None:
        self.date, self.hour, self.force, self.counts = date, hour, force, counts
        self.names = names  # name the users not served, per reason (not when a miss may be computed live)
        limit = miss_log_limit if alerts else -1  # -1: not even the `_suppressed` line
        self.miss_alert = AlertLimiter("push.cache_miss", limit, date=date, hour=hour)
        self.corrupt_alert = AlertLimiter("push.corrupt_value", limit, date=date, hour=hour)

    def sort(
        self,
        users: Sequence[TaskUser],
        values: Sequence[bytes | None],
        sent: Sequence[bytes | None],
        earlier: Container[str] = frozenset(),
    ) -> tuple[list[Hit], list[TaskUser]]:
        """(hits, users without a usable value: misses and corrupt ones). `earlier`: the uids with a row at
        an earlier hour of the date."""
        hits: list[Hit] = []
        missing: list[TaskUser] = []
        counts = self.counts
        counts.note("users", n=len(users))
        for user, raw, marker in zip(users, values, sent, strict=True):
            reason = unservable(user.uid)
            if reason is not None:
                counts.done(UNSERVABLE, user.uid if self.names else None, reason)
            elif marker is not None and not self.force:
                counts.done("already_sent")
            elif user.uid in earlier:
                counts.done("earlier_hour")
            else:
                self._sort_value(user, judge(raw, self.date), hits, missing)
        return hits, missing

    def _sort_value(self, user: TaskUser, verdict: Verdict, hits: list[Hit], missing: list[TaskUser]) -> None:
        """The user by its value's verdict for the date (core/value.py): a hit, an outcome, or missing."""
        state, value = verdict.state, verdict.value
        if state == USABLE:
            assert value is not None  # a usable verdict carries its value
            hit = self.outcome(user, value)
            if hit is not None:
                hits.append(hit)
        elif state == ABSENT:
            self._miss(user, ABSENT, missing)
        elif state == STALE:
            assert value is not None  # so does a stale one
            self._miss(user, STALE, missing, value_date=value.date)
        else:
            self.counts.note("corrupt", user.uid if self.names else None)
            self.corrupt_alert(
                uid=user.uid, problem=verdict.problem, fix="rerun the prewarm for this uid, or push with --on-miss live"
            )
            missing.append(user)

    def outcome(self, user: TaskUser, value: CachedValue) -> Hit | None:
        """A Hit for a recommendation; the no-push outcomes are counted (and finished) here."""
        if value.is_rec:
            return new_tuple(Hit, (user, value))
        self.counts.done(value.outcome)
        return None

    def _miss(self, user: TaskUser, reason: str, missing: list[TaskUser], **extra: object) -> None:
        self.counts.note("misses", user.uid if self.names else None, f"miss_{reason}")
        if reason == STALE:
            self.counts.note("stale")
        self.miss_alert(uid=user.uid, reason=reason, **extra)
        missing.append(user)

    def alert_totals(self) -> None:
        """The lines alert rules count on: exact miss and corrupt totals with their ratio of the hour."""
        counts = self.counts.counts
        users = counts["users"]
        for name, key in (
            ("push.misses", "misses"),
            ("push.corrupt_values", "corrupt"),
            ("push.unservable", UNSERVABLE),
        ):
            if counts[key]:
                alert(
                    log,
                    name,
                    count=counts[key],
                    users=users,
                    ratio=f"{counts[key] / max(users, 1):.6f}",
                    date=self.date,
                    hour=self.hour,
                )
