"""Which users a job works on: per task id, keyset-paginated index range reads, merged by uid.

Each page is `WHERE task_id = ? AND [push_hour = ? AND] source_uid > ? GROUP BY source_uid ORDER BY
source_uid LIMIT n`: a range read of n rows on (task_id, [push_hour,] source_uid). `StarRocks.users`
merges the task ids' sorted streams and keeps one row per uid, so a uid under several task ids is processed
once. Why not one `task_id IN (...)` query: docs/design.md, "Reading the users".

Every condition is ANDed, never ORed: the seed's first bug was `a OR b AND c`, which SQL reads as
`a OR (b AND c)`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Sequence


class TaskUser(NamedTuple):
    """One user of a task: immutable, built once per user read (a NamedTuple: cheap to build)."""

    uid: str
    project: str
    task_id: str


@dataclass(frozen=True)
class UserQuery:
    """The users of a date (and optionally an hour, a uid list, a shard) under the given task ids."""

    table: str
    task_ids: Sequence[str]           # already filled in with the date
    hour: int | None = None
    uids: Sequence[str] | None = None  # restrict to these (e.g. --uids-file, rerun)
    shard: tuple[int, int] | None = None  # (index, count): CRC32(uid) % count = index

    def page(self, task_id: str, after_uid: str | None, limit: int) -> tuple[str, list]:
        """SQL and parameters for the next page of one task id's distinct uids greater than `after_uid`,
        in byte order (StarRocks compares strings byte-wise; the sandbox table uses a binary collation).

        A uid in several rows of the task (several hours) comes once, with its smallest project.
        """
        where, params = self._where([task_id])
        if after_uid is not None:
            where.append("source_uid > %s")
            params.append(after_uid)
        sql = (f"SELECT source_uid, MIN(project) FROM `{self.table}` "
               f"WHERE {' AND '.join(where)} GROUP BY source_uid ORDER BY source_uid LIMIT %s")
        return sql, params + [limit]

    def earlier(self, hour: int, uids: Sequence[str]) -> tuple[str, list]:
        """SQL for which of `uids` (one page, <= batch_size) also have a row at a push hour before `hour`
        under the query's task ids: the prewarm handles a user with its earliest hour only. Point lookups
        on (task_id, source_uid), so O(page) whatever the day's size."""
        where, params = dataclasses.replace(self, hour=None, uids=uids)._where()
        where.append("push_hour < %s")
        return (f"SELECT DISTINCT source_uid FROM `{self.table}` WHERE {' AND '.join(where)}",
                params + [hour])

    def rows(self, limit: int) -> tuple[str, list]:
        """SQL for the raw task rows behind the query (task_id, source_uid, project, push_hour, book_id),
        for `rerun` to show one user's rows and push hours; not for bulk reads (use `page`)."""
        where, params = self._where()
        sql = (f"SELECT task_id, source_uid, project, push_hour, book_id FROM `{self.table}` "
               f"WHERE {' AND '.join(where)} ORDER BY source_uid, task_id, push_hour LIMIT %s")
        return sql, params + [limit]

    def bad_hours(self, limit: int) -> tuple[str, list]:
        """SQL for up to `limit` rows whose push_hour is not 0-23 (or NULL): users no push will reach."""
        where, params = self._where()
        sql = (f"SELECT source_uid, push_hour FROM `{self.table}` WHERE {' AND '.join(where)} AND "
               "(push_hour IS NULL OR push_hour < 0 OR push_hour > 23) ORDER BY source_uid LIMIT %s")
        return sql, params + [limit]

    def count(self) -> tuple[str, list]:
        """SQL counting the distinct users (for progress ETA)."""
        where, params = self._where()
        return (f"SELECT COUNT(DISTINCT source_uid) FROM `{self.table}` WHERE {' AND '.join(where)}",
                params)

    def _where(self, task_ids: Sequence[str] | None = None) -> tuple[list[str], list]:
        task_ids = self.task_ids if task_ids is None else task_ids
        if len(task_ids) == 1:
            where, params = ["task_id = %s"], list(task_ids)
        else:
            marks = ", ".join(["%s"] * len(task_ids))
            where, params = [f"task_id IN ({marks})"], list(task_ids)
        if self.hour is not None:
            where.append("push_hour = %s")
            params.append(self.hour)
        if self.uids is not None:
            marks = ", ".join(["%s"] * len(self.uids)) or "NULL"
            where.append(f"source_uid IN ({marks})")
            params.extend(self.uids)
        if self.shard is not None:
            index, count = self.shard
            where.append("CRC32(source_uid) %% %s = %s")
            params.extend([count, index])
        return where, params


def task_ids_for(templates: Sequence[str], date: str) -> list[str]:
    """Fill `{date}` (YYYYMMDD) into the configured task id templates."""
    return [t.replace("{date}", date) for t in templates]
