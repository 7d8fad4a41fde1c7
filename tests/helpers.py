"""What several test modules share: the CLI as a child process and its environment, seeding the
StarRocks stand-in (MariaDB), writing what a prewarm writes, reading Redis and the topic back, `--now`.

Test modules import from here (and fixtures come from conftest.py), never from one another. The sandbox
modules the tests use for seeding, reading the topic and starting servers are imported here only, so a
move of the sandbox is a change to this file's imports.

A child process runs this checkout's `later_read` (`child_env` puts the repository first on PYTHONPATH),
whatever the editable install points at.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import orjson
import redis

from later_read.config.settings import RedisSettings
from later_read.core.scope import RunScope
from later_read.core.value import CachedValue, encode
from later_read.store import Store
from later_read.store.client import open_redis
from later_read.store.keys import Keys
from later_read_sandbox import seed as seeding, servers
from later_read_sandbox.seed import uid_of
from later_read_sandbox.servers import redis_ha
from later_read_sandbox.simulator.oracle import Oracle
from later_read_sandbox.stack import render_toml
from later_read_sandbox.topic import TopicMessage, read_topic, topic_size

__all__ = [
    "ALERT",
    "CONFIG_PATH",
    "DATE",
    "FENCE_HOUR",
    "ROOT",
    "TASKS",
    "THEFT",
    "THIEF",
    "VALUE_KEYS",
    "Oracle",
    "TopicMessage",
    "assert_capped",
    "assert_cli_accepts",
    "at",
    "check_fenced_writes",
    "child_env",
    "cli_argv",
    "configmap_settings",
    "consume",
    "count_values",
    "expected_value",
    "fenced_writes",
    "first_push_hour",
    "insert_rows",
    "invoke",
    "manifests",
    "oracle_value",
    "pick",
    "prewarm_values",
    "push_config",
    "pushable",
    "read_topic",
    "redis_ha",
    "render_toml",
    "run_cli",
    "run_push",
    "seed_day",
    "seed_hour",
    "seed_users",
    "seeding",
    "sent_markers",
    "servers",
    "start_cli",
    "start_prewarm",
    "stored_values",
    "topic_size",
    "uid_of",
    "unquote",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[1]
DATE = "20261123"
TASKS = ["04-026-{date}-r0gdua", "04-026-{date}-qk79ub"]  # the shipped config's [tasks] ids
ALERT = "LATER_READ_ALERT"
VALUE_KEYS = Keys("rec:later_read:")  # the shipped [redis] key_prefix


# --------------------------------------------------------------------------------------------------
# The CLI as a child process


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (default: this process's environment) with this checkout first on PYTHONPATH, plus `extra`."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def cli_argv(*args: str) -> list[str]:
    """`python -m later_read ARGS` with this interpreter."""
    return [sys.executable, "-m", "later_read", *args]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 180, **kwargs
) -> subprocess.CompletedProcess:
    """Run `later-read ARGS` to the end in a child process; stdout and stderr captured as text. `env` is
    the child's environment before `child_env` adds the checkout to it."""
    return subprocess.run(
        cli_argv(*args),
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def start_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text: bool = True,
    **kwargs,
) -> subprocess.Popen:
    """Start `later-read ARGS` as a child process (for signals, or several at once); the caller waits."""
    return subprocess.Popen(
        cli_argv(*args), env=child_env(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, text=text, **kwargs
    )


def start_prewarm(config: Path, stderr: Path, *args: str) -> subprocess.Popen:
    """`later-read prewarm` of DATE as a child process (for signals); its stderr goes to the file `stderr`."""
    with open(stderr, "wb") as err:
        return start_cli(
            "prewarm", "--config", str(config), "--date", DATE, *args, stdout=subprocess.DEVNULL, stderr=err
        )


def invoke(*args: str, catch_exceptions: bool = False, **kwargs):
    """Run `later-read ARGS` in this process (click's CliRunner, `kwargs` such as `env` passed on); the
    Result (exit_code, stdout, stderr). The CLI turns every exception into its exit code itself, so one
    that escapes it is raised here."""
    from click.testing import CliRunner

    from later_read.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=catch_exceptions, prog_name="later-read", **kwargs)


def run_push(config: Path, *args: str, hour: int | None = None):
    """`push` of DATE in this process, at a minute into `hour` (or 00:01); exceptions propagate."""
    argv = ["push", "--config", str(config), "--date", DATE, "--now", at(hour or 0), *args]
    if hour is not None:
        argv += ["--hour", str(hour)]
    return invoke(*argv)


def push_config(make_config, **push) -> Path:
    """A config whose push does not wait for the prewarm and prints no progress lines."""
    return make_config(push={"wait_for_prewarm_seconds": 0, "progress_interval_seconds": 60, **push})


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll `predicate()` until it is truthy (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def at(hour: int, minute: int = 1, date: str = DATE, offset: str = "+08:00") -> str:
    """`--now` for minute `minute` of hour `hour` of `date` (Asia/Shanghai by default): inside the hour's
    window, so an explicit push of that hour is not refused as expired."""
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{hour:02d}:{minute:02d}:00{offset}"


# --------------------------------------------------------------------------------------------------
# Seeding the StarRocks stand-in


def seed_day(mysql, users: int, date: str = DATE, tasks: list[str] = TASKS, **options) -> seeding.SeededDay:
    """The sandbox's seeded day for `date` (noise rows of other days and task ids included) into the
    test's database; `options` go to `seeding.seed_day` (e.g. `hours=(9,)`)."""
    conn = seeding.connect(mysql.host, mysql.port, mysql.user, mysql.password, mysql.database)
    try:
        return seeding.seed_day(conn, date, users, tasks, **options)
    finally:
        conn.close()


def seed_users(mysql, users: int) -> dict[str, tuple[str, str]]:
    """Seed DATE (`seed_day`); uid -> (project, task_id) the prewarm must find for it."""
    day = seed_day(mysql, users)
    expected = seeding.expected_users(DATE, users, TASKS)
    assert day.both > 0 and day.rows > len(expected)  # some uids sit under both task ids / several rows
    return expected


def insert_rows(mysql, rows: list[tuple[str, str, str, int, str]]) -> None:
    """(task_id, source_uid, project, push_hour, book_id) rows into task_data (created if missing)."""
    conn = seeding.connect(mysql.host, mysql.port, mysql.user, mysql.password, mysql.database)
    try:
        seeding.create_table(conn)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO task_data (task_id, source_uid, project, push_hour, book_id) VALUES (%s, %s, %s, %s, %s)",
                rows,
            )
    finally:
        conn.close()


def seed_hour(mysql, users: int, hour: int, prefix: str = "k") -> dict[str, tuple[str, str]]:
    """A custom day: `users` users all at `hour` (every 5th also under the second task id); uid ->
    (project, the task id the push names)."""
    task_a, task_b = (t.replace("{date}", DATE) for t in TASKS)
    rows, expected = [], {}
    for i in range(users):
        uid, project = f"{prefix}{i:06d}", seeding.PROJECTS[i % 2]
        rows.append((task_a, uid, project, hour, "b1"))
        if i % 5 == 0:
            rows.append((task_b, uid, project, hour, "b2"))
        expected[uid] = (project, min(task_a, task_b))
    insert_rows(mysql, rows)
    return expected


def pick(sim, want: str, users: int) -> str:
    """A uid of the seeded day (`seed_day(mysql, users)`) whose simulator answers lead to `want`: rec (with
    a card), rec_without_card, not_in_experiment, no_recommendation."""
    for index in range(users):
        uid = uid_of(index)
        answer = sim.expected(uid)
        outcome = (
            "not_in_experiment"
            if not answer["in_experiment"]
            else "no_recommendation"
            if not answer["has_rec"]
            else "rec"
            if answer["material_found"]
            else "rec_without_card"
        )
        if outcome == want:
            return uid
    raise AssertionError(f"no seeded user with outcome {want} among {users}")


def first_push_hour(uid: str, users: int) -> int:
    """The earliest push_hour of a user's target rows in the seeded day (`seed_day(mysql, users)`): the
    hour rerun puts in its message; 0 for a uid the day does not hold."""
    targets = {t.replace("{date}", DATE) for t in TASKS}
    return min(
        (row[3] for row in seeding.day_rows(DATE, users, TASKS) if row[1] == uid and row[0] in targets), default=0
    )


def pushable(sim, picked: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The users among `picked` who get a message: in the experiment, a recommendation, a card."""
    out = {}
    for uid, where in picked.items():
        e = sim.expected(uid)
        if e["in_experiment"] and e["has_rec"] and e["material_found"]:
            out[uid] = where
    return out


# --------------------------------------------------------------------------------------------------
# Redis and the topic


def oracle_value(sim, uid: str, date: str = DATE) -> CachedValue:
    """What the prewarm stores for uid, from the simulator's deterministic answers."""
    return sim.expected_value(uid, date)


def prewarm_values(redis_url: str, values: dict[str, CachedValue], done: bool = True) -> None:
    """Write the values (and the completion marker) the way the prewarm does, through Store."""

    async def write() -> None:
        settings = RedisSettings(url=redis_url)
        client = open_redis(settings)
        try:
            store = Store(client, settings)
            items = [(uid, encode(value)) for uid, value in values.items()]
            for start in range(0, len(items), 1000):
                await store.put_values(items[start : start + 1000])
            if done:
                await store.put_prewarm_done(RunScope(DATE), {"users": len(values), "finished_at": time.time()})
        finally:
            await client.aclose()

    anyio.run(write)


def expected_value(sim, uid: str) -> dict:
    """The value the prewarm must store for uid (as a dict), from the simulator's deterministic answers."""
    return sim.expected_value(uid, DATE).to_dict()


def stored_values(url: str) -> dict[str, dict]:
    """uid -> decoded value of every value key (`rec:later_read:*`)."""
    client = redis.Redis.from_url(url)
    try:
        keys = client.keys(VALUE_KEYS.rec("*"))
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    return {VALUE_KEYS.uid_of(k): orjson.loads(v) for k, v in zip(keys, values, strict=False)}


def count_values(url: str) -> int:
    """How many value keys Redis holds."""
    client = redis.Redis.from_url(url)
    try:
        return sum(1 for _ in client.scan_iter(VALUE_KEYS.rec("*"), count=1000))
    finally:
        client.close()


def sent_markers(redis_url: str, date: str = DATE) -> dict[str, str]:
    """uid -> msg_id of every sent marker of `date`."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=Keys.sent(date, "*"), count=1000))
        values = client.mget(keys) if keys else []
        return {k.decode().rsplit(":", 1)[1]: v.decode() for k, v in zip(keys, values, strict=False)}
    finally:
        client.close()


def consume(kafka_topic: tuple[str, str]) -> list[tuple[str, dict]]:
    """Every message in the topic as (key, value), read up to the high watermarks."""
    return [(m.key, m.value) for m in read_topic(*kafka_topic)]


# --------------------------------------------------------------------------------------------------
# The fence (test_fencing.py in standalone mode, test_redis_ha.py in sentinel and cluster mode)

FENCE_HOUR = 9
THIEF = "thief-host:4242:cafe"
# Delete the lock and take it with another token, and list the run's keys, in one atomic step.
THEFT = """redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', 120)
return redis.call('KEYS', ARGV[2])"""


def fenced_writes(url: str, settings_extra: dict | None = None) -> dict:
    """Every fenced Store call, first while the run holds its lock, then after the lock was stolen: what
    each did."""
    from later_read.config.settings import LockSettings
    from later_read.errors import LockLost
    from later_read.store.lock import JobLock

    settings = RedisSettings(**{"url": url, **(settings_extra or {})})
    scope = RunScope(DATE, FENCE_HOUR)
    found: dict = {}

    async def attempt(name: str, call) -> None:
        try:
            found[name] = await call()
        except LockLost as lost:
            found[name] = f"LockLost: {lost}"

    async def main() -> None:
        client = open_redis(settings)
        try:
            store = Store(client, settings)
            lock = JobLock(client, Keys.lock("push", scope), "push run", LockSettings(ttl_seconds=30))
            await lock.acquire(anyio.Event())
            await attempt("start", lambda: store.put_push_start(scope, {"at": 1}, lock))
            await attempt("sent", lambda: store.put_sent(DATE, [("u1", "m1"), ("u2", "m2")], lock))
            await attempt("state", lambda: store.get_push_state(DATE, ["u1", "u3"], lock))
            await client.eval(THEFT, 1, lock.key, THIEF, "x")
            await attempt("ledger_after", lambda: store.put_ledger(scope, {"state": "done"}, lock))
            found["lost_after_ledger"] = lock.lost
            lock.lost = None  # as if unnoticed: each kind of call must find the theft on its own
            await attempt("sent_after", lambda: store.put_sent(DATE, [("u3", "m3")], lock))
            await attempt("sent_after_known", lambda: store.put_sent(DATE, [("u4", "m4")], lock))
            lock.lost = None
            await attempt("state_after", lambda: store.get_push_state(DATE, ["u1"], lock))
            lock.lost = None
            await attempt("start_after", lambda: store.put_push_start(scope, {"at": 2}, lock))
            await attempt("refused_without_asking", lambda: store.put_ledger(scope, {"state": "x"}, lock))
            keys = [Keys.sent(DATE, u) for u in ("u1", "u2", "u3", "u4")] + [
                Keys.push_start(scope),
                Keys.push_ledger(scope),
            ]
            found["values"] = {key: await client.get(key) for key in keys}
        finally:
            await client.aclose()

    anyio.run(main)
    return found


def check_fenced_writes(found: dict, cluster: bool = False) -> None:
    """Standalone and sentinel: nothing after the theft. Cluster: the marker batch whose round trip found
    the theft may have landed (its lock GET and its per-slot writes go to different masters at once; each
    marker is still true: Kafka confirmed its message); no later write."""
    scope = RunScope(DATE, FENCE_HOUR)
    assert found["start"] is True and found["state"] == ([None, None], [b"m1", None])
    for name in ("ledger_after", "sent_after", "sent_after_known", "state_after", "refused_without_asking"):
        assert str(found[name]).startswith("LockLost: lost the lock"), (name, found[name])
    assert str(found["start_after"]).startswith("LockLost"), found["start_after"]
    assert "found it" in found["lost_after_ledger"]
    values = found["values"]
    assert values[Keys.sent(DATE, "u1")] == b"m1" and values[Keys.sent(DATE, "u2")] == b"m2"
    assert values[Keys.push_start(scope)] == b'{"at":1}'  # the first, not the one tried after the theft
    assert values[Keys.sent(DATE, "u4")] is None and values[Keys.push_ledger(scope)] is None
    assert values[Keys.sent(DATE, "u3")] == (b"m3" if cluster else None)


# --------------------------------------------------------------------------------------------------
# Rate caps (test_prewarm.py, test_shards.py)

# A request may reach the simulator late (a busy host delays the first one more than the last), never early.
ARRIVAL_SLACK_SECONDS = 0.25


def assert_capped(stats: dict, cap: float) -> None:
    """The calls of one endpoint's `stats` kept to `cap` per second. The contract: at most `cap` calls in any
    one second, so N calls span at least (N - cap) / cap seconds from the first arrival to the last; that
    floor holds on a slow host. The per-second count is checked loosely (under 2 x cap): one stall of the
    simulator's loop moves a few dozen replies into the next second's bucket, which is not the job's doing,
    while an uncapped or per-shard-capped job overshoots it many times."""
    span = stats["last_at"] - stats["first_at"]
    floor = (stats["calls"] - cap) / cap - ARRIVAL_SLACK_SECONDS
    print(f"calls {stats['calls']} over {span:.2f} s (floor {floor:.2f} s), peak_qps {stats['peak_qps']}, cap {cap}")
    assert span >= floor, stats
    assert stats["peak_qps"] < 2 * cap, stats


# --------------------------------------------------------------------------------------------------
# deploy/ (test_deploy.py, test_shards.py)

CONFIG_PATH = "/etc/later-read/config.toml"  # where the manifests mount config.toml


def manifests(folder: str = "deploy") -> dict[tuple[str, str], dict]:
    """(kind, name) -> document of every YAML file in `folder`."""
    import yaml

    docs = {}
    for path in sorted((ROOT / folder).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def configmap_settings(tmp_path: Path):
    """The Settings of the ConfigMap's config.toml (no environment)."""
    from later_read.config.settings import load_settings

    configmap = manifests()[("ConfigMap", "later-read-config")]
    path = tmp_path / "config.toml"
    path.write_text(configmap["data"]["config.toml"], encoding="utf-8")
    return load_settings(path, environ={})


def assert_cli_accepts(argv: list[str]) -> None:
    """The arguments parse as a later-read command line (options checked, nothing run)."""
    from later_read.cli import cli

    assert argv[0] == "later-read", argv
    command = cli.commands[argv[1]]
    command.make_context(argv[1], list(argv[2:]))


# --------------------------------------------------------------------------------------------------
# Log lines (test_log.py, test_properties.py)


def unquote(value: str) -> str:
    """The reader's side of logfmt quoting (what a log parser does), to check nothing is lost."""
    if not value.startswith('"'):
        return value
    body = value[1:-1]
    return re.sub(
        r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|.)",
        lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(
            m.group(1), chr(int(m.group(1)[1:], 16)) if len(m.group(1)) > 1 else m.group(1)
        ),
        body,
    )
