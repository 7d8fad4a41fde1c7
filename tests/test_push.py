"""`later-read push` against real Redis, MariaDB (as StarRocks), Kafka and the simulator.

The day is seeded with `later_read_sandbox.seed` (noise rows included: other task ids, other dates,
users of other hours) and "prewarmed" by writing the values the prewarm would write, computed from the
simulator's own answers (`sim.expected`). What the topic holds is read back partition by partition up
to the high watermarks, so a test knows it saw everything without waiting for an idle timeout.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from helpers import (
    ALERT,
    DATE,
    TASKS,
    Oracle,
    at,
    consume,
    oracle_value,
    prewarm_values,
    push_config,
    pushable,
    run_cli,
    run_push,
    seed_day,
    seed_hour,
    seeding,
    sent_markers,
    servers,
    start_cli,
    topic_size,
)
from later_read.core.message import msg_id
from later_read.core.scope import RunScope
from later_read.core.value import CachedValue, encode
from later_read.store.keys import Keys

REPORT_KEYS = {
    "date",
    "hour",
    "users",
    "sent",
    "misses",
    "not_in_experiment",
    "no_recommendation",
    "material_not_found",
    "already_sent",
    "failed",
    "duration_seconds",
}


# --------------------------------------------------------------------------------------------------
# Helpers: prewarming, running


def prewarm_day(redis_url: str, sim, users: int, extra: int = 0) -> dict[str, CachedValue]:
    """Values for every user of the seeded day (all hours) plus `extra` noise-only uids."""
    uids = [seeding.uid_of(i) for i in range(users + extra)]
    values = {uid: oracle_value(sim, uid) for uid in uids}
    prewarm_values(redis_url, values)
    return values


def push_args(config: Path, hour: int, *args: str) -> list[str]:
    """`push` of `hour` of DATE at a minute into the hour (inside its window)."""
    return ["push", "--config", str(config), "--date", DATE, "--hour", str(hour), "--now", at(hour), *args]


def summary_line(stderr: str, name: str = "push.summary") -> str:
    lines = [line for line in stderr.splitlines() if f" {name} " in f" {line} "]
    assert lines, f"no {name} line in:\n{stderr[-3000:]}"
    return lines[-1]


# --------------------------------------------------------------------------------------------------
# Pure pieces


def test_msg_id_is_pinned_for_date_and_uid():
    # Consumers deduplicate on this value across runs and releases: it must never change.
    assert msg_id("20261123", "100000001") == "5c80db8a-cd01-5727-ad05-5fc6183c3047"
    assert msg_id("20261123", "100000001") != msg_id("20261124", "100000001")
    assert msg_id("20261123", "100000001") != msg_id("20261123", "100000002")


def test_alert_limiter_writes_limit_lines_then_one_suppressed_line():
    import logging

    from later_read.jobs.push.select import AlertLimiter

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("later_read.push")
    logger.addHandler(handler)
    try:
        limiter = AlertLimiter("push.cache_miss", 3, date=DATE)
        for i in range(1000):
            limiter(uid=str(i))
    finally:
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in records]
    assert limiter.count == 1000 and len(lines) == 4
    assert all(line.endswith(ALERT) for line in lines) and "push.cache_miss_suppressed" in lines[-1]


def test_date_and_hour_default_to_one_reading_of_the_clock_in_the_configured_zone(make_config):
    import datetime as dt
    from zoneinfo import ZoneInfo

    from later_read.config.settings import load_settings
    from later_read.errors import UsageError
    from later_read.jobs.push.job import push_options

    settings = load_settings(make_config(timezone="America/New_York"))
    options = dict(dry_run=False, output=None, force=False, on_miss="skip", report_path=None)
    zone = ZoneInfo("America/New_York")
    before = dt.datetime.now(zone)
    got = push_options(settings, date=None, hour=None, **options)
    after = dt.datetime.now(zone)
    assert (got.scope.date, got.scope.hour) in {(t.strftime("%Y%m%d"), t.hour) for t in (before, after)}
    assert got.scheduled and not got.clock.is_set
    explicit = push_options(settings, date="20261123", hour=0, now="2026-11-23T00:05:00-05:00", **options)
    assert (explicit.scope.hour, explicit.scheduled) == (0, False)
    assert push_options(settings, date=None, hour=None, now="2026-11-23T06:30:00Z", **options).scope.hour == 1
    with pytest.raises(UsageError, match="--date: expected YYYYMMDD"):
        push_options(settings, date="2026-11-23", hour=None, **options)


# --------------------------------------------------------------------------------------------------
# A seeded, prewarmed day


def test_hour_yields_exactly_its_users_once_with_correct_fields(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    users, hour = 960, 5
    seed_day(mysql, users)
    values = prewarm_day(redis_url, sim, users, extra=users // 10)  # noise-only uids get values too
    report = tmp_path / "push.json"
    result = run_push(push_config(make_config), "--report", str(report), hour=hour)
    assert result.exit_code == 0, result.output

    picked = seeding.expected_users(DATE, users, TASKS, hour=hour)
    own = seeding.expected_users(DATE, users, TASKS, hour=hour, earliest=True)  # the others: hour 4's
    expected = pushable(sim, own)
    messages = consume(kafka_topic)
    # The precedence bug (`a OR b AND c`) would add other hours' users and the noise task ids' users.
    assert sorted(key for key, _ in messages) == sorted(expected)
    oracle = Oracle(sim.knobs)
    for key, body in messages:
        project, task_id = expected[key]
        value, card = values[key], oracle.card(values[key].material_id)
        assert (
            body["msg_id"]
            == msg_id(DATE, key)
            == str(uuid.uuid5(uuid.UUID("56ceba24-d476-55d4-8d79-7a252494d8f7"), f"later_read:{DATE}:{key}"))
        )
        assert {k: body[k] for k in ("source_uid", "project", "task_id", "push_date", "push_hour")} == {
            "source_uid": key,
            "project": project,
            "task_id": task_id,
            "push_date": DATE,
            "push_hour": hour,
        }
        assert (body["rec_id"], body["rec_type"], body["material_id"], body["trace_id"]) == (
            value.rec_id,
            value.rec_type,
            value.material_id,
            value.trace_id,
        )
        assert {k: body[k] for k in ("title", "content", "cover_url", "deeplink")} == {
            k: card[k] for k in ("title", "content", "cover_url", "deeplink")
        }
        # created_at by the run's clock (--now 05:01 here, advanced by the run's own time); expires_at is
        # the hour's window end: 05:00 + [push] catch_up_minutes (120).
        assert body["created_at"].startswith("2026-11-23T05:0") and body["created_at"].endswith("+08:00")
        assert body["expires_at"] == "2026-11-23T07:00:00+08:00"

    data = json.loads(report.read_text())
    assert set(data) >= REPORT_KEYS
    outcomes = [sim.expected(uid) for uid in own]
    assert data["users"] == len(picked) and data["earlier_hour"] == len(picked) - len(own)
    assert data["sent"] == len(expected)
    assert data["not_in_experiment"] == sum(not e["in_experiment"] for e in outcomes)
    assert data["no_recommendation"] == sum(e["in_experiment"] and not e["has_rec"] for e in outcomes)
    assert data["material_not_found"] == sum(
        e["in_experiment"] and e["has_rec"] and not e["material_found"] for e in outcomes
    )
    assert data["misses"] == data["already_sent"] == data["failed"] == 0
    assert (data["date"], data["hour"], data["status"]) == (DATE, hour, "ok")
    assert sent_markers(redis_url) == {uid: msg_id(DATE, uid) for uid in expected}
    assert sim.stats()["ab"]["calls"] == sim.stats()["rec"]["calls"] == 0  # the push reads Redis only

    # Rerunning the hour sends nothing new.
    again = run_push(push_config(make_config), "--report", str(report), hour=hour)
    assert again.exit_code == 0, again.output
    assert len(consume(kafka_topic)) == len(messages)
    data = json.loads(report.read_text())
    assert (data["sent"], data["already_sent"]) == (0, len(expected))


def test_later_hour_holding_the_same_uid_sends_nothing_new(redis_url, mysql, kafka_topic, sim, make_config, tmp_path):
    users = 2400
    seed_day(mysql, users)
    prewarm_day(redis_url, sim, users)
    by_hour = [seeding.expected_users(DATE, users, TASKS, hour=h) for h in range(24)]
    hour = next(h for h in range(23) if set(pushable(sim, by_hour[h])) & set(by_hour[h + 1]))
    shared = set(by_hour[hour]) & set(by_hour[hour + 1])  # rows under both task ids, two hours
    config = push_config(make_config)
    assert run_push(config, hour=hour).exit_code == 0
    first = {key for key, _ in consume(kafka_topic)}
    assert shared & first

    report = tmp_path / "r.json"
    result = run_push(config, "--report", str(report), hour=hour + 1)
    assert result.exit_code == 0, result.output
    messages = consume(kafka_topic)
    counts: dict[str, int] = {}
    for key, _ in messages:
        counts[key] = counts.get(key, 0) + 1
    assert max(counts.values()) == 1  # nobody got two pushes today
    assert set(counts) - first == set(pushable(sim, by_hour[hour + 1])) - first
    assert json.loads(report.read_text())["already_sent"] == len(shared & first)


def test_force_sends_again_with_the_same_msg_id(redis_url, mysql, kafka_topic, sim, make_config):
    users, hour = 480, 3
    seed_day(mysql, users)
    prewarm_day(redis_url, sim, users)
    config = push_config(make_config)
    assert run_push(config, hour=hour).exit_code == 0
    first = consume(kafka_topic)
    assert first
    result = run_push(config, "--force", hour=hour)
    assert result.exit_code == 0, result.output
    both = consume(kafka_topic)
    assert len(both) == 2 * len(first)
    ids: dict[str, set[str]] = {}
    for key, body in both:
        ids.setdefault(key, set()).add(body["msg_id"])
    assert all(len(v) == 1 for v in ids.values()) and set(ids) == {key for key, _ in first}


# --------------------------------------------------------------------------------------------------
# Misses, corrupt values, material not found, prewarm not finished


def test_deleted_keys_are_misses_with_the_exact_count_in_the_summary_line(
    redis_url, mysql, kafka_topic, sim, make_config
):
    users, hour = 2400, 7
    seed_day(mysql, users)
    prewarm_day(redis_url, sim, users)
    hour_users = seeding.expected_users(DATE, users, TASKS, hour=hour)
    picked = sorted(seeding.expected_users(DATE, users, TASKS, hour=hour, earliest=True))
    deleted, stale = picked[:37], picked[37]
    client = redis.Redis.from_url(redis_url)
    client.delete(*[Keys().rec(uid) for uid in deleted])
    client.set(Keys().rec(stale), encode(oracle_value(sim, stale, date="20261122")))  # yesterday's
    client.close()

    result = run_push(push_config(make_config, miss_log_limit=5), hour=hour)
    assert result.exit_code == 0, result.output
    line = summary_line(result.stderr, "push.misses")
    assert ALERT in line and " count=38 " in line and f" users={len(hour_users)} " in line
    assert f" ratio={38 / len(hour_users):.6f} " in line
    assert " misses=38 " in summary_line(result.stderr)
    per_user = [text for text in result.stderr.splitlines() if " push.cache_miss " in f" {text} "]
    assert len(per_user) == 5 and all(ALERT in text for text in per_user)  # rate-limited
    assert len([text for text in result.stderr.splitlines() if "push.cache_miss_suppressed" in text]) == 1
    sent = {key for key, _ in consume(kafka_topic)}
    assert not sent & {*deleted, stale}
    assert sent == set(pushable(sim, dict.fromkeys(set(picked) - set(deleted) - {stale}, ("", ""))))


def test_corrupt_value_is_counted_and_alerted_never_a_crash(redis_url, mysql, kafka_topic, sim, make_config, tmp_path):
    users, hour = 480, 9
    seed_day(mysql, users)
    prewarm_day(redis_url, sim, users)
    picked = sorted(seeding.expected_users(DATE, users, TASKS, hour=hour, earliest=True))
    client = redis.Redis.from_url(redis_url)
    client.set(Keys().rec(picked[0]), b'{"rec_id": "r-1", "trunc')
    client.set(Keys().rec(picked[1]), b'{"outcome": "rec", "date": "20261123", "rec_id": ""}')
    client.close()

    report = tmp_path / "r.json"
    result = run_push(push_config(make_config), "--report", str(report), hour=hour)
    assert result.exit_code == 0, result.output
    alerts = [text for text in result.stderr.splitlines() if "push.corrupt_value " in text]
    assert len(alerts) == 2 and all(ALERT in text for text in alerts)
    assert f"uid={picked[0]}" in alerts[0] and "not JSON" in alerts[0]
    assert " count=2 " in summary_line(result.stderr, "push.corrupt_values")
    data = json.loads(report.read_text())
    assert data["corrupt"] == 2 and data["misses"] == 0 and data["failed"] == 0
    sent = {key for key, _ in consume(kafka_topic)}
    assert sent == set(pushable(sim, dict.fromkeys(picked[2:], ("", ""))))


def test_material_fetched_once_per_distinct_card_and_not_found_counted(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    sim.configure(materials=12, not_found_ratio=0.25)
    users, hour = 2400, 4
    seed_day(mysql, users)
    picked = seeding.expected_users(DATE, users, TASKS, hour=hour, earliest=True)
    values = {}
    for uid in picked:  # rec_id shared per book, as a real engine's strategy/slot id is
        value = oracle_value(sim, uid)
        if value.is_rec:
            value = CachedValue("rec", DATE, value.trace_id, f"rec-{value.material_id}", "book", value.material_id)
        values[uid] = value
    prewarm_values(redis_url, values)
    sim.reset()

    report = tmp_path / "r.json"
    result = run_push(push_config(make_config, concurrency=8), "--report", str(report), hour=hour)
    assert result.exit_code == 0, result.output
    hits = [v for v in values.values() if v.is_rec]
    cards = {(v.rec_id, v.rec_type, v.material_id) for v in hits}
    assert sim.stats()["material"]["calls"] == len(cards) < len(hits)
    oracle = Oracle(sim.knobs)
    missing = [v for v in hits if not oracle.material_exists(v.material_id)]
    assert missing, "the knobs should make some cards not found"
    data = json.loads(report.read_text())
    assert data["material_not_found"] == len(missing)
    assert data["sent"] == len(hits) - len(missing) == len(consume(kafka_topic))
    assert data["materials_fetched"] == len(cards)


def test_missing_prewarm_marker_waits_then_alerts_and_pushes(redis_url, mysql, kafka_topic, sim, make_config):
    users, hour = 480, 2
    seed_day(mysql, users)
    prewarm_values(
        redis_url, {seeding.uid_of(i): oracle_value(sim, seeding.uid_of(i)) for i in range(users)}, done=False
    )
    config = make_config(push={"wait_for_prewarm_seconds": 1.5})
    result = run_push(config, hour=hour)
    assert result.exit_code == 0, result.output
    first_wait = next(ln for ln in result.stderr.splitlines() if " push.waiting_for_prewarm " in ln)
    assert first_wait.endswith(
        f" push.waiting_for_prewarm date={DATE} hour={hour} waited_seconds=0.000 wait_seconds=1.500 hours_ready=0"
    )
    line = summary_line(result.stderr, "push.prewarm_unfinished")
    assert line.rstrip().endswith(ALERT) and f"date={DATE} hour={hour} waited_seconds=" in line
    fields = dict(f.split("=", 1) for f in line.split(" push.prewarm_unfinished ", 1)[1].split(" ")[:4])
    assert float(fields["waited_seconds"]) >= 1.5 and fields["hours_ready"] == "0"  # gave up only past the wait
    picked = seeding.expected_users(DATE, users, TASKS, hour=hour, earliest=True)
    assert {key for key, _ in consume(kafka_topic)} == set(pushable(sim, picked))


# --------------------------------------------------------------------------------------------------
# Dry run, live computation, lock


def test_dry_run_prints_messages_without_kafka_or_markers(redis_url, mysql, kafka_topic, sim, make_config, tmp_path):
    users, hour = 480, 6
    seed_day(mysql, users)
    prewarm_day(redis_url, sim, users)
    config = make_config(push={"wait_for_prewarm_seconds": 600})  # a dry run never waits
    expected = pushable(sim, seeding.expected_users(DATE, users, TASKS, hour=hour, earliest=True))

    result = run_push(config, "--dry-run", hour=hour)
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(m["source_uid"] for m in printed) == sorted(expected)
    assert all(m["msg_id"] == msg_id(DATE, m["source_uid"]) for m in printed)

    out = tmp_path / "messages.jsonl"
    result = run_push(config, "--dry-run", "--output", str(out), hour=hour)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert sorted(json.loads(text)["source_uid"] for text in out.read_text().splitlines()) == sorted(expected)
    assert topic_size(*kafka_topic) == 0
    assert sent_markers(redis_url) == {}

    bad = run_push(config, "--output", str(out), hour=hour)
    assert bad.exit_code == 2 and "--output only goes with --dry-run" in bad.stderr


def test_on_miss_live_computes_within_budget(redis_url, mysql, kafka_topic, sim, make_config, tmp_path):
    users, hour = 2400, 8
    seed_day(mysql, users)
    picked = seeding.expected_users(DATE, users, TASKS, hour=hour, earliest=True)
    prewarm_values(redis_url, {})  # only the marker: the prewarm "missed" everyone
    budget = 40
    report = tmp_path / "r.json"
    result = run_push(
        push_config(make_config, live_budget=budget, miss_log_limit=2),
        "--on-miss",
        "live",
        "--report",
        str(report),
        hour=hour,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["misses"] == len(picked) and data["live"] == budget
    assert data["live_budget_exhausted"] == len(picked) - budget
    assert sim.stats()["ab"]["calls"] == budget
    assert result.stderr.count("push.live_budget_exhausted ") == 1  # once per run, however many batches
    computed = {uid for uid, n in sim.calls("ab").items() if n}
    sent = {key for key, _ in consume(kafka_topic)}
    assert sent == set(pushable(sim, {uid: picked[uid] for uid in computed}))
    client = redis.Redis.from_url(redis_url)  # stored like the prewarm stores them
    assert all(client.exists(Keys().rec(uid)) for uid in computed)
    client.close()


def test_held_lock_exits_5_and_sends_nothing(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, 96)
    prewarm_day(redis_url, sim, 96)
    client = redis.Redis.from_url(redis_url)
    client.set(Keys.lock("push", RunScope(DATE, 1)), "someone-else", ex=60)
    client.close()
    result = run_push(push_config(make_config), hour=1)
    assert result.exit_code == 5
    assert "another push run for 20261123 hour 1 is in progress" in result.stderr
    assert topic_size(*kafka_topic) == 0


def test_material_service_down_stops_with_exit_4_nothing_sent(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    hour = 13
    expected = seed_hour(mysql, 400, hour, prefix="m")
    prewarm_values(redis_url, {uid: oracle_value(sim, uid) for uid in expected})
    sim.configure(material={"error_5xx_rate": 1.0})
    report = tmp_path / "r.json"
    config = make_config(push={"wait_for_prewarm_seconds": 0, "concurrency": 4}, services={"max_attempts": 1})
    result = run_push(config, "--report", str(report), hour=hour)
    assert result.exit_code == 4, result.output
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("later-read: error: material service looks down")
    assert json.loads(report.read_text())["status"] == "service_down"
    assert topic_size(*kafka_topic) == 0 and sent_markers(redis_url) == {}


# --------------------------------------------------------------------------------------------------
# Crashes, signals, a dead broker


def _wait_for_messages(kafka_topic, at_least: int, process: subprocess.Popen, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = topic_size(*kafka_topic)
        if size >= at_least:
            return size
        assert process.poll() is None, "the push finished before it could be interrupted"
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} messages after {timeout} s")


def test_kill_9_while_producing_then_rerun_leaves_one_msg_id_per_user(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    hour, users = 14, 4000
    expected = seed_hour(mysql, users, hour)
    prewarm_values(redis_url, {uid: oracle_value(sim, uid) for uid in expected})
    sim.configure(material={"latency_ms": 40})
    config = push_config(make_config, concurrency=8)
    log = (tmp_path / "kill.log").open("wb")
    process = start_cli(*push_args(config, hour), stdout=subprocess.DEVNULL, stderr=log)
    try:
        before = _wait_for_messages(kafka_topic, 500, process)
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
    assert before < len(pushable(sim, expected)), "kill came too late to test anything"
    marked_at_kill = len(sent_markers(redis_url))

    client = redis.Redis.from_url(redis_url)
    client.delete(Keys.lock("push", RunScope(DATE, hour)))  # the documented on-call step after a kill -9
    client.close()
    sim.configure(material={"latency_ms": 0})
    rerun = run_cli(*push_args(config, hour), timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    messages = consume(kafka_topic)
    per_msg_id = Counter(body["msg_id"] for _, body in messages)
    want = pushable(sim, expected)
    assert {key for key, _ in messages} == set(want)
    assert set(per_msg_id) == {msg_id(DATE, uid) for uid in want}
    assert max(per_msg_id.values()) == 1, "a user got the same message twice"  # exactly one each
    print(
        f"\nkill -9: {before}+ messages in the topic at the kill, {marked_at_kill} users marked; "
        f"the rerun recovered the rest from the topic: {len(messages)} messages for {len(want)} users"
    )
    assert "push.recovered" in rerun.stderr
    assert set(sent_markers(redis_url)) == set(want)


def test_sigterm_stops_cleanly_and_the_rerun_adds_no_duplicate(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    hour, users = 15, 1500
    expected = seed_hour(mysql, users, hour, prefix="s")
    prewarm_values(redis_url, {uid: oracle_value(sim, uid) for uid in expected})
    sim.configure(material={"latency_ms": 40})
    config = push_config(make_config, concurrency=8, grace_seconds=10)
    report = tmp_path / "r.json"
    log = tmp_path / "term.log"
    with log.open("wb") as err:
        process = start_cli(*push_args(config, hour, "--report", str(report)), stdout=subprocess.DEVNULL, stderr=err)
        try:
            _wait_for_messages(kafka_topic, 200, process)
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    stderr = log.read_text()
    assert code == 6, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "push.interrupted" in stderr and ALERT in stderr
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted"
    in_topic = consume(kafka_topic)
    assert set(sent_markers(redis_url)) == {key for key, _ in in_topic}  # every delivery marked

    sim.configure(material={"latency_ms": 0})
    rerun = run_cli(*push_args(config, hour), timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    keys = [key for key, _ in consume(kafka_topic)]
    assert len(keys) == len(set(keys)) and set(keys) == set(pushable(sim, expected))


def test_broker_unreachable_is_one_clear_error_exit_3_nobody_marked(redis_url, mysql, sim, make_config):
    seed_day(mysql, 96)
    prewarm_day(redis_url, sim, 96)
    config = make_config(
        kafka={"bootstrap_servers": "127.0.0.1:1", "topic": "later_read_push"}, push={"wait_for_prewarm_seconds": 0}
    )
    result = run_push(config, hour=0)
    assert result.exit_code == 3
    errors = [text for text in result.stderr.splitlines() if text.strip()]
    assert errors == [errors[-1]] and errors[-1].startswith("later-read: error: Kafka at 127.0.0.1:1 unreachable"), (
        result.stderr
    )
    assert "bootstrap_servers" in errors[-1]
    assert sent_markers(redis_url) == {}
    assert sim.stats()["material"]["calls"] == 0


def test_undelivered_messages_are_counted_alerted_and_unmarked(
    redis_url, mysql, kafka_server, kafka_topic, sim, make_config, tmp_path
):
    """Messages the broker refuses (the topic takes nothing over 200 bytes): none is confirmed."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    resource = ConfigResource(
        ResourceType.TOPIC,
        kafka_topic[1],
        incremental_configs=[ConfigEntry("max.message.bytes", "200", incremental_operation=AlterConfigOpType.SET)],
    )
    admin = kafka_server.admin()  # kept referenced until the result arrives
    admin.incremental_alter_configs([resource])[resource].result(30)
    users, hour = 480, 12
    seed_day(mysql, users)
    prewarm_day(redis_url, sim, users)
    config = make_config(
        push={"wait_for_prewarm_seconds": 0, "flush_timeout_seconds": 10},
        kafka={"librdkafka": {"message.timeout.ms": 2000}},
    )
    report = tmp_path / "r.json"
    result = run_push(config, "--report", str(report), hour=hour)
    assert result.exit_code == 1, result.output
    data = json.loads(report.read_text())
    expected = pushable(sim, seeding.expected_users(DATE, users, TASKS, hour=hour, earliest=True))
    assert data["failures"]["undelivered"] == len(expected) and data["sent"] == 0
    assert data["status"] == "failures"
    line = summary_line(result.stderr, "push.undelivered")
    assert ALERT in line and f"count={len(expected)}" in line
    assert sent_markers(redis_url) == {}


def test_broker_dying_mid_run_counts_undelivered_and_marks_only_confirmed(redis_url, mysql, sim, make_config, tmp_path):
    """A private broker (the session one stays up for other tests) is SIGKILLed while the push produces."""
    hour, users = 16, 1500
    expected = seed_hour(mysql, users, hour, prefix="d")
    prewarm_values(redis_url, {uid: oracle_value(sim, uid) for uid in expected})
    sim.configure(material={"latency_ms": 40})
    with servers.KafkaServer() as broker:  # never the external one: this test kills it
        topic = broker.create_topic("later_read_dying", partitions=3)
        config = make_config(
            kafka={"bootstrap_servers": broker.bootstrap, "topic": topic, "librdkafka": {"message.timeout.ms": 3000}},
            push={"wait_for_prewarm_seconds": 0, "concurrency": 8, "flush_timeout_seconds": 5},
        )
        report = tmp_path / "r.json"
        with (tmp_path / "dying.log").open("wb") as err:
            process = start_cli(
                *push_args(config, hour, "--report", str(report)), stdout=subprocess.DEVNULL, stderr=err
            )
            try:
                _wait_for_messages((broker.bootstrap, topic), 200, process)
                broker.stop_process(graceful=False)
                code = process.wait(120)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
        stderr = (tmp_path / "dying.log").read_text()
        assert code == 1, stderr[-3000:]
        assert "Traceback" not in stderr
        data = json.loads(report.read_text())
        assert data["failures"]["undelivered"] > 0 and data["sent"] > 0
        assert "push.undelivered" in stderr and ALERT in stderr
        markers = sent_markers(redis_url)
        assert len(markers) == data["sent"]

        broker.restart()
        in_topic = {key for key, _ in consume((broker.bootstrap, topic))}
        assert set(markers) <= in_topic  # a marker only ever follows a confirmed delivery
        sim.configure(material={"latency_ms": 0})
        rerun = run_cli(*push_args(config, hour), timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        ids: dict[str, set[str]] = {}
        for key, body in consume((broker.bootstrap, topic)):
            ids.setdefault(key, set()).add(body["msg_id"])
        assert set(ids) == set(pushable(sim, expected))
        assert all(len(v) == 1 for v in ids.values())
