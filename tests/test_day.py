"""A whole push day driven through `--now`: the prewarm, then the 24 hourly scheduled runs as processes,
with skipped hours (caught up by the next run inside the window), a kill -9 mid-produce (the next run
recovers the hour), a run started late inside its window and hours left until their window closed
(expired, never sent), unsharded and as two shard processes per hour. Then every user has exactly what
the schedule says (one message per msg_id, none for an expired hour) and `later-read day --json` reports
each hour's state and figures exactly. Real Redis, MariaDB, Kafka and simulator; time moves only by
`--now`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter

import orjson
import pytest
import redis

from helpers import DATE, TASKS, at, consume, invoke, seed_day, seeding, start_cli
from later_read.core.message import msg_id
from later_read.core.scope import Shard
from later_read.store.keys import Keys

USERS = 240  # 10 a push hour, and some under a second hour too
KILLED, EXPIRED = 4, 10
# hour -> the minute its scheduled run starts; hours 2, 10 and 11 have no run of their own: 2 and 11 are
# caught up by the next run (03:01, 12:05), 10's window (10:00-12:00) has closed by then; 7 starts late.
RUNS = {0: 2, 1: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 50, 8: 1, 9: 1, 12: 5, **dict.fromkeys(range(13, 24), 1)}
CAUGHT_UP = {2: 61, 4: 61, 11: 65}  # hour -> minutes late when its catch-up began (at least)
ORDER = [*range(24)]  # the order hours are handled in: a catch-up is always before the next hour


def later_read(config, *args: str) -> subprocess.Popen:
    return start_cli(*args, "--config", str(config))


def finish(children: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """(exit code, stderr) of each child, once it has exited."""
    ended = []
    for child in children:
        _, stderr = child.communicate(timeout=180)
        ended.append((child.returncode, stderr))
    return ended


def shards_of(count: int) -> list[Shard]:
    return Shard(0, count).siblings()


def run_hour(config, hour: int, count: int, minute: int | None = None) -> list[tuple[int, str]]:
    """The scheduled run of `hour` (one process per shard, together): `push --now` only."""
    now = at(hour, RUNS[hour] if minute is None else minute)
    return finish(
        [
            later_read(config, "push", "--now", now, *(["--shard", s.label] if count > 1 else []))
            for s in shards_of(count)
        ]
    )


def hour_users(hour: int) -> set[str]:
    return set(seeding.expected_users(DATE, USERS, TASKS, hour=hour))


def earliest_hour() -> dict[str, int]:
    """uid -> the earliest push hour of its rows: the only hour whose runs may send it."""
    return {uid: hour for hour in range(23, -1, -1) for uid in hour_users(hour)}


def kill_mid_produce(config, redis_url: str, kafka_topic, sim, count: int) -> set[str]:
    """The 04:01 run(s) with a slow material service; shard 0's process killed (-9) once its first user is
    marked sent (its message is in the topic). The uids of shard 0 that hour's dead run delivered."""
    sim.configure(material={"latency_ms": 300})
    victim = shards_of(count)[0]
    children = [
        later_read(config, "push", "--now", at(KILLED, 1), *(["--shard", s.label] if count > 1 else []))
        for s in shards_of(count)
    ]
    client = redis.Redis.from_url(redis_url)
    watched = [uid for uid in hour_users(KILLED) if victim.owns(uid)]
    try:
        deadline = time.monotonic() + 60
        while not any(client.mget([Keys.sent(DATE, uid) for uid in watched])):
            assert time.monotonic() < deadline and children[0].poll() is None, "no message before the kill"
            time.sleep(0.01)
        children[0].send_signal(signal.SIGKILL)
    finally:
        client.close()
    results = finish(children)
    sim.configure(material={"latency_ms": 0})
    assert results[0][0] == -signal.SIGKILL and all(code == 0 for code, _ in results[1:]), results
    delivered = {key for key, body in consume(kafka_topic) if body["push_hour"] == KILLED and victim.owns(key)}
    print(f"killed shard {victim.label} after {len(delivered)} of its {len(watched)} hour-{KILLED} users were sent")
    return delivered


def window_end(hour: int) -> str:
    """expires_at of the day's hour: its start + 120 minutes."""
    return at(hour + 2, 0) if hour < 22 else at(hour - 22, 0, date="20261124")


def expected_day(sim, count: int, killed: set[str]) -> tuple[dict[int, dict], set[str]]:
    """What each hour's ledger must say (summed over shards), and who must have a message. A user is sent
    by its earliest hour only: a later hour counts it already_sent (marked) or earlier_hour (its earliest
    hour, 10, expired); the expired hour's users are read and sorted, nobody sent."""
    sent_before: set[str] = set()
    hours: dict[int, Counter] = {}
    first = earliest_hour()
    for hour in ORDER:
        users, row = hour_users(hour), Counter()
        row["users"] = len(users)
        for uid in sorted(users):
            e = sim.expected(uid)
            if uid in sent_before or (hour == KILLED and uid in killed):
                row["already_sent"] += 1
                row["recovered"] += hour == KILLED and uid in killed
            elif first[uid] < hour:
                row["earlier_hour"] += 1
            elif not (e["in_experiment"] and e["has_rec"]):
                row["quiet"] += 1
            elif hour == EXPIRED:
                row["expired"] += 1  # a card not found is only known by asking: counted expired too
            elif not e["material_found"]:
                row["material_not_found"] += 1
            else:
                row["sent"] += 1
            if (
                hour != EXPIRED
                and first[uid] == hour
                and (uid in killed or (e["in_experiment"] and e["has_rec"] and e["material_found"]))
            ):
                sent_before.add(uid)
        hours[hour] = row
    return hours, sent_before


@pytest.mark.parametrize("count", [1, 2], ids=["unsharded", "two-shards"])
def test_a_whole_day_through_now(count, redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    config = make_config(
        push={"wait_for_prewarm_seconds": 0, "progress_interval_seconds": 60, "concurrency": 1},
        lock={"ttl_seconds": 3, "wait_seconds": 5},
        shards={"count": count},
    )
    prewarms = finish(
        [
            later_read(config, "prewarm", "--date", DATE, *(["--shard", s.label] if count > 1 else []))
            for s in shards_of(count)
        ]
    )
    assert all(code == 0 for code, _ in prewarms), prewarms
    killed: set[str] = set()
    for hour in sorted(RUNS):
        if hour == KILLED:
            killed = kill_mid_produce(config, redis_url, kafka_topic, sim, count)
            continue
        results = run_hour(config, hour, count)
        codes = [code for code, _ in results]
        assert codes == [7 if hour == 12 else 0] * count, results
        logs = "".join(stderr for _, stderr in results)
        assert ("push.hour_expired" in logs) == (hour == 12), logs[-3000:]
        if hour in (3, 5, 12):  # at 05:01 only the killed shard has hour 4 to catch up
            caught = {3: 2, 5: 4, 12: 11}[hour]
            assert logs.count(" push.caught_up ") == (1 if hour == 5 else count) and f"hour={caught} " in logs
        if hour == 12:
            _check_refusal_and_retry(config, count)
    assert killed, "the kill came after the last message: nothing was mid-produce"
    hours, senders = expected_day(sim, count, killed)
    _check_topic(kafka_topic, senders)
    _check_day(config, hours, count)


def _check_refusal_and_retry(config, count: int) -> None:
    """The expired hour by hand is refused and names --allow-late; a retry of the 12:05 run (a Kubernetes
    retry) neither alerts again nor fails."""
    shard = ["--shard", "0/2"] if count > 1 else []
    refused = invoke("push", "--config", str(config), "--hour", str(EXPIRED), "--now", at(12, 6), *shard)
    assert refused.exit_code == 2 and refused.stderr.splitlines() == [
        (
            "later-read: error: hour 10 of 20261123 is expired: its window closed at 2026-11-23T12:00:00+08:00 "
            "(start + [push] catch_up_minutes = 120), so a push now would be stale; add --allow-late to send it "
            "anyway"
        )
    ]
    retry = run_hour(config, 12, count, minute=6)
    assert [code for code, _ in retry] == [0] * count, retry
    assert not any("push.hour_expired" in stderr or " push.caught_up " in stderr for _, stderr in retry)


def _check_topic(kafka_topic, senders: set[str]) -> None:
    messages = consume(kafka_topic)
    per_id = Counter(body["msg_id"] for _, body in messages)
    assert set(per_id.values()) == {1}, [m for m, n in per_id.items() if n > 1]
    assert {key for key, _ in messages} == senders
    assert all(body["msg_id"] == msg_id(DATE, key) for key, body in messages)
    assert not [key for key, body in messages if body["push_hour"] == EXPIRED]
    for _, body in messages:  # each message carries its hour's window end, and was built before it
        assert body["expires_at"] == window_end(body["push_hour"]) and body["created_at"] < body["expires_at"]


def _check_day(config, hours: dict[int, Counter], count: int) -> None:
    result = invoke("day", "--config", str(config), "--now", at(23, 59), "--json")
    assert result.exit_code == 1, result.output  # hour 10 expired with users unsent
    report = orjson.loads(result.stdout)
    assert report["expired"] == [EXPIRED] and report["late"] == [] and report["failing"] == [EXPIRED]
    for row in report["hours"]:
        want = hours[row["hour"]]
        got = {
            k: row[k]
            for k in (
                "users",
                "sent",
                "recovered",
                "already_sent",
                "earlier_hour",
                "quiet",
                "material_not_found",
                "expired",
                "failed",
                "not_processed",
                "unservable",
            )
        }
        assert got == {k: want[k] for k in got}, (row["hour"], got, dict(want))
        assert row["misses"] == {"absent": 0, "stale": 0, "corrupt": 0}
        assert (row["state"], row["verdict"]) == (("expired",) * 2 if row["hour"] == EXPIRED else ("done",) * 2)
        assert row["caught_up"] == (row["hour"] in CAUGHT_UP) and row["prewarm_ready"]
        assert row["shards"] == [row["state"]] * count and row["clean"]
    late = {row["hour"]: row["late_minutes"] for row in report["hours"]}
    for hour, minutes in {**CAUGHT_UP, 7: 50, 0: 2}.items():
        assert minutes <= late[hour] < minutes + 5, (hour, late[hour])
    assert report["totals"]["verdicts"] == {"done": 23, "expired": 1}
    assert report["totals"]["sent"] == sum(h["sent"] for h in hours.values())
