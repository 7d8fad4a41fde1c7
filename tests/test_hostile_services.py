"""Services that misbehave, through the real jobs: real Redis, MariaDB, Kafka and the simulator's hostile
knobs (later_read/sandbox/simulator/hostile.py).

- a reply over `[services] max_reply_bytes`, or a field over its bound (core/bounds.py), fails that
  user with `oversize_reply`: asked once (the simulator counts the calls), never stored, never sent;
- a Redis value over a bound is `corrupt` for the push and for `show`;
- a message over the producer's `message.max.bytes` is that user's `oversize_message` failure, said once
  per run, never produced, so the hour ends finished and a rerun neither recovers nor loops;
- what a service sends is printed escaped by `check`, `show` and `rerun`: no line can be forged.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import redis

from helpers import Oracle, invoke, read_topic, seed_day, uid_of
from later_read.log import ALERT_KEYWORD
from later_read.store.keys import Keys

DATE, HOUR, USERS = "20261123", 7, 80
NOW = "2026-11-23T07:05:00+08:00"  # inside HOUR's window: an explicit push of it is not refused
KEYS = Keys("rec:later_read:")
UIDS = [uid_of(i) for i in range(USERS)]
FORGED = f'x\n2026-11-23T07:00:00.000+08:00 WARNING push.fake uid=1 {ALERT_KEYWORD}\nforged="1"'


def seed(mysql) -> None:
    """USERS users, all at push hour HOUR (noise rows of other days and task ids included)."""
    seed_day(mysql, USERS, hours=(HOUR,))


def stored(redis_url: str) -> dict[str, bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.keys(KEYS.rec("*"))
        return {KEYS.uid_of(k): v for k, v in zip(keys, client.mget(keys) if keys else [], strict=False)}
    finally:
        client.close()


def hostile(sim, keys, ratio: float) -> set[str]:
    """The keys (uids, or material ids) whose replies the simulator makes hostile at `ratio`."""
    oracle = Oracle(sim.knobs)
    return {key for key in keys if oracle.fraction("hostile", key) < ratio}


def prewarm(config: Path, report: Path):
    return invoke("prewarm", "--date", DATE, "--config", str(config), "--report", str(report))


def push(config: Path, report: Path):
    return invoke(
        "push", "--date", DATE, "--hour", str(HOUR), "--now", NOW, "--config", str(config), "--report", str(report)
    )


def quick_config(make_config, **extra):
    return make_config(
        services={"backoff_initial_seconds": 0, "backoff_max_seconds": 0, "max_attempts": 3},
        push={"wait_for_prewarm_seconds": 0, "progress_interval_seconds": 60},
        **extra,
    )


# oversize_reply ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "service, knobs, calls_rec",
    [
        ("ab", {"hostile_reply_bytes": 300_000}, False),  # the reply over 256 KiB
        ("ab", {"hostile_field": "trace_id", "hostile_field_bytes": 15 * 2**20}, False),  # a 15 MiB field
        ("rec", {"hostile_field": "rec_id", "hostile_field_bytes": 300}, True),  # a field over its bound only
    ],
    ids=["reply-300k", "trace_id-15MiB", "rec_id-300B"],
)
def test_an_oversize_reply_fails_that_user_once_and_is_never_stored(
    redis_url, mysql, sim, make_config, tmp_path, service, knobs, calls_rec
):
    seed(mysql)
    sim.configure(**{service: {"hostile_ratio": 0.25, **knobs}})
    sim.reset()
    report = tmp_path / "r.json"
    result = prewarm(quick_config(make_config), report)
    assert result.exit_code == 1, result.output
    reached = [u for u in UIDS if not calls_rec or (sim.expected(u)["in_experiment"] and sim.expected(u)["has_rec"])]
    refused = hostile(sim, reached, 0.25)
    assert refused
    data = json.loads(report.read_text())
    assert data["failures"] == {f"{service}.oversize_reply": len(refused)}
    assert data["uids_count"] == {f"{service}.oversize_reply": len(refused)}
    calls = sim.calls(service)
    assert {uid: calls[uid] for uid in refused} == dict.fromkeys(refused, 1)  # never retried
    values = stored(redis_url)
    assert set(values) == set(UIDS) - refused  # the others are stored as usual
    assert max(len(v) for v in values.values()) < 300  # nothing hostile reached Redis


def test_an_oversize_card_fails_its_users_once_and_sends_nothing_for_them(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    seed(mysql)
    config = quick_config(make_config)
    assert prewarm(config, tmp_path / "p.json").exit_code == 0
    sim.configure(material={"hostile_ratio": 0.3, "hostile_field": "content", "hostile_field_bytes": 20_000})
    sim.reset()
    result = push(config, tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    with_card = {
        u: sim.expected(u)["material_id"]
        for u in UIDS
        if sim.expected(u)["has_rec"] and sim.expected(u)["in_experiment"] and sim.expected(u)["material_found"]
    }
    bad_cards = hostile(sim, set(with_card.values()), 0.3)
    failed = {u for u, m in with_card.items() if m in bad_cards}
    assert failed and bad_cards
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["failures"] == {"material_oversize_reply": len(failed)}
    assert data["sent"] == len(with_card) - len(failed)
    assert sim.stats()["material"]["by_fault"]["hostile"] == len(bad_cards)  # one call per card, no retry
    assert {m.key for m in read_topic(*kafka_topic)} == set(with_card) - failed


# corrupt values ------------------------------------------------------------------------------------
def test_a_redis_value_over_a_bound_is_corrupt_in_push_and_show(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    seed(mysql)
    config = quick_config(make_config)
    assert prewarm(config, tmp_path / "p.json").exit_code == 0
    big, long_field = UIDS[0], UIDS[1]
    value = {"outcome": "rec", "date": DATE, "trace_id": "t", "rec_id": "r", "rec_type": "book", "material_id": "m-1"}
    client = redis.Redis.from_url(redis_url)
    client.set(KEYS.rec(big), orjson.dumps({**value, "note": "n" * 9000}), ex=600)
    client.set(KEYS.rec(long_field), orjson.dumps({**value, "trace_id": "t" * 300}), ex=600)
    client.close()
    result = push(config, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["corrupt"] == 2 and sorted(data["uids"]["corrupt"]) == sorted([big, long_field])
    corrupt_lines = [text for text in result.stderr.splitlines() if " push.corrupt_value " in text]
    assert any("over the 8,192-byte bound of a value" in text for text in corrupt_lines)
    assert any("trace_id of 300 bytes, over its 256-byte bound" in text for text in corrupt_lines)
    shown = invoke("show", big, "--date", DATE, "--config", str(config))
    assert "outcome    corrupt: 9,1" in shown.stdout and "bytes, over the 8,192-byte bound of a value" in shown.stdout
    shown = invoke("show", long_field, "--date", DATE, "--config", str(config))
    assert "outcome    corrupt: trace_id of 300 bytes, over its 256-byte bound" in shown.stdout


# oversize_message ----------------------------------------------------------------------------------
def test_a_message_over_the_producer_limit_fails_that_user_once_and_a_rerun_does_not_loop(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    seed(mysql)
    config = quick_config(make_config, kafka={"librdkafka": {"message.max.bytes": 1000}})
    assert prewarm(config, tmp_path / "p.json").exit_code == 0
    # 3,000 bytes of content: under its 16 KiB bound, over the producer's 1,000-byte messages
    sim.configure(material={"hostile_ratio": 0.3, "hostile_field": "content", "hostile_field_bytes": 3000})
    with_card = {
        u: sim.expected(u)["material_id"]
        for u in UIDS
        if sim.expected(u)["has_rec"] and sim.expected(u)["in_experiment"] and sim.expected(u)["material_found"]
    }
    too_big = {u for u, m in with_card.items() if m in hostile(sim, set(with_card.values()), 0.3)}
    assert too_big
    for run in (1, 2):  # the second run of the hour: no recovery, the same users refused, nothing produced
        report = tmp_path / f"r{run}.json"
        result = push(config, report)
        assert result.exit_code == 1, result.output
        data = json.loads(report.read_text())
        assert data["failures"] == {"oversize_message": len(too_big)}
        assert set(data["uids"]["oversize_message"]) == too_big
        assert data["recovered"] == 0 and data["sent"] == (len(with_card) - len(too_big) if run == 1 else 0)
        alerts = [text for text in result.stderr.splitlines() if " push.oversize_message " in text]
        assert len(alerts) == 1 and f"count={len(too_big)}" in alerts[0] and alerts[0].endswith(ALERT_KEYWORD)
        assert not [
            text for text in result.stderr.splitlines() if " push.undelivered " in text or " push.recovered " in text
        ]
        assert {m.key for m in read_topic(*kafka_topic)} == set(with_card) - too_big
    uid = min(too_big)
    rerun = invoke("rerun", uid, "--date", DATE, "--now", NOW, "--push-only", "--config", str(config))
    assert rerun.exit_code == 1
    assert rerun.stdout.splitlines()[-1].startswith("stopped    oversize_message: the message is ")
    assert {m.key for m in read_topic(*kafka_topic)} == set(with_card) - too_big


# printouts -----------------------------------------------------------------------------------------
def assert_unforgeable(output: str, lines: int | None = None) -> None:
    """No line of `output` carries the alert keyword or starts with a forged event."""
    for line in output.splitlines():
        assert ALERT_KEYWORD not in line, line
        assert not line.startswith(("2026-11-23T", "forged")), line
    if lines is not None:
        assert len(output.splitlines()) == lines, output


def test_service_strings_with_newlines_and_the_alert_keyword_cannot_forge_a_line(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    seed(mysql)
    sim.configure(
        ab={"hostile_ratio": 1.0, "hostile_field": "trace_id", "hostile_text": FORGED},
        material={"hostile_ratio": 1.0, "hostile_field": "title", "hostile_text": FORGED},
        in_experiment_ratio=1.0,
        no_rec_ratio=0,
        not_found_ratio=0,
    )
    config = quick_config(make_config)
    checked = invoke("check", "--config", str(config))
    assert checked.exit_code == 0, checked.output
    assert_unforgeable(checked.stdout, lines=1 + 6 + 1)  # config, 6 dependencies, the total
    assert 'trace_id="x\\n2026-11-23T07:00:00.000+08:00 WARNING push.fake uid=1 LATER_READ\\x5fALERT' in checked.stdout
    uid = UIDS[0]
    rerun = invoke("rerun", uid, "--date", DATE, "--now", NOW, "--config", str(config))
    assert rerun.exit_code == 0, rerun.output
    assert_unforgeable(rerun.stdout)
    assert [m.value["title"] for m in read_topic(*kafka_topic)] == [FORGED]  # the data itself is kept
    shown = invoke("show", uid, "--date", DATE, "--config", str(config))
    assert_unforgeable(shown.stdout)
    as_json = invoke("show", uid, "--date", DATE, "--json", "--config", str(config))
    assert_unforgeable(as_json.stdout, lines=1)
    assert json.loads(as_json.stdout)["value"]["trace_id"] == FORGED  # JSON-escaped, the same string
