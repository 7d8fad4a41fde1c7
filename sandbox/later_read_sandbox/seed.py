"""Seeding: create `task_data` in a MySQL-protocol database and fill a day with N users.

Deterministic for a given seed, so tests can recompute what they expect with `day_rows`:
- users spread over the 24 hours, under one of the two task ids, `both_ratio` of them under both
  (a few of those at a different hour under the second id), some with a duplicate row;
- noise the jobs must never pick up: the same uids on the day before and after, and other task ids
  on the day itself (including one that differs only in its suffix).

A reseed deletes only the rows of the configured task ids for the date (`task_id IN (...)`, by exact
name): other families of that date and other dates are never touched. A noise family that already has rows
(an earlier seed's, or a neighbouring day seeded for real) gets no more.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pymysql

from later_read.config.settings import StarRocksSettings
from later_read.errors import StarRocksError

DDL = """CREATE TABLE IF NOT EXISTS `{table}` (
  task_id VARCHAR(64) NOT NULL,
  source_uid VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,  -- byte order, as StarRocks
  project VARCHAR(32) NOT NULL,
  push_hour TINYINT NOT NULL,
  book_id VARCHAR(64) NOT NULL,
  KEY idx_task_uid (task_id, source_uid),
  KEY idx_task_hour_uid (task_id, push_hour, source_uid)
)"""
PROJECTS = ("novel", "comic")
UID_BASE = 100_000_000
INSERT_CHUNK = 5000
ALL_HOURS = tuple(range(24))

Row = tuple[str, str, str, int, str]  # task_id, source_uid, project, push_hour, book_id


@dataclass
class SeededDay:
    date: str
    users: int
    rows: int = 0
    both: int = 0  # users under more than one task id


def uid_of(index: int) -> str:
    return str(UID_BASE + index)


def day_rows(
    date: str,
    users: int,
    task_templates: Sequence[str],
    seed: int = 1,
    both_ratio: float = 0.1,
    noise: bool = True,
    hours: Sequence[int] = ALL_HOURS,
) -> Iterator[Row]:
    """Every row of a seeded day, the target rows first, then the noise rows.

    Users are spread round-robin over `hours` (all 24 by default; one hour for a push benchmark).
    """
    rng = random.Random(seed)
    task_ids = [t.replace("{date}", date) for t in task_templates]
    for i in range(users):
        uid, project, hour = uid_of(i), PROJECTS[i % len(PROJECTS)], hours[i % len(hours)]
        first = rng.randrange(len(task_ids))
        yield task_ids[first], uid, project, hour, f"b{rng.randrange(10**6)}"
        if rng.random() < both_ratio and len(task_ids) > 1:
            other_hour = (hour + 1) % 24 if i % 10 == 0 else hour
            yield task_ids[1 - first], uid, project, other_hour, f"b{rng.randrange(10**6)}"
        if i % 50 == 0:
            yield task_ids[first], uid, project, hour, "b-duplicate"
    if noise:
        yield from _noise_rows(date, users, task_templates, rng)


def _other_days(date: str) -> list[str]:
    day = dt.datetime.strptime(date, "%Y%m%d")
    return [(day + dt.timedelta(days=d)).strftime("%Y%m%d") for d in (-1, 1)]


def noise_task_ids(date: str, templates: Sequence[str]) -> set[str]:
    """Every task id the noise rows of `date` are written under (none of them a configured id of `date`)."""
    return {t.replace("{date}", other) for t in templates for other in _other_days(date)} | {
        f"04-026-{date}-zzzzzz",
        f"05-001-{date}-r0gdua",
    }


def _noise_rows(date: str, users: int, templates: Sequence[str], rng: random.Random) -> Iterator[Row]:
    other_days = _other_days(date)
    for i in range(0, users, 7):
        for other in other_days:
            yield templates[i % len(templates)].replace("{date}", other), uid_of(i), "novel", i % 24, "b-x"
    extra = max(users // 10, 5)
    for i in range(extra):
        uid = uid_of(users + i)  # users that exist only under the wrong task ids
        yield f"04-026-{date}-zzzzzz", uid, "novel", i % 24, "b-noise"
        yield f"05-001-{date}-r0gdua", uid, "comic", i % 24, "b-noise"


@contextmanager
def open_seed_connection(settings: StarRocksSettings) -> Iterator[pymysql.connections.Connection]:
    """A connection made as the jobs make theirs (TLS, the cleartext guard); any MySQL error in the block
    (or connecting) becomes one StarRocksError line (exit 3)."""
    from later_read.clients.starrocks_login import connect_options, connection_problem

    try:
        with pymysql.connect(**connect_options(settings)) as conn:
            yield conn
    except pymysql.err.OperationalError as exc:
        raise StarRocksError(connection_problem(settings, exc)) from None
    except pymysql.err.MySQLError as exc:
        raise StarRocksError(f"seeding {settings.table} failed: {exc}") from None


def connect(host: str, port: int, user: str, password: str, database: str | None = None):
    return pymysql.connect(
        host=host, port=port, user=user, password=password, database=database, autocommit=True, charset="utf8mb4"
    )


def create_table(conn, table: str = "task_data") -> None:
    with conn.cursor() as cur:
        cur.execute(DDL.format(table=table))


def seed_day(
    conn,
    date: str,
    users: int,
    task_templates: Sequence[str],
    *,
    table: str = "task_data",
    seed: int = 1,
    both_ratio: float = 0.1,
    replace: bool = True,
    hours: Sequence[int] = ALL_HOURS,
) -> SeededDay:
    """Create the table if needed, delete the rows of the configured task ids for the date (when
    `replace`), insert the seeded day (noise families that already have rows are left as they are)."""
    create_table(conn, table)
    summary = SeededDay(date, users)
    task_ids = sorted({t.replace("{date}", date) for t in task_templates})
    with conn.cursor() as cur:
        if replace:
            cur.execute(f"DELETE FROM `{table}` WHERE task_id IN ({', '.join(['%s'] * len(task_ids))})", task_ids)
        present = _present(cur, table, noise_task_ids(date, task_templates) - set(task_ids))
        chunk: list[Row] = []
        for row in day_rows(date, users, task_templates, seed, both_ratio, hours=hours):
            if row[0] in present:
                continue
            chunk.append(row)
            if len(chunk) >= INSERT_CHUNK:
                _insert(cur, table, chunk)
                summary.rows, chunk = summary.rows + len(chunk), []
        _insert(cur, table, chunk)
        summary.rows += len(chunk)
    summary.both = _count_both(conn, table, [t.replace("{date}", date) for t in task_templates])
    return summary


def expected_users(
    date: str,
    users: int,
    task_templates: Sequence[str],
    seed: int = 1,
    both_ratio: float = 0.1,
    hour: int | None = None,
    hours: Sequence[int] = ALL_HOURS,
    earliest: bool = False,
) -> dict[str, tuple[str, str]]:
    """uid -> (project, task_id) of the users a job must pick up (smallest task id, as the query does): with
    `hour`, those with a row at that hour; with `earliest` too, only those whose earliest push hour it is
    (the users a push of that hour sends: a user is pushed by its earliest hour's runs)."""
    target = {t.replace("{date}", date) for t in task_templates}
    found: dict[str, tuple[str, str]] = {}
    first: dict[str, int] = {}
    for task_id, uid, project, push_hour, _ in day_rows(
        date, users, task_templates, seed, both_ratio, noise=False, hours=hours
    ):
        if task_id not in target:
            continue
        first[uid] = min(push_hour, first.get(uid, push_hour))
        if hour is None or push_hour == hour:
            known = found.get(uid)
            found[uid] = (project, min(task_id, known[1]) if known else task_id)
    if earliest and hour is not None:
        return {uid: row for uid, row in found.items() if first[uid] == hour}
    return found


def _present(cur, table: str, task_ids: set[str]) -> set[str]:
    """Which of `task_ids` already have rows."""
    found = set()
    for task_id in task_ids:
        cur.execute(f"SELECT 1 FROM `{table}` WHERE task_id = %s LIMIT 1", (task_id,))
        if cur.fetchone():
            found.add(task_id)
    return found


def _insert(cur, table: str, rows: list[Row]) -> None:
    if rows:
        cur.executemany(
            f"INSERT INTO `{table}` (task_id, source_uid, project, push_hour, book_id) VALUES (%s, %s, %s, %s, %s)",
            rows,
        )


def _count_both(conn, table: str, task_ids: list[str]) -> int:
    with conn.cursor() as cur:
        marks = ", ".join(["%s"] * len(task_ids))
        cur.execute(
            f"SELECT COUNT(*) FROM (SELECT source_uid FROM `{table}` WHERE task_id IN ({marks}) "
            "GROUP BY source_uid HAVING COUNT(DISTINCT task_id) > 1) t",
            task_ids,
        )
        return int(cur.fetchone()[0])
