"""Hour-first prewarm, per-hour readiness, the push's wait for its hour, the saving figures, adaptive
concurrency in a real run: against real Redis, MariaDB, Kafka and the simulator (jobs as processes)."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import orjson
import redis

from helpers import DATE, TASKS, VALUE_KEYS as KEYS, at, run_cli, seed_day, seeding, start_cli, wait_until
from later_read.core.scope import RunScope
from later_read.store.keys import Keys


def seed(mysql, users: int) -> dict[str, int]:
    """Seed DATE; uid -> the user's earliest push hour (the hour the prewarm handles it under)."""
    seed_day(mysql, users)
    target = {t.replace("{date}", DATE) for t in TASKS}
    earliest: dict[str, int] = {}
    for task_id, uid, _, hour, _ in seeding.day_rows(DATE, users, TASKS, noise=False):
        if task_id in target:
            earliest[uid] = min(hour, earliest.get(uid, 24))
    assert users < 240 or any(
        hour != earliest[uid] for task_id, uid, _, hour, _ in seeding.day_rows(DATE, users, TASKS, noise=False)
    ), "some users must have a later hour too"
    return earliest


def start(config: Path, log: Path, *args: str) -> subprocess.Popen:
    """`later-read ARGS` of DATE as a child process, its stderr to the file `log`."""
    with open(log, "wb") as err:
        return start_cli(*args, "--config", str(config), "--date", DATE, stdout=subprocess.DEVNULL, stderr=err)


def run(config: Path, *args: str) -> subprocess.CompletedProcess:
    """`later-read ARGS` of DATE to the end."""
    return run_cli(*args, "--config", str(config), "--date", DATE, timeout=300)


def ready_marker(client: redis.Redis, hour: int) -> dict | None:
    raw = client.get(Keys.prewarm_ready(RunScope(DATE), hour))
    return orjson.loads(raw) if raw else None


def has_value(client: redis.Redis, uids: list[str]) -> list[bool]:
    return [raw is not None for raw in client.mget([KEYS.rec(uid) for uid in uids])] if uids else []


def test_prewarm_goes_hour_by_hour_and_marks_each_hour_ready(redis_url, mysql, sim, make_config, tmp_path):
    """One worker, 10 ms calls: the users are stored in push-hour order, each hour's marker appears once
    all of that hour's users are stored, and a user with several hours counts under its earliest."""
    earliest = seed(mysql, 480)
    sim.configure(ab={"latency_ms": 10}, rec={"latency_ms": 10})
    config = make_config(prewarm={"concurrency": 1, "progress_interval_seconds": 60}, starrocks={"batch_size": 16})
    by_hour = {hour: sorted(uid for uid, h in earliest.items() if h == hour) for hour in range(24)}
    report = tmp_path / "prewarm.json"
    process = start(config, tmp_path / "prewarm.log", "prewarm", "--report", str(report))
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: ready_marker(client, 3), 120, "hour 3's marker")
        stored_late = sum(has_value(client, [uid for h in range(12, 24) for uid in by_hour[h]]))
        assert all(has_value(client, [uid for h in range(4) for uid in by_hour[h]]))
        assert stored_late == 0, f"{stored_late} users of hours 12-23 stored before hour 3 was ready"
        assert process.wait(timeout=180) == 0, (tmp_path / "prewarm.log").read_text()[-3000:]
        markers = {hour: ready_marker(client, hour) for hour in range(24)}
    finally:
        client.close()
    for hour, found in markers.items():
        assert found is not None and (found["users"], found["failed"]) == (len(by_hour[hour]), 0), hour
    data = json.loads(report.read_text())
    seconds = [data["hours"][f"{hour:02d}"]["seconds"] for hour in range(24)]
    assert seconds == sorted(seconds)
    assert sum(entry["users"] for entry in data["hours"].values()) == len(earliest) == data["users"]


def test_a_rerun_keeps_the_order_and_marks_the_hours_again(redis_url, mysql, sim, make_config, tmp_path):
    earliest = seed(mysql, 240)
    config = make_config(prewarm={"concurrency": 4})
    assert run(config, "prewarm").returncode == 0
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*[Keys.prewarm_ready(RunScope(DATE), hour) for hour in range(24)])
        late = [uid for uid, hour in earliest.items() if hour >= 20]
        client.delete(*[KEYS.rec(uid) for uid in late])
        report = tmp_path / "rerun.json"
        result = run(config, "prewarm", "--report", str(report))
        assert result.returncode == 0, result.stderr[-2000:]
        assert all(ready_marker(client, hour) is not None for hour in range(24))
        assert all(has_value(client, late))
    finally:
        client.close()
    data = json.loads(report.read_text())
    assert data["skipped_existing"] == len(earliest) - len(late) and data["cached"] + data["not_in_experiment"] + data[
        "no_recommendation"
    ] == len(late)
    assert [data["hours"][f"{h:02d}"]["users"] for h in range(20)] == [0] * 20
    ready_lines = [line for line in result.stderr.splitlines() if " prewarm.hour_ready " in line]
    assert [int(line.split(" hour=")[1].split()[0]) for line in ready_lines] == list(range(24))


def test_push_of_hour_0_waits_only_for_hour_0(redis_url, mysql, kafka_topic, sim, make_config, tmp_path):
    """The 00:00 push started before the prewarm: it sends hour 0 as soon as hour 0 is ready, while the
    prewarm is still working through the day (its day marker absent when the push has finished)."""
    earliest = seed(mysql, 960)
    sim.configure(ab={"latency_ms": 20}, rec={"latency_ms": 20})
    config = make_config(prewarm={"concurrency": 2}, push={"progress_interval_seconds": 60})
    push_report = tmp_path / "push.json"
    push = start(
        config,
        tmp_path / "push.log",
        "push",
        "--hour",
        "0",
        "--now",
        at(0),
        "--wait",
        "120",
        "--report",
        str(push_report),
    )
    time.sleep(0.5)  # the push is waiting before the prewarm starts, as in cron at 00:00 / 00:01
    prewarm = start(config, tmp_path / "prewarm.log", "prewarm")
    client = redis.Redis.from_url(redis_url)
    try:
        assert push.wait(timeout=180) == 0, (tmp_path / "push.log").read_text()[-3000:]
        day_marker_when_push_ended = client.get(Keys.prewarm_done(RunScope(DATE)))
        assert prewarm.wait(timeout=300) == 0
    finally:
        client.close()
    assert day_marker_when_push_ended is None, "the push should not have needed the whole day"
    data = json.loads(push_report.read_text())
    hour0 = [uid for uid, hour in earliest.items() if hour == 0]
    assert data["prewarm_marker"] == "hour" and data["misses"] == 0
    assert data["users"] == len(hour0)
    log = (tmp_path / "push.log").read_text()
    assert " push.waiting_for_prewarm " in log and " push.prewarm_ready " in log


def test_waiting_prints_progress_and_alerts_when_time_runs_out(redis_url, mysql, kafka_topic, sim, make_config):
    seed(mysql, 48)
    result = run(make_config(), "push", "--hour", "5", "--now", at(5), "--wait", "6")
    assert result.returncode == 0, result.stderr[-2000:]
    waiting = [line for line in result.stderr.splitlines() if " push.waiting_for_prewarm " in line]
    assert len(waiting) >= 2 and all("hour=5" in line and "hours_ready=0" in line for line in waiting)
    assert any(
        " push.prewarm_unfinished " in line and "LATER_READ_ALERT" in line for line in result.stderr.splitlines()
    )
    bad = run(make_config(), "push", "--hour", "5", "--now", at(5), "--wait", "-1")
    assert bad.returncode == 2 and "--wait" in bad.stderr


def test_saving_figures_match_the_simulators_counters(redis_url, mysql, kafka_topic, sim, make_config, tmp_path):
    earliest = seed(mysql, 480)
    textfile = tmp_path / "metrics"
    textfile.mkdir()
    config = make_config(prewarm={"concurrency": 8}, push={"concurrency": 8}, metrics={"textfile_dir": str(textfile)})
    started = time.monotonic()
    prewarm_report, push_report = tmp_path / "prewarm.json", tmp_path / "push.json"
    assert run(config, "prewarm", "--report", str(prewarm_report)).returncode == 0
    elapsed = time.monotonic() - started
    stats = sim.stats()
    data = json.loads(prewarm_report.read_text())
    for name in ("ab", "rec"):
        figures = data["services"][name]
        assert figures["calls"] == stats[name]["calls"] > 0
        assert figures["old_flow_calls"] == len(earliest)
        # Per wall-clock-second buckets, starts (job) vs completions (simulator): in any one second the two counts
        # differ by the change in calls in flight (started, not yet answered), so at most the concurrency, 8.
        assert abs(figures["peak_qps"] - stats[name]["peak_qps"]) <= 8
        assert figures["calls"] / (math.floor(elapsed) + 2) <= figures["peak_qps"] <= figures["calls"]
    assert data["services"]["material"] == {"calls": 0, "peak_qps": 0, "old_flow_calls": len(earliest)}

    sim.reset()
    result = run(config, "push", "--hour", "7", "--now", at(7), "--report", str(push_report))
    assert result.returncode == 0, result.stderr[-2000:]
    push = json.loads(push_report.read_text())
    material_calls = sim.stats()["material"]["calls"]
    users = push["users"]
    assert users == sum(1 for uid in seeding.expected_users(DATE, 480, TASKS, hour=7))
    assert push["services"]["material"]["calls"] == material_calls > 0
    assert push["services"]["ab"]["calls"] == push["services"]["rec"]["calls"] == 0
    assert all(push["services"][name]["old_flow_calls"] == users for name in ("ab", "rec", "material"))
    assert push["peak_calls_saved"] == 3 * users - material_calls
    summary = [line for line in result.stderr.splitlines() if " push.summary " in f" {line} "][-1]
    assert f"peak_calls_saved={3 * users - material_calls}" in summary
    prom = (textfile / "later_read_push.prom").read_text()
    assert f"later_read_push_peak_calls_saved {float(3 * users - material_calls)}" in prom
    assert f'later_read_push_service_calls_total{{service="material"}} {float(material_calls)}' in prom
    prewarm_prom = (textfile / "later_read_prewarm.prom").read_text().splitlines()
    for name in ("ab", "rec", "material"):  # the report's figure, the same in the metrics
        assert (
            f'later_read_prewarm_service_peak_qps{{service="{name}"}} {float(data["services"][name]["peak_qps"])}'
            in prewarm_prom
        )


def test_adaptive_prewarm_shows_in_flight_and_limit(redis_url, mysql, sim, make_config, tmp_path):
    """adaptive = true against services of capacity 4: every user is stored, the limit stays within the
    configured bound, and the progress lines and the report carry in-flight counts and limits."""
    earliest = seed(mysql, 480)
    sim.configure(ab={"latency_ms": 5, "capacity": 4}, rec={"latency_ms": 5, "capacity": 4})
    config = make_config(prewarm={"concurrency": 64, "adaptive": True, "progress_interval_seconds": 0.2})
    report = tmp_path / "prewarm.json"
    result = run(config, "prewarm", "--report", str(report))
    assert result.returncode == 0, result.stderr[-2000:]
    client = redis.Redis.from_url(redis_url)
    try:
        assert all(has_value(client, list(earliest)))
    finally:
        client.close()
    progress = [line for line in result.stderr.splitlines() if " prewarm.progress " in line]
    assert progress
    done = 0
    for line in progress:  # the job's four fields, then each adaptive service's calls in flight and limit
        fields = dict(field.split("=", 1) for field in line.split(" prewarm.progress ", 1)[1].split(" "))
        assert list(fields) == [
            "done",
            "total",
            "rate",
            "eta_seconds",
            "ab_inflight",
            "ab_limit",
            "rec_inflight",
            "rec_limit",
        ], line
        assert int(fields["total"]) == len(earliest) and done <= int(fields["done"]) <= len(earliest), line
        done = int(fields["done"])
        for name in ("ab", "rec"):
            assert 0 <= int(fields[f"{name}_inflight"]) <= 64 and 2 <= int(fields[f"{name}_limit"]) <= 64, line
    data = json.loads(report.read_text())
    for name in ("ab", "rec"):
        figures = data["services"][name]
        assert 2 <= figures["adaptive_limit"] <= 64 and figures["adaptive_peak_in_flight"] <= 64
        assert figures["adaptive_min_rtt_ms"] >= 5
