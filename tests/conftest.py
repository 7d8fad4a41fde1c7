"""Shared fixtures: real servers (started lazily, once per session), the HTTP simulator, configs.

Servers come from `later_read_sandbox.servers`; each can be an already-running one named by an
environment variable (LATER_READ_TEST_REDIS_URL, LATER_READ_TEST_MYSQL, LATER_READ_TEST_KAFKA). A
server that cannot start fails the test that needs it with a message saying what to install: a
missing dependency is never a skip.

Function-scoped fixtures give each test a clean slice of the shared servers: `redis_url` (flushed
DB), `mysql` (its own database), `kafka_topic` (its own topic), `sim` (simulator reset to defaults).
`make_config(**overrides)` writes a config.toml pointing at whichever of those the test requested.
`stop_children` kills the child processes a test started and left running. Plain helpers (running the
CLI, seeding, reading Redis and the topic) are in helpers.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

# This checkout's code (later_read/ at the root, later_read_sandbox/ in sandbox/) for the tests and for
# every child process they start (`python -m later_read`, the simulator), whatever else is installed: in
# CI the editable installs point here anyway; in a worktree beside another checkout's install, they do not.
CODE = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "sandbox")]
sys.path[:0] = [folder for folder in CODE if folder not in sys.path]
os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys([*CODE, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
)

from helpers import render_toml, servers  # noqa: E402 (needs CODE on the path)


@contextmanager
def _running(factory):
    """Start a server for the session; turn ServerUnavailable into a failure of the asking test."""
    server = None
    try:
        server = factory()
        server.start()
    except servers.ServerUnavailable as error:
        problem = f"{factory.__name__} unavailable: {error}"
    else:
        problem = None
    if problem:  # failed outside the except block, so the report is just the one line
        if server is not None:
            server.stop()
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> servers.RedisServer:
    with _running(servers.redis_server) as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server() -> servers.MariaDBServer:
    with _running(servers.mariadb_server) as server:
        yield server


@pytest.fixture(scope="session")
def kafka_server() -> servers.KafkaServer:
    with _running(servers.kafka_server) as server:
        yield server


@pytest.fixture(scope="session")
def simulator():
    """The downstream HTTP simulator (A/B, recommend, material) in its own process, for the session."""
    from later_read_sandbox.simulator import SimulatorProcess

    process = SimulatorProcess()
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture
def sim(simulator):
    """The session simulator with counters reset, and its knobs back to the defaults afterwards."""
    from later_read_sandbox.simulator import SimulatorKnobs

    simulator.reset()
    yield simulator
    simulator.configure(**SimulatorKnobs().to_dict())


@pytest.fixture
def stop_children():
    """A list for the child processes a test starts: each still running at the end is killed, even when
    the test fails half-way."""
    children: list[subprocess.Popen] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def _unique(prefix: str, request) -> str:
    """A short unique name that still says which test made it (handy when reading a broker or DB)."""
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:24]
    return f"{prefix}_{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session Redis's URL, its DB flushed before the test."""
    client = redis_server.client()
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def mysql(mariadb_server, request) -> servers.MySQLDatabase:
    """A fresh, uniquely named database for this test (host, port, user, password, database); dropped after."""
    name = _unique("t", request)
    database = mariadb_server.create_database(name)
    yield database
    mariadb_server.drop_database(name)


@pytest.fixture
def kafka_topic(kafka_server, request) -> tuple[str, str]:
    """A fresh topic with 3 partitions, as (bootstrap, topic); deleted after the test."""
    topic = kafka_server.create_topic(_unique("t", request), partitions=3)
    yield kafka_server.bootstrap, topic
    kafka_server.delete_topic(topic)


# --------------------------------------------------------------------------------------------------
# config.toml


def default_config() -> dict:
    """The config.toml structure of later_read/config/settings.py, with its shipped defaults."""
    return {
        "timezone": "Asia/Shanghai",
        "starrocks": {
            "host": "127.0.0.1",
            "port": 3306,
            "user": "root",
            "password": "",
            "database": "later_read",
            "table": "task_data",
            "batch_size": 1000,
        },
        "tasks": {"ids": ["04-026-{date}-r0gdua", "04-026-{date}-qk79ub"]},
        "redis": {"url": "redis://127.0.0.1:6379/0", "key_prefix": "rec:later_read:", "ttl_seconds": 86400},
        "services": {
            "ab_url": "http://127.0.0.1:8900",
            "rec_url": "http://127.0.0.1:8900",
            "material_url": "http://127.0.0.1:8900",
            "timeout_seconds": 2.0,
            "max_attempts": 3,
        },
        "prewarm": {"concurrency": 50},
        "push": {"concurrency": 50},
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topic": "later_read_push", "librdkafka": {}},
        "lock": {"wait_seconds": 0},  # a held lock fails at once unless a test asks for the wait
    }


def merge(base: dict, overrides: dict) -> dict:
    """Nested dicts merge key by key; any other value replaces; None deletes the key."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _servers_in_use(request) -> dict:
    """Config sections pointing at the fixtures this test requested (and only those)."""
    wanted = set(request.fixturenames)
    sections: dict = {}
    if "redis_url" in wanted:
        sections["redis"] = {"url": request.getfixturevalue("redis_url")}
    if "mysql" in wanted:
        db = request.getfixturevalue("mysql")
        sections["starrocks"] = {
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "password": db.password,
            "database": db.database,
        }
    if "kafka_topic" in wanted:
        bootstrap, topic = request.getfixturevalue("kafka_topic")
        sections["kafka"] = {"bootstrap_servers": bootstrap, "topic": topic}
    sim_name = next((name for name in ("sim", "simulator") if name in wanted), None)
    if sim_name:
        url = request.getfixturevalue(sim_name).url.rstrip("/")
        sections["services"] = {"ab_url": url, "rec_url": url, "material_url": url}
    return sections


@pytest.fixture
def make_config(tmp_path: Path, request):
    """Factory: `make_config(**overrides) -> Path` of a config.toml for this test.

    Sections point at the servers the test requested (`redis_url`, `mysql`, `kafka_topic`, `sim` or
    `simulator`); the rest keep the shipped defaults. Overrides are nested dicts merged on top, e.g.
    `make_config(prewarm={"concurrency": 10})`; a None value removes a key (to test a missing one).
    Each call writes a new file (config.toml, config-2.toml, ...).
    """
    written: list[Path] = []

    def make(**overrides) -> Path:
        data = merge(merge(default_config(), _servers_in_use(request)), overrides)
        path = tmp_path / ("config.toml" if not written else f"config-{len(written) + 1}.toml")
        path.write_text(render_toml(data), encoding="utf-8")
        written.append(path)
        return path

    return make
