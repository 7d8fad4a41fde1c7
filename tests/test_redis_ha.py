"""Prewarm and push against a real Redis Cluster (3 masters + 3 replicas) and a real Sentinel group
(1 master, 1 replica, 3 sentinels), with a master SIGKILLed mid-run.

A job rides the failover out: its Redis calls retry, re-discovering the master or the slot map, for
[redis] failover_seconds (30 s here; the groups promote a replica within a few seconds), so it exits 0,
every value is right and every user gets exactly one message. (Past failover_seconds a job stops with
exit 3, the path an unreachable standalone Redis takes at once: test_prewarm.py.)
Each test gets its own group (a failover changes it for good).
"""

from __future__ import annotations

import subprocess
import time

import anyio
import orjson
import pytest
import redis
from redis.sentinel import Sentinel

from helpers import (
    DATE,
    at,
    check_fenced_writes,
    consume,
    fenced_writes,
    invoke,
    oracle_value,
    pushable,
    redis_ha,
    run_cli,
    seed_hour,
    servers,
    start_cli,
)
from later_read import __version__
from later_read.config.settings import RedisSettings
from later_read.core.value import decode
from later_read.store.client import open_redis
from later_read.store.keys import Keys

SERVICE_NAME, RedisClusterGroup, RedisSentinelGroup = (
    redis_ha.SERVICE_NAME,
    redis_ha.RedisClusterGroup,
    redis_ha.RedisSentinelGroup,
)

HOUR = 9
USERS = 600
KEYS = Keys()


@pytest.fixture(params=["cluster", "sentinel"])
def ha(request):
    group = RedisClusterGroup() if request.param == "cluster" else RedisSentinelGroup()
    try:
        group.start()
    except servers.ServerUnavailable as error:
        pytest.fail(f"{type(group).__name__} unavailable: {error}", pytrace=False)
    yield group
    group.stop()


def ha_config(make_config, group, **sections):
    """A config pointing [redis] at the group (cluster: one node's URL; sentinel: the sentinels)."""
    if isinstance(group, RedisClusterGroup):
        target = {"mode": "cluster", "url": group.url}
    else:
        target = {
            "mode": "sentinel",
            "url": None,
            "sentinels": group.sentinels,
            "service_name": SERVICE_NAME,
            "wait_replicas": 1,
        }
    push = {"wait_for_prewarm_seconds": 0, "progress_interval_seconds": 60, **sections.pop("push", {})}
    return make_config(redis={**target, "failover_seconds": 30, "batch_size": 50}, push=push, **sections)


def reader(group):
    """A synchronous client for reading what the jobs wrote (it follows failovers too)."""
    if isinstance(group, RedisClusterGroup):
        return redis.RedisCluster.from_url(group.url)
    return Sentinel([tuple(a.split(":")) for a in group.sentinels]).master_for(SERVICE_NAME)


def read(group, keys: list[str]) -> list[bytes | None]:
    client = reader(group)
    try:
        if isinstance(client, redis.RedisCluster):
            return client.mget_nonatomic(keys)
        return client.mget(keys)
    finally:
        client.close()


def kill_master_when(group, predicate, timeout: float = 60.0) -> int:
    """SIGKILL a master (cluster: not the node the config names) once `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the job never reached the point to kill the master at"
        time.sleep(0.02)
    if isinstance(group, RedisClusterGroup):
        named = int(group.url.rsplit(":", 1)[1].split("/")[0])
        return group.kill_master(next(p for p in group.masters() if p != named))
    return group.kill_master()


def run_job(config, job: str, *args: str) -> subprocess.CompletedProcess:
    dated = ("--date", DATE) if job != "check" else ()
    dated += ("--now", at(HOUR)) if job == "push" else ()  # inside the hour's window
    return run_cli(job, "--config", str(config), *dated, *args)


def start_job(config, job: str, *args: str) -> subprocess.Popen:
    now = ("--now", at(HOUR)) if job == "push" else ()
    return start_cli(job, "--config", str(config), "--date", DATE, *args, *now)


def finish(child: subprocess.Popen, job: str) -> None:
    """Wait for the child, which must have ridden the failover out: exit 0 ([redis] failover_seconds = 30
    against a promotion within a few seconds, NODE_TIMEOUT_MS). Sentinel mode rides it out in Store's
    retries (`redis.retry` lines), cluster mode mostly inside redis-py's cluster client."""
    _, stderr = child.communicate(timeout=180)
    print(job, "exit", child.returncode, "redis retries:", stderr.count(" redis.retry "))
    assert child.returncode == 0, stderr[-3000:]


def assert_values(group, sim, users) -> None:
    raw = read(group, [KEYS.rec(uid) for uid in users])
    assert [decode(r) if r else None for r in raw] == [oracle_value(sim, uid) for uid in users]


def assert_exactly_once(group, sim, users, kafka_topic) -> None:
    wanted = pushable(sim, users)
    keys = sorted(key for key, _ in consume(kafka_topic))
    assert keys == sorted(wanted)  # every pushable user, each exactly once
    markers = read(group, [Keys.sent(DATE, uid) for uid in wanted])
    assert all(markers)


def test_prewarm_rides_out_a_master_killed_mid_run_then_push_sends_once(ha, sim, mysql, kafka_topic, make_config):
    users = seed_hour(mysql, USERS, HOUR)
    sim.configure(ab={"latency_ms": 20})
    config = ha_config(make_config, ha, prewarm={"concurrency": 8})
    child = start_job(config, "prewarm")
    keys = [KEYS.rec(uid) for uid in users]

    kill_master_when(ha, lambda: sum(1 for v in read(ha, keys) if v) >= USERS // 4)
    finish(child, "prewarm")

    assert_values(ha, sim, users)
    push = run_job(config, "push", "--hour", str(HOUR))
    assert push.returncode == 0, push.stderr[-3000:]
    assert_exactly_once(ha, sim, users, kafka_topic)
    assert_day_ledger(ha, config, users)


def assert_day_ledger(group, config, users) -> None:
    """The next scheduled run reads the ledger (keys of many hash slots in a cluster) and finds HOUR done;
    `day` reads the date's records in one round trip."""
    scheduled = run_cli("push", "--config", str(config), "--now", at(HOUR + 1))
    assert scheduled.returncode == 0 and " push.caught_up " not in scheduled.stderr, scheduled.stderr[-3000:]
    day = run_cli("day", "--config", str(config), "--date", DATE, "--now", at(HOUR + 1, 5), "--json")
    rows = orjson.loads(day.stdout)["hours"]
    assert day.returncode == 0, day.stderr[-3000:]
    assert [(r["hour"], r["state"], r["users"]) for r in rows if r["state"] != "pending"] == [
        (HOUR, "done", len(users)),
        (HOUR + 1, "done", 0),
    ]


def test_push_rides_out_a_master_killed_mid_run_every_message_once(ha, sim, mysql, kafka_topic, make_config):
    users = seed_hour(mysql, USERS, HOUR)
    config = ha_config(make_config, ha, push={"concurrency": 4})
    prewarm = invoke("prewarm", "--config", str(config), "--date", DATE)
    assert prewarm.exit_code == 0, prewarm.stderr
    sim.configure(material={"latency_ms": 15})
    wanted = sorted(pushable(sim, users))
    child = start_job(config, "push", "--hour", str(HOUR))

    sent_keys = [Keys.sent(DATE, uid) for uid in wanted]
    kill_master_when(ha, lambda: sum(1 for v in read(ha, sent_keys) if v) >= 20)
    finish(child, "push")

    assert_values(ha, sim, users)
    assert_exactly_once(ha, sim, users, kafka_topic)


def test_fenced_writes_refuse_once_the_lock_is_stolen(ha):
    """The fence in each mode: the start record and ledger entry share the lock's hash slot (one script in
    a cluster too); a cluster's marker batch reads the lock in the same pipeline (store/fencing.py)."""
    cluster = isinstance(ha, RedisClusterGroup)
    if cluster:
        found = fenced_writes(ha.url, {"mode": "cluster"})
    else:
        found = fenced_writes(
            "", {"mode": "sentinel", "sentinels": ha.sentinels, "service_name": SERVICE_NAME, "wait_replicas": 1}
        )
    check_fenced_writes(found, cluster)


def test_every_connection_names_later_read_to_the_server(ha, redis_url):
    """Each mode's connections (a standalone server's, a sentinel-found master's, a cluster's nodes') carry
    later-read's DriverInfo: CLIENT SETINFO names them `redis-py(later-read_v<version>)`, which an operator
    reads in CLIENT LIST from Redis 7.2 on (an older server refuses SETINFO, and redis-py ignores that)."""
    wanted = (f"redis-py(later-read_v{__version__})", redis.__version__)
    if isinstance(ha, RedisClusterGroup):
        modes = {"cluster": RedisSettings(mode="cluster", url=ha.url)}
    else:
        modes = {
            "sentinel": RedisSettings(
                mode="sentinel", url="", sentinels=ha.sentinels, service_name=SERVICE_NAME, wait_replicas=1
            )
        }
    modes["standalone"] = RedisSettings(url=redis_url)

    async def names(settings: RedisSettings) -> tuple[list[tuple], dict[str, str], bool]:
        client = open_redis(settings)
        try:
            await client.set("later-read-test:driver", "1")  # a connection made and used
            cluster = settings.mode == "cluster"
            node = client.get_random_node() if cluster else None
            info = await client.execute_command("CLIENT", "INFO", **({"target_nodes": node} if cluster else {}))
            server = (await client.info("server", **({"target_nodes": node} if cluster else {})))["redis_version"]
            pools = client.get_nodes() if cluster else [client.connection_pool]
            drivers = [pool.connection_kwargs["driver_info"] for pool in pools]
        finally:
            await client.aclose()
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(f.split("=", 1) for f in text.split() if f.startswith(("lib-name=", "lib-ver=")))
        setinfo = tuple(int(x) for x in server.split(".")[:2]) >= (7, 2)
        return [(d.formatted_name, d.lib_version) for d in drivers], fields, setinfo

    for mode, settings in modes.items():
        drivers, fields, setinfo = anyio.run(names, settings)
        assert drivers and all(d == wanted for d in drivers), mode
        if setinfo:
            assert (fields.get("lib-name"), fields.get("lib-ver")) == wanted, mode


def test_check_reports_the_mode_the_master_or_the_nodes_and_slot_coverage(ha, mysql, kafka_topic, sim, make_config):
    seed_hour(mysql, 10, HOUR)
    config = ha_config(make_config, ha)
    done = run_job(config, "check")
    line = next(ln for ln in done.stdout.splitlines() if ln.split()[1:2] == ["redis"])
    assert done.returncode == 0 and line.split()[0] == "ok", done.stdout + done.stderr
    if isinstance(ha, RedisClusterGroup):
        assert "mode cluster, state ok, slots 16384/16384 ok" in line and "3 replicas" in line
        assert all(f"127.0.0.1:{port}" in line for port in ha.masters())
    else:
        assert f"mode sentinel, master 127.0.0.1:{ha.master()} ({SERVICE_NAME}), 1 replicas" in line


@pytest.mark.parametrize(
    "redis_section, words",
    [
        ({"mode": "sentinel", "url": None}, 'mode = "sentinel" needs sentinels'),
        ({"mode": "sentinel", "sentinels": ["10.0.0.1:26379"]}, "service_name"),
        ({"mode": "sentinel", "sentinels": ["10.0.0.1"], "service_name": "m"}, '"host:port"'),
        ({"mode": "cluster", "url": None}, 'mode = "cluster" needs it'),
        ({"mode": "replica"}, 'one of "standalone", "sentinel", "cluster"'),
    ],
)
def test_a_bad_redis_mode_config_is_one_line_and_exit_2(make_config, redis_section, words):
    config = make_config(redis=redis_section)
    result = invoke("prewarm", "--config", str(config), "--date", DATE)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[redis]" in lines[0] and words in lines[0], result.stderr


async def _closed_writer_race(redis_url: str) -> BaseException:
    """redis-py's own race, raised by its own code: a write on a connection whose writer a concurrent
    disconnect has set to None (what a master killed mid-pipeline left in CI: redis-py #3546, #4287)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    connection = client.connection_pool.make_connection()
    await connection.connect()
    writer, connection._writer = connection._writer, None
    try:
        await connection._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
    except BaseException as error:  # noqa: BLE001 - the error is the result
        return error
    finally:
        writer.close()
        await client.aclose()
    raise AssertionError("a write on a closed writer did not fail")


def test_redis_pys_closed_writer_race_is_a_failover_error_and_nothing_else_is(redis_url):
    import asyncio

    from redis import exceptions as redis_errors

    from later_read.store.client import retryable

    race = asyncio.run(_closed_writer_race(redis_url))
    assert isinstance(race, AttributeError) and retryable(race)
    assert retryable(redis_errors.ConnectionError("gone"))
    with pytest.raises(AttributeError) as ours:
        None.writelines([])  # the same message, raised by our own code: a bug, never retried
    assert not retryable(ours.value)
    assert not retryable(TypeError("'NoneType' object is not callable"))  # no redis-py frame


def test_store_rides_out_the_closed_writer_race_and_reports_it_in_one_line_when_it_lasts(redis_url):
    """Cluster/sentinel mode: the race is retried like a failover; standalone (no retry) or a race that
    outlasts failover_seconds is RedisUnavailable (exit 3), never an internal error (exit 70)."""
    import asyncio

    from redis.asyncio import Redis

    from later_read.config.settings import RedisSettings
    from later_read.errors import RedisUnavailable
    from later_read.store import Store

    async def scenario(mode: str, failures: int, failover_seconds: float):
        calls = []

        async def call():
            calls.append(1)
            if len(calls) <= failures:
                raise await _closed_writer_race(redis_url)
            return "answered"

        settings = RedisSettings(mode=mode, url=redis_url, failover_seconds=failover_seconds)
        client = Redis.from_url(redis_url)
        try:
            return await Store(client, settings)._run("test call", call), len(calls)
        except RedisUnavailable as error:
            return str(error), len(calls)
        finally:
            await client.aclose()

    assert asyncio.run(scenario("cluster", 2, 30.0)) == ("answered", 3)
    message, calls = asyncio.run(scenario("standalone", 1, 30.0))
    assert calls == 1 and "unreachable during test call" in message and "\n" not in message
    message, calls = asyncio.run(scenario("cluster", 10**6, 0.5))
    assert calls >= 2 and "unreachable during test call" in message
