"""The topic as the record of what was sent (jobs/push/recovery.py), against real Redis and Kafka.

A dead run's state is made exactly: a push delivers and finishes, then the sent markers of some users
are deleted and the hour's ledger entry is put back to `running` (unclean), which is what a kill -9
between Kafka's acknowledgement and the marker write leaves behind (the kill itself, at random points, is
in the fault suite).
"""

from __future__ import annotations

from collections import Counter

import orjson
import redis

from helpers import (
    DATE,
    at,
    consume,
    invoke,
    oracle_value,
    prewarm_values,
    push_config,
    pushable,
    run_push,
    seed_hour,
    sent_markers,
)
from later_read.core.message import msg_id
from later_read.core.scope import RunScope
from later_read.store.keys import Keys

HOUR = 7


def _pushed_hour(redis_url, mysql, kafka_topic, sim, make_config, users: int = 300):
    expected = seed_hour(mysql, users, HOUR, prefix="r")
    prewarm_values(redis_url, {uid: oracle_value(sim, uid) for uid in expected})
    config = push_config(make_config, concurrency=8)
    first = run_push(config, hour=HOUR)
    assert first.exit_code == 0, first.output
    return config, pushable(sim, expected)


def _forget(redis_url, uids) -> None:
    """What a kill -9 after Kafka's acknowledgement leaves: no marker, the hour's entry still `running`."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*[Keys.sent(DATE, uid) for uid in uids])
        entry = orjson.loads(client.get(Keys.push_ledger(RunScope(DATE, HOUR))))
        client.set(Keys.push_ledger(RunScope(DATE, HOUR)), orjson.dumps({**entry, "state": "running", "clean": False}))
    finally:
        client.close()


def _one_each(kafka_topic, want) -> None:
    per_msg_id = Counter(body["msg_id"] for _, body in consume(kafka_topic))
    assert per_msg_id == Counter({msg_id(DATE, uid): 1 for uid in want})


def test_start_record_holds_the_end_offsets_before_the_first_message(redis_url, mysql, kafka_topic, sim, make_config):
    _config, want = _pushed_hour(redis_url, mysql, kafka_topic, sim, make_config)
    client = redis.Redis.from_url(redis_url)
    start = orjson.loads(client.get(Keys.push_start(RunScope(DATE, HOUR))))
    entry = orjson.loads(client.get(Keys.push_ledger(RunScope(DATE, HOUR))))
    ttl = client.ttl(Keys.push_start(RunScope(DATE, HOUR)))
    client.close()
    assert start["topic"] == kafka_topic[1] and set(start["offsets"]) == {"0", "1", "2"}
    assert start["offsets"] == {"0": 0, "1": 0, "2": 0}  # the topic was empty when the run began
    assert isinstance(start["at"], float) and 2 * 86400 < ttl <= 3 * 86400
    assert (entry["state"], entry["clean"], entry["produced"], entry["sent"]) == ("done", True, len(want), len(want))


def test_a_dead_runs_unmarked_deliveries_are_marked_from_the_topic_not_resent(
    redis_url, mysql, kafka_topic, sim, make_config
):
    config, want = _pushed_hour(redis_url, mysql, kafka_topic, sim, make_config)
    lost = sorted(want)[::3]
    _forget(redis_url, lost)
    rerun = run_push(config, hour=HOUR)
    assert rerun.exit_code == 0, rerun.output
    line = next(text for text in rerun.stderr.splitlines() if "push.recovered" in text)
    assert f"users_marked={len(want)}" in line and f"messages_read={len(want)}" in line
    assert f"of_hour={len(want)}" in line and "LATER_READ_ALERT" in line
    client = redis.Redis.from_url(redis_url)
    entry = orjson.loads(client.get(Keys.push_ledger(RunScope(DATE, HOUR))))
    client.close()
    assert (entry["state"], entry["clean"], entry["runs"]) == ("done", True, 2)
    assert (entry["sent"], entry["recovered"], entry["already_sent"]) == (0, len(want), len(want))
    _one_each(kafka_topic, want)
    assert sent_markers(redis_url) == {uid: msg_id(DATE, uid) for uid in want}


def test_a_finished_hour_is_not_read_back_and_keeps_its_first_start(redis_url, mysql, kafka_topic, sim, make_config):
    config, want = _pushed_hour(redis_url, mysql, kafka_topic, sim, make_config)
    client = redis.Redis.from_url(redis_url)
    start = client.get(Keys.push_start(RunScope(DATE, HOUR)))
    again = run_push(config, hour=HOUR)
    assert again.exit_code == 0 and "push.recovered" not in again.stderr
    assert client.get(Keys.push_start(RunScope(DATE, HOUR))) == start  # SET NX: the first run's offsets stay
    assert orjson.loads(client.get(Keys.push_ledger(RunScope(DATE, HOUR))))["clean"] is True
    client.close()
    _one_each(kafka_topic, want)


def test_rerun_uid_takes_the_same_path_and_sends_nothing_twice(redis_url, mysql, kafka_topic, sim, make_config):
    config, want = _pushed_hour(redis_url, mysql, kafka_topic, sim, make_config)
    uid = min(want)
    _forget(redis_url, [uid])
    result = invoke("rerun", uid, "--config", str(config), "--date", DATE, "--push-only", "--now", at(HOUR))
    assert result.exit_code == 0, result.output
    assert "unfinished push run" in result.output and "already pushed" in result.output
    _one_each(kafka_topic, want)
    assert sent_markers(redis_url)[uid] == msg_id(DATE, uid)
