"""Which users a job works on: one SQL query, keyset-paginated, deduplicated by uid.

`WHERE task_id IN (...) AND ...` on purpose: the seed's first bug was `a OR b AND c`, which SQL reads as
`a OR (b AND c)`. Every condition here is ANDed onto a parenthesised IN list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True, slots=True)
class TaskUser:
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

    def page(self, after_uid: str | None, limit: int) -> tuple[str, list]:
        """SQL and parameters for the next page of distinct uids greater than `after_uid`.

        One row per uid: a uid under both task ids or in several rows is returned once, with the
        smallest project and task id, so every run picks the same one.
        """
        where, params = self._where()
        if after_uid is not None:
            where.append("source_uid > %s")
            params.append(after_uid)
        sql = (f"SELECT source_uid, MIN(project), MIN(task_id) FROM `{self.table}` "
               f"WHERE {' AND '.join(where)} GROUP BY source_uid ORDER BY source_uid LIMIT %s")
        return sql, params + [limit]

    def rows(self, limit: int) -> tuple[str, list]:
        """SQL for the raw task rows behind the query (task_id, source_uid, project, push_hour, book_id),
        for `rerun` to show one user's rows and push hours; not for bulk reads (use `page`)."""
        where, params = self._where()
        sql = (f"SELECT task_id, source_uid, project, push_hour, book_id FROM `{self.table}` "
               f"WHERE {' AND '.join(where)} ORDER BY source_uid, task_id, push_hour LIMIT %s")
        return sql, params + [limit]

    def count(self) -> tuple[str, list]:
        """SQL counting the distinct users (for progress ETA)."""
        where, params = self._where()
        return (f"SELECT COUNT(DISTINCT source_uid) FROM `{self.table}` WHERE {' AND '.join(where)}",
                params)

    def _where(self) -> tuple[list[str], list]:
        marks = ", ".join(["%s"] * len(self.task_ids))
        where, params = [f"task_id IN ({marks})"], list(self.task_ids)
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
