"""The fault lab: real servers the faults can kill, one fresh day per run, jobs run as processes.

    with Lab() as lab:
        day = lab.new_day(users=2000, rng)     # own database, topic, flushed Redis
        job = lab.start(day, "push")           # `python -m later_read push ...` with stderr to a file
        lab.wait_for(lambda: lab.messages(day) >= 500, job)
        job.kill()

Redis runs with an fsync'ed append-only file so "killed and restarted, same port, same data" is what a
restarted production Redis gives back; Kafka and MariaDB are the sandbox's own servers, which restart on
the same ports and directories. The simulator runs on a fixed port so it can be stopped (connections
refused) and started again at the same address.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition

from later_read_sandbox import seed as seeding, servers
from later_read_sandbox.simulator import SimulatorKnobs, SimulatorProcess
from later_read_sandbox.stack import DEFAULT_TASKS, config_dict, render_toml

DATE = "20261123"
HOUR = 9
NOW = "2026-11-23T09:01:00+08:00"  # every push runs at its hour (--now): inside the hour's window
# Knobs of every run: latencies that spread a few thousand users over seconds (so a random point falls
# inside the work), short timeouts and waits (so a fault costs seconds, not minutes).
KNOBS = {
    "ab": {"latency_ms": 4},
    "rec": {"latency_ms": 8},
    "material": {"latency_ms": 40},
    "materials": 400,
    "timeout_hold_seconds": 5,
}
OVERRIDES: dict[str, dict[str, Any]] = {
    "starrocks": {"batch_size": 250},
    "services": {
        "timeout_seconds": 1.0,
        "max_attempts": 3,
        "backoff_initial_seconds": 0.02,
        "backoff_max_seconds": 0.2,
    },
    "prewarm": {"concurrency": 20, "grace_seconds": 3, "progress_interval_seconds": 60},
    "push": {
        "concurrency": 6,
        "grace_seconds": 3,
        "flush_timeout_seconds": 20,
        "wait_for_prewarm_seconds": 0,
        "progress_interval_seconds": 60,
    },
    "kafka": {"librdkafka": {"message.timeout.ms": 30000}},
    # The shipped relation (wait a little over the TTL: a dead holder's lock expires inside the wait) at a
    # quarter of the scale, so a kill -9 run waits ~15 s instead of ~60 s for the dead run's lock.
    "lock": {"ttl_seconds": 15, "wait_seconds": 20},
}


class DurableRedis(servers.RedisServer):
    """redis-server with appendonly + appendfsync always: a kill -9 loses nothing it acknowledged."""

    PERSISTENCE = ("--appendonly", "yes", "--appendfsync", "always")


@dataclass
class Day:
    """One run's world: its database, topic, config, and the users it must end with (spread over `hours`)."""

    name: str
    users: int
    database: servers.MySQLDatabase
    topic: str
    config: Path
    logs: Path
    hours: tuple[int, ...] = (HOUR,)
    sections: dict = field(default_factory=dict)  # the config's sections (a variant starts from them)
    jobs: list[Job] = field(default_factory=list)


class Job:
    """One `later-read` process; stderr goes to a file the checks read afterwards."""

    def __init__(self, argv: list[str], log: Path) -> None:
        env = servers.python_env()
        self.argv, self.log = argv, log
        with log.open("wb") as err:
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        self.code: int | None = None
        self.faulted_at: float | None = None  # when a fault hit it (signal, server killed, ...)
        self.ended_at: float | None = None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.process.wait()
        self.ended_at = time.monotonic()

    @property
    def stop_seconds(self) -> float | None:
        """From the fault to the process's exit."""
        if self.faulted_at is None or self.ended_at is None:
            return None
        return round(max(self.ended_at - self.faulted_at, 0.0), 2)

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        self.faulted_at = time.monotonic()
        if self.alive():
            self.process.send_signal(signum)

    def wait(self, timeout: float = 300) -> int:
        try:
            self.code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.code = self.process.wait(10)
            self.log.open("a").write(f"\nFAULT LAB: killed after {timeout:g} s without exiting\n")
        return self.code

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


class Lab:
    """The servers, started once; `new_day` gives each run its own slice of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis = DurableRedis()
        self.mariadb = servers.MariaDBServer()
        self.kafka = servers.KafkaServer()
        self.simulator = SimulatorProcess(SimulatorKnobs.from_dict(KNOBS), port=servers.free_port())
        self._client: redis.Redis | None = None
        self._consumer: Consumer | None = None

    def __enter__(self) -> Lab:
        try:
            for server in (self.redis, self.mariadb, self.kafka, self.simulator):
                server.start()
        except BaseException:
            self.close()
            raise
        self._client = self.redis.client(socket_timeout=2)
        self._consumer = Consumer({"bootstrap.servers": self.kafka.bootstrap, "group.id": "fault-lab", "log_level": 0})
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        for server in (self.simulator, self.kafka, self.mariadb, self.redis):
            server.stop()

    # One run's world -------------------------------------------------------------------------------
    def new_day(self, users: int, hours: tuple[int, ...] = (HOUR,), **overrides: dict) -> Day:
        """A fresh database seeded with `users` spread over `hours`, a topic, a flushed Redis, a config."""
        name = f"f{uuid.uuid4().hex[:10]}"
        database = self.mariadb.create_database(name)
        conn = seeding.connect(database.host, database.port, database.user, database.password, name)
        try:
            seeding.seed_day(conn, DATE, users, DEFAULT_TASKS, hours=hours)
        finally:
            conn.close()
        topic = self.kafka.create_topic(name, partitions=3)
        self.redis_client().flushdb()
        self.simulator.configure(**SimulatorKnobs.from_dict(KNOBS).to_dict())
        logs = self.workdir / name
        logs.mkdir(parents=True)
        sections = {k: dict(v) for k, v in OVERRIDES.items()}
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        day = Day(name, users, database, topic, logs / "config.toml", logs, tuple(hours), sections)
        self.write_config(day, day.config)
        return day

    def write_config(self, day: Day, path: Path, **overrides: dict) -> Path:
        """The day's config at `path`, with `overrides` (sections) on top of the day's own."""
        sections = {k: dict(v) for k, v in day.sections.items()}
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        data = config_dict(
            redis_url=self.redis.url,
            mysql=day.database,
            kafka_bootstrap=self.kafka.bootstrap,
            topic=day.topic,
            services_url=self.simulator.url,
            **sections,
        )
        path.write_text(render_toml(data), encoding="utf-8")
        return path

    def drop_day(self, day: Day) -> None:
        self.mariadb.drop_database(day.name)
        self.kafka.delete_topic(day.topic)

    def start(self, day: Day, job: str, *extra: str, config: Path | None = None) -> Job:
        argv = [
            sys.executable,
            "-m",
            "later_read",
            job,
            "--config",
            str(config or day.config),
            "--date",
            DATE,
            *(("--hour", str(HOUR), "--now", NOW) if job == "push" else ()),
            *extra,
        ]
        return self._run(day, job, argv)

    def scheduled(self, day: Day, now: str, config: Path | None = None) -> Job:
        """`push --now NOW`: the scheduled run (a CronJob's) at that time; its hours from the schedule."""
        argv = [sys.executable, "-m", "later_read", "push", "--config", str(config or day.config), "--now", now]
        return self._run(day, "push", argv)

    def _run(self, day: Day, job: str, argv: list[str]) -> Job:
        started = Job(argv, day.logs / f"{len(day.jobs):02d}-{job}.log")
        day.jobs.append(started)
        return started

    # Observing a run -------------------------------------------------------------------------------
    def redis_client(self) -> redis.Redis:
        assert self._client is not None, "the lab is not started"
        return self._client

    def redis_keys(self) -> int:
        """DBSIZE, or -1 while Redis is down (a fault may have killed it)."""
        try:
            return int(self.redis_client().dbsize())
        except redis.RedisError:
            return -1

    def messages(self, day: Day) -> int:
        """Messages in the day's topic (sum of the partitions' end offsets), -1 if Kafka is down."""
        assert self._consumer is not None
        try:
            return sum(
                self._consumer.get_watermark_offsets(TopicPartition(day.topic, p), timeout=2)[1] for p in range(3)
            )
        except Exception:  # noqa: BLE001 - a broker a fault killed: "unknown" this poll
            return -1

    @staticmethod
    def wait_for(condition: Callable[[], bool], job: Job, timeout: float = 120) -> bool:
        """Poll `condition` every 20 ms until it holds (True) or the job exited / time ran out (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if not job.alive():
                return False
            time.sleep(0.02)
        return False
