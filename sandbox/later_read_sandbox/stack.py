"""The local sandbox stack: real Redis, MariaDB (for StarRocks) and Kafka, plus the simulator.

Used by `later-read sandbox up|demo` (`own_servers=True`: it starts every server itself, and the config it
writes says so with `[sandbox] own_servers = true`, the mark `sandbox seed` requires) and by the
benchmarks (which may reuse the LATER_READ_TEST_* servers); the tests start the same servers through
pytest fixtures.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import tomli_w

from later_read_sandbox import servers
from later_read_sandbox.simulator import SimulatorKnobs, SimulatorProcess

DEFAULT_TASKS = ["04-026-{date}-r0gdua", "04-026-{date}-qk79ub"]


def config_dict(
    *, redis_url: str, mysql: Any, kafka_bootstrap: str, topic: str, services_url: str, **overrides: Any
) -> dict:
    """A later-read config (as a dict) pointing at the given servers; `overrides` merge per section."""
    data: dict[str, Any] = {
        "timezone": "Asia/Shanghai",
        "starrocks": {
            "host": mysql.host,
            "port": mysql.port,
            "user": mysql.user,
            "password": mysql.password,
            "database": mysql.database,
            "table": "task_data",
            "batch_size": 1000,
        },
        "tasks": {"ids": list(DEFAULT_TASKS)},
        "redis": {"url": redis_url, "key_prefix": "rec:later_read:", "ttl_seconds": 86400},
        "services": {
            "ab_url": services_url,
            "rec_url": services_url,
            "material_url": services_url,
            "timeout_seconds": 2.0,
            "max_attempts": 3,
        },
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
    """A config dict as TOML (tomli-w: every string escaped, nested tables as [a.b])."""
    return tomli_w.dumps(data)


class Stack:
    """Start (or, unless `own_servers`, reuse via the LATER_READ_TEST_* variables) every server of the
    sandbox."""

    def __init__(
        self, knobs: SimulatorKnobs | None = None, topic: str = "later_read_push", own_servers: bool = False
    ) -> None:
        self.knobs = knobs or SimulatorKnobs()
        self.topic = topic
        self.own_servers = own_servers
        self._exit = ExitStack()

    def __enter__(self) -> Stack:
        own = self.own_servers
        try:
            self.redis = self._exit.enter_context(servers.RedisServer() if own else servers.redis_server())
            self.mysql = self._exit.enter_context(servers.MariaDBServer() if own else servers.mariadb_server())
            self.kafka = self._exit.enter_context(servers.KafkaServer() if own else servers.kafka_server())
            self.simulator = self._exit.enter_context(SimulatorProcess(self.knobs))
            self.kafka.create_topic(self.topic, partitions=3)
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._exit.close()

    def dead(self) -> str | None:
        """The first server (or the simulator) whose process has exited, with its exit code; else None."""
        sim = self.simulator.process
        if sim is None or sim.poll() is not None:
            return f"simulator (exit code {sim.returncode if sim else '?'})"
        for name in ("redis", "mysql", "kafka"):
            child = getattr(self, name).child
            if child is not None and not child.alive():
                code = child.popen.returncode if child.popen else "?"
                return f"{'mariadb' if name == 'mysql' else name} (exit code {code})"
        return None

    def config(self, **overrides: Any) -> dict:
        """The config of these servers; marked `[sandbox] own_servers = true` when the stack started them all."""
        if self.own_servers:
            overrides = {"sandbox": {"own_servers": True}, **overrides}
        return config_dict(
            redis_url=self.redis.url,
            mysql=self.mysql,
            kafka_bootstrap=self.kafka.bootstrap,
            topic=self.topic,
            services_url=self.simulator.url,
            **overrides,
        )

    def write_config(self, path: str | Path, **overrides: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_toml(self.config(**overrides)), encoding="utf-8")
        return path
