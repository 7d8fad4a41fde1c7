"""The sandbox acts only on servers it started: `sandbox seed` pointed at anything else (a config without the
sandbox's mark, $LATER_READ_CONFIG alone, a marked config whose StarRocks is not a MariaDB the sandbox runs)
exits 2 with one line and opens no connection, the table read back untouched from the real MariaDB; and a
seed deletes only the rows of the configured task ids of its date."""

from __future__ import annotations

import os
import subprocess

import pytest

from fake_mysql import FakeMySQL
from helpers import run_cli
from later_read_sandbox.seed import create_table, day_rows
from later_read_sandbox.servers import MariaDBServer
from later_read_sandbox.stack import DEFAULT_TASKS

DATE = "20261123"
OTHERS = [
    (f"09-999-{DATE}-keepme", "k1", "novel", 3, "b1"),
    (f"09-999-{DATE}-keepme", "k2", "comic", 4, "b2"),
    ("04-026-20261122-r0gdua", "y1", "novel", 5, "b3"),
    (f"04-026-{DATE}-zzzzzz", "z1", "novel", 6, "b4"),
]
OLD = [(f"04-026-{DATE}-r0gdua", "old-user", "novel", 7, "b5")]  # a configured id of the date: replaced


@pytest.fixture(scope="module")
def sandbox_db():
    """A MariaDB the sandbox started itself (never an external LATER_READ_TEST_MYSQL one)."""
    server = MariaDBServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def table(sandbox_db):
    """task_data holding other families' rows and an old row of the date's configured ids."""
    with sandbox_db.connect() as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS task_data")
        create_table(conn)
        cur.executemany("INSERT INTO task_data VALUES (%s, %s, %s, %s, %s)", OTHERS + OLD)
    return sandbox_db


def rows(server) -> list[tuple]:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT task_id, source_uid, project, push_hour, book_id FROM task_data "
            "ORDER BY task_id, source_uid, book_id"
        )
        return list(cur.fetchall())


def seed(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LATER_READ_")} | (env or {})
    return run_cli("sandbox", "seed", "--users", "30", "--date", DATE, *args, env=environ, timeout=120)


def starrocks_of(server) -> dict:
    return {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
    }


def test_a_config_without_the_sandbox_mark_touches_nothing(table, make_config):
    before = rows(table)
    config = make_config(starrocks=starrocks_of(table))  # production-shaped: no [sandbox] table
    for args, env in (
        (["--config", str(config)], {"LATER_READ_CONFIG": str(config)}),
        ([], {"LATER_READ_CONFIG": str(config)}),
    ):
        done = seed(*args, env=env)
        assert done.returncode == 2, done.stderr
        assert done.stdout == "" and len(done.stderr.splitlines()) == 1
        assert done.stderr.startswith("later-read: error: sandbox seed: ")
    assert "is not a sandbox config (no [sandbox] own_servers = true)" in seed("--config", str(config)).stderr
    assert (
        "no --config; sandbox commands never read $LATER_READ_CONFIG"
        in seed(env={"LATER_READ_CONFIG": str(config)}).stderr
    )
    assert rows(table) == before


def test_a_marked_config_pointing_elsewhere_opens_no_connection(table, make_config):
    before = rows(table)
    with FakeMySQL() as other:  # a MySQL-speaking server the sandbox did not start
        for host, port in (("127.0.0.1", other.port), ("starrocks.prod.internal", 9030)):
            config = make_config(
                starrocks={**starrocks_of(table), "host": host, "port": port}, sandbox={"own_servers": True}
            )
            done = seed("--config", str(config))
            assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
            assert f"[starrocks] {host}:{port} in {config} is no MariaDB the sandbox started" in done.stderr
    assert other.switched == 0  # never connected to
    assert rows(table) == before


def test_the_seed_deletes_only_the_configured_task_ids_of_its_date(table, make_config):
    config = make_config(
        starrocks=starrocks_of(table), sandbox={"own_servers": True}, redis={"url": "redis://prod-redis:6379/0"}
    )
    env = {"LATER_READ_CONFIG": "/nonexistent/production.toml", "LATER_READ__STARROCKS__HOST": "prod-db"}
    first = seed("--config", str(config), env=env)  # neither variable is read
    assert first.returncode == 0, first.stderr
    after = rows(table)
    for row in OTHERS:
        assert row in after  # other families of the date, and other dates, survive
    assert OLD[0] not in after  # the configured ids' old rows of the date are replaced
    configured = {t.replace("{date}", DATE) for t in DEFAULT_TASKS}
    seeded = sorted(r for r in day_rows(DATE, 30, DEFAULT_TASKS) if r[0] in configured)
    assert sorted(r for r in after if r[0] in configured) == sorted(seeded)
    again = seed("--config", str(config))
    assert again.returncode == 0, again.stderr
    assert rows(table) == after  # a reseed replaces the day's rows and adds no second copy of the noise
