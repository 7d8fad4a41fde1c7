"""The job lock between real processes: a run that finds it held waits (`--lock-wait`), a live holder
keeps it (the waiter exits 5 naming the holder), a kill -9'd holder's lock expires and is taken over."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import redis

from helpers import (
    DATE,
    at,
    consume,
    count_values,
    expected_value,
    first_push_hour,
    invoke,
    pick,
    run_cli,
    seed_day,
    seed_users,
    start_prewarm,
    stored_values,
    wait_until,
)
from later_read.core.scope import RunScope
from later_read.store.keys import Keys

LOCK = Keys.lock("prewarm", RunScope(DATE))


def slow_config(sim, make_config) -> Path:
    """A prewarm of ~2000 users slow enough (50 ms A/B at C=10) to still hold its lock seconds later,
    with a 3 s lock TTL (refreshed every second) so an orphaned lock expires quickly."""
    sim.configure(ab={"latency_ms": 50})
    return make_config(prewarm={"concurrency": 10}, lock={"ttl_seconds": 3})


def holder_of(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        value = client.get(LOCK)
    finally:
        client.close()
    return value.decode() if value else ""


def run_prewarm(config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("prewarm", "--config", str(config), "--date", DATE, *args, timeout=300)


def test_a_live_holder_keeps_the_lock_and_the_waiter_exits_5_naming_it(
    sim, redis_url, mysql, make_config, tmp_path, stop_children
):
    seed_users(mysql, 2000)
    config = slow_config(sim, make_config)
    holder = start_prewarm(config, tmp_path / "holder.txt")
    stop_children.append(holder)
    wait_until(lambda: count_values(redis_url) >= 20, what="the holder to be working")
    assert holder_of(redis_url).split(":")[1] == str(holder.pid)

    waiter = run_prewarm(config, "--lock-wait", "5")  # longer than the TTL: only refreshing keeps it

    assert waiter.returncode == 5, waiter.stderr
    lines = waiter.stderr.strip().splitlines()
    assert any("lock.waiting" in line and "holder=" in line for line in lines), waiter.stderr
    last = lines[-1]
    assert last.startswith("later-read: error: another prewarm run for 20261123 is in progress"), last
    assert f":{holder.pid}:" in last and "waited 5 s and it is still held" in last
    assert holder.poll() is None  # the holder was never disturbed
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=60) == 6


def test_a_killed_holders_lock_expires_and_the_waiter_takes_over(
    sim, redis_url, mysql, make_config, tmp_path, stop_children
):
    expected = seed_users(mysql, 2000)
    config = slow_config(sim, make_config)
    holder = start_prewarm(config, tmp_path / "holder.txt")
    stop_children.append(holder)
    wait_until(lambda: count_values(redis_url) >= 20, what="the holder to be working")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert holder_of(redis_url)  # the dead run's lock is still there
    # Give the orphaned lock 15 s more to live, so it is still there when the waiter has started even on
    # a loaded machine (a Python start can take seconds); it still expires by itself, nobody deletes it.
    client = redis.Redis.from_url(redis_url)
    client.expire(LOCK, 15)
    client.close()

    sim.configure(ab={"latency_ms": 0})
    waiter = run_prewarm(config, "--lock-wait", "40")

    assert waiter.returncode == 0, waiter.stderr
    assert "lock.waiting" in waiter.stderr and "lock.taken" in waiter.stderr
    assert stored_values(redis_url) == {uid: expected_value(sim, uid) for uid in expected}
    assert holder_of(redis_url) == ""  # released at the end


def test_lock_wait_0_fails_at_once_and_says_so(sim, redis_url, mysql, make_config):
    seed_users(mysql, 10)
    client = redis.Redis.from_url(redis_url)
    client.set(LOCK, "elsewhere:4242:beef", ex=60)
    client.close()
    config = make_config(lock={"wait_seconds": 75})

    result = run_prewarm(config, "--lock-wait", "0")  # the option overrides the config

    assert result.returncode == 5
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "held by elsewhere:4242:beef" in lines[0] and "--lock-wait is 0" in lines[0]
    assert sim.calls("ab") == {}


def test_rerun_holds_the_hours_push_lock_and_waits_for_it(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, 60)
    config, uid = make_config(), pick(sim, "rec", 60)
    hour = first_push_hour(uid, 60)
    lock = Keys.lock("push", RunScope(DATE, hour))
    client = redis.Redis.from_url(redis_url)
    client.set(lock, "elsewhere:4242:beef", ex=60)

    rerun = ("rerun", uid, "--date", DATE, "--now", at(hour), "--config", str(config))  # inside the hour's window
    held = invoke(*rerun, "--push-only", "--lock-wait", "0")
    client.set(lock, "elsewhere:4242:beef", ex=1)  # that push ends; its lock expires in a second
    waited = invoke(*rerun, "--lock-wait", "10")
    client.close()

    assert held.exit_code == 5 and "held by elsewhere:4242:beef" in held.stderr
    assert waited.exit_code == 0, waited.output
    assert f"holding {lock}" in waited.stdout
    assert len(consume(kafka_topic)) == 1


def test_sigterm_while_waiting_for_the_lock_exits_6_having_done_nothing(
    sim, redis_url, mysql, make_config, tmp_path, stop_children
):
    seed_users(mysql, 10)
    client = redis.Redis.from_url(redis_url)
    client.set(LOCK, "elsewhere:4242:beef", ex=60)
    client.close()
    stderr = tmp_path / "waiter.txt"
    waiter = start_prewarm(make_config(), stderr, "--lock-wait", "60")
    stop_children.append(waiter)
    wait_until(lambda: "lock.waiting" in stderr.read_text(), what="the waiter to be waiting")

    waiter.send_signal(signal.SIGTERM)

    assert waiter.wait(timeout=10) == 6
    last = stderr.read_text().strip().splitlines()[-1]
    assert last.startswith("later-read: error: stopped by a signal while waiting for the lock"), last
    assert holder_of(redis_url) == "elsewhere:4242:beef" and sim.calls("ab") == {}
