"""Config loading: the documented default loads; every kind of bad config is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import ROOT, run_cli
from later_read.config.kafka import consumer_config, producer_config
from later_read.config.settings import load_settings
from later_read.errors import EXIT_USAGE, ConfigError
from later_read.redact import redact

DEFAULT = (ROOT / "config.toml").read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def replace(old: str, new: str) -> str:
    assert old in DEFAULT, old
    return DEFAULT.replace(old, new, 1)


def test_documented_default_loads():
    settings = load_settings(ROOT / "config.toml", environ={})
    assert settings.timezone == "Asia/Shanghai"
    assert settings.tasks.ids == ["04-026-{date}-r0gdua", "04-026-{date}-qk79ub"]
    assert settings.redis.key_prefix == "rec:later_read:" and settings.redis.ttl_seconds == 86400
    assert settings.prewarm.concurrency == 50 and settings.push.concurrency == 50
    assert settings.starrocks.table == "task_data"
    assert settings.kafka.librdkafka == {}


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            replace("ttl_seconds = 86400", "ttl_seconds = 86400\nttl = 5"),
            (
                "[redis] ttl: unknown key; known keys in [redis]: mode, url, sentinels, service_name, "
                "failover_seconds, wait_replicas, key_prefix, ttl_seconds"
            ),
        ),
        (
            replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\nmode = "x"'),
            "mode: unknown key; known keys in top level: timezone, starrocks",
        ),
        (
            replace("ttl_seconds = 86400", 'ttl_seconds = "1 day"'),
            '[redis] ttl_seconds: expected an integer, got "1 day"',
        ),
        (
            replace("concurrency = 50             # calls", "concurrency = 0             # calls"),
            "[prewarm] concurrency: expected an integer from 1 to 2,000, got 0",
        ),
        (
            replace("concurrency = 50             # calls", "concurrency = true             # calls"),
            "[prewarm] concurrency: expected an integer, got true",
        ),
        (
            replace('topic = "later_read_push"', ""),
            "[kafka] topic: missing; set it in the file or in LATER_READ__KAFKA__TOPIC",
        ),
        (
            replace('ab_url = "http://127.0.0.1:8900"', 'ab_url = "127.0.0.1:8900"'),
            (
                "[services] ab_url: scheme must be http://, not missing; expected an http://host[:port][/path] URL, "
                'got "127.0.0.1:8900"'
            ),
        ),
        (
            replace('ids = ["04-026-{date}-r0gdua", "04-026-{date}-qk79ub"]', 'ids = ["04-026-r0gdua"]'),
            "[tasks] ids: expected a non-empty list of task ids, each containing {date}",
        ),
        (
            replace('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"'),
            'timezone: expected an IANA zone name such as Asia/Shanghai, got "Mars/Olympus"',
        ),
        (
            replace('table = "task_data"', 'table = "task_data; DROP TABLE x"'),
            "[starrocks] table: expected a plain SQL identifier",
        ),
        ("metrics = 3\n" + DEFAULT[: DEFAULT.index("[metrics]")], "[metrics]: expected a table, got 3"),
        (DEFAULT + "\n[redis\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith(f"config error in {tmp_path / 'config.toml'}")


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="not found; pass --config PATH or set LATER_READ_CONFIG"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_environment_overrides_and_coerces(tmp_path):
    env = {
        "LATER_READ__REDIS__URL": "redis://10.0.0.1:6380/2",
        "LATER_READ__PREWARM__CONCURRENCY": "80",
        "LATER_READ__SERVICES__TIMEOUT_SECONDS": "0.5",
        "LATER_READ__STARROCKS__PASSWORD": "s3cret",
        "LATER_READ__TASKS__IDS": "a-{date},b-{date}",
        "LATER_READ__KAFKA__LIBRDKAFKA__SASL_PASSWORD": "k",
        "LATER_READ__TIMEZONE": "UTC",
        "UNRELATED": "x",
    }
    settings = load_settings(ROOT / "config.toml", environ=env)
    assert settings.redis.url == "redis://10.0.0.1:6380/2"
    assert settings.prewarm.concurrency == 80
    assert settings.services.timeout_seconds == 0.5
    assert settings.starrocks.password == "s3cret"
    assert settings.tasks.ids == ["a-{date}", "b-{date}"]
    assert settings.kafka.librdkafka == {"sasl.password": "k"}
    assert settings.timezone == "UTC"
    assert redact("password s3cret") == "password ***"  # registered as the settings loaded


def test_environment_value_of_wrong_type_names_the_variable():
    env = {"LATER_READ__REDIS__TTL_SECONDS": "soon"}
    with pytest.raises(
        ConfigError,
        match=r"\[redis\] ttl_seconds \(from LATER_READ__REDIS__TTL_SECONDS\): "
        r"expected an integer",
    ):
        load_settings(ROOT / "config.toml", environ=env)


def test_environment_unknown_key_is_rejected():
    with pytest.raises(
        ConfigError,
        match=r"^config error: environment variable LATER_READ__REDIS__URLL names no "
        r"setting: \[redis\] has no key 'urll'",
    ):
        load_settings(ROOT / "config.toml", environ={"LATER_READ__REDIS__URLL": "x"})


def test_config_path_from_environment_variable(tmp_path, monkeypatch):
    path = write(tmp_path, replace('topic = "later_read_push"', 'topic = "from_env_path"'))
    monkeypatch.setenv("LATER_READ_CONFIG", str(path))
    assert load_settings(None).kafka.topic == "from_env_path"


def test_cli_exits_2_with_one_line_before_doing_anything(tmp_path):
    path = write(tmp_path, replace("batch_size = 5000", "batch_size = -1"))
    result = run_cli("prewarm", "--config", str(path), timeout=60)
    assert result.returncode == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert lines == [
        (
            f"later-read: error: config error in {path}: [starrocks] batch_size: "
            "expected an integer from 1 to 100,000, got -1"
        )
    ]


def test_every_kafka_client_connects_to_the_brokers_at_once_unless_told_otherwise():
    """The producer and the readers share CONNECTION_DEFAULTS (no sparse connections: a new client's
    first metadata request does not wait out librdkafka's 50 ms connect throttle), [kafka.librdkafka] wins
    over them, and a reader takes its connection settings but not the producer's own properties."""
    producer = producer_config("k:9092", {"linger.ms": 5})
    assert producer["enable.sparse.connections"] is False and producer["linger.ms"] == 5
    assert producer["allow.auto.create.topics"] is False
    assert producer_config("k:9092", {"enable.sparse.connections": True})["enable.sparse.connections"] is True

    librdkafka = {"sasl.password": "k", "security.protocol": "SASL_SSL", "linger.ms": 5, "acks": "1"}
    reader = consumer_config("k:9092", librdkafka, "later-read-sent")
    assert reader["enable.sparse.connections"] is False
    assert reader["sasl.password"] == "k" and reader["security.protocol"] == "SASL_SSL"
    assert "linger.ms" not in reader and "acks" not in reader and "enable.idempotence" not in reader
    assert reader["group.id"].startswith("later-read-sent-") and reader["enable.auto.commit"] is False
    assert reader["allow.auto.create.topics"] is False and reader["bootstrap.servers"] == "k:9092"
    assert reader["group.id"] != consumer_config("k:9092", librdkafka, "later-read-sent")["group.id"]
    told = consumer_config("k:9092", {"enable.sparse.connections": True}, "later-read-reader")
    assert told["enable.sparse.connections"] is True
