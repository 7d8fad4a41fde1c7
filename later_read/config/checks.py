"""The checks and bounds every setting is held to (see `config`): each a dict of `check` and `expected`
that `config._build` applies, so a bad value is refused with one line naming what is expected."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from later_read.config import urls
from later_read.core.bounds import MAX_REPLY_BYTES, MIN_REPLY_BYTES


def check(test: Callable[[Any], bool | str], expected: str) -> dict:
    """A field check: `test(value)` is True (fine), False, or a string saying what is wrong."""
    return {"check": test, "expected": expected}


def between(low: float, high: float, what: str = "a number") -> dict:
    return check(lambda v: low <= v <= high, f"{what} from {low:_} to {high:_}".replace("_", ","))


def above(low: float, high: float) -> dict:
    return check(lambda v: low < v <= high, f"a number > {low:_} and <= {high:_}".replace("_", ","))


# Upper bounds: far above any sane production value, low enough that a typo (an extra zero run, 2**62)
# is refused before the job starts instead of failing at Redis or growing until the kernel kills it.
CONCURRENCY = between(1, 2000, "an integer")  # the CLI's --concurrency range; 2000 in flight ~ 40 MB
TIMEOUT = above(0, 3600)  # one request, query or flush: an hour is already a hang
INTERVAL = above(0, 3600)
GRACE = between(0, 3600)
BATCH = between(1, 100_000, "an integer")  # rows / keys per round trip
TTL = between(60, 30 * 86400, "an integer (seconds)")  # Redis EXPIRE; a value lives a day
QPS = between(0, 1_000_000)
REPLICAS = between(0, 16, "an integer")  # WAIT numreplicas: more than a Redis group ever has
SHARDS = between(1, 1024, "an integer")  # Indexed Job completions; each shard is a process
# A reply's body: a material card at every field bound must fit (32 KiB); past 16 MiB memory is unbounded again.
REPLY_BYTES = between(MIN_REPLY_BYTES, MAX_REPLY_BYTES, "an integer (bytes)")
# Minutes an hour stays sendable after its start. Under 10, an on-time run that waits out a dead run's
# lock (75 s) or starts in a slow pod could find its own hour closed; over a day, "today's" push would
# overlap tomorrow's.
CATCH_UP = between(10, 1440, "an integer (minutes)")
RATIO = check(lambda v: 0 < v <= 1, "a ratio in (0, 1]")
NON_EMPTY = check(lambda v: len(v) > 0, "a non-empty value")
PORT = between(1, 65535, "a port number")
TASK_IDS = check(
    lambda v: len(v) > 0 and all("{date}" in t for t in v), "a non-empty list of task ids, each containing {date}"
)
SQL_NAME = check(lambda v: v.replace("_", "").isalnum(), "a plain SQL identifier (letters, digits, _)")
HOST = check(lambda v: bool(v.strip()) and not any(c.isspace() or c in "/:@" for c in v), "a host name or IP address")
TOPIC = check(
    lambda v: re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v) is not None,
    "a Kafka topic name (1-249 characters: letters, digits, . _ -)",
)
HTTP_URL = check(lambda v: urls.http_problem(v) or True, "an http://host[:port][/path] URL")
REDIS_URL = check(
    lambda v: urls.redis_problem(v) or True,
    "redis://[user:password@]host[:port][/db], rediss://... or unix:///path[?db=N]",
)
PUSHGATEWAY_URL = check(
    lambda v: not v or urls.http_problem(v, https_ok=True) or True, 'an http(s)://host[:port] URL, or "" for none'
)
PING_URL = check(
    lambda v: not v or urls.http_problem(v, https_ok=True) or True,
    'an http(s)://host[:port]/path ping URL, or "" for none',
)
CA_FILE = check(
    lambda v: not v or ca_file_problem(v) or True, 'a readable PEM file of CA certificates, or "" for the system\'s'
)
BOOTSTRAP = check(lambda v: urls.bootstrap_problem(v) or True, "host:port[,host:port...]")


def ca_file_problem(path: str) -> str | None:
    """What stops `path` from serving as TLS CA certificates (missing, unreadable, not PEM), or None."""
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        return "it holds no PEM CA certificate"
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    return None


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


REDIS_MODES = ("standalone", "sentinel", "cluster")
REDIS_MODE = check(lambda v: v in REDIS_MODES, 'one of "standalone", "sentinel", "cluster"')
HOST_PORTS = check(
    lambda v: len(v) > 0 and all(host_port(a) is not None for a in v), 'a non-empty list of "host:port" strings'
)


def host_port(text: str) -> tuple[str, int] | None:
    """("host", port) from "host:port", or None when it is not one."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)
