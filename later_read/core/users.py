"""Who a job works on: a task user (uid, project, task id) and the task ids of a date.

The SQL that reads them (`UserQuery`: per task id, keyset-paginated index range reads, merged by uid) is
clients/starrocks.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class TaskUser(NamedTuple):
    """One user of a task: immutable, built once per user read (a NamedTuple: cheap to build)."""

    uid: str
    project: str
    task_id: str


def task_ids_for(templates: Sequence[str], date: str) -> list[str]:
    """Fill `{date}` (YYYYMMDD) into the configured task id templates."""
    return [t.replace("{date}", date) for t in templates]
