"""Sharded runs (`--shard K/N`, or JOB_COMPLETION_INDEX with `[shards] count`): real MariaDB, Redis, Kafka.

N = 4 shard processes over one day leave exactly the Redis contents and Kafka messages one unsharded
run leaves; the split is the database's CRC32, the same function as zlib's; the push waits for every
shard's prewarm marker.
"""

from __future__ import annotations

import os
import re
import subprocess
import zlib

import orjson
import pytest
import redis

from helpers import (
    CONFIG_PATH,
    DATE,
    ROOT,
    assert_capped,
    assert_cli_accepts,
    at,
    configmap_settings,
    consume,
    manifests,
    seed_hour,
    seeding,
    start_cli,
)
from later_read.core.scope import JOB_INDEX_ENV, RunScope, Shard, parse_shard
from later_read.errors import UsageError
from later_read.store.keys import Keys

HOUR = 9
SHARDS = 4
PER_RUN = (
    b"later_read:prewarm:done:",
    b"later_read:prewarm:ready:",
    b"later_read:push:start:",
    b"later_read:push:ledger:",
)


def test_shard_parsing_and_key_suffix():
    assert parse_shard("2/4", 4) == Shard(2, 4)
    assert parse_shard(None, 4, {JOB_INDEX_ENV: "3"}) == Shard(3, 4)
    assert parse_shard(None, 1, {}) == Shard.whole() and Shard.whole().suffix == ""
    assert Shard(2, 4).suffix == ":shard2of4"
    assert Shard.of("u1", 4) == Shard(zlib.crc32(b"u1") % 4, 4) and Shard.of("u1", 4).owns("u1")
    assert Keys.lock("prewarm", RunScope(DATE, None, Shard(2, 4))) == f"later_read:lock:prewarm:{{{DATE}:shard2of4}}"
    for bad in ("4/4", "x/4", "1", "-1/4"):
        with pytest.raises(UsageError):
            parse_shard(bad, 1)
    with pytest.raises(UsageError, match="JOB_COMPLETION_INDEX"):
        parse_shard(None, 4, {})  # an unsharded run in a sharded deployment: refused
    for other_split, count in (("0/1", 2), ("1/2", 4), ("0/2", 1)):  # its locks would not be the deployment's
        with pytest.raises(UsageError, match=rf"but \[shards\] count = {count}"):
            parse_shard(other_split, count)


def test_mariadb_crc32_is_zlib_crc32_so_the_split_is_the_same_everywhere(mysql):
    uids = [f"{i:09d}" for i in range(0, 10**9, 7919 * 1013)] + ["u-ü-中文", "", "A" * 64]
    conn = seeding.connect(mysql.host, mysql.port, mysql.user, mysql.password, mysql.database)
    try:
        with conn.cursor() as cur:
            for uid in uids:
                cur.execute("SELECT CRC32(%s), CRC32(%s) %% 4", (uid, uid))
                crc, shard = cur.fetchone()
                assert (crc, shard) == (zlib.crc32(uid.encode()), zlib.crc32(uid.encode()) % 4), uid
    finally:
        conn.close()


def job(config, name: str, shard: int | None, via_env: bool = False) -> subprocess.Popen:
    argv = [name, "--config", str(config), "--date", DATE]
    if name == "push":
        argv += ["--hour", str(HOUR), "--now", at(HOUR)]
    env = dict(os.environ)
    if shard is not None and via_env:
        env[JOB_INDEX_ENV] = str(shard)  # what Kubernetes sets in an Indexed Job's pod
    elif shard is not None:
        argv += ["--shard", f"{shard}/{SHARDS}"]
    return start_cli(*argv, env=env)


def wait_all(children: list[subprocess.Popen]) -> list[str]:
    outputs = [child.communicate(timeout=180)[1] for child in children]
    for child, stderr in zip(children, outputs, strict=False):
        assert child.returncode == 0, stderr[-3000:]
    return outputs


def assert_each_user_called_once_but_for_retries(calls: dict[str, int], users, outputs: list[str]) -> None:
    """The shards are disjoint and together complete: every user was called, and each call beyond one per
    user is a retry a shard counted (a call that timed out on a starved host is asked again; a user two
    shards took would be an extra call no shard counted as a retry). The simulator saw every call the
    shards counted, and no other."""
    counted = [
        tuple(map(int, found))
        for stderr in outputs
        for found in re.findall(r" prewarm\.service name=ab .*?\bcalls=(\d+) .*?\bretries=(\d+)\b", stderr)
    ]
    assert len(counted) == len(outputs)
    made, retried = map(sum, zip(*counted, strict=False))
    assert set(calls) == set(users) and sum(calls.values()) == made == len(users) + retried


def snapshot(url: str) -> dict[str, bytes]:
    """Every value and sent marker (the per-run markers, done, ready, push start and finished, are per
    shard by design)."""
    client = redis.Redis.from_url(url)
    try:
        keys = sorted(k for k in client.keys("*") if not k.startswith(PER_RUN))
        return dict(zip(keys, client.mget(keys), strict=False)) if keys else {}
    finally:
        client.close()


def messages(topic) -> list[tuple[str, dict]]:
    return sorted(
        ((key, {k: v for k, v in value.items() if k != "created_at"}) for key, value in consume(topic)),
        key=lambda m: m[0],
    )


def test_four_shard_processes_leave_exactly_what_one_run_leaves(
    redis_url, mysql, kafka_topic, kafka_server, sim, make_config
):
    users = seed_hour(mysql, 400, HOUR)
    push = {"wait_for_prewarm_seconds": 0, "progress_interval_seconds": 60}
    whole = make_config(push=push)
    wait_all([job(whole, "prewarm", None)])
    wait_all([job(whole, "push", None)])
    one_run, one_run_messages = snapshot(redis_url), messages(kafka_topic)
    assert one_run_messages and len(one_run) > len(users)

    redis.Redis.from_url(redis_url).flushdb()
    sim.reset()
    topic = kafka_server.create_topic(f"{kafka_topic[1]}_sharded", partitions=3)
    sharded = make_config(push=push, shards={"count": SHARDS}, kafka={"topic": topic})
    prewarms = wait_all([job(sharded, "prewarm", k, via_env=k % 2 == 0) for k in range(SHARDS - 1)])
    early = wait_all([job(sharded, "push", 0)])[0]
    assert "push.prewarm_unfinished" in early  # shard 3's marker is missing: the day is not done
    prewarms += wait_all([job(sharded, "prewarm", SHARDS - 1)])
    late = wait_all([job(sharded, "push", k, via_env=k % 2 == 1) for k in range(1, SHARDS)])
    assert all("push.prewarm_ready" in stderr for stderr in late)

    assert_each_user_called_once_but_for_retries(sim.calls("ab"), users, prewarms)
    assert snapshot(redis_url) == one_run
    assert messages((kafka_topic[0], topic)) == one_run_messages
    client = redis.Redis.from_url(redis_url)
    try:
        markers = client.keys("later_read:prewarm:done:*")
        assert sorted(markers) == sorted(
            Keys.prewarm_done(RunScope(DATE, None, Shard(k, SHARDS))).encode() for k in range(SHARDS)
        )
        entries = client.keys("later_read:push:ledger:*")
        assert sorted(entries) == sorted(
            Keys.push_ledger(RunScope(DATE, HOUR, Shard(k, SHARDS))).encode() for k in range(SHARDS)
        )
        states = [orjson.loads(client.get(key)) for key in entries]
        assert {(e["state"], e["clean"]) for e in states} == {("done", True)}
        assert sorted(e["shard"] for e in states) == [f"{k}/{SHARDS}" for k in range(SHARDS)]
        assert sum(e["users"] for e in states) == len(users)
    finally:
        client.close()
    kafka_server.delete_topic(topic)


def test_four_shards_share_one_qps_cap_through_redis(redis_url, mysql, sim, make_config):
    users = seed_hour(mysql, 2000, HOUR)
    config = make_config(shards={"count": SHARDS}, services={"ab_qps": 400}, prewarm={"progress_interval_seconds": 60})

    with redis.Redis.from_url(redis_url) as client:
        scripts_before = lua_calls(client)
        prewarms = wait_all([job(config, "prewarm", k) for k in range(SHARDS)])
        # the shared window lives in Redis: each call took an entry there (a `limits` Lua script; the
        # keys themselves expire a second after the last entry, so their absence proves nothing)
        scripts = lua_calls(client) - scripts_before

    assert_each_user_called_once_but_for_retries(sim.calls("ab"), users, prewarms)
    assert scripts >= len(users)
    # A cap is a correctness property: 4 shards each allowed 400/s alone would reach ~1600/s together and
    # finish the 2000 calls in ~1.3 s; under one shared cap they take at least 4 s.
    assert_capped(sim.stats()["ab"], 400)


def lua_calls(client: redis.Redis) -> int:
    """How many Lua scripts (EVAL/EVALSHA) the Redis server has run."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("eval", "evalsha"))


@pytest.mark.parametrize("job", ["prewarm", "push"])
def test_the_indexed_cronjob_runs_one_shard_per_completion_index(job, tmp_path):
    import yaml

    path = ROOT / "deploy" / "sharded" / f"{job}-indexed-cronjob.yaml"
    cronjob = yaml.safe_load(path.read_text(encoding="utf-8"))
    plain = manifests()[("CronJob", f"later-read-{job}")]  # same schedule and zone as the unsharded one
    assert (cronjob["spec"]["schedule"], cronjob["spec"]["timeZone"]) == (
        plain["spec"]["schedule"],
        plain["spec"]["timeZone"],
    )
    spec = cronjob["spec"]["jobTemplate"]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["backoffLimitPerIndex"] == plain["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 2
    [container] = spec["template"]["spec"]["containers"]
    assert container["command"] == ["later-read", job, "--config", CONFIG_PATH]
    assert_cli_accepts(container["command"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    count = int(env["LATER_READ__SHARDS__COUNT"])
    assert spec["completions"] == spec["parallelism"] == count == 4
    # Each pod's shard: K from JOB_COMPLETION_INDEX (what Kubernetes sets), N from the config + env.
    from later_read.config.settings import load_settings

    (tmp_path / "config.toml").write_text(
        manifests()[("ConfigMap", "later-read-config")]["data"]["config.toml"], encoding="utf-8"
    )
    settings = load_settings(tmp_path / "config.toml", environ={"LATER_READ__SHARDS__COUNT": str(count)})
    assert configmap_settings(tmp_path).shards.count == 1  # the unsharded CronJobs keep the whole day
    assert [parse_shard(None, settings.shards.count, {JOB_INDEX_ENV: str(k)}) for k in range(count)] == Shard(
        0, count
    ).siblings()
