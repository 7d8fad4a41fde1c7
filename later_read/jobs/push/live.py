"""`push --on-miss live`: compute a missed user's recommendation on the spot, within a budget.

The point of the prewarm is that the hourly push does not call A/B and recommend; live computation is a
safety net for a prewarm that missed some users, not a second prewarm. So at most `push.live_budget`
users per run are computed (with the prewarm's rule, `jobs.decide.decide`, and at most
`push.concurrency` in flight); the rest stay misses, with one alert line when the budget runs out.
Computed values are stored like the prewarm stores them (not in --dry-run), so a rerun of the hour
finds them in Redis. What happens to each user is recorded in the run's RunCounts (core/counts.py); the
Sorter, which records into the same one, only says whether a computed value is a hit.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from later_read import runtime
from later_read.connections import Services
from later_read.core.counts import RunCounts, live_failure
from later_read.core.users import TaskUser
from later_read.core.value import CachedValue, encode
from later_read.errors import ServiceError
from later_read.jobs.decide import decide
from later_read.jobs.push.select import Hit, Sorter
from later_read.log import alert, get_logger
from later_read.store import Store

log = get_logger("push")


class LiveResolver:
    def __init__(
        self,
        services: Services,
        store: Store,
        sorter: Sorter,
        counts: RunCounts,
        *,
        date: str,
        budget: int,
        concurrency: int,
        write: bool,
    ) -> None:
        self.services, self.store, self.sorter, self.counts, self.date = services, store, sorter, counts, date
        self.remaining = budget
        self.budget = budget
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.write = write

    async def resolve(self, users: Sequence[TaskUser]) -> list[Hit]:
        """Hits among the users computed now; no-push outcomes are counted, over-budget ones skipped."""
        take = list(users[: self.remaining])
        self._over_budget(len(users) - len(take))
        if not take:
            return []
        self.remaining -= len(take)
        results: dict[str, CachedValue] = {}
        async with runtime.task_group() as tg:
            for user in take:
                tg.start_soon(self._decide, user, results)
        if self.write and results:
            await self.store.put_values((uid, encode(value)) for uid, value in results.items())
        self.counts.note("live", n=len(results))
        hits = [self.sorter.outcome(user, results[user.uid]) for user in take if user.uid in results]
        return [hit for hit in hits if hit is not None]

    async def _decide(self, user: TaskUser, results: dict[str, CachedValue]) -> None:
        async with self.limiter:
            try:
                results[user.uid] = await decide(self.services, user.uid, user.project, self.date)
            except ServiceError as exc:
                self.counts.failed(live_failure(exc.service, exc.reason))

    def _over_budget(self, skipped: int) -> None:
        if skipped <= 0:
            return
        first = self.counts.counts["live_budget_exhausted"] == 0  # the run's counts: one alert per run
        self.counts.done("live_budget_exhausted", n=skipped)
        if first:
            alert(
                log,
                "push.live_budget_exhausted",
                budget=self.budget,
                date=self.date,
                fix="rerun the prewarm for the date, or raise [push] live_budget",
            )
