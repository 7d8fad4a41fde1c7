"""The table of bad inputs: each row is run by tests/test_bad_input.py and listed in docs/bad-input.md.

A row: (kind, what is wrong, how to apply it, the command, the exact line it must produce, exit code).
Placeholders in commands and lines: <CONFIG> (the config file written for the row), <TMP> (the test's
temporary directory). `python tests/bad_inputs.py` rewrites docs/bad-input.md from this table; a test
checks that the doc is the table's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad-input.md"
E = "later-read: error: "
C = E + "config error in <CONFIG>: "
ENV = E + "config error in the environment: "
NOTE = E + "config error: environment variable {var} names no setting: {problem}; fix or unset the variable"
PREWARM = ["prewarm", "--config", "<CONFIG>"]
REDIS_URL_FORM = "redis://[user:password@]host[:port][/db], rediss://... or unix:///path[?db=N]"
HTTP_FORM = "an http://host[:port][/path] URL"


@dataclass(frozen=True)
class Case:
    kind: str  # config, env, cli, uid, cache value
    what: str  # the bad input, in words
    line: str  # the exact line (stderr for errors; for cache values, show's outcome line)
    code: int
    args: list[str] = field(default_factory=lambda: list(PREWARM))
    edit: tuple[str, str] | None = None  # (old, new) in the shipped config.toml
    env: dict[str, str] = field(default_factory=dict)
    file: str | None = None  # content of <TMP>/input.txt (a uids file)
    value: bytes | None = None  # stored under rec:later_read:u1 before `show u1`
    needs_redis: bool = False
    server: str | None = None  # a fake server the row's config points StarRocks at (<PORT>): "clear_password"
    missing: str | None = None  # a package made unimportable for the row, as if not installed


def cfg(what: str, old: str, new: str, line: str) -> Case:
    return Case("config", what, C + line, 2, edit=(old, new))


def env(what: str, variables: dict[str, str], line: str, code: int = 2) -> Case:
    return Case("env", what, line, code, env=variables)


NOW_9 = "2026-11-23T09:00:00+08:00"
EXPIRED_3 = (
    "hour 3 of 20261123 is expired: its window closed at 2026-11-23T05:00:00+08:00 (start + [push] "
    "catch_up_minutes = 120), so a push now would be stale; add --allow-late to send it anyway"
)
CATCH_UP = "catch_up_minutes = 120 "
REDIS = 'url = "redis://127.0.0.1:6379/0"'
AB = 'ab_url = "http://127.0.0.1:8900"'
CONC = "concurrency = 50             # calls"
LIB = '# "security.protocol" = "SASL_SSL"'

CASES: list[Case] = [
    cfg(
        "Redis URL with a non-numeric port",
        REDIS,
        'url = "redis://127.0.0.1:x/0"',
        f"[redis] url: port 'x' is not a number from 1 to 65535; expected {REDIS_URL_FORM}, "
        'got "redis://127.0.0.1:x/0"',
    ),
    cfg(
        "Redis URL with a port of 99999",
        REDIS,
        'url = "redis://127.0.0.1:99999/0"',
        f"[redis] url: port '99999' is not a number from 1 to 65535; expected {REDIS_URL_FORM}, "
        'got "redis://127.0.0.1:99999/0"',
    ),
    cfg(
        "Redis URL with database x",
        REDIS,
        'url = "redis://127.0.0.1:6379/x"',
        f"[redis] url: database 'x' is not a non-negative integer; expected {REDIS_URL_FORM}, "
        'got "redis://127.0.0.1:6379/x"',
    ),
    cfg(
        "Redis URL with ?db=x",
        REDIS,
        'url = "redis://127.0.0.1:6379?db=x"',
        f"[redis] url: database 'x' is not a non-negative integer; expected {REDIS_URL_FORM}, "
        'got "redis://127.0.0.1:6379?db=x"',
    ),
    cfg(
        "Redis URL without a host",
        REDIS,
        'url = "redis://"',
        f'[redis] url: no host; expected {REDIS_URL_FORM}, got "redis://"',
    ),
    cfg(
        "Redis URL with an http scheme",
        REDIS,
        'url = "http://127.0.0.1:6379"',
        f"[redis] url: scheme must be redis://, rediss:// or unix://, not http; expected {REDIS_URL_FORM}, "
        'got "http://127.0.0.1:6379"',
    ),
    cfg(
        "Redis unix socket without a path",
        REDIS,
        'url = "unix://"',
        f'[redis] url: no socket path; expected {REDIS_URL_FORM}, got "unix://"',
    ),
    cfg(
        "service URL http:// without a host",
        AB,
        'ab_url = "http://"',
        f'[services] ab_url: no host; expected {HTTP_FORM}, got "http://"',
    ),
    cfg(
        "https:// service URL",
        AB,
        'ab_url = "https://ab.internal/v1"',
        "[services] ab_url: https:// is not supported (the HTTP client speaks plain http, as the internal "
        f'services do); expected {HTTP_FORM}, got "https://ab.internal/v1"',
    ),
    cfg(
        "service URL with port 99999",
        AB,
        'ab_url = "http://ab:99999"',
        f"[services] ab_url: port '99999' is not a number from 1 to 65535; expected {HTTP_FORM}, "
        'got "http://ab:99999"',
    ),
    cfg(
        "service URL with a non-numeric port",
        AB,
        'ab_url = "http://ab:eighty"',
        f"[services] ab_url: port 'eighty' is not a number from 1 to 65535; expected {HTTP_FORM}, "
        'got "http://ab:eighty"',
    ),
    cfg(
        "service URL without a scheme",
        AB,
        'ab_url = "127.0.0.1:8900"',
        f'[services] ab_url: scheme must be http://, not missing; expected {HTTP_FORM}, got "127.0.0.1:8900"',
    ),
    cfg(
        "service URL with user:password@",
        'material_url = "http://127.0.0.1:8900"',
        'material_url = "http://u:p@m:80"',
        "[services] material_url: user:password@ and #fragment are not supported; "
        f'expected {HTTP_FORM}, got "http://***@m:80"',
    ),
    cfg(
        "prewarm concurrency of 2,000,000",
        CONC,
        "concurrency = 2000000   # calls",
        "[prewarm] concurrency: expected an integer from 1 to 2,000, got 2000000",
    ),
    cfg(
        "prewarm concurrency 0",
        CONC,
        "concurrency = 0   # calls",
        "[prewarm] concurrency: expected an integer from 1 to 2,000, got 0",
    ),
    cfg(
        "prewarm concurrency true",
        CONC,
        "concurrency = true   # calls",
        "[prewarm] concurrency: expected an integer, got true",
    ),
    cfg(
        "push concurrency -1",
        "concurrency = 50             # material",
        "concurrency = -1  # material",
        "[push] concurrency: expected an integer from 1 to 2,000, got -1",
    ),
    cfg(
        "ttl_seconds = 2**62",
        "ttl_seconds = 86400",
        "ttl_seconds = 4611686018427387904",
        "[redis] ttl_seconds: expected an integer (seconds) from 60 to 2,592,000, got 4611686018427387904",
    ),
    cfg(
        "ttl_seconds = 0",
        "ttl_seconds = 86400",
        "ttl_seconds = 0",
        "[redis] ttl_seconds: expected an integer (seconds) from 60 to 2,592,000, got 0",
    ),
    cfg(
        'ttl_seconds = "1 day"',
        "ttl_seconds = 86400",
        'ttl_seconds = "1 day"',
        '[redis] ttl_seconds: expected an integer, got "1 day"',
    ),
    cfg(
        "redis max_connections 0",
        "max_connections = 32",
        "max_connections = 0",
        "[redis] max_connections: expected an integer from 1 to 10,000, got 0",
    ),
    cfg(
        "redis batch_size 10,000,000",
        "batch_size = 500 ",
        "batch_size = 10000000 ",
        "[redis] batch_size: expected an integer from 1 to 100,000, got 10000000",
    ),
    cfg(
        "empty key_prefix",
        'key_prefix = "rec:later_read:"',
        'key_prefix = ""',
        '[redis] key_prefix: expected a non-empty value, got ""',
    ),
    cfg(
        "StarRocks port 70000",
        "port = 9030",
        "port = 70000",
        "[starrocks] port: expected a port number from 1 to 65,535, got 70000",
    ),
    cfg(
        "StarRocks batch_size -1",
        "batch_size = 5000",
        "batch_size = -1",
        "[starrocks] batch_size: expected an integer from 1 to 100,000, got -1",
    ),
    cfg(
        "StarRocks host with a scheme",
        'host = "127.0.0.1"',
        'host = "mysql://db"',
        '[starrocks] host: expected a host name or IP address, got "mysql://db"',
    ),
    cfg(
        "StarRocks table with SQL in it",
        'table = "task_data"',
        'table = "task_data; DROP TABLE x"',
        '[starrocks] table: expected a plain SQL identifier (letters, digits, _), got "task_data; DROP TABLE x"',
    ),
    cfg(
        "StarRocks read timeout of a day",
        "read_timeout_seconds = 120.0",
        "read_timeout_seconds = 86400",
        "[starrocks] read_timeout_seconds: expected a number > 0 and <= 3,600, got 86400.0",
    ),
    cfg(
        "unknown timezone",
        'timezone = "Asia/Shanghai"',
        'timezone = "Mars/Olympus"',
        'timezone: expected an IANA zone name such as Asia/Shanghai, got "Mars/Olympus"',
    ),
    cfg(
        "task id without {date}",
        'ids = ["04-026-{date}-r0gdua", "04-026-{date}-qk79ub"]',
        'ids = ["04-026-r0gdua"]',
        '[tasks] ids: expected a non-empty list of task ids, each containing {date}, got ["04-026-r0gdua"]',
    ),
    cfg(
        "service timeout of 0",
        "timeout_seconds = 2.0",
        "timeout_seconds = 0",
        "[services] timeout_seconds: expected a number > 0 and <= 300, got 0.0",
    ),
    cfg(
        "service timeout of 10^9 s",
        "timeout_seconds = 2.0",
        "timeout_seconds = 1e9",
        "[services] timeout_seconds: expected a number > 0 and <= 300, got 1000000000.0",
    ),
    cfg(
        "max_attempts 100",
        "max_attempts = 3",
        "max_attempts = 100",
        "[services] max_attempts: expected an integer from 1 to 20, got 100",
    ),
    cfg(
        "backoff_max below backoff_initial",
        "backoff_max_seconds = 2.0",
        "backoff_max_seconds = 0.01",
        "[services] backoff_max_seconds: 0.01 is below backoff_initial_seconds = 0.1",
    ),
    cfg(
        "breaker_min_calls above breaker_window",
        "breaker_min_calls = 50",
        "breaker_min_calls = 500",
        "[services] breaker_min_calls: 500 is above breaker_window = 200: the breaker could never trip",
    ),
    cfg(
        "breaker_failure_ratio 1.5",
        "breaker_failure_ratio = 0.5",
        "breaker_failure_ratio = 1.5",
        "[services] breaker_failure_ratio: expected a ratio in (0, 1], got 1.5",
    ),
    cfg(
        "max_reply_bytes below a card at its field bounds",
        "max_reply_bytes = 262144",
        "max_reply_bytes = 1024",
        "[services] max_reply_bytes: expected an integer (bytes) from 32,768 to 16,777,216, got 1024",
    ),
    cfg(
        "negative QPS cap",
        "ab_qps = 0 ",
        "ab_qps = -5 ",
        "[services] ab_qps: expected a number from 0 to 1,000,000, got -5.0",
    ),
    cfg(
        "wait_for_prewarm_seconds of a day",
        "wait_for_prewarm_seconds = 600",
        "wait_for_prewarm_seconds = 86400",
        "[push] wait_for_prewarm_seconds: expected a number from 0 to 3,600, got 86400.0",
    ),
    cfg(
        "catch_up_minutes of 5",
        CATCH_UP,
        "catch_up_minutes = 5 ",
        "[push] catch_up_minutes: expected an integer (minutes) from 10 to 1,440, got 5",
    ),
    cfg(
        "catch_up_minutes not above the wait for the prewarm",
        CATCH_UP,
        "catch_up_minutes = 10 ",
        "[push] catch_up_minutes: 10 min is not above wait_for_prewarm_seconds = 600 s: an hour could expire "
        "while it waits for the prewarm",
    ),
    cfg(
        "Kafka bootstrap without a port",
        'bootstrap_servers = "127.0.0.1:9092"',
        'bootstrap_servers = "kafka"',
        "[kafka] bootstrap_servers: 'kafka' is not host:port; expected host:port[,host:port...], got \"kafka\"",
    ),
    cfg(
        "Kafka bootstrap with port x",
        'bootstrap_servers = "127.0.0.1:9092"',
        'bootstrap_servers = "k1:9092,k2:x"',
        "[kafka] bootstrap_servers: port 'x' of 'k2:x' is not a number from 1 to 65535; "
        'expected host:port[,host:port...], got "k1:9092,k2:x"',
    ),
    cfg(
        "Kafka topic with a space",
        'topic = "later_read_push"',
        'topic = "later read"',
        '[kafka] topic: expected a Kafka topic name (1-249 characters: letters, digits, . _ -), got "later read"',
    ),
    cfg(
        "librdkafka: unknown property",
        LIB,
        '"foo.bar" = 1',
        '[kafka] librdkafka: librdkafka refuses it: No such configuration property: "foo.bar"',
    ),
    cfg(
        "librdkafka: bad value",
        LIB,
        '"linger.ms" = "soon"',
        '[kafka] librdkafka: librdkafka refuses it: Invalid value for configuration property "queue.buffering.max.ms"',
    ),
    cfg(
        "librdkafka: out of range",
        LIB,
        '"message.timeout.ms" = -5',
        '[kafka] librdkafka: librdkafka refuses it: Configuration property "message.timeout.ms" value -5 is '
        "outside allowed range 0..2147483647",
    ),
    cfg(
        "librdkafka: acks=1 with idempotence",
        LIB,
        '"acks" = "1"',
        "[kafka] librdkafka: librdkafka refuses it: Failed to create producer: `acks` must be set to `all` "
        "when `enable.idempotence` is true",
    ),
    cfg(
        "librdkafka: asking the broker to create the topic",
        LIB,
        '"allow.auto.create.topics" = true',
        "[kafka] librdkafka: allow.auto.create.topics: later-read never creates its topic (a missing topic is "
        "refused by push and rerun alike); remove the property and create the topic",
    ),
    cfg(
        "librdkafka: SASL without credentials",
        LIB,
        '"security.protocol" = "SASL_PLAINTEXT"\n"sasl.mechanism" = "PLAIN"',
        "[kafka] librdkafka: librdkafka refuses it: Failed to create producer: sasl.username and "
        "sasl.password must be set",
    ),
    cfg(
        "Pushgateway URL without a scheme", 'pushgateway_url = ""', 'pushgateway_url = "pushgateway:9091"', "metrics]"
    ),  # replaced below: the exact line is long
    cfg(
        "lock wait of ten days",
        "wait_seconds = 75",
        "wait_seconds = 864000",
        "[lock] wait_seconds: expected seconds 0-86400, got 864000.0",
    ),
    cfg(
        "unknown key in [redis]",
        "ttl_seconds = 86400",
        "ttl_seconds = 86400\nttl = 5",
        "[redis] ttl: unknown key; known keys in [redis]: mode, url, sentinels, service_name, failover_seconds, "
        "wait_replicas, key_prefix, ttl_seconds, max_connections, batch_size, socket_timeout_seconds, "
        "sentinel_password",
    ),
    cfg(
        "unknown [redis] mode",
        'mode = "standalone"',
        'mode = "master"',
        '[redis] mode: expected one of "standalone", "sentinel", "cluster", got "master"',
    ),
    cfg(
        "sentinel mode without sentinels",
        'mode = "standalone"',
        'mode = "sentinel"',
        '[redis] mode = "sentinel" needs sentinels = ["host:port", ...] and service_name = "<master name>"',
    ),
    cfg("[shards] count 0", "count = 1 ", "count = 0 ", "[shards] count: expected an integer from 1 to 1,024, got 0"),
    cfg(
        "missing [kafka] topic",
        'topic = "later_read_push"',
        "",
        "[kafka] topic: missing; set it in the file or in LATER_READ__KAFKA__TOPIC",
    ),
    Case(
        "config",
        "config file that is not TOML",
        E + "config error in <CONFIG>: not valid TOML: Expected ']' "
        "at the end of a table declaration (at line 1, column 7)",
        2,
        edit=("# later-read", "[redis\nbroken\n#"),
    ),
    Case(
        "config",
        "config file that does not exist",
        E + "config error: <TMP>/none.toml not found; pass --config PATH or set LATER_READ_CONFIG",
        2,
        args=["prewarm", "--config", "<TMP>/none.toml"],
    ),
    env(
        "misspelt variable LATER_READ__REDIS__URLL",
        {"LATER_READ__REDIS__URLL": "redis://h:1/0"},
        NOTE.format(
            var="LATER_READ__REDIS__URLL",
            problem="[redis] has no key 'urll' (known: mode, url, sentinels, "
            "service_name, failover_seconds, wait_replicas, key_prefix, ttl_seconds, max_connections, "
            "batch_size, socket_timeout_seconds, sentinel_password)",
        ),
    ),
    env(
        "variable naming no section",
        {"LATER_READ__REDISS__URL": "x"},
        NOTE.format(
            var="LATER_READ__REDISS__URL",
            problem="the top level has no key 'rediss' (known: timezone, "
            "starrocks, tasks, redis, services, prewarm, push, kafka, metrics, lock, shards, monitor, "
            "sandbox)",
        ),
    ),
    env(
        "variable naming a whole table",
        {"LATER_READ__REDIS": "x"},
        NOTE.format(var="LATER_READ__REDIS", problem="[redis] is a table; name a key in it"),
    ),
    env(
        "variable going below a value",
        {"LATER_READ__REDIS__URL__HOST": "x"},
        NOTE.format(var="LATER_READ__REDIS__URL__HOST", problem="[redis] url is a value, not a table"),
    ),
    env(
        "concurrency that is not a number",
        {"LATER_READ__PREWARM__CONCURRENCY": "lots"},
        ENV + '[prewarm] concurrency (from LATER_READ__PREWARM__CONCURRENCY): expected an integer, got "lots"',
    ),
    env(
        "ttl out of bounds from the environment",
        {"LATER_READ__REDIS__TTL_SECONDS": "0"},
        ENV + "[redis] ttl_seconds (from LATER_READ__REDIS__TTL_SECONDS): expected an integer (seconds) from 60 "
        "to 2,592,000, got 0",
    ),
    env(
        "Redis URL with a bad port from the environment",
        {"LATER_READ__REDIS__URL": "redis://h:x/0"},
        ENV + f"[redis] url (from LATER_READ__REDIS__URL): port 'x' is not a number from 1 to 65535; expected "
        f'{REDIS_URL_FORM}, got "redis://h:x/0"',
    ),
    env(
        "LATER_READ_CONFIG naming a missing file",
        {"LATER_READ_CONFIG": "<TMP>/nope.toml"},
        E + "config error: <TMP>/nope.toml not found; pass --config PATH or set LATER_READ_CONFIG",
    ),
    Case(
        "cli",
        "--shard not K/N",
        E + "--shard 'x': expected K/N (shard K of N, counted from 0), e.g. 2/4",
        2,
        args=[*PREWARM, "--shard", "x"],
    ),
    Case(
        "cli",
        "--shard K not below N",
        E + "shard 4/4: expected K/N with N >= 1 and 0 <= K < N, e.g. --shard 2/4",
        2,
        args=[*PREWARM, "--shard", "4/4"],
    ),
    Case(
        "env",
        "[shards] count 4 and no shard index",
        E + "[shards] count = 4 but no shard given: pass --shard "
        "K/4 or run as an Indexed Job (which sets JOB_COMPLETION_INDEX)",
        2,
        env={"LATER_READ__SHARDS__COUNT": "4"},
    ),
    Case(
        "env",
        "JOB_COMPLETION_INDEX beyond [shards] count",
        E + "shard 7/4: expected K/N with N >= 1 and 0 <= K < N, e.g. --shard 2/4",
        2,
        env={"LATER_READ__SHARDS__COUNT": "4", "JOB_COMPLETION_INDEX": "7"},
    ),
    Case(
        "cli",
        "--shard 0/1 (the whole day) while [shards] count = 2",
        E + "--shard 0/1: N is 1 but [shards] count = 2, so it would take other locks than the deployment's runs "
        "and work beside them on the same users; use --shard K/2",
        2,
        args=["push", "--config", "<CONFIG>", "--shard", "0/1"],
        env={"LATER_READ__SHARDS__COUNT": "2"},
    ),
    Case(
        "cli",
        "--shard K/N with N not [shards] count",
        E + "--shard 1/4: N is 4 but [shards] count = 1, so it would take other locks than the deployment's runs "
        "and work beside them on the same users; use --shard K/1, or no --shard",
        2,
        args=[*PREWARM, "--shard", "1/4"],
    ),
    Case(
        "cli",
        "--date in the wrong format",
        E + "--date: expected YYYYMMDD such as 20261123, got '2026-11-23'",
        2,
        args=[*PREWARM, "--date", "2026-11-23"],
    ),
    Case(
        "cli",
        "--date outside 2000-2100",
        E + "--date: 19991231 is outside 2000-2100; check the value",
        2,
        args=[*PREWARM, "--date", "19991231"],
    ),
    Case(
        "cli",
        "--date of seven digits",
        E + "--date: expected YYYYMMDD such as 20261123, got '2026111'",
        2,
        args=[*PREWARM, "--date", "2026111"],
    ),
    Case(
        "cli",
        "--date with a space",
        E + "--date: expected YYYYMMDD such as 20261123, got '20261 1'",
        2,
        args=["push", "--config", "<CONFIG>", "--date", "20261 1"],
    ),
    Case(
        "cli",
        "--concurrency 0",
        E + "Invalid value for '--concurrency': 0 is not in the range 1<=x<=2000. (see `later-read prewarm --help`)",
        2,
        args=[*PREWARM, "--concurrency", "0"],
    ),
    Case(
        "cli",
        "--hour 24",
        E + "Invalid value for '--hour': 24 is not in the range 0<=x<=23. (see `later-read push --help`)",
        2,
        args=["push", "--config", "<CONFIG>", "--hour", "24"],
    ),
    Case(
        "cli",
        "--on-miss maybe",
        E + "Invalid value for '--on-miss': 'maybe' is not one of 'skip', 'live'. (see `later-read push --help`)",
        2,
        args=["push", "--config", "<CONFIG>", "--on-miss", "maybe"],
    ),
    Case(
        "cli",
        "--output without --dry-run",
        E + "--output only goes with --dry-run (a real run sends to Kafka); add --dry-run",
        2,
        args=["push", "--config", "<CONFIG>", "--output", "<TMP>/out.jsonl"],
    ),
    Case(
        "cli",
        "push --hour of an hour whose window has closed",
        E + EXPIRED_3,
        2,
        args=["push", "--config", "<CONFIG>", "--date", "20261123", "--hour", "3", "--now", NOW_9],
    ),
    Case(
        "cli",
        "rerun of an hour whose window has closed",
        E + EXPIRED_3,
        2,
        args=["rerun", "u1", "--config", "<CONFIG>", "--date", "20261123", "--hour", "3", "--now", NOW_9],
    ),
    Case(
        "cli",
        "--now without a UTC offset",
        E + "--now: '2026-11-23T09:00:00' has no UTC offset, so it names a "
        "different instant in every zone; add one, e.g. 2026-11-22T05:05:00+08:00",
        2,
        args=["push", "--config", "<CONFIG>", "--now", "2026-11-23T09:00:00"],
    ),
    Case(
        "cli",
        "--now that is no time",
        E + "--now: expected an ISO 8601 time with an offset such as 2026-11-22T05:05:00+08:00, got 'soon'",
        2,
        args=["day", "--config", "<CONFIG>", "--now", "soon"],
    ),
    Case(
        "cli",
        "--allow-late without --hour",
        E + "--allow-late goes with --hour (a scheduled run never sends an "
        "hour whose window has closed); add --hour H, or drop --allow-late",
        2,
        args=["push", "--config", "<CONFIG>", "--allow-late"],
    ),
    Case(
        "cli",
        "unknown command",
        E + "No such command 'pushh'. Did you mean 'push'? (see `later-read --help`)",
        2,
        args=["pushh"],
    ),
    Case(
        "cli",
        "unknown option",
        E + "No such option '--dry'. Did you mean '--dry-run'? (see `later-read push --help`)",
        2,
        args=["push", "--dry"],
    ),
    Case(
        "cli",
        "--prewarm-only with --push-only",
        E + "--prewarm-only and --push-only exclude each other; "
        "give at most one (neither runs both paths) (see `later-read rerun --help`)",
        2,
        args=["rerun", "u1", "--prewarm-only", "--push-only", "--config", "<CONFIG>"],
    ),
    Case(
        "cli",
        "--report in a missing directory",
        E + "--report: cannot write <TMP>/no/dir/r.json: <TMP>/no/dir is "
        "not a writable directory; create it or pick another path",
        2,
        args=[*PREWARM, "--report", "<TMP>/no/dir/r.json"],
    ),
    Case(
        "cli",
        "--uids-file that does not exist",
        E + "--uids-file: cannot read <TMP>/missing.txt: No such file or directory",
        2,
        args=[*PREWARM, "--uids-file", "<TMP>/missing.txt"],
    ),
    Case(
        "cli",
        "--uids-file with only comments",
        E + "--uids-file: <TMP>/input.txt lists no uids",
        2,
        args=[*PREWARM, "--uids-file", "<TMP>/input.txt"],
        file="# nobody\n\n",
    ),
    Case(
        "cli",
        "--uids-file with an unterminated quoted uid",
        E + '--uids-file <TMP>/input.txt line 2: a quoted uid must end with a closing " (then only a # comment)',
        2,
        args=[*PREWARM, "--uids-file", "<TMP>/input.txt"],
        file='100000001\n"bad uid\n',
    ),
    Case(
        "cli",
        "--uids-file that is not UTF-8",
        E + "--uids-file: <TMP>/input.txt is not UTF-8 text (one uid per line)",
        2,
        args=[*PREWARM, "--uids-file", "<TMP>/input.txt"],
        file="\udcff",
    ),
    Case(
        "uid",
        "empty uid (show)",
        E + "uid: empty; give the uid as StarRocks stores it (quote it in the shell)",
        2,
        args=["show", "", "--config", "<CONFIG>"],
    ),
    Case(
        "uid",
        "empty uid (rerun)",
        E + "uid: empty; give the uid as StarRocks stores it (quote it in the shell)",
        2,
        args=["rerun", "", "--config", "<CONFIG>"],
    ),
    Case(
        "uid",
        "uid of 1,025 bytes",
        E + "uid " + "x" * 40 + "... (1025 characters): longer than 1024 bytes; no job serves it",
        2,
        args=["show", "x" * 1025, "--config", "<CONFIG>"],
    ),
    Case(
        "uid",
        "empty uid in --uids-file",
        E + "--uids-file <TMP>/input.txt line 1: uid: empty; give the uid as "
        "StarRocks stores it (quote it in the shell)",
        2,
        args=[*PREWARM, "--uids-file", "<TMP>/input.txt"],
        file='""\n',
    ),
]

V = b'{"outcome":"rec","date":"20261123","trace_id":"t","rec_id":"r","rec_type":"book","material_id":"m-1"}'
SHOW = ["show", "u1", "--date", "20261123", "--config", "<CONFIG>"]


def value(what: str, raw: bytes, line: str) -> Case:
    return Case("cache value", what, line, 0, args=list(SHOW), value=raw, needs_redis=True)


CASES += [
    value("value that is not JSON", b"{not json", "outcome    corrupt: not JSON: '{not json'"),
    value("value that is a JSON list", b"[1, 2]", "outcome    corrupt: not a JSON object: '[1, 2]'"),
    value(
        "value with an unknown outcome",
        b'{"outcome":"maybe","date":"20261123"}',
        "outcome    corrupt: unknown outcome 'maybe'",
    ),
    value(
        "value whose date is a number",
        b'{"outcome":"rec","date":20261123}',
        'outcome    corrupt: date/trace_id are not strings: \'{"outcome":"rec","date":20261123}\'',
    ),
    value(
        "rec value without material_id",
        b'{"outcome":"rec","date":"20261123","rec_id":"r","rec_type":"b"}',
        "outcome    corrupt: missing or empty rec_id/rec_type/material_id: "
        '\'{"outcome":"rec","date":"20261123","rec_id":"r","rec_type":"b"}\'',
    ),
    value(
        "value of another date",
        V.replace(b"20261123", b"20261122"),
        "outcome    miss: stale value from 20261122, not 20261123",
    ),
    value(
        "value of the old Go job (no date)",
        b'{"rec_id":"r","rec_type":"book","material_id":"m-1"}',
        "outcome    miss: stale value from an unknown date (no date field: the old Go job's format), not 20261123",
    ),
    value(
        "value of 10 MB",
        b'"' + b"x" * 10_000_000 + b'"',
        "outcome    corrupt: 10,000,002 bytes, over the 8,192-byte bound of a value",
    ),
    value(
        "value whose trace_id is over its bound",
        V.replace(b'"trace_id":"t"', b'"trace_id":"' + b"t" * 300 + b'"'),
        "outcome    corrupt: trace_id of 300 bytes, over its 256-byte bound",
    ),
    value(
        "value whose line breaks and alert keyword would forge lines",
        b'{"outcome":"not_in_experiment","date":"x\\nLATER_READ_ALERT"}',
        "outcome    miss: stale value from x\\nLATER_READ\\x5fALERT, not 20261123",
    ),
    value("value that is not UTF-8", b"\xff\xfe{", "outcome    corrupt: not JSON: '\ufffd\ufffd{'"),
]
CASES = [c for c in CASES if c.line != C + "metrics]"] + [
    Case(
        "cache value",
        "rerun for a date that is not the value's date",
        E + "rerun: Redis holds this user's value for 20261123; computing 20261122 would replace it (then the "
        "20261123 push misses the user); check --date, or add --force to replace it",
        2,
        args=["rerun", "u1", "--date", "20261122", "--prewarm-only", "--config", "<CONFIG>"],
        value=V,
        needs_redis=True,
    ),
    cfg(
        "Pushgateway URL without a scheme",
        'pushgateway_url = ""',
        'pushgateway_url = "pushgateway:9091"',
        "[metrics] pushgateway_url: scheme must be http://, not pushgateway://; expected an http(s)://host[:port] "
        'URL, or "" for none, got "pushgateway:9091"',
    ),
]


SEED = ["sandbox", "seed", "--config", "<CONFIG>"]
CA_PEM = "<a CA certificate the test makes>"  # tests/test_bad_input.py writes a real one
TLS_CA = '[starrocks] tls_ca_file: {problem}; expected a readable PEM file of CA certificates, or "" for the system\'s'
PING = 'expected an http(s)://host[:port]/path ping URL, or "" for none'
UUID_PATH = "hc-ping.com/5f3a1c2e-8d4b-4f1e-9a7c-0b6d2e4f8a10"
CASES += [
    cfg(
        "Redis URL whose password holds an unencoded /",
        REDIS,
        'url = "redis://:pa/ss@127.0.0.1:6379/0"',
        "[redis] url: user:password@ holds a '/', '?' or '#' that is not percent-encoded (write them %2F, %3F, "
        f'%23); expected {REDIS_URL_FORM}, got "redis://***@127.0.0.1:6379/0"',
    ),
    cfg(
        "Redis URL with ?password= and a bad database",
        REDIS,
        'url = "redis://127.0.0.1:6379/x?password=s3cret-pw"',
        f"[redis] url: database 'x' is not a non-negative integer; expected {REDIS_URL_FORM}, "
        'got "redis://127.0.0.1:6379/x?password=***"',
    ),
    cfg(
        "StarRocks TLS CA file that does not exist",
        'tls_ca_file = ""',
        'tls_ca_file = "/nonexistent/ca.pem"',
        TLS_CA.format(problem="cannot read it: No such file or directory") + ', got "/nonexistent/ca.pem"',
    ),
    cfg(
        "StarRocks TLS CA file that is not PEM",
        'tls_ca_file = ""',
        'tls_ca_file = "/dev/null"',
        TLS_CA.format(problem="it holds no PEM CA certificate") + ', got "/dev/null"',
    ),
    Case(
        "config",
        "StarRocks TLS CA file while tls = false",
        C + "[starrocks] tls_ca_file: set while tls = false, so "
        'it would not be used; set tls = true or tls_ca_file = ""',
        2,
        edit=('tls_ca_file = ""', 'tls_ca_file = "<TMP>/input.txt"'),
        file=CA_PEM,
    ),
    cfg(
        "ping URL that is not http(s)",
        'prewarm_ping_url = ""',
        f'prewarm_ping_url = "ftp://{UUID_PATH}"',
        f'[monitor] prewarm_ping_url: scheme must be http://, not ftp://; {PING}, got "ftp://hc-ping.com/***"',
    ),
    cfg(
        "ping URL with user:password@",
        'push_ping_url = ""',
        f'push_ping_url = "https://u:pw-1234@{UUID_PATH}"',
        f"[monitor] push_ping_url: user:password@ and #fragment are not supported; {PING}, "
        'got "https://***@hc-ping.com/***"',
    ),
    cfg(
        "ping timeout of a minute",
        "ping_timeout_seconds = 5.0",
        "ping_timeout_seconds = 60",
        "[monitor] ping_timeout_seconds: expected a number > 0 and <= 30, got 60.0",
    ),
    Case(
        "sandbox",
        "sandbox seed with a config that is not the sandbox's",
        E + "sandbox seed: <CONFIG> is not a "
        "sandbox config (no [sandbox] own_servers = true), and the sandbox writes only to servers it started; "
        "pass the config `later-read sandbox up --config-out` wrote",
        2,
        args=list(SEED),
    ),
    Case(
        "sandbox",
        "sandbox seed with only LATER_READ_CONFIG",
        E + "sandbox seed: no --config; sandbox commands "
        "never read $LATER_READ_CONFIG (it may name production); pass --config with the file `later-read sandbox "
        "up` wrote",
        2,
        args=list(SEED),
        env={"LATER_READ_CONFIG": "<CONFIG>"},
    ),
    Case(
        "sandbox",
        "sandbox seed with a sandbox mark but StarRocks elsewhere",
        E + "sandbox seed: [starrocks] "
        "127.0.0.1:9030 in <CONFIG> is no MariaDB the sandbox started (none of its running servers is there); "
        "start them with `later-read sandbox up` and pass the config it writes",
        2,
        args=list(SEED),
        edit=("[monitor]", "[sandbox]\nown_servers = true\n\n[monitor]"),
    ),
    Case(
        "sandbox",
        "sandbox up over a config that is not the sandbox's",
        E + "sandbox up: <CONFIG> exists and is not "
        "a sandbox config (no [sandbox] own_servers = true); refusing to overwrite it: pass another --config-out",
        2,
        args=["sandbox", "up", "--config-out", "<CONFIG>"],
    ),
    Case(
        "install",
        "the sandbox not installed (a production install)",
        E + "the sandbox is not installed: pip "
        "install 'later-read[sandbox]' (from a checkout: pip install -e '.[sandbox]' -e ./sandbox)",
        2,
        args=["sandbox", "up", "--users", "5"],
        missing="later_read_sandbox",
    ),
    Case(
        "server",
        "StarRocks asking for the password in clear text without TLS",
        E + "StarRocks at 127.0.0.1:<PORT> "
        "asked for the password in clear text (mysql_clear_password) on a connection without TLS; refused, the "
        "password was not sent; set [starrocks] tls = true (and tls_ca_file), or check that host/port is really "
        "StarRocks",
        3,
        needs_redis=True,
        server="clear_password",
    ),
]


def render_doc() -> str:
    """docs/bad-input.md: the table, generated from CASES."""
    head = [
        "# Bad inputs and what later-read says",
        "",
        "Every bad input tried, with the exact line it produces and the exit code (README: 2 = bad",
        "configuration or command-line input, nothing was done; `show` exits 0 whatever the value is, its",
        "`outcome` line is shown). Each row is a test: `tests/test_bad_input.py` runs it from the table in",
        "`tests/bad_inputs.py`, which also writes this page (`python tests/bad_inputs.py`). `<CONFIG>` stands",
        "for the config file's path, `<TMP>` for a temporary directory. Config rows run `later-read prewarm",
        "--config <CONFIG>` with one change to the shipped `config.toml`. Sandbox rows show that a sandbox",
        "command that writes touches nothing it did not start (no connection is opened). Server rows point",
        "`[starrocks]` at a fake server the test runs on port `<PORT>` (and `[redis]` at a real one); their",
        "line is the run's last. The install row runs with the sandbox unimportable, as in a production",
        "install, which does not contain it.",
        "",
        f"{len(CASES)} inputs.",
        "",
        "| # | kind | bad input | command | exit | line |",
        "|---|---|---|---|---|---|",
    ]
    rows = []
    for number, case in enumerate(CASES, 1):
        change = (
            f"`{case.edit[1]}`".replace("\n", "` + `")
            if case.edit
            else " ".join(f"`{k}={v}`" for k, v in case.env.items())
        )
        what = case.what + (f": {change}" if change and change != "``" else "")
        command = "later-read " + " ".join(a if a and len(a) < 60 else repr(a[:20] + "...") for a in case.args)
        rows.append(
            f"| {number} | {case.kind} | {_cell(what)} | `{_cell(command)}` | {case.code} | `{_cell(case.line)}` |"
        )
    return "\n".join(head + rows) + "\n"


def _cell(text: str) -> str:
    text = text if len(text) <= 400 else text[:200] + "..."
    return text.replace("|", "\\|").replace("\n", "\\n").replace("`", "'")


if __name__ == "__main__":
    DOC.write_text(render_doc(), encoding="utf-8")
    print(f"wrote {DOC} ({len(CASES)} inputs)")
