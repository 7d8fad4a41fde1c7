"""Who a job works on: a task user (uid, project, task id), the task ids of a date, and one user per uid
across task ids (`merge_pages`: a uid under several task ids is one user, with its rows' smallest project
and smallest task id).

The SQL that reads them (`UserQuery`: per task id, keyset-paginated index range reads, merged by uid) is
clients/starrocks.py's.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterator, Sequence
from typing import NamedTuple


class TaskUser(NamedTuple):
    """One user of a task: immutable, built once per user read (a NamedTuple: cheap to build)."""

    uid: str
    project: str
    task_id: str


def task_ids_for(templates: Sequence[str], date: str) -> list[str]:
    """Fill `{date}` (YYYYMMDD) into the configured task id templates."""
    return [t.replace("{date}", date) for t in templates]


def merge_pages(streams: Sequence[Iterator[list[TaskUser]]]) -> Iterator[TaskUser]:
    """The users of several streams of pages, each in strictly rising uid order, merged in uid order with one
    TaskUser per uid (its rows' smallest project and smallest task id). Lazy: a stream's next page is read
    only once its buffered users are all taken.

    Each round takes, from every buffer, the users up to the smallest last uid of the streams not yet read
    to their end (no later page of any stream can hold a smaller uid), sorts them by uid in C (the buffers'
    runs merged by the list sort) and joins the uids found in more than one stream."""
    sources = [_Source(stream) for stream in streams]
    while True:
        for source in sources:
            source.fill()
        lasts = [source.buffer[-1].uid for source in sources if source.pages is not None]
        bound = min(lasts) if lasts else None
        chunk: list[TaskUser] = []
        for source in sources:
            chunk += source.take(bound)
        if not chunk:
            return
        chunk.sort(key=_UID)
        uids = list(map(_UID, chunk))
        if any(map(operator.eq, uids, uids[1:])):  # a uid under several task ids: one TaskUser for it
            chunk = _one_per_uid(chunk)
        yield from chunk


class _Source:
    """One stream of `merge_pages`: its pages (None once read to the end) and its page being taken."""

    __slots__ = ("pages", "buffer")

    def __init__(self, pages: Iterator[list[TaskUser]]) -> None:
        self.pages: Iterator[list[TaskUser]] | None = pages
        self.buffer: list[TaskUser] = []

    def fill(self) -> None:
        """The next page when the buffer is taken (an empty page or none: the stream's end)."""
        if self.pages is not None and not self.buffer:
            self.buffer = next(self.pages, [])
            if not self.buffer:
                self.pages = None

    def take(self, bound: str | None) -> list[TaskUser]:
        """The buffered users up to uid `bound` (None: all of them), taken out of the buffer."""
        buffer = self.buffer
        cut = len(buffer) if bound is None else bisect.bisect_right(buffer, bound, key=_UID)
        taken, self.buffer = buffer[:cut], buffer[cut:]
        return taken


def _one_per_uid(users: list[TaskUser]) -> list[TaskUser]:
    """`users` sorted by uid, each run of one uid joined: its smallest project and smallest task id."""
    joined: list[TaskUser] = []
    for user in users:
        held = joined[-1] if joined else None
        if held is None or user.uid != held.uid:
            joined.append(user)
        else:
            joined[-1] = TaskUser(held.uid, min(held.project, user.project), min(held.task_id, user.task_id))
    return joined


_UID = operator.itemgetter(0)  # a TaskUser's uid
