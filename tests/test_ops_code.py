"""Operations as code, checked against a real run: the Loki rules, the Grafana dashboard, `later-read sent`.

One module fixture runs a real day against the session's servers: 40 users at hour 9 and 3 at hour 10, a
prewarm of 30 of hour 9's and the 3 (`--uids-file`, so 10 misses), the push of hour 9 (subprocesses,
metrics to a textfile dir), a run that stops on a config error, messages planted in the topic (noise of
another date before the push; after it, a copy of one real message and two copies of a hostile one), and a
scheduled run at 12:01 that expires hours 9 and 10 (hour 10's 3 users never sent) and catches up 11. The
tests read what those runs printed and wrote; no log line or metric name here is written by hand.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from conftest import default_config, merge
from helpers import ROOT, at, insert_rows, read_topic, render_toml, run_cli, seeding, servers
from later_read.core.scope import RunScope
from later_read.store.keys import Keys

DATE, HOUR, USERS, PREWARMED = "20261123", 9, 40, 30
TEMPLATES = default_config()["tasks"]["ids"]
HOSTILE_ID = "evil\nLATER_READ_ALERT x=1 " + "A" * 200


def later_read(config: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return run_cli(*args, "--config", str(config), timeout=timeout)


def seed_hour(db, late: list[str]) -> list[str]:
    """USERS users at HOUR and the `late` ones at HOUR + 1; the former's uids."""
    task_a = TEMPLATES[0].replace("{date}", DATE)
    uids = [f"o{i:06d}" for i in range(USERS)]
    rows = [(task_a, uid, seeding.PROJECTS[i % 2], HOUR, "b1") for i, uid in enumerate(uids)]
    rows += [(task_a, uid, "novel", HOUR + 1, "b1") for uid in late]
    insert_rows(db, rows)
    return uids


def with_a_recommendation(simulator, count: int) -> list[str]:
    """`count` uids the simulator gives a recommendation with a card (their message would be sent)."""
    found = (
        uid
        for uid in (f"p{i:06d}" for i in range(1000))
        if all(simulator.expected(uid)[k] for k in ("in_experiment", "has_rec", "material_found"))
    )
    return [next(found) for _ in range(count)]


def end_offsets(bootstrap: str, topic: str) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "h15-offsets", "log_level": 3})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {str(p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        consumer.close()


def produce(bootstrap: str, topic: str, messages: list[tuple[str, bytes, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value, partition in messages:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def real_day(tmp_path_factory, redis_server, mariadb_server, kafka_server, simulator):
    """Runs the day described in the module docstring; yields what the runs printed and wrote."""
    tmp = tmp_path_factory.mktemp("real_day")
    simulator.reset()
    client = redis_server.client()
    client.flushdb()
    db = mariadb_server.create_database(f"h15_real_day_{int(time.time())}")
    topic = kafka_server.create_topic(f"h15_real_day_{int(time.time())}", partitions=3)
    bootstrap, url = kafka_server.bootstrap, simulator.url.rstrip("/")
    textfiles = tmp / "textfile"
    textfiles.mkdir()
    config = tmp / "config.toml"
    config.write_text(
        render_toml(
            merge(
                default_config(),
                {
                    "redis": {"url": redis_server.url},
                    "starrocks": {
                        "host": db.host,
                        "port": db.port,
                        "user": db.user,
                        "password": db.password,
                        "database": db.database,
                    },
                    "kafka": {"bootstrap_servers": bootstrap, "topic": topic},
                    "services": {"ab_url": url, "rec_url": url, "material_url": url},
                    "push": {"wait_for_prewarm_seconds": 0},
                    "metrics": {"textfile_dir": str(textfiles)},
                },
            )
        ),
        encoding="utf-8",
    )
    try:
        late_users = with_a_recommendation(simulator, 3)
        uids = seed_hour(db, late_users)
        (tmp / "uids.txt").write_text("\n".join(uids[:PREWARMED] + late_users) + "\n", encoding="utf-8")
        prewarm = later_read(config, "prewarm", "--date", DATE, "--uids-file", str(tmp / "uids.txt"))
        noise = [
            (
                f"n{i}",
                orjson.dumps(
                    {"msg_id": f"noise-{i}", "source_uid": f"n{i}", "push_date": "20261122", "push_hour": HOUR}
                ),
                i % 3,
            )
            for i in range(6)
        ]
        produce(bootstrap, topic, noise)
        start_key, before = Keys.push_start(RunScope(DATE, HOUR)), end_offsets(bootstrap, topic)
        pushed_at = time.time()
        push = later_read(config, "push", "--date", DATE, "--hour", str(HOUR), "--now", at(HOUR))
        start = {"raw": client.get(start_key), "ttl": client.ttl(start_key), "around": (pushed_at, time.time())}
        pushed = [m for m in read_topic(bootstrap, topic) if m.value.get("push_date") == DATE]
        copy = pushed[0]
        hostile = orjson.dumps({"msg_id": HOSTILE_ID, "source_uid": "x\x1b[31m", "push_date": DATE, "push_hour": HOUR})
        produce(
            bootstrap,
            topic,
            [(copy.key, orjson.dumps(copy.value), (copy.partition + 1) % 3), ("x", hostile, 0), ("x", hostile, 1)],
        )
        failed = later_read(tmp / "missing.toml", "push", "--date", DATE)
        late = later_read(config, "push", "--now", at(HOUR + 3, 1))  # 12:01: hours 9 and 10 expired, 11 caught up
        yield {
            "before": before,
            "config": config,
            "prewarm": prewarm,
            "push": push,
            "failed": failed,
            "late": late,
            "pushed": pushed,
            "copy": copy,
            "textfiles": textfiles,
            "client": client,
            "start_key": start_key,
            "start": start,
            "bootstrap": bootstrap,
            "topic": topic,
        }
    finally:
        client.close()
        kafka_server.delete_topic(topic)
        mariadb_server.drop_database(db.database)


def test_the_real_day_ran(real_day):
    assert real_day["prewarm"].returncode == 0, real_day["prewarm"].stderr[-2000:]
    assert real_day["push"].returncode == 0, real_day["push"].stderr[-2000:]
    assert real_day["failed"].returncode == 2
    assert real_day["pushed"], "the push sent nothing: the sent checks below would be empty"
    assert real_day["late"].returncode == 7, real_day["late"].stderr[-2000:]  # hour 10's users expired


# Loki rules ----------------------------------------------------------------------------------------
LINE_FILTER = re.compile(r'\|=\s*(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`)')
REGEXP_STAGE = re.compile(r"\|\s*regexp\s*`([^`]*)`")
SELECTOR = re.compile(r"\{([^}]*)\}")
THRESHOLD = re.compile(r">\s*([0-9.]+)\s*$")


def loki_rules() -> list[dict]:
    data = yaml.safe_load((ROOT / "deploy" / "alerts" / "later-read.loki.yml").read_text(encoding="utf-8"))
    [group] = data["groups"]
    assert group["name"] and group["rules"]
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"] and rule["expr"].strip() and rule["labels"]["severity"] in {"warning", "critical"}
    return group["rules"]


def real_lines(real_day, selector: str) -> list[str]:
    """The lines the real runs printed that the rule's stream selector would pick (by its job label)."""
    job = re.search(r'job="(\w+)"', selector)
    names = {"prewarm": ["prewarm"], "push": ["push", "late"]}
    runs = [real_day[k] for k in (names[job.group(1)] if job else ("prewarm", "push", "failed", "late"))]
    return [line for run in runs for line in run.stderr.splitlines()]


def test_loki_rules_parse_and_name_the_documented_alerts():
    names = [rule["alert"] for rule in loki_rules()]
    assert names == [
        "LaterReadAlertLine",
        "LaterReadRunFailed",
        "LaterReadPushMissRatio",
        "LaterReadPushHourExpiredLine",
        "LaterReadPushCatchingUp",
    ]
    doc = (ROOT / "docs" / "alerting.md").read_text(encoding="utf-8")
    assert "deploy/alerts/later-read.loki.yml" in doc
    assert all(f"`{name}`" in doc for name in names)


@pytest.mark.parametrize(
    "alert",
    [
        "LaterReadAlertLine",
        "LaterReadRunFailed",
        "LaterReadPushMissRatio",
        "LaterReadPushHourExpiredLine",
        "LaterReadPushCatchingUp",
    ],
)
def test_each_loki_line_filter_matches_a_line_a_real_run_printed(real_day, alert):
    [rule] = [r for r in loki_rules() if r["alert"] == alert]
    expr = rule["expr"]
    filters = [a or b for a, b in LINE_FILTER.findall(expr)]
    assert filters, f"{alert} has no line filter"
    matched = [line for line in real_lines(real_day, SELECTOR.search(expr).group(1)) if all(f in line for f in filters)]
    assert matched, f"no real line matches {alert}'s filters {filters}"
    for pattern in REGEXP_STAGE.findall(expr):  # the regexp stage extracts a number above the threshold
        values = [float(m.group(1)) for m in map(re.compile(pattern).search, matched) if m]
        assert values and max(values) > float(THRESHOLD.search(expr.strip()).group(1)), (pattern, matched)


# Grafana dashboard ---------------------------------------------------------------------------------
METRIC = re.compile(r"\blater_read_[a-z0-9_]+\b")


def written_metric_names(textfiles: Path) -> set[str]:
    """Every metric name in the textfiles: samples, and each declared family (a counter as `_total`)."""
    names = set()
    for path in textfiles.glob("*.prom"):
        for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
            names.add(family.name + ("_total" if family.type == "counter" else ""))
            names.update(sample.name for sample in family.samples)
    return names


def test_every_dashboard_panel_queries_metrics_a_real_run_wrote(real_day):
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "later-read.json").read_text(encoding="utf-8"))
    written = written_metric_names(real_day["textfiles"])
    assert {"later_read_prewarm_duration_seconds", "later_read_push_duration_seconds"} <= written
    unknown = {}
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        names = {name for target in panel["targets"] for name in METRIC.findall(target["expr"])}
        assert names, f"panel {panel['title']!r} names no later_read metric"
        if names - written:
            unknown[panel["title"]] = sorted(names - written)
    assert not unknown, f"panels query metrics no real run wrote: {unknown}"


def test_the_dashboard_covers_what_on_call_asks():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "later-read.json").read_text(encoding="utf-8"))
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needed in (
        "time() - later_read_prewarm_last_success_timestamp_seconds",
        "time() - later_read_push_last_success_timestamp_seconds",
        "later_read_push_outcomes_total",
        'outcome="misses"',
        "later_read_push_duration_seconds",
        "later_read_push_service_calls_total",
        "later_read_push_peak_calls_saved",
    ):
        assert needed in exprs, needed
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# later-read sent -----------------------------------------------------------------------------------
def sent_json(real_day, *args: str) -> dict:
    result = later_read(real_day["config"], "sent", "--date", DATE, *args, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_push_start_record_is_where_the_hours_messages_begin(real_day):
    """The push wrote its start record itself (read right after it ran): the topic's end offsets from
    before its first message, when it began, kept for three days."""
    start = real_day["start"]
    assert start["raw"] is not None, "the push wrote no start record"
    record = json.loads(start["raw"])
    assert sorted(record) == ["at", "offsets", "topic"]
    assert record["topic"] == real_day["topic"] and record["offsets"] == real_day["before"]
    assert start["around"][0] - 1 <= record["at"] <= start["around"][1]
    assert 3 * 86400 - 60 < start["ttl"] <= 3 * 86400


def test_sent_finds_the_planted_duplicate_from_the_recorded_start(real_day):
    report = sent_json(real_day, "--hour", str(HOUR))
    pushed, copy = real_day["pushed"], real_day["copy"]
    assert report["start"] == {"push_start_keys": [real_day["start_key"]], "time_bound": None}
    assert report["other"] == 0  # the noise produced before the push lies before the recorded offsets
    assert report["hours"] == {"09": {"messages": len(pushed) + 3, "distinct_msg_ids": len(pushed) + 1}}
    assert report["duplicates_total"] == 2
    dup = {d["msg_id"]: d for d in report["duplicates"]}[copy.value["msg_id"]]
    assert dup["uid"] == copy.key and dup["copies"] == 2
    assert {"partition": copy.partition, "offset": copy.offset} in dup["at"]


def test_sent_falls_back_to_the_time_bound_without_the_start_key(real_day):
    client = real_day["client"]
    saved = {key: client.dump(key) for key in client.keys("later_read:push:start:*")}  # hour 9's, 11's, 12's
    client.delete(*saved)
    try:
        report = sent_json(real_day)
    finally:
        for key, dumped in saved.items():
            client.restore(key, 3 * 86400 * 1000, dumped, replace=True)
    assert report["start"]["push_start_keys"] == []
    assert report["start"]["time_bound"] == "2026-11-22T23:00:00+08:00"  # the date's start, less the slack
    assert report["other"] == 6  # the noise of another date is read, then filtered out
    assert report["duplicates_total"] == 2 and report["hours"]["09"]["messages"] == len(real_day["pushed"]) + 3


def test_sent_text_lists_one_users_copies_on_escaped_bounded_lines(real_day):
    copy = real_day["copy"]
    result = later_read(real_day["config"], "sent", "--date", DATE, "--uid", copy.key)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("sent.duplicate ") and copy.value["msg_id"] in line for line in lines)
    listed = [line for line in lines if line.startswith("sent.message ")]
    assert len(listed) == 2  # each with its hour's window end: the push's, or the planted copy's
    assert all(" expires_at=2026-11-23T11:00:00+08:00" in line and " created_at=" in line for line in listed)
    everything = later_read(real_day["config"], "sent", "--date", DATE, "--hour", str(HOUR)).stdout
    [hostile] = [line for line in everything.splitlines() if "evil" in line]
    # Escaped once, by log.fields: no raw escape character, the keyword defused, the newline as \n.
    assert "\x1b" not in everything and "LATER_READ\\x5fALERT" in hostile and "\\n" in hostile
    assert len(hostile) < 300  # the 200-character id was cut


def test_sent_errors_are_one_line_with_the_documented_code(real_day, tmp_path):
    bad = later_read(real_day["config"], "sent", "--date", "2026-11-23")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--date" in bad.stderr
    config = tmp_path / "dead.toml"
    text = real_day["config"].read_text(encoding="utf-8").replace(real_day["bootstrap"], "127.0.0.1:1")
    config.write_text(text, encoding="utf-8")
    dead = later_read(config, "sent", "--date", DATE, "--hour", str(HOUR), timeout=120)
    assert dead.returncode == 3, dead.stderr[-2000:]
    errors = [line for line in dead.stderr.splitlines() if line.startswith("later-read: error:")]
    assert len(errors) == 1 and "Kafka" in errors[0]


def test_sent_tally_counts_foreign_messages_without_failing():
    from later_read.log import fields
    from later_read.oncall.sent import SentQuery, Tally, _duplicates, _hours, clean

    tally = Tally(SentQuery(DATE, limit=5))
    for offset, raw in enumerate(
        [
            b"not json",
            b"[1]",
            b'{"msg_id": 7}',
            orjson.dumps({"msg_id": "m", "push_date": "20261122"}),
            orjson.dumps({"msg_id": "a", "push_date": DATE, "push_hour": [1]}),
            orjson.dumps({"msg_id": "a", "push_date": DATE, "push_hour": 9, "source_uid": "u"}),
            orjson.dumps({"msg_id": "b", "push_date": DATE, "push_hour": 9}),
        ]
    ):
        tally.add(1, offset + 2**40, raw)
    assert (tally.scanned, tally.unparsable, tally.other, tally.matching) == (7, 3, 1, 3)
    assert _hours(tally) == {
        "09": {"messages": 2, "distinct_msg_ids": 1},
        "[1]": {"messages": 1, "distinct_msg_ids": 1},
    }
    assert _duplicates(tally) == [
        {
            "msg_id": "a",
            "uid": "u",
            "copies": 2,
            "at": [{"partition": 1, "offset": 4 + 2**40}, {"partition": 1, "offset": 5 + 2**40}],
        }
    ]
    assert clean("x" * 81).endswith("...") and len(clean("x" * 81)) == 80 and clean("x" * 80) == "x" * 80
    assert fields(v=clean("a\nb\x1b")) == 'v="a\\nb\\x1b"'  # escaped once, where the line is built


def test_sent_reads_the_topic_even_when_redis_is_down(real_day, tmp_path):

    config = tmp_path / "no-redis.toml"
    text = real_day["config"].read_text(encoding="utf-8")
    url = re.search(r'url = "(redis://[^"]+)"', text).group(1)
    config.write_text(text.replace(url, f"redis://127.0.0.1:{servers.free_port()}/0"), encoding="utf-8")
    result = later_read(config, "sent", "--date", DATE, "--hour", str(HOUR), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["start"]["push_start_keys"] == [] and report["start"]["time_bound"]
    assert any("push start offsets not read" in note for note in report["notes"])
    assert report["duplicates_total"] == 2
