"""StarRocks over the MySQL protocol (pymysql), run in a worker thread so the event loop never blocks.

Reads are keyset-paginated (`source_uid > last ORDER BY source_uid LIMIT n`): memory stays bounded by one
page whatever the day's user count, and StarRocks never builds one giant result set.
"""

from __future__ import annotations

import dataclasses
from typing import AsyncIterator

import anyio
import pymysql

from later_read.config import StarRocksSettings
from later_read.errors import StarRocksError
from later_read.users import TaskUser, UserQuery


class StarRocks:
    def __init__(self, settings: StarRocksSettings) -> None:
        self.settings = settings
        self._conn: pymysql.connections.Connection | None = None

    def _connect(self) -> pymysql.connections.Connection:
        s = self.settings
        if self._conn is None:
            self._conn = pymysql.connect(
                host=s.host, port=s.port, user=s.user, password=s.password, database=s.database,
                connect_timeout=s.connect_timeout_seconds, read_timeout=s.read_timeout_seconds,
                autocommit=True, charset="utf8mb4")
        return self._conn

    def _query(self, sql: str, params: list) -> tuple:
        try:
            with self._connect().cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except pymysql.err.OperationalError as exc:
            self.close()
            code, text = (exc.args + ("",))[:2]
            raise StarRocksError(
                f"StarRocks at {self.settings.host}:{self.settings.port} failed ({code}: {text}); "
                "check [starrocks] host/port/user and LATER_READ__STARROCKS__PASSWORD") from None
        except pymysql.err.MySQLError as exc:
            raise StarRocksError(f"StarRocks query failed: {exc}; check [starrocks] database/table "
                                 "and the table's columns (task_id, source_uid, project, push_hour)") from None

    async def query(self, sql: str, params: list | None = None) -> tuple:
        """Run one query in a worker thread (pymysql is blocking)."""
        return await anyio.to_thread.run_sync(self._query, sql, params or [])

    async def users(self, query: UserQuery) -> AsyncIterator[list[TaskUser]]:
        """Yield the query's users page by page, `batch_size` distinct uids at a time."""
        if query.uids is not None and len(query.uids) > self.settings.batch_size:
            for chunk in _chunks(sorted(set(query.uids)), self.settings.batch_size):
                async for page in self.users(dataclasses.replace(query, uids=chunk)):
                    yield page
            return
        after = None
        while True:
            sql, params = query.page(after, self.settings.batch_size)
            rows = await self.query(sql, params)
            if not rows:
                return
            yield [TaskUser(str(uid), str(project), str(task_id)) for uid, project, task_id in rows]
            if len(rows) < self.settings.batch_size:
                return
            after = str(rows[-1][0])

    async def count(self, query: UserQuery) -> int:
        sql, params = query.count()
        rows = await self.query(sql, params)
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.err.Error:
                pass
            self._conn = None


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
