"""The local sandbox stack: real Redis, MariaDB (for StarRocks) and Kafka, plus the simulator.

Used by `later-read sandbox up|demo` and by the benchmarks; the tests start the same servers through
pytest fixtures.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from later_read.sandbox import servers
from later_read.sandbox.simulator import SimulatorKnobs, SimulatorProcess

DEFAULT_TASKS = ["04-026-{date}-r0gdua", "04-026-{date}-qk79ub"]


def config_dict(*, redis_url: str, mysql: Any, kafka_bootstrap: str, topic: str, services_url: str,
                **overrides: dict) -> dict:
    """A later-read config (as a dict) pointing at the given servers; `overrides` merge per section."""
    data: dict[str, Any] = {
        "timezone": "Asia/Shanghai",
        "starrocks": {"host": mysql.host, "port": mysql.port, "user": mysql.user,
                      "password": mysql.password, "database": mysql.database, "table": "task_data",
                      "batch_size": 1000},
        "tasks": {"ids": list(DEFAULT_TASKS)},
        "redis": {"url": redis_url, "key_prefix": "rec:later_read:", "ttl_seconds": 86400},
        "services": {"ab_url": services_url, "rec_url": services_url, "material_url": services_url,
                     "timeout_seconds": 2.0, "max_attempts": 3},
        "prewarm": {"concurrency": 50},
        "push": {"concurrency": 50},
        "kafka": {"bootstrap_servers": kafka_bootstrap, "topic": topic, "librdkafka": {}},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    return data


def render_toml(data: dict) -> str:
    """A minimal TOML writer for config dicts (str, int, float, bool, list of str, nested tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(_toml_table(name, table))
    return "\n".join(lines) + "\n"


def _toml_table(name: str, table: dict) -> str:
    lines = [f"\n[{name}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    lines += [_toml_table(f"{name}.{k}", v) for k, v in table.items() if isinstance(v, dict)]
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


class Stack:
    """Start (or reuse, via the LATER_READ_TEST_* variables) every server of the sandbox."""

    def __init__(self, knobs: SimulatorKnobs | None = None, topic: str = "later_read_push") -> None:
        self.knobs = knobs or SimulatorKnobs()
        self.topic = topic
        self._exit = ExitStack()

    def __enter__(self) -> "Stack":
        try:
            self.redis = self._exit.enter_context(servers.redis_server())
            self.mysql = self._exit.enter_context(servers.mariadb_server())
            self.kafka = self._exit.enter_context(servers.kafka_server())
            self.simulator = self._exit.enter_context(SimulatorProcess(self.knobs))
            self.kafka.create_topic(self.topic, partitions=3)
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._exit.close()

    def config(self, **overrides: dict) -> dict:
        return config_dict(redis_url=self.redis.url, mysql=self.mysql, kafka_bootstrap=self.kafka.bootstrap,
                           topic=self.topic, services_url=self.simulator.url, **overrides)

    def write_config(self, path: str | Path, **overrides: dict) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_toml(self.config(**overrides)), encoding="utf-8")
        return path
