"""`later-read prewarm` against real Redis and MariaDB and the simulator in its own process.

What each test pins down (issue 3, "Must show"):
- the exact Redis contents of a seeded day: values, TTLs, both no-push outcomes, nothing for other dates
  or task ids, a uid under both task ids computed once (simulator call counts equal users, not rows);
- rerun skips users done for the date (corrupt and other-date values are recomputed), --force redoes all,
  --uids-file restricts the run (and writes no completion marker);
- 30 % transient errors recovered by retries; permanent failures counted per reason (exit 1) and
  finished by a rerun; a hard-down service stops the job early (exit 4, alert line);
- kill -9 at about half, then a rerun: every user done, finished users not recomputed;
- SIGTERM: in-flight users finish and are written, summary printed, exit 6, no marker;
- a second concurrent run is refused (exit 5); bad input and a dead Redis are one line each (exit 2, 3).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import orjson
import pytest
import redis
import stamina

from helpers import (
    DATE,
    VALUE_KEYS as KEYS,
    assert_capped,
    count_values,
    expected_value,
    invoke,
    seed_day,
    seed_users,
    servers,
    start_prewarm,
    stored_values,
    uid_of,
    wait_until,
)
from later_read.core.scope import RunScope
from later_read.store.keys import Keys

MARKER = Keys.prewarm_done(RunScope(DATE))
LOCK = Keys.lock("prewarm", RunScope(DATE))
TTL = 86400
REPORT_KEYS = {
    "date",
    "users",
    "cached",
    "not_in_experiment",
    "no_recommendation",
    "failed",
    "skipped_existing",
    "duration_seconds",
}


# Helpers -------------------------------------------------------------------------------------------
def marker(url: str) -> dict | None:
    client = redis.Redis.from_url(url)
    try:
        raw = client.get(MARKER)
    finally:
        client.close()
    return orjson.loads(raw) if raw else None


def prewarm(config: Path, *args: str):
    """Run `later-read prewarm` in-process; the click Result (exit_code, stdout, stderr)."""
    return invoke("prewarm", "--config", str(config), "--date", DATE, *args)


# The seeded day, exactly ----------------------------------------------------------------------------
def test_seeded_day_exact_redis_contents(sim, redis_url, mysql, make_config, tmp_path):
    expected = seed_users(mysql, 300)
    # Small pages and batches: several keyset pages, several MGET/pipeline batches.
    config = make_config(starrocks={"batch_size": 64}, redis={"batch_size": 50}, prewarm={"concurrency": 8})
    report = tmp_path / "report.json"

    result = prewarm(config, "--report", str(report))

    assert result.exit_code == 0, result.stderr
    values = stored_values(redis_url)
    assert set(values) == set(expected)  # nothing for other dates, other task ids, noise users
    assert values == {uid: expected_value(sim, uid) for uid in expected}
    outcomes = [v["outcome"] for v in values.values()]
    assert {"rec", "not_in_experiment", "no_recommendation"} <= set(outcomes)

    client = redis.Redis.from_url(redis_url)
    try:
        ttls = [client.ttl(KEYS.rec(uid)) for uid in expected]
        assert all(TTL - 60 <= t <= TTL for t in ttls)
        ready = {Keys.prewarm_ready(RunScope(DATE), hour).encode() for hour in range(24)}
        assert set(client.keys("*")) == {KEYS.rec(u).encode() for u in expected} | {MARKER.encode()} | ready
    finally:
        client.close()

    # Every uid called once, however many rows or task ids it has; recommend only for the experiment.
    ab, rec = sim.calls("ab"), sim.calls("rec")
    assert ab == dict.fromkeys(expected, 1)
    assert rec == {uid: 1 for uid, v in values.items() if v["outcome"] != "not_in_experiment"}

    data = json.loads(report.read_text())
    assert set(data) >= REPORT_KEYS
    assert (data["users"], data["failed"], data["skipped_existing"], data["status"]) == (len(expected), 0, 0, "ok")
    assert data["cached"] == outcomes.count("rec")
    assert data["not_in_experiment"] == outcomes.count("not_in_experiment")
    assert data["no_recommendation"] == outcomes.count("no_recommendation")
    assert set(data["services"]) == {"ab", "rec", "material"}
    assert data["services"]["ab"]["calls"] == len(expected) and data["services"]["material"]["calls"] == 0
    done = marker(redis_url)
    assert done is not None and done["users"] == len(expected) and done["status"] == "ok"
    assert done["started_at"] <= done["finished_at"]
    assert "prewarm.summary status=ok" in result.stderr


# Rerun, --force, --uids-file ------------------------------------------------------------------------
def test_rerun_skips_done_users_recomputes_stale_and_force_redoes_all(sim, redis_url, mysql, make_config):
    expected = seed_users(mysql, 200)
    config = make_config(prewarm={"concurrency": 8})
    assert prewarm(config).exit_code == 0
    corrupt, stale = sorted(expected)[:2]
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(KEYS.rec(corrupt), b"{not json", ex=TTL)
        client.set(KEYS.rec(stale), orjson.dumps({**expected_value(sim, stale), "date": "20261122"}), ex=TTL)
    finally:
        client.close()
    sim.reset()

    again = prewarm(config)

    assert again.exit_code == 0, again.stderr
    assert sim.calls("ab") == {corrupt: 1, stale: 1}
    assert f"skipped_existing={len(expected) - 2}" in again.stderr
    assert stored_values(redis_url) == {uid: expected_value(sim, uid) for uid in expected}

    sim.reset()
    forced = prewarm(config, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert sim.calls("ab") == dict.fromkeys(expected, 1)
    assert marker(redis_url)["skipped_existing"] == 0


def test_uids_file_restricts_the_run_and_writes_no_marker(sim, redis_url, mysql, make_config, tmp_path):
    expected = seed_users(mysql, 100)
    chosen = sorted(expected)[10:13]
    not_today = uid_of(100)  # seeded only under other task ids: not a user of the day
    uids = tmp_path / "uids.txt"
    uids.write_text("# rerun these\n" + "\n".join([*chosen, not_today, chosen[0]]) + "\n\n")

    result = prewarm(make_config(), "--uids-file", str(uids))

    assert result.exit_code == 0, result.stderr
    assert stored_values(redis_url) == {uid: expected_value(sim, uid) for uid in chosen}
    assert sim.calls("ab") == dict.fromkeys(chosen, 1)
    assert marker(redis_url) is None  # only a run over the whole day completes it


# Failures -------------------------------------------------------------------------------------------
@pytest.fixture
def no_backoff():
    """stamina's testing switch: retries happen at once (each still counted and made), in this process."""
    with stamina.set_testing(True, attempts=10, cap=True):
        yield


def test_thirty_percent_transient_errors_are_recovered_by_retries(sim, redis_url, mysql, make_config, no_backoff):
    expected = seed_users(mysql, 400)
    sim.configure(
        timeout_hold_seconds=3,
        ab={"error_5xx_rate": 0.2, "error_429_rate": 0.1},
        rec={"error_5xx_rate": 0.2, "timeout_rate": 0.1},
    )
    # 10 attempts: a user fails only if 10 draws in a row fail (0.3**10, ~1e-5 for the whole test).
    # breaker_min_calls 100: a 30 % error rate must never look like a down service, even by chance in
    # the first small window (with 50 that happens in ~0.2 % of runs).
    config = make_config(
        prewarm={"concurrency": 20}, services={"max_attempts": 10, "timeout_seconds": 0.3, "breaker_min_calls": 100}
    )

    result = prewarm(config)

    assert result.exit_code == 0, result.stderr
    assert stored_values(redis_url) == {uid: expected_value(sim, uid) for uid in expected}
    stats = sim.stats()
    assert stats["ab"]["by_fault"]["5xx"] > 0 and stats["ab"]["by_fault"]["429"] > 0
    assert stats["rec"]["by_fault"]["timeout"] > 0
    assert stats["ab"]["calls"] > len(expected)  # the retries
    assert stats["ab"]["distinct_uids"] == len(expected)
    assert "failed=0" in result.stderr and marker(redis_url)["status"] == "ok"


def test_permanent_failures_are_counted_then_finished_by_a_rerun(sim, redis_url, mysql, make_config, tmp_path):
    expected = seed_users(mysql, 200)
    sim.configure(rec={"malformed_rate": 0.2})  # not retried; under the breaker's 50 %
    config = make_config(prewarm={"concurrency": 8})
    report = tmp_path / "report.json"

    first = prewarm(config, "--report", str(report))

    assert first.exit_code == 1, first.stderr
    data = json.loads(report.read_text())
    failed = data["failures"].get("rec.malformed", 0)
    assert failed > 0 and data["failed"] == failed and data["status"] == "failures"
    assert "prewarm.failed_users" in first.stderr and "LATER_READ_ALERT" in first.stderr
    assert len(stored_values(redis_url)) == len(expected) - failed
    assert marker(redis_url)["failed"] == failed  # the run covered every user: marker with its counts

    sim.configure(rec={"malformed_rate": 0})
    sim.reset()
    second = prewarm(config)
    assert second.exit_code == 0, second.stderr
    assert sum(sim.calls("ab").values()) == failed
    assert stored_values(redis_url) == {uid: expected_value(sim, uid) for uid in expected}


def test_per_service_qps_cap_is_respected(sim, redis_url, mysql, make_config):
    expected = seed_users(mysql, 300)
    config = make_config(prewarm={"concurrency": 50}, services={"ab_qps": 100.0})

    result = prewarm(config)

    assert result.exit_code == 0, result.stderr
    assert len(stored_values(redis_url)) == len(expected)
    assert_capped(sim.stats()["ab"], 100)  # 300 calls: at least 1.75 s; uncapped they take ~0.1 s


def test_concurrency_bounds_the_calls_in_flight_to_each_service(sim, redis_url, mysql, make_config):
    """`concurrency = C`: at most C calls in flight to A/B and at most C to recommend, and both held at once
    (fanout.py): services of exactly C slots never queue a call of the job, and more than C calls were in
    service at the two together (a pool of C users, each calling one service at a time, never is)."""
    expected = seed_users(mysql, 400)
    sim.configure(ab={"latency_ms": 20, "capacity": 4}, rec={"latency_ms": 20, "capacity": 4}, in_experiment_ratio=1.0)
    sim.reset()
    config = make_config(prewarm={"concurrency": 4})

    result = prewarm(config)

    assert result.exit_code == 0, result.stderr
    assert len(stored_values(redis_url)) == len(expected)
    stats = sim.stats()
    assert stats["ab"]["calls"] == stats["rec"]["calls"] == len(expected)
    for name in ("ab", "rec"):
        assert stats[name]["max_queued"] == 0, stats[name]  # never more than C in flight to one service
    assert stats["rec"]["max_in_service"] == 4, stats["rec"]  # recommend kept busy: C slots full
    assert stats["rec"]["max_in_service_together"] > 4, stats["rec"]  # and A/B calls out beside them


def test_hard_down_service_stops_the_job_early(sim, redis_url, mysql, make_config, no_backoff):
    expected = seed_users(mysql, 2000)
    sim.configure(rec={"error_5xx_rate": 1.0})
    config = make_config(prewarm={"concurrency": 10})

    result = prewarm(config)

    assert result.exit_code == 4, result.stderr
    lines = [line for line in result.stderr.splitlines() if "prewarm.service_down" in line]
    assert len(lines) == 1 and "service=rec" in lines[0] and lines[0].endswith("LATER_READ_ALERT")
    assert "prewarm.summary status=service_down" in result.stderr
    last = result.stderr.rstrip().splitlines()[-1]  # the same one-line ending as every exit code 2-5
    assert last.startswith("later-read: error: rec service looks down") and "rerun" in last, last
    assert sim.stats()["ab"]["calls"] < len(expected) / 4  # stopped early, not tried for everyone
    values = stored_values(redis_url)
    assert values and {v["outcome"] for v in values.values()} == {"not_in_experiment"}
    assert marker(redis_url) is None


# Processes: kill -9, SIGTERM, the lock -------------------------------------------------------------
def slow_run(sim, make_config, **prewarm_settings) -> Path:
    """~2000 users at C=10 with 20 ms A/B latency: several seconds, time to act in the middle."""
    sim.configure(ab={"latency_ms": 20})
    return make_config(prewarm={"concurrency": 10, **prewarm_settings})


def test_kill_9_at_half_then_rerun_finishes_without_recomputing(
    sim, redis_url, mysql, make_config, tmp_path, stop_children
):
    expected = seed_users(mysql, 2000)
    config = slow_run(sim, make_config)
    child = start_prewarm(config, tmp_path / "killed.txt")
    stop_children.append(child)
    wait_until(lambda: count_values(redis_url) >= len(expected) // 2, what="half of the users")

    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)

    finished = set(stored_values(redis_url))
    assert len(expected) // 2 <= len(finished) < len(expected)
    assert marker(redis_url) is None
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.delete(LOCK) == 1  # the on-call step after kill -9 (else: wait 60 s)
    finally:
        client.close()

    rerun = prewarm(config)

    assert rerun.exit_code == 0, rerun.stderr
    assert stored_values(redis_url) == {uid: expected_value(sim, uid) for uid in expected}
    ab = sim.calls("ab")
    assert set(ab) == set(expected)
    assert all(ab[uid] == 1 for uid in finished)  # finished before the kill: never recomputed
    # Called twice: only what was in flight or in the write buffer at the kill (C + ~0.1 s of results).
    assert sum(1 for n in ab.values() if n > 1) <= 100
    assert marker(redis_url)["skipped_existing"] == len(finished)


def test_sigterm_finishes_in_flight_users_prints_summary_exits_6(
    sim, redis_url, mysql, make_config, tmp_path, stop_children
):
    expected = seed_users(mysql, 2000)
    config = slow_run(sim, make_config, progress_interval_seconds=0.5)
    stderr, report = tmp_path / "stderr.txt", tmp_path / "report.json"
    child = start_prewarm(config, stderr, "--report", str(report))
    stop_children.append(child)
    wait_until(lambda: count_values(redis_url) >= 300, what="300 users done")

    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=60)

    text = stderr.read_text()
    assert code == 6, text
    assert "prewarm.summary status=interrupted" in text
    assert any(
        "prewarm.interrupted" in line and "signal=SIGTERM" in line and line.endswith("LATER_READ_ALERT")
        for line in text.splitlines()
    )
    assert "prewarm.progress done=" in text  # not a terminal: progress lines
    values = stored_values(redis_url)
    assert 300 <= len(values) < len(expected)
    assert values == {uid: expected_value(sim, uid) for uid in values}
    # Nothing lost: every user whose A/B call was made finished within the grace and was written.
    assert set(sim.calls("ab")) == set(values)
    assert marker(redis_url) is None
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted" and data["exit_code"] == 6
    assert data["cached"] + data["not_in_experiment"] + data["no_recommendation"] == len(values)


def test_sigterm_grace_is_bounded_stuck_users_are_cancelled(
    sim, redis_url, mysql, make_config, tmp_path, stop_children
):
    # One hour, so the first page holds them all and every worker has its user at once: spread over the
    # day, the reader may still be between hours' pages when the signal comes, and fewer are in flight.
    seed_day(mysql, 200, hours=(0,))
    sim.configure(ab={"latency_ms": 5000})  # every user stuck in flight far longer than the grace
    config = make_config(prewarm={"concurrency": 10, "grace_seconds": 0.5}, services={"timeout_seconds": 30})
    stderr, report = tmp_path / "stderr.txt", tmp_path / "report.json"
    child = start_prewarm(config, stderr, "--report", str(report))
    stop_children.append(child)
    wait_until(lambda: sim.stats()["ab"]["calls"] >= 10, what="10 users in flight")

    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=60)

    text = stderr.read_text()
    assert code == 6, text
    assert "prewarm.grace_expired" in text and "prewarm.summary status=interrupted" in text
    data = json.loads(report.read_text())
    # 10 users in flight at A/B (the service saw C calls, no more) and 10 waiting for a slot (fanout.py)
    assert sim.stats()["ab"]["calls"] == 10
    assert data["unfinished"] == 20 and data["users"] == 20 and data["cached"] == 0
    assert stored_values(redis_url) == {} and marker(redis_url) is None


def test_starrocks_failing_mid_run_keeps_finished_work_and_exits_3(
    sim, redis_url, mysql, make_config, tmp_path, stop_children
):
    seed_users(mysql, 2000)
    sim.configure(ab={"latency_ms": 20})
    config = make_config(prewarm={"concurrency": 10}, starrocks={"batch_size": 100})
    stderr = tmp_path / "stderr.txt"
    child = start_prewarm(config, stderr)
    stop_children.append(child)
    wait_until(lambda: count_values(redis_url) >= 300, what="300 users done")

    with mysql.connect() as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE task_data")  # the next page's query fails
    code = child.wait(timeout=60)

    text = stderr.read_text()
    assert code == 3, text
    assert "prewarm.summary status=error" in text and "prewarm.error" in text
    assert text.strip().splitlines()[-1].startswith("later-read: error: StarRocks query failed")
    values = stored_values(redis_url)
    assert values == {uid: expected_value(sim, uid) for uid in values}
    assert set(sim.calls("ab")) == set(values)  # in-flight users finished and were written
    assert marker(redis_url) is None


def test_second_concurrent_run_of_the_date_is_refused(sim, redis_url, mysql, make_config, tmp_path, stop_children):
    seed_users(mysql, 2000)
    config = slow_run(sim, make_config)
    child = start_prewarm(config, tmp_path / "first.txt")
    stop_children.append(child)
    wait_until(lambda: count_values(redis_url) >= 50, what="the first run to be working")

    second = prewarm(config)

    assert second.exit_code == 5
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "later-read: error: another prewarm run for 20261123 is in progress"
    ), second.stderr
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 6


# Bad input, dead dependency ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["--date", "2026-11-23"], "--date: expected YYYYMMDD"),
        (["--uids-file", "/nonexistent/uids.txt"], "--uids-file: cannot read /nonexistent/uids.txt"),
        (["--uids-file", "{bad}"], "line 2"),
        (["--report", "/nonexistent/dir/report.json"], "--report: cannot write"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(make_config, tmp_path, args, words):
    bad = tmp_path / "bad.txt"
    bad.write_text('100000001\n"an unterminated quoted uid\n')
    args = [str(bad) if a == "{bad}" else a for a in args]
    # The config points at nothing that runs: input is checked before any connection.
    result = invoke("prewarm", "--config", str(make_config()), *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("later-read: error: ") and words in lines[0], result.stderr


def test_unreachable_redis_is_one_line_and_exit_3(make_config):
    config = make_config(redis={"url": f"redis://127.0.0.1:{servers.free_port()}/0", "socket_timeout_seconds": 1.0})
    result = prewarm(config)
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Redis at redis://127.0.0.1:" in lines[0] and "unreachable" in lines[0]
