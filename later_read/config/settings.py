"""Settings: a TOML file, then environment overrides, checked strictly before anything runs.

Where the file comes from: `--config PATH`, else `$LATER_READ_CONFIG`, else `./config.toml`.
Every key can be overridden from the environment as `LATER_READ__<SECTION>__<KEY>` (upper case,
double underscores between levels), e.g. `LATER_READ__REDIS__URL`, `LATER_READ__TIMEZONE`,
`LATER_READ__STARROCKS__PASSWORD` (the way to pass passwords), and for the librdkafka pass-through
table `LATER_READ__KAFKA__LIBRDKAFKA__SASL_PASSWORD` (underscores become dots: `sasl.password`).

Any problem (unparsable TOML, unknown key, wrong type, missing value, value out of range) raises
ConfigError with one line naming the key and what is expected; the CLI exits 2.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from later_read.config.checks import (
    BATCH,
    BOOTSTRAP,
    CA_FILE,
    CATCH_UP,
    CONCURRENCY,
    GRACE,
    HOST,
    HOST_PORTS,
    HTTP_URL,
    INTERVAL,
    NON_EMPTY,
    PING_URL,
    PORT,
    PUSHGATEWAY_URL,
    QPS,
    RATIO,
    REDIS_MODE,
    REDIS_URL,
    REPLICAS,
    REPLY_BYTES,
    SHARDS,
    SQL_NAME,
    TASK_IDS,
    TIMEOUT,
    TOPIC,
    TTL,
    above,
    between,
    check,
    host_port,
    valid_zone,
)
from later_read.config.env import TYPE_WORDS, EnvValue, apply_env, env_name, from_env, key_label, show
from later_read.core.bounds import DEFAULT_MAX_REPLY_BYTES
from later_read.errors import ConfigError
from later_read.redact import register_config

ENV_CONFIG_PATH = "LATER_READ_CONFIG"
REQUIRED: Any = dataclasses.MISSING


@dataclass(frozen=True, kw_only=True)
class StarRocksSettings:
    """`[starrocks]`: where the users' rows are read (the server, its credentials and TLS, the table, the page size)."""

    host: str = field(default=REQUIRED, metadata=HOST)
    port: int = field(default=9030, metadata=PORT)
    user: str = field(default=REQUIRED, metadata=NON_EMPTY)
    password: str = ""
    database: str = field(default=REQUIRED, metadata=SQL_NAME)
    table: str = field(default="task_data", metadata=SQL_NAME)
    batch_size: int = field(default=5000, metadata=BATCH)
    connect_timeout_seconds: float = field(default=5.0, metadata=TIMEOUT)
    read_timeout_seconds: float = field(default=120.0, metadata=TIMEOUT)
    # TLS (clients/starrocks_login.py): the server's certificate is always verified, against tls_ca_file ("" = the
    # system's CAs); tls_verify_host also checks its name against `host`. Without TLS a server asking for the
    # password in clear text (mysql_clear_password) is refused before the password is sent.
    tls: bool = False
    tls_ca_file: str = field(default="", metadata=CA_FILE)
    tls_verify_host: bool = True

    def problems(self) -> list[tuple[str, str]]:
        if self.tls_ca_file and not self.tls:
            return [
                ("tls_ca_file", ('set while tls = false, so it would not be used; set tls = true or tls_ca_file = ""'))
            ]
        return []


@dataclass(frozen=True, kw_only=True)
class TaskSettings:
    """`[tasks]`: the task ids whose rows name the day's users (`{date}` is replaced by the date)."""

    ids: list[str] = field(default=REQUIRED, metadata=TASK_IDS)


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    """`[redis]`: the deployment (standalone, sentinel, cluster), the keys' prefix and TTL, batches and timeouts."""

    # standalone: the server; cluster: any node (the others are discovered); sentinel: optional, only
    # its password, database number and scheme (rediss:// = TLS) are used for the master.
    mode: str = field(default="standalone", metadata=REDIS_MODE)
    url: str = field(default="", metadata=REDIS_URL)
    sentinels: list[str] = field(default_factory=list, metadata=HOST_PORTS)  # sentinel mode
    service_name: str = ""  # sentinel mode: the monitored master's name
    # sentinel and cluster modes: how long one Redis call keeps retrying (re-discovering the master or
    # the slot map) through a failover before the job stops with exit 3. Sentinel needs about
    # down-after-milliseconds + a few seconds; Redis Cluster about 2 x cluster-node-timeout.
    failover_seconds: float = field(default=30.0, metadata=GRACE)
    # standalone/sentinel: after each batch of values or sent markers, WAIT until this many replicas have
    # it (0 = do not wait). 1 closes the window where a killed master takes acknowledged writes with it.
    wait_replicas: int = field(default=0, metadata=REPLICAS)
    key_prefix: str = field(default="rec:later_read:", metadata=NON_EMPTY)
    ttl_seconds: int = field(default=86400, metadata=TTL)
    max_connections: int = field(default=32, metadata=between(1, 10_000, "an integer"))
    batch_size: int = field(default=500, metadata=BATCH)  # keys per MGET / pipelined write batch
    socket_timeout_seconds: float = field(default=5.0, metadata=TIMEOUT)
    sentinel_password: str = ""  # sentinel mode: the sentinels' own password (their requirepass), if any

    def __post_init__(self) -> None:
        if self.mode == "sentinel" and not (self.sentinels and self.service_name):
            raise ConfigError(
                '[redis] mode = "sentinel" needs sentinels = ["host:port", ...] and service_name = "<master name>"'
            )
        if self.mode != "sentinel" and not self.url:
            raise ConfigError(
                f'[redis] url: missing; mode = "{self.mode}" needs it (cluster: any '
                "node's URL); set it in the file or in LATER_READ__REDIS__URL"
            )

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [host_port(a) for a in self.sentinels]  # type: ignore[misc]


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """`[services]`: the three services' URLs, timeouts, retries, rate caps, breaker and reply bound."""

    ab_url: str = field(default=REQUIRED, metadata=HTTP_URL)
    rec_url: str = field(default=REQUIRED, metadata=HTTP_URL)
    material_url: str = field(default=REQUIRED, metadata=HTTP_URL)
    timeout_seconds: float = field(default=2.0, metadata=above(0, 300))
    max_attempts: int = field(default=3, metadata=between(1, 20, "an integer"))
    backoff_initial_seconds: float = field(default=0.1, metadata=between(0, 60))
    backoff_max_seconds: float = field(default=2.0, metadata=between(0, 600))
    # Per-service request rate caps in requests/s; 0 means no cap beyond the concurrency bound.
    ab_qps: float = field(default=0.0, metadata=QPS)
    rec_qps: float = field(default=0.0, metadata=QPS)
    material_qps: float = field(default=0.0, metadata=QPS)
    # Circuit breaker: over the last `breaker_window` calls to one service (after at least
    # `breaker_min_calls`), a failure ratio above `breaker_failure_ratio` stops the job.
    breaker_window: int = field(default=200, metadata=between(1, 100_000, "an integer"))
    breaker_min_calls: int = field(default=50, metadata=between(1, 100_000, "an integer"))
    breaker_failure_ratio: float = field(default=0.5, metadata=RATIO)
    # The most body one reply may carry; a longer one (or a field over its bound) fails that user with
    # `oversize_reply`, is never retried or stored (core/bounds.py: the largest card is < 160 KiB).
    max_reply_bytes: int = field(default=DEFAULT_MAX_REPLY_BYTES, metadata=REPLY_BYTES)

    def problems(self) -> list[tuple[str, str]]:
        """(key, what is wrong) for values that are fine alone but not together."""
        found = []
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            found.append(
                (
                    "backoff_max_seconds",
                    (
                        f"{self.backoff_max_seconds:g} is below "
                        f"backoff_initial_seconds = {self.backoff_initial_seconds:g}"
                    ),
                )
            )
        if self.breaker_min_calls > self.breaker_window:
            found.append(
                (
                    "breaker_min_calls",
                    (
                        f"{self.breaker_min_calls} is above breaker_window = "
                        f"{self.breaker_window}: the breaker could never trip"
                    ),
                )
            )
        return found


@dataclass(frozen=True, kw_only=True)
class PrewarmSettings:
    """`[prewarm]`: calls in flight, progress lines, the grace after a signal, adaptive concurrency."""

    concurrency: int = field(default=50, metadata=CONCURRENCY)  # calls in flight to each service (fanout.py)
    progress_interval_seconds: float = field(default=10.0, metadata=INTERVAL)
    grace_seconds: float = field(default=20.0, metadata=GRACE)
    # Find the calls in flight each service sustains (clients/adaptive.py); `concurrency` is the bound.
    adaptive: bool = False


@dataclass(frozen=True, kw_only=True)
class PushSettings:
    """`[push]`: concurrency, the wait for the prewarm, miss handling, the flush bound, catch-up."""

    concurrency: int = field(default=50, metadata=CONCURRENCY)
    progress_interval_seconds: float = field(default=10.0, metadata=INTERVAL)
    grace_seconds: float = field(default=20.0, metadata=GRACE)
    wait_for_prewarm_seconds: float = field(default=600.0, metadata=between(0, 3600))
    miss_log_limit: int = field(default=20, metadata=between(0, 10_000, "an integer"))
    live_budget: int = field(default=1000, metadata=between(0, 1_000_000, "an integer"))
    flush_timeout_seconds: float = field(default=30.0, metadata=TIMEOUT)
    # Hour H is sent from H:00 until H:00 + this many minutes (later_read/core/schedule.py); past it, never.
    catch_up_minutes: int = field(default=120, metadata=CATCH_UP)

    def problems(self) -> list[tuple[str, str]]:
        """(key, what is wrong) for values that are fine alone but not together."""
        if self.catch_up_minutes * 60 <= self.wait_for_prewarm_seconds:
            return [
                (
                    "catch_up_minutes",
                    (
                        f"{self.catch_up_minutes} min is not above wait_for_prewarm_seconds = "
                        f"{self.wait_for_prewarm_seconds:g} s: an hour could expire while "
                        "it waits for the prewarm"
                    ),
                )
            ]
        return []


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """`[kafka]`: the brokers, the topic, and the librdkafka properties passed through."""

    bootstrap_servers: str = field(default=REQUIRED, metadata=BOOTSTRAP)
    topic: str = field(default=REQUIRED, metadata=TOPIC)
    librdkafka: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        """librdkafka's own verdict on the pass-through table (a producer built, never connected)."""
        if not self.librdkafka:
            return []
        from later_read.config.kafka import librdkafka_problem

        problem = librdkafka_problem(self.librdkafka)
        return [("librdkafka", problem)] if problem else []


@dataclass(frozen=True, kw_only=True)
class ShardSettings:
    """`[shards]`: how many shards split a day."""

    # How many shards (Kubernetes Indexed Job completions) split a day; the shard index comes from
    # --shard K/N or JOB_COMPLETION_INDEX. 1 = no sharding.
    count: int = field(default=1, metadata=SHARDS)


@dataclass(frozen=True, kw_only=True)
class MetricsSettings:
    """`[metrics]`: where a run writes its figures (a textfile directory, a Pushgateway), if anywhere."""

    textfile_dir: str = ""  # node_exporter textfile collector directory; "" disables
    pushgateway_url: str = field(default="", metadata=PUSHGATEWAY_URL)  # Pushgateway base URL; "" disables

    @property
    def enabled(self) -> bool:
        """A sink is configured: the run writes metrics."""
        return bool(self.textfile_dir or self.pushgateway_url)


@dataclass(frozen=True, kw_only=True)
class LockSettings:
    """`[lock]`: the job lock's TTL and how long a run waits for another run's lock."""

    # The holder refreshes its lock every ttl/3, so a killed run's lock is gone within ttl_seconds.
    ttl_seconds: int = field(default=60, metadata=check(lambda v: 3 <= v <= 3600, "an integer 3-3600"))
    # A run that finds the lock held waits this long (a little over ttl_seconds, so a dead holder's lock
    # expires and is taken over); 0 = fail at once with exit 5. `--lock-wait SECONDS` overrides it.
    wait_seconds: float = field(default=75.0, metadata=check(lambda v: 0 <= v <= 86400, "seconds 0-86400"))


@dataclass(frozen=True, kw_only=True)
class MonitorSettings:
    """`[monitor]`: the dead-man's switch ping URLs of each job."""

    # Dead-man's switch pings (healthchecks.io style, monitor.py): <url>/start as a run starts, <url> when
    # it exits 0, <url>/fail otherwise (POST body: exit_code=N and the run's last line). "" = off.
    prewarm_ping_url: str = field(default="", metadata=PING_URL)
    push_ping_url: str = field(default="", metadata=PING_URL)
    ping_timeout_seconds: float = field(default=5.0, metadata=above(0, 30))  # each ping, all included


@dataclass(frozen=True, kw_only=True)
class SandboxSettings:
    """`[sandbox]`: set only in the configs the local sandbox writes."""

    # Written only by `later-read sandbox up|demo` into the config they generate, which points at servers they
    # started; `later-read sandbox seed` refuses a config without it. Never set it in a production config.
    own_servers: bool = False


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The whole config: every section, the push timezone, and the file it came from."""

    timezone: str = field(
        default="Asia/Shanghai", metadata=check(valid_zone, "an IANA zone name such as Asia/Shanghai")
    )
    starrocks: StarRocksSettings = REQUIRED
    tasks: TaskSettings = REQUIRED
    redis: RedisSettings = REQUIRED
    services: ServiceSettings = REQUIRED
    prewarm: PrewarmSettings = field(default_factory=PrewarmSettings)
    push: PushSettings = field(default_factory=PushSettings)
    kafka: KafkaSettings = REQUIRED
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    lock: LockSettings = field(default_factory=LockSettings)
    shards: ShardSettings = field(default_factory=ShardSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    source: str = field(default="", metadata={"internal": True})

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """The config file to read: the explicit path, else $LATER_READ_CONFIG, else ./config.toml."""
    return Path(explicit or os.environ.get(ENV_CONFIG_PATH) or "config.toml")


def load_settings(path: str | os.PathLike | None = None, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """Read, merge with the environment and check the settings; ConfigError on any problem."""
    file = config_path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config error: {file} not found; pass --config PATH or set {ENV_CONFIG_PATH}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config error in {file}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config error: cannot read {file}: {exc.strerror}") from None
    apply_env(raw, os.environ if environ is None else environ, Settings)
    register_config(raw)  # before any check: a config error quoting a secret is scrubbed too
    try:
        settings = _build(Settings, raw, "")
    except ConfigError as exc:
        where = "the environment" if "(from LATER_READ__" in str(exc) else file
        raise ConfigError(f"config error in {where}: {exc}") from None
    return dataclasses.replace(settings, source=str(file))


def _build(cls: type, raw: Any, where: str):
    label = f"[{where}]" if where else "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a table, got {show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{key_label(where, unknown[0])}: unknown key; known keys in {label}: {', '.join(fields)}")
    values = {}
    for name, spec in fields.items():
        if name not in raw:
            if spec.default is REQUIRED and spec.default_factory is REQUIRED:
                raise ConfigError(
                    f"{key_label(where, name)}: missing; set it in the file or in {env_name(where, name)}"
                )
            continue
        values[name] = _value(hints[name], raw[name], spec, where)
    built = cls(**values)
    for name, problem in getattr(built, "problems", list)():
        raise ConfigError(f"{key_label(where, name)}: {problem}")
    return built


def _value(hint: Any, value: Any, spec: dataclasses.Field, where: str) -> Any:
    key = key_label(where, spec.name)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{where}.{spec.name}" if where else spec.name)
    checked = _coerce(hint, value, key)
    check = spec.metadata.get("check")
    verdict = True if check is None else check(checked)
    if verdict is not True:
        origin = f" (from {value.variable})" if isinstance(value, EnvValue) else ""
        problem = f"{verdict}; " if isinstance(verdict, str) else ""
        raise ConfigError(f"{key}{origin}: {problem}expected {spec.metadata['expected']}, got {show(checked)}")
    return checked


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check a TOML value against the field type; environment strings are converted first."""
    origin = typing.get_origin(hint) or hint
    if isinstance(value, EnvValue):
        value = from_env(origin, value, key)
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{key}: expected a list of strings, got {show(value)}")
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(v, (str, int, float, bool)) for v in value.values()):
            return {str(k): (str(v) if isinstance(v, EnvValue) else v) for k, v in value.items()}
        raise ConfigError(f"{key}: expected a table of strings, numbers or booleans, got {show(value)}")
    if isinstance(value, origin) and not (origin is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{key}: expected {TYPE_WORDS[origin]}, got {show(value)}")
