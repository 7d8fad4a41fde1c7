"""Operating later-read against the real servers: `rerun`, `show`, `check`, and the metrics textfile.

Redis, MariaDB (standing in for StarRocks), Kafka and the HTTP simulator are the real processes from
conftest.py; `check` with Redis stopped uses a private redis-server of its own, so stopping it cannot
disturb other tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
import redis

from helpers import DATE, TASKS, at, first_push_hour, invoke, pick, read_topic, run_cli, seed_day, seeding, servers
from later_read.core.message import msg_id
from later_read.core.scope import RunScope
from later_read.store.keys import Keys

USERS = 60


# Helpers -------------------------------------------------------------------------------------------
def later_read(*args: str):
    """The CLI in-process; stdout and stderr kept apart. A `rerun` runs at its message hour's time (--now
    a minute into the user's first push hour, or --hour's), as on-call would on the day: inside the hour's
    window, so its push step is not refused as late."""
    args = list(args)
    if args and args[0] == "rerun" and "--now" not in args and "--date" in args:
        hour = int(args[args.index("--hour") + 1]) if "--hour" in args else first_push_hour(args[1], USERS)
        args += ["--now", at(hour)]
    return invoke(*args)


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2)


def step(output: str, name: str) -> str:
    """The text of the first `name` step line of rerun's output."""
    for line in output.splitlines():
        if line.split(" ", 1)[0] == name:
            return line[10:].strip()
    raise AssertionError(f"no {name!r} step in:\n{output}")


def show_json(config: Path, uid: str) -> dict:
    result = later_read("show", uid, "--date", DATE, "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


# rerun ---------------------------------------------------------------------------------------------
def test_rerun_of_a_user_the_prewarm_never_saw_ends_with_a_message_in_kafka(
    redis_url, mysql, kafka_topic, sim, make_config
):
    seed_day(mysql, USERS)
    config = make_config()
    uid = pick(sim, "rec", USERS)
    expected = sim.expected(uid)
    assert redis_client(redis_url).get(f"rec:later_read:{uid}") is None  # never prewarmed

    result = later_read("rerun", uid, "--date", DATE, "--config", str(config))

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "task_id=04-026-20261123-" in step(out, "task")
    assert f"value={expected['ab_value']} trace_id={expected['trace_id']}" in step(out, "ab")
    assert f"material_id={expected['material_id']}" in step(out, "rec")
    assert "ttl=86400 s" in step(out, "value")
    assert out.rstrip().endswith("done")
    messages = read_topic(*kafka_topic)
    assert len(messages) == 1
    key, partition, offset, message = messages[0]
    assert key == uid and message.msg_id == msg_id(DATE, uid)
    assert (message.rec_id, message.material_id) == (expected["rec_id"], expected["material_id"])
    assert message.trace_id == expected["trace_id"] and message.push_date == DATE
    assert message.push_hour == first_push_hour(uid, USERS)
    assert f"partition={partition} offset={offset}" in step(out, "kafka")
    client = redis_client(redis_url)
    assert client.get(Keys.sent(DATE, uid)).decode() == message.msg_id
    assert 86000 < client.ttl(f"rec:later_read:{uid}") <= 86400


def test_rerun_respects_the_sent_marker_unless_force(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    config, uid = make_config(), pick(sim, "rec", USERS)
    assert later_read("rerun", uid, "--date", DATE, "--config", str(config)).exit_code == 0

    again = later_read("rerun", uid, "--date", DATE, "--push-only", "--config", str(config))
    assert again.exit_code == 0
    assert "already pushed on 20261123" in step(again.stdout, "stopped")
    assert len(read_topic(*kafka_topic)) == 1

    forced = later_read("rerun", uid, "--date", DATE, "--push-only", "--force", "--hour", "7", "--config", str(config))
    assert forced.exit_code == 0, forced.output
    messages = read_topic(*kafka_topic)
    assert [m.message.msg_id for m in messages] == [msg_id(DATE, uid)] * 2  # same id: consumers dedupe
    assert sorted(m.message.push_hour for m in messages) == sorted([first_push_hour(uid, USERS), 7])


def test_rerun_dry_run_prints_everything_and_writes_nothing(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    uid = pick(sim, "rec", USERS)
    result = later_read("rerun", uid, "--date", DATE, "--dry-run", "--config", str(make_config()))
    assert result.exit_code == 0, result.output
    assert "dry run: not written" in step(result.stdout, "value")
    assert orjson.loads(step(result.stdout, "message"))["msg_id"] == msg_id(DATE, uid)
    assert "not produced" in step(result.stdout, "kafka")
    assert redis_client(redis_url).keys("*") == []
    assert read_topic(*kafka_topic) == []


def test_rerun_prewarm_only_then_push_only(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    config, uid = make_config(), pick(sim, "rec", USERS)
    first = later_read("rerun", uid, "--date", DATE, "--prewarm-only", "--config", str(config))
    assert first.exit_code == 0 and "sent " not in first.stdout and read_topic(*kafka_topic) == []
    assert show_json(config, uid)["outcome"] == "rec"

    second = later_read("rerun", uid, "--date", DATE, "--push-only", "--config", str(config))
    assert second.exit_code == 0, second.output
    assert not any(line.startswith(("ab ", "rec ")) for line in second.stdout.splitlines())  # not recomputed
    assert "-> rec:" in step(second.stdout, "value")
    assert [m[0] for m in read_topic(*kafka_topic)] == [uid]


@pytest.mark.parametrize(
    "want, stop", [("not_in_experiment", "not_in_experiment"), ("no_recommendation", "no_recommendation")]
)
def test_rerun_of_a_no_push_user_stores_the_outcome_and_sends_nothing(
    redis_url, mysql, kafka_topic, sim, make_config, want, stop
):
    seed_day(mysql, USERS)
    config, uid = make_config(), pick(sim, want, USERS)
    result = later_read("rerun", uid, "--date", DATE, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert f"nothing to send: the value's outcome is {stop}" in step(result.stdout, "stopped")
    assert show_json(config, uid)["outcome"] == want
    assert read_topic(*kafka_topic) == []


def test_rerun_stops_with_a_reason_when_it_cannot_finish(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    config = make_config()
    unknown = later_read("rerun", "999999999", "--date", DATE, "--config", str(config))
    assert unknown.exit_code == 1
    assert "no task rows for uid 999999999 on 20261123" in step(unknown.stdout, "stopped")

    never = later_read("rerun", pick(sim, "rec", USERS), "--date", DATE, "--push-only", "--config", str(config))
    assert never.exit_code == 1
    assert "no usable value for 20261123 (miss)" in step(never.stdout, "stopped")

    sim.configure(ab={"error_5xx_rate": 1.0})
    down = later_read("rerun", pick(sim, "rec", USERS), "--date", DATE, "--config", str(config))
    assert down.exit_code == 1
    assert "ab: http_5" in step(down.stdout, "stopped")
    assert read_topic(*kafka_topic) == []


def test_rerun_bad_input_is_one_line_and_exit_2(redis_url, mysql, kafka_topic, sim, make_config):
    config = str(make_config())
    both = later_read("rerun", "100000001", "--prewarm-only", "--push-only", "--config", config)
    assert both.exit_code == 2 and "--prewarm-only and --push-only exclude each other" in both.stderr
    bad_uid = later_read("rerun", "", "--config", config)
    assert bad_uid.exit_code == 2 and "uid: empty" in bad_uid.stderr
    bad_date = later_read("rerun", "100000001", "--date", "2026-11-23", "--config", config)
    assert bad_date.exit_code == 2 and "--date: expected YYYYMMDD" in bad_date.stderr


# show ----------------------------------------------------------------------------------------------
def test_show_tells_the_outcomes_apart(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    config = make_config()
    users = {want: pick(sim, want, USERS) for want in ("rec", "not_in_experiment", "no_recommendation")}
    for uid in users.values():
        assert later_read("rerun", uid, "--date", DATE, "--prewarm-only", "--config", str(config)).exit_code == 0
    client = redis_client(redis_url)
    stale = '{"outcome":"rec","date":"20261122","trace_id":"t","rec_id":"r","rec_type":"book","material_id":"m-1"}'
    client.set("rec:later_read:stale-user", stale, ex=600)
    client.set("rec:later_read:corrupt-user", b"{not json", ex=600)

    for want, uid in users.items():
        report = show_json(config, uid)
        assert report["outcome"] == want and report["value"]["date"] == DATE
        assert 86000 < report["ttl_seconds"] <= 86400
    assert show_json(config, "never-user")["outcome"] == "miss"
    assert "never computed" in show_json(config, "never-user")["detail"]
    stale_report = show_json(config, "stale-user")
    assert stale_report["outcome"] == "miss" and "stale value from 20261122" in stale_report["detail"]
    corrupt = show_json(config, "corrupt-user")
    assert corrupt["outcome"] == "corrupt" and "not JSON" in corrupt["detail"]
    assert corrupt["raw"] == "{not json"


def test_show_text_names_markers_and_the_next_step(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    config, uid = make_config(), pick(sim, "rec", USERS)
    text = later_read("show", uid, "--date", DATE, "--config", str(config)).stdout
    assert "outcome    miss: never computed" in text
    assert "sent       none" in text and "prewarm    missing" in text
    assert f"later-read rerun {uid} --date {DATE}" in text

    assert later_read("rerun", uid, "--date", DATE, "--config", str(config)).exit_code == 0
    redis_client(redis_url).set(
        Keys.prewarm_done(RunScope(DATE)),
        orjson.dumps({"date": DATE, "finished_at": "2026-11-23T00:09:12+08:00", "users": 60}),
    )
    text = later_read("show", uid, "--date", DATE, "--config", str(config)).stdout
    assert "outcome    rec:" in text
    assert f"sent       {msg_id(DATE, uid)}" in text
    assert "prewarm    date=20261123 finished_at=2026-11-23T00:09:12+08:00 users=60" in text
    assert "next" not in text
    hour = first_push_hour(uid, USERS)
    window = (
        f"window 2026-11-23T{hour:02d}:00:00+08:00 - 2026-11-23T{hour + 2:02d}:00:00+08:00" if hour < 22 else "window "
    )
    assert f"hour       {hour} (from task rows, shard 0/1) {window}" in text
    assert "no ledger entry: no push run has begun it" in text  # a rerun writes no entry of its own


def test_show_reads_the_users_hour_in_the_day_ledger(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    config, uid = make_config(push={"wait_for_prewarm_seconds": 0}), pick(sim, "rec", USERS)
    hour = first_push_hour(uid, USERS)
    assert later_read("rerun", uid, "--date", DATE, "--prewarm-only", "--config", str(config)).exit_code == 0
    pushed = later_read("push", "--date", DATE, "--hour", str(hour), "--now", at(hour), "--config", str(config))
    assert pushed.exit_code == 0, pushed.output
    found = show_json(config, uid)["push_hour"]
    assert (found["hour"], found["from"], found["shard"]) == (hour, "task rows", "0/1")
    hour_users = seeding.expected_users(DATE, USERS, TASKS, hour=hour)
    first_here = seeding.expected_users(DATE, USERS, TASKS, hour=hour, earliest=True)
    state = "done" if set(first_here) == {uid} else "partial"  # the hour's other users were never prewarmed
    assert (found["ledger"]["state"], found["ledger"]["users"]) == (state, len(hour_users)), found["ledger"]
    other = orjson.loads(
        later_read("show", uid, "--date", DATE, "--hour", "3", "--json", "--config", str(config)).stdout
    )["push_hour"]
    assert (other["hour"], other["from"], other["ledger"]) == (3, "--hour", None)
    down = make_config(starrocks={"port": servers.free_port()})  # StarRocks not answering: hour unknown
    text = later_read("show", uid, "--date", DATE, "--config", str(down)).stdout
    assert 'hour       "unknown (StarRocks:' in text and "pass --hour" in text


def test_show_exit_codes(redis_url, make_config):
    config = str(make_config())
    assert later_read("show", "x" * 1025, "--config", config).exit_code == 2
    dead = later_read(
        "show", "100000001", "--config", str(make_config(redis={"url": f"redis://127.0.0.1:{servers.free_port()}/0"}))
    )
    assert dead.exit_code == 3
    assert "unreachable" in dead.stderr and "check [redis] url" in dead.stderr


# check ---------------------------------------------------------------------------------------------
def run_check(config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("check", "--config", str(config), *args, timeout=120)


def verdicts(stdout: str) -> dict[str, str]:
    """dependency name -> its whole line."""
    lines = [line for line in stdout.splitlines() if line.startswith(("ok ", "FAIL "))]
    return {line.split()[1]: line for line in lines}


def test_check_passes_with_everything_up_then_fails_clearly_with_redis_stopped(mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    with servers.RedisServer() as own_redis:
        config = make_config(redis={"url": own_redis.url})
        up = run_check(config)
        assert up.returncode == 0, up.stdout + up.stderr
        lines = verdicts(up.stdout)
        assert set(lines) == {"config", "starrocks", "redis", "kafka", "ab", "rec", "material"}
        assert all(line.startswith("ok ") for line in lines.values()), up.stdout
        assert "PING, scratch write/read/delete" in lines["redis"]
        assert " ms " in lines["kafka"] and "3 partitions" in lines["kafka"]
        assert "check: 6 ok, 0 failed" in up.stdout
        assert own_redis.client().keys("later_read:check:*") == []  # the scratch key is gone

        own_redis.stop_process(graceful=False)
        down = run_check(config)

    assert down.returncode == 3, down.stdout + down.stderr
    lines = verdicts(down.stdout)
    assert lines["redis"].startswith("FAIL redis")
    assert "unreachable" in lines["redis"] and "check [redis] url" in lines["redis"]
    assert all(lines[name].startswith("ok ") for name in ("starrocks", "kafka", "ab", "rec", "material"))
    assert "check: 5 ok, 1 failed (redis)" in down.stdout


def test_check_reports_every_broken_dependency_without_printing_secrets(mysql, kafka_topic, sim, make_config):
    dead = servers.free_port()
    config = make_config(
        starrocks={"password": "Sr-Secret-42"},
        redis={"url": f"redis://:Redis-Secret-42@127.0.0.1:{dead}/0"},
        kafka={"bootstrap_servers": f"127.0.0.1:{dead}", "librdkafka": {"sasl.password": "Kafka-Secret-42"}},
        services={"ab_url": f"http://127.0.0.1:{dead}"},
        metrics={"textfile_dir": "/nonexistent/later-read", "pushgateway_url": f"http://127.0.0.1:{dead}"},
    )
    result = run_check(config, "--timeout", "3")
    assert result.returncode == 3
    lines = verdicts(result.stdout)
    assert lines["config"].startswith("ok ")
    for name, fix in (
        ("starrocks", "[starrocks]"),
        ("redis", "check [redis] url"),
        ("kafka", "check [kafka] bootstrap_servers"),
        ("ab", "check [services] ab_url"),
        ("textfile", "[metrics] textfile_dir"),
        ("pushgw", "[metrics] pushgateway_url"),
    ):
        assert lines[name].startswith(f"FAIL {name}"), result.stdout
        assert fix in lines[name], lines[name]
    assert lines["rec"].startswith("ok ") and lines["material"].startswith("ok ")
    for secret in ("Sr-Secret-42", "Redis-Secret-42", "Kafka-Secret-42"):
        assert secret not in result.stdout + result.stderr


def test_check_judges_http_services_by_their_answer(redis_url, mysql, kafka_topic, sim, make_config):
    seed_day(mysql, USERS)
    sim.configure(ab={"timeout_rate": 1.0}, rec={"error_5xx_rate": 1.0}, material={"error_429_rate": 1.0})
    result = run_check(make_config(), "--timeout", "5")
    assert result.returncode == 3
    lines = verdicts(result.stdout)
    assert lines["ab"].startswith("FAIL ab") and "no answer within [services] timeout_seconds" in lines["ab"]
    assert lines["rec"].startswith("FAIL rec") and "answered HTTP 5" in lines["rec"]
    assert lines["material"].startswith("ok ") and "HTTP 429" in lines["material"]  # reached: it answered
    assert "check: 4 ok, 2 failed (ab, rec)" in result.stdout


def test_check_with_a_bad_config_is_one_line_exit_2(make_config):
    config = make_config(redis={"url": "http://not-redis"})
    result = run_check(config)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert "[redis] url: scheme must be redis://, rediss:// or unix://, not http" in result.stderr


# metrics -------------------------------------------------------------------------------------------
def metrics_settings(make_config, **metrics):
    from later_read.config.settings import load_settings

    return load_settings(make_config(metrics=metrics))


def finished(job: str, status: str, counts: dict, failures: dict | None = None):
    from later_read.core.counts import RunCounts
    from later_read.jobs.summary import Summary

    summary = Summary(job, DATE, run_counts=RunCounts(counts, failures))
    summary.finish(status)
    return summary


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted label items) -> value, parsed with prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_textfile_parses_and_counters_accumulate_across_runs(make_config, tmp_path):
    from later_read.jobs.metrics import record_job

    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    settings = metrics_settings(make_config, textfile_dir=str(textfile_dir))
    first = finished("push", "failures", {"users": 10, "sent": 7, "misses": 3}, {"material_http_503": 1})
    record_job(settings, "push", first)
    record_job(settings, "push", finished("push", "interrupted", {"users": 5, "sent": 4}))

    assert [p.name for p in textfile_dir.iterdir()] == ["later_read_push.prom"]  # temp file renamed
    got = samples((textfile_dir / "later_read_push.prom").read_text())
    assert got[("later_read_push_users_total", ())] == 15
    assert got[("later_read_push_outcomes_total", (("outcome", "sent"),))] == 11
    assert got[("later_read_push_outcomes_total", (("outcome", "misses"),))] == 3  # carried over
    assert got[("later_read_push_failures_total", (("reason", "material_http_503"),))] == 1
    assert got[("later_read_push_last_status", (("status", "interrupted"),))] == 1
    assert got[("later_read_push_last_status", (("status", "ok"),))] == 0
    # the interrupted run is no success: the first run's timestamp stays
    assert got[("later_read_push_last_success_timestamp_seconds", ())] == pytest.approx(first.finished_at)
    assert got[("later_read_push_last_run_timestamp_seconds", ())] > first.finished_at
    assert ("later_read_push_duration_seconds", ()) in got
    assert {k for _, labels in got for k, _ in labels} == {"outcome", "reason", "status"}  # never a uid


def test_metrics_never_succeeded_has_no_success_timestamp(make_config, tmp_path):
    from later_read.jobs.metrics import record_job

    record_job(
        metrics_settings(make_config, textfile_dir=str(tmp_path)),
        "prewarm",
        finished("prewarm", "service_down", {"users": 3}),
    )
    got = samples((tmp_path / "later_read_prewarm.prom").read_text())
    assert got[("later_read_prewarm_last_status", (("status", "service_down"),))] == 1
    assert ("later_read_prewarm_last_success_timestamp_seconds", ()) not in got


def test_metrics_failure_is_one_warning_never_an_exception(make_config, tmp_path):
    import logging

    from later_read.jobs.metrics import record_job

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("later_read.metrics")
    logger.addHandler(handler)
    try:
        settings = metrics_settings(
            make_config,
            textfile_dir=str(tmp_path / "missing"),
            pushgateway_url=f"http://127.0.0.1:{servers.free_port()}",
        )
        record_job(settings, "push", finished("push", "ok", {"users": 1, "sent": 1}))
    finally:
        logger.removeHandler(handler)
    assert len(lines) == 2, lines  # one per sink
    assert lines[0].startswith("metrics.failed sink=textfile") and "textfile_dir" in lines[0]
    assert lines[1].startswith("metrics.failed sink=pushgateway") and "pushgateway_url" in lines[1]


class _Gateway:
    """The two Pushgateway endpoints record_job uses, on a real loopback socket: POST (pushadd) to
    /metrics/job/<job> and GET /metrics. (No Pushgateway binary ships with the test dependencies.)"""

    def __init__(self, exposition: str = "") -> None:
        import http.server
        import threading

        gateway = self
        self.requests: list[tuple[str, str, bytes]] = []
        self.exposition = exposition

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = gateway.exposition.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                gateway.requests.append(("POST", self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_metrics_pushadd_to_the_pushgateway_grouped_by_job(make_config):
    from later_read.jobs.metrics import record_job

    previous = (
        "# TYPE later_read_push_users_total counter\n"
        'later_read_push_users_total{instance="",job="later_read_push"} 100\n'
        'later_read_push_users_total{instance="",job="later_read_other"} 999\n'
        "# TYPE later_read_push_last_success_timestamp_seconds gauge\n"
        'later_read_push_last_success_timestamp_seconds{instance="",job="later_read_push"} 1.7e9\n'
    )
    gateway = _Gateway(previous)
    try:
        settings = metrics_settings(make_config, pushgateway_url=gateway.url)
        record_job(settings, "push", finished("push", "error", {"users": 5}))
    finally:
        gateway.close()
    [(method, path, body)] = gateway.requests
    assert (method, path) == ("POST", "/metrics/job/later_read_push")  # pushadd, grouping key job
    got = samples(body.decode())
    assert got[("later_read_push_users_total", ())] == 105  # its own group's total, plus this run
    assert got[("later_read_push_last_success_timestamp_seconds", ())] == 1.7e9  # kept on a failed run
