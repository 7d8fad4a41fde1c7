"""StarRocks over the MySQL protocol (pymysql), run in a worker thread so the event loop never blocks.

Reads are keyset-paginated per task id (`task_id = ? AND source_uid > last ORDER BY source_uid LIMIT n`,
`UserQuery` below) and the task ids' sorted streams are merged by uid in the worker thread: memory stays
bounded by a page per task id (and the next page, taken ahead) whatever the day's user count, each page is an
index range read, and StarRocks never builds one giant result set. Each task id reads on a connection of its
own (a "lane"; the earlier-hour lookups on one more), and sends its next page's query as soon as it has read a
page: the server runs it while the job works on that page (docs/design.md, "Reading the users").

How it logs in (verified TLS or none, the cleartext guard) and how a failed connection reads:
starrocks_login.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import operator
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import anyio
import pymysql

from later_read.clients import mysql_conn
from later_read.clients.starrocks_login import connect_options, connection_problem
from later_read.config.settings import Settings, StarRocksSettings
from later_read.core.scope import WHOLE, RunScope, Shard
from later_read.core.users import TaskUser, merge_pages, task_ids_for
from later_read.errors import StarRocksError

new_user = tuple.__new__
# The rows of a run's first page (then `batch_size`): a job's first calls wait for this page alone.
FIRST_PAGE_ROWS = 500


class StarRocks:
    def __init__(self, settings: StarRocksSettings) -> None:
        self.settings = settings
        self._conn: mysql_conn.Connection | None = None
        self._opening: Future | None = None  # warm_up's connection attempt, not yet taken
        self._spares: list[mysql_conn.Connection] = []  # the lanes past the first, kept between reads (`_lane`)
        self._warming: list[Future] = []  # warm_up's spare connections, not yet taken

    def warm_up(self, spares: int = 0) -> None:
        """Start opening the connection (and `spares` more: the lanes of a read past its first) in
        background threads, so they overlap the job's other set-up (Redis, the lock); the first query (the
        first read) takes them, or raises their error there, as without warm_up."""
        if self._conn is None and self._opening is None:
            self._opening = self._open_later()
        self._warming += [self._open_later() for _ in range(spares - len(self._warming) - len(self._spares))]

    def _open_later(self) -> Future:
        """A connection opening in a thread of its own."""
        future: Future = Future()

        def open_it() -> None:
            try:
                future.set_result(self._open())
            except BaseException as exc:  # noqa: BLE001 - handed to the query that takes it
                future.set_exception(exc)

        threading.Thread(target=open_it, name="starrocks-connect", daemon=True).start()
        return future

    def twin(self) -> StarRocks:
        """A second client of the same database, its connection opening now in the background: for a
        query that must neither wait for this client's reads nor hold them up (the prewarm's count)."""
        twin = StarRocks(self.settings)
        twin.warm_up()
        return twin

    def _open(self) -> mysql_conn.Connection:
        return mysql_conn.Connection(**connect_options(self.settings))  # pymysql's, faster for pages

    def _connect(self) -> mysql_conn.Connection:
        if self._conn is not None and self._conn.pending:  # a reader stopped with a result unread: closed
            _close(self._conn)
            self._conn = None
        if self._conn is None:
            opening, self._opening = self._opening, None
            self._conn = opening.result() if opening is not None else self._open()
        return self._conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """pymysql's errors as StarRocksError: a connection that failed (every connection closed) or a
        query the server refused."""
        try:
            yield
        except pymysql.err.OperationalError as exc:
            self.close()
            raise StarRocksError(connection_problem(self.settings, exc)) from None
        except pymysql.err.MySQLError as exc:
            raise StarRocksError(
                f"StarRocks query failed: {exc}; check [starrocks] database/table "
                "and the table's columns (task_id, source_uid, project, push_hour)"
            ) from None

    def _query(self, sql: str, params: list) -> tuple:
        with self._errors():
            conn = self._connect()
            with conn.cursor() as cur:
                cur.execute(conn.bind(sql, params))  # quoted as pymysql would, in one step (mysql_conn.py)
                return cur.fetchall()

    def _send(self, conn: mysql_conn.Connection, query: tuple[str, list]) -> None:
        """Send one query (SQL, parameters) on `conn` without waiting for its result (`_receive` reads it)."""
        with self._errors():
            conn.send(conn.bind(*query))

    def _receive(self, conn: mysql_conn.Connection) -> tuple:
        with self._errors():
            return conn.receive()

    def _lane(self, lanes: dict[int, mysql_conn.Connection], i: int) -> mysql_conn.Connection:
        """Connection `i` of one read of the users (`_pages`), taken as first used, in the worker thread:
        0 is the client's own connection, the others a spare one or a new one."""
        conn = lanes.get(i)
        if conn is None:
            with self._errors():
                conn = self._connect() if i == 0 else self._spare()
            lanes[i] = conn
        return conn

    def _spare(self) -> mysql_conn.Connection:
        """A connection for a lane past the first: a spare one, else one warm_up is opening, else a new one."""
        if self._spares:
            return self._spares.pop()
        if self._warming:
            return self._warming.pop().result()
        return self._open()

    def _release(self, lanes: dict[int, mysql_conn.Connection]) -> None:
        """One read's connections handed back: any left with a result unread (its reader stopped early) or
        no longer open is closed, the others kept for the next read."""
        for i, conn in lanes.items():
            if conn.pending or not conn.open:
                if conn is self._conn:
                    self._conn = None
                _close(conn)
            elif i > 0:
                self._spares.append(conn)

    async def query(self, sql: str, params: list | None = None) -> tuple:
        """Run one query in a worker thread (pymysql is blocking)."""
        return await anyio.to_thread.run_sync(self._query, sql, params or [])

    async def users(self, query: UserQuery) -> AsyncIterator[list[TaskUser]]:
        """Yield the query's users page by page, up to `batch_size` distinct uids at a time, in uid order."""
        async for page, _ in self._pages(query, None):
            yield page

    async def pages(self, query: UserQuery) -> AsyncIterator[tuple[list[TaskUser], set[str]]]:
        """The users of the query's hour page by page (as `users`), each page with the uids in it that have
        a row at an earlier push hour of the date (`UserQuery.earlier`): that hour's users, never this one's."""
        async for page, earlier in self._pages(query, query.hour or None):  # hour 0 has no earlier hour
            yield page, earlier

    async def _pages(self, query: UserQuery, hour: int | None) -> AsyncIterator[tuple[list[TaskUser], set[str]]]:
        """Pages of the query's users, each read in one call to the worker thread with its uids that have a
        row at a push hour before `hour` (None: none looked up). With lookups, the call that hands on a full
        page also takes the next one and sends its lookup (`ahead`), which the server runs while the caller
        works on this page. The read's lanes go back to the client at its end (`_release`)."""
        if query.uids is not None and len(query.uids) > self.settings.batch_size:
            for chunk in _chunks(sorted(set(query.uids)), self.settings.batch_size):
                async for chunk_page in self._pages(dataclasses.replace(query, uids=chunk), hour):
                    yield chunk_page
            return
        lanes: dict[int, mysql_conn.Connection] = {}
        merged = self._merged(query, lanes)
        lookup = functools.partial(self._lane, lanes, len(set(query.task_ids)))  # the lane after the task ids'
        ahead: list[tuple[list[TaskUser], int]] = []  # the next page, its earlier-hour lookup sent

        def take(n: int) -> tuple[list[TaskUser], int]:
            page = _take(merged, n)
            if hour is not None and page:
                self._send(lookup(), query.earlier(hour, [user.uid for user in page]))
            return page, n

        def read(n: int) -> tuple[list[TaskUser], set[str], int]:
            page, asked = ahead.pop() if ahead else take(n)
            earlier = {str(row[0]) for row in self._receive(lookup())} if hour is not None and page else set()
            if hour is not None and len(page) == asked == self.settings.batch_size:
                ahead.append(take(asked))  # its lookup runs on the server while the job works on this page
            return page, earlier, asked

        size = min(FIRST_PAGE_ROWS, self.settings.batch_size)  # the first page small: the work starts sooner
        try:
            while True:
                page, earlier, asked = await anyio.to_thread.run_sync(read, size)
                if not page:
                    return
                yield page, earlier
                if len(page) < asked:
                    return
                size = self.settings.batch_size
        finally:
            self._release(lanes)

    def _merged(self, query: UserQuery, lanes: dict[int, mysql_conn.Connection]) -> Iterator[TaskUser]:
        """Every task id's uids merged in uid order, one TaskUser per uid (smallest project and task id).
        Runs in the worker thread: the pages are read lazily as the merge needs them (`merge_pages`), each
        task id's on a lane of its own."""
        task_ids = sorted(set(query.task_ids))
        streams = [
            self._task_pages(query, task_id, functools.partial(self._lane, lanes, i))
            for i, task_id in enumerate(task_ids)
        ]
        if len(streams) == 1:
            for page in streams[0]:
                yield from page
            return
        yield from merge_pages(streams)

    def _task_pages(
        self, query: UserQuery, task_id: str, lane: Callable[[], mysql_conn.Connection]
    ) -> Iterator[list[TaskUser]]:
        """One task id's users in uid order, one keyset page at a time on its `lane`, each checked in
        strictly rising uid order (StarRocks compares strings as bytes: the order the keyset and the merge
        rely on). A full page's next page is asked for before the page is handed on: the server runs that
        query while the job works on this page."""
        conn = lane()
        after: str | None = None
        limit = min(FIRST_PAGE_ROWS, self.settings.batch_size)
        self._send(conn, query.page(task_id, after, limit))
        while True:
            rows: Sequence[tuple[Any, ...]] = self._receive(conn)
            if not rows:
                return
            uids, projects = zip(*rows, strict=True)
            if not _all_str(uids) or not _all_str(projects):  # a column that is not text: read as text
                uids, projects = tuple(map(str, uids)), tuple(map(str, projects))
            if (after is not None and uids[0] <= after) or not all(map(operator.lt, uids, uids[1:])):
                before, uid = _out_of_order(after, uids)
                raise StarRocksError(
                    f"{self.settings.table}.source_uid came back out of byte order ({before!r} then "
                    f"{uid!r}); give the column a binary collation (StarRocks strings are binary)"
                )
            if len(rows) == limit:
                self._send(conn, query.page(task_id, uids[-1], self.settings.batch_size))
            yield [new_user(TaskUser, (uid, project, task_id)) for uid, project in zip(uids, projects, strict=True)]
            if len(rows) < limit:
                return
            after, limit = uids[-1], self.settings.batch_size

    async def count(self, query: UserQuery) -> int:
        sql, params = query.count()
        rows = await self.query(sql, params)
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        opening, self._opening = self._opening, None
        warming, self._warming = [*self._warming, opening], []
        for future in warming:
            if future is not None:  # warmed up, never used: closed once open (no wait here)
                future.add_done_callback(_close_opened)
        conns, self._spares = [*self._spares, self._conn], []
        self._conn = None
        for conn in conns:
            if conn is not None:
                _close(conn)


def _close_opened(future: Future) -> None:
    if future.exception() is None:
        _close(future.result())


def _close(conn: pymysql.connections.Connection) -> None:
    """Close `conn`, whatever state it is in (closed already, a result unread)."""
    with contextlib.suppress(pymysql.err.Error):
        conn.close()


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# The users query -------------------------------------------------------------------------------------
# Which users a job works on: per task id, keyset-paginated index range reads, merged by uid.
#
# Each page is `WHERE task_id = ? AND [push_hour = ? AND] source_uid > ? GROUP BY source_uid ORDER BY
# source_uid LIMIT n`: a range read of n rows on (task_id, [push_hour,] source_uid). `StarRocks.users`
# merges the task ids' sorted streams and keeps one row per uid, so a uid under several task ids is processed
# once. Why not one `task_id IN (...)` query: docs/design.md, "Reading the users".
#
# Every condition is ANDed, never ORed: the seed's first bug was `a OR b AND c`, which SQL reads as
# `a OR (b AND c)`.


@dataclasses.dataclass(frozen=True)
class UserQuery:
    """The users of a date (and optionally an hour, a uid list, a shard) under the given task ids."""

    table: str
    task_ids: Sequence[str]  # already filled in with the date
    hour: int | None = None
    uids: Sequence[str] | None = None  # restrict to these (e.g. --uids-file, rerun)
    shard: Shard = WHOLE  # its users only (`Shard.sql`: CRC32(uid) % count = index)

    @classmethod
    def of(cls, settings: Settings, scope: RunScope, uids: Sequence[str] | None = None) -> UserQuery:
        """The users of a run's scope: its date's task ids, its hour (None: the whole day), its shard;
        `uids` restricts them to those (--uids-file, rerun, show)."""
        return cls(
            settings.starrocks.table,
            task_ids_for(settings.tasks.ids, scope.date),
            hour=scope.hour,
            uids=uids,
            shard=scope.shard,
        )

    def page(self, task_id: str, after_uid: str | None, limit: int) -> tuple[str, list]:
        """SQL and parameters for the next page of one task id's distinct uids greater than `after_uid`,
        in byte order (StarRocks compares strings byte-wise; the sandbox table uses a binary collation).

        A uid in several rows of the task (several hours) comes once, with its smallest project.
        """
        where, params = self._where([task_id])
        if after_uid is not None:
            where.append("source_uid > %s")
            params.append(after_uid)
        sql = (
            f"SELECT source_uid, MIN(project) FROM `{self.table}` "
            f"WHERE {' AND '.join(where)} GROUP BY source_uid ORDER BY source_uid LIMIT %s"
        )
        return sql, [*params, limit]

    def earlier(self, hour: int, uids: Sequence[str]) -> tuple[str, list]:
        """SQL for which of `uids` (one page, <= batch_size) also have a row at a push hour before `hour`
        under the query's task ids: the prewarm handles a user with its earliest hour only. Point lookups
        on (task_id, source_uid), so O(page) whatever the day's size."""
        where, params = dataclasses.replace(self, hour=None, uids=uids)._where()
        where.append("push_hour < %s")
        return (f"SELECT DISTINCT source_uid FROM `{self.table}` WHERE {' AND '.join(where)}", [*params, hour])

    def rows(self, limit: int) -> tuple[str, list]:
        """SQL for the raw task rows behind the query (task_id, source_uid, project, push_hour, book_id),
        for `rerun` to show one user's rows and push hours; not for bulk reads (use `page`)."""
        where, params = self._where()
        sql = (
            f"SELECT task_id, source_uid, project, push_hour, book_id FROM `{self.table}` "
            f"WHERE {' AND '.join(where)} ORDER BY source_uid, task_id, push_hour LIMIT %s"
        )
        return sql, [*params, limit]

    def bad_hours(self, limit: int) -> tuple[str, list]:
        """SQL for up to `limit` rows whose push_hour is not 0-23 (or NULL): users no push will reach."""
        where, params = self._where()
        sql = (
            f"SELECT source_uid, push_hour FROM `{self.table}` WHERE {' AND '.join(where)} AND "
            "(push_hour IS NULL OR push_hour < 0 OR push_hour > 23) ORDER BY source_uid LIMIT %s"
        )
        return sql, [*params, limit]

    def count(self) -> tuple[str, list]:
        """SQL counting the distinct users (for progress ETA)."""
        where, params = self._where()
        return (f"SELECT COUNT(DISTINCT source_uid) FROM `{self.table}` WHERE {' AND '.join(where)}", params)

    def _where(self, task_ids: Sequence[str] | None = None) -> tuple[list[str], list]:
        task_ids = self.task_ids if task_ids is None else task_ids
        params: list[object]
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
        if self.shard.sql is not None:
            condition, values = self.shard.sql
            where.append(condition)
            params.extend(values)
        return where, params


def _out_of_order(after: str | None, uids: Sequence[str]) -> tuple[str, str]:
    """The first two uids not in strictly rising order (`after`: the uid before the page, None at its start)."""
    previous = after
    for uid in uids:
        if previous is not None and uid <= previous:
            return previous, uid
        previous = uid
    raise AssertionError("the uids are in order")


def _all_str(values: Sequence[Any]) -> bool:
    """Every value a str (not None, bytes or a number): a text column read by mysql_conn."""
    return set(map(type, values)) == {str}


def _take(users: Iterator[TaskUser], n: int) -> list[TaskUser]:
    """The next `n` users of `users` (fewer at its end), in the worker thread."""
    return list(itertools.islice(users, n))
