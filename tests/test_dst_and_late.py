"""The push at both daylight-saving transitions of America/New_York and Europe/Berlin; an hour refused as
expired and sent with --allow-late (push and rerun); a run whose window closes while it sends; `day`'s text
with hostile values in Redis. Real Redis, MariaDB, Kafka and simulator; time only through `--now`."""

from __future__ import annotations

import json
from collections import Counter

import orjson
import pytest
import redis

from helpers import (
    DATE,
    TASKS,
    at,
    consume,
    insert_rows,
    invoke,
    oracle_value,
    prewarm_values,
    push_config,
    pushable,
    seed_hour,
    seeding,
)
from later_read.core.message import msg_id
from later_read.core.scope import RunScope
from later_read.store.keys import Keys

PER_HOUR = 8
REFUSED_3 = (
    "later-read: error: hour 3 of 20261123 is expired: its window closed at 2026-11-23T05:00:00+08:00 "
    "(start + [push] catch_up_minutes = 120), so a push now would be stale; add --allow-late to send "
    "it anyway"
)


def seed_hours(mysql, date: str, hours: tuple[int, ...]) -> dict[str, tuple[str, str]]:
    """PER_HOUR users at each of `hours` of `date` (one task id); uid -> (project, task id)."""
    task = TASKS[0].replace("{date}", date)
    rows = [
        (task, f"{date[4:]}h{hour:02d}u{i}", seeding.PROJECTS[i % 2], hour, "b1")
        for hour in hours
        for i in range(PER_HOUR)
    ]
    insert_rows(mysql, rows)
    return {uid: (project, task) for task, uid, project, _, _ in rows}


# date, zone, the runs' local times with their offsets, the hours seeded, the hour that is missing or
# doubled, and that hour's expires_at (its start + 120 min, in the zone).
DST = {
    "new_york_spring": (
        "20260308",
        "America/New_York",
        ["01:05-05:00", "03:05-04:00"],
        (1, 2, 3),
        2,
        "2026-03-08T05:00:00-04:00",
    ),
    "berlin_spring": (
        "20260329",
        "Europe/Berlin",
        ["01:05+01:00", "03:05+02:00"],
        (1, 2, 3),
        2,
        "2026-03-29T05:00:00+02:00",
    ),
    "new_york_fall": (
        "20261101",
        "America/New_York",
        ["00:05-04:00", "01:05-04:00", "01:05-05:00", "02:05-05:00"],
        (0, 1, 2),
        1,
        "2026-11-01T02:00:00-05:00",
    ),
    "berlin_fall": (
        "20261025",
        "Europe/Berlin",
        ["01:05+02:00", "02:05+02:00", "02:05+01:00", "03:05+01:00"],
        (1, 2, 3),
        2,
        "2026-10-25T03:00:00+01:00",
    ),
}


@pytest.mark.parametrize("case", sorted(DST))
def test_dst_transitions_push_each_user_once(case, redis_url, mysql, kafka_topic, sim, make_config):
    date, zone, runs, hours, special, expires = DST[case]
    users = seed_hours(mysql, date, hours)
    hour_of = {uid: int(uid.split("h")[1][:2]) for uid in users}
    config = make_config(timezone=zone, push={"wait_for_prewarm_seconds": 0, "progress_interval_seconds": 60})
    assert invoke("prewarm", "--config", str(config), "--date", date).exit_code == 0
    day = f"{date[:4]}-{date[4:6]}-{date[6:]}T"
    results = [invoke("push", "--config", str(config), "--now", day + when) for when in runs]
    assert [r.exit_code for r in results] == [0] * len(runs), [r.stderr[-2000:] for r in results]

    messages = consume(kafka_topic)
    assert set(Counter(body["msg_id"] for _, body in messages).values()) == {1}
    want = pushable(sim, users)
    assert {key: body["push_hour"] for key, body in messages} == {uid: hour_of[uid] for uid in want}
    assert all(body["msg_id"] == msg_id(date, key) for key, body in messages)
    assert {body["expires_at"] for _, body in messages if body["push_hour"] == special} == {expires}

    report = orjson.loads(
        invoke("day", "--config", str(config), "--date", date, "--now", day + runs[-1], "--json").stdout
    )
    rows = {row["hour"]: row for row in report["hours"]}
    assert {h: rows[h]["state"] for h in hours} == dict.fromkeys(hours, "done") and report["exit_code"] == 0
    assert {h: rows[h]["users"] for h in hours} == dict.fromkeys(hours, PER_HOUR)
    if "spring" in case:  # the missing hour: caught up by the next hour's run, at the transition instant
        assert rows[special]["caught_up"] and rows[special]["start"] == rows[special + 1]["start"]
        assert " push.caught_up " in results[1].stderr and f"hour={special} " in results[1].stderr
    else:  # the doubled hour: its second pass finds it done and sends nothing
        second = results[2].stderr
        assert " push.hour_already_done " in second and " push.start " not in second
        assert rows[special]["runs"] == 1 and not rows[special]["caught_up"]
    _no_collision(redis_url, date, hours)


def _no_collision(redis_url: str, date: str, hours: tuple[int, ...]) -> None:
    """One ledger entry and one start record per pushed hour, a ready marker for each of the 24 (the
    prewarm marks every hour, the missing one too), no lock left behind."""
    client = redis.Redis.from_url(redis_url)
    try:
        day = RunScope(date)
        for prefix, wanted in (
            ("later_read:push:ledger:", {Keys.push_ledger(RunScope(date, h)) for h in hours}),
            ("later_read:push:start:", {Keys.push_start(RunScope(date, h)) for h in hours}),
            ("later_read:prewarm:ready:", {Keys.prewarm_ready(day, h) for h in range(24)}),
        ):
            found = {k.decode() for k in client.keys(prefix + "*")}
            assert found == wanted, (prefix, found)
        assert client.keys("later_read:lock:*") == []
    finally:
        client.close()


def test_an_expired_hour_is_refused_then_sent_with_allow_late(redis_url, mysql, kafka_topic, sim, make_config):
    expected = seed_hour(mysql, 40, 3, prefix="l")
    prewarm_values(redis_url, {uid: oracle_value(sim, uid) for uid in expected})
    config = str(push_config(make_config))
    uid = min(pushable(sim, expected))
    refused = invoke("push", "--config", config, "--date", DATE, "--hour", "3", "--now", at(9, 0))
    assert (refused.exit_code, refused.stderr.splitlines()) == (2, [REFUSED_3])
    rerun = invoke("rerun", uid, "--config", config, "--date", DATE, "--push-only", "--now", at(9, 0))
    assert (rerun.exit_code, rerun.stderr.splitlines()) == (2, [REFUSED_3])
    client = redis.Redis.from_url(redis_url)
    assert consume(kafka_topic) == [] and client.keys("later_read:push:*") == []  # nothing was done

    late = invoke("push", "--config", config, "--date", DATE, "--hour", "3", "--now", at(9, 0), "--allow-late")
    assert late.exit_code == 0, late.stderr[-2000:]
    messages = consume(kafka_topic)
    assert sorted(key for key, _ in messages) == sorted(pushable(sim, expected))
    # a late send a person allowed expires catch_up_minutes after it ran (09:00 + 120 min), not at its hour's
    # window end (05:00), which would make the sender drop it at once
    assert {body["expires_at"][:16] for _, body in messages} == {"2026-11-23T11:00"}
    entry = orjson.loads(client.get(Keys.push_ledger(RunScope(DATE, 3))))
    assert (entry["state"], entry["allow_late"]) == ("done", True) and 360 <= entry["late_minutes"] < 365
    again = invoke(
        "rerun", uid, "--config", config, "--date", DATE, "--push-only", "--force", "--allow-late", "--now", at(9, 0)
    )
    assert again.exit_code == 0, again.output
    copies = [body for key, body in consume(kafka_topic) if key == uid]
    assert len(copies) == 2  # --force: the same msg_id again
    assert copies[1]["expires_at"][:16] == "2026-11-23T11:00" and copies[1]["msg_id"] == copies[0]["msg_id"]
    client.close()


def test_a_run_whose_window_closes_mid_run_stops_and_counts_the_rest_expired(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    expected = seed_hour(mysql, 60, 9, prefix="o")
    prewarm_values(redis_url, {uid: oracle_value(sim, uid) for uid in expected})
    sim.configure(material={"latency_ms": 250})
    config = str(push_config(make_config, concurrency=1, catch_up_minutes=10))
    report = tmp_path / "push.json"
    # Two seconds before the window (09:00-09:10) closes; the slow card fetches keep the run sending past it.
    result = invoke(
        "push",
        "--config",
        config,
        "--date",
        DATE,
        "--hour",
        "9",
        "--now",
        "2026-11-23T09:09:58+08:00",
        "--report",
        str(report),
    )
    assert result.exit_code == 7, result.stderr[-2000:]
    line = next(text for text in result.stderr.splitlines() if " push.hour_expired " in text)
    assert line.endswith("LATER_READ_ALERT") and "window_closed_at=2026-11-23T09:10:00+08:00" in line
    client = redis.Redis.from_url(redis_url)
    entry = orjson.loads(client.get(Keys.push_ledger(RunScope(DATE, 9))))
    client.close()
    assert entry["state"] == "expired" and entry["expired"] > 0 and entry["users"] == 60
    assert entry["sent"] + entry["quiet"] + entry["material_not_found"] + entry["expired"] == 60
    messages = consume(kafka_topic)
    assert len(messages) == entry["sent"]
    assert all(body["created_at"] < body["expires_at"] == "2026-11-23T09:10:00+08:00" for _, body in messages)
    data = json.loads(report.read_text())
    assert (data["status"], data["exit_code"], data["expired"]) == ("expired", 7, entry["expired"])
    sim.configure(material={"latency_ms": 0})
    retry = invoke("push", "--config", config, "--now", "2026-11-23T09:11:00+08:00")  # a retry of that run
    later = invoke("push", "--config", config, "--now", at(10, 1))  # the next scheduled run
    for run in (retry, later):  # expired is final: not sent, not alerted again
        assert run.exit_code == 0 and "push.hour_expired" not in run.stderr, run.stderr[-2000:]
    assert " push.hour_already_expired " in retry.stderr
    assert len(consume(kafka_topic)) == len(messages)


def test_day_text_quotes_what_redis_holds(redis_url, make_config):
    config = str(make_config())
    client = redis.Redis.from_url(redis_url)
    client.set(
        Keys.push_ledger(RunScope(DATE, 5)),
        orjson.dumps({"state": 'x\nLATER_READ_ALERT "', "users": "9\n9", "sent": 3, "clean": True}),
    )
    client.set(Keys.lock("push", RunScope(DATE, 6)), "evil\nhost LATER_READ_ALERT", ex=60)
    client.close()
    result = invoke("day", "--config", config, "--date", DATE, "--now", at(6, 40))
    lines = result.stdout.splitlines()
    assert result.exit_code == 1 and len(lines) == 1 + 1 + 24 + 2  # head, columns, hours, late/expired, total
    assert "LATER_READ_ALERT" not in result.stdout
    row5 = next(line for line in lines if line.startswith("05 "))
    assert '"x\\nLATER_READ\\x5fALERT \\""' in row5 and " late " in row5  # users "9\n9" counts 0
    row6 = next(line for line in lines if line.startswith("06 "))
    assert 'held by "evil\\nhost LATER_READ\\x5fALERT"' in row6
    assert lines[-2] == "now        late: 5, 6; expired: none"
