"""`later-read check`: is every dependency reachable and usable, one line each, before cron finds out.

The config was already validated by loading it (a bad one never gets here: ConfigError, exit 2). Then
every dependency is probed concurrently, each in isolation (its own client, its own timeout), so a dead
Redis neither hangs the command nor hides the state of the others:

    ok   starrocks  root@127.0.0.1:9030/later_read.task_data  3.1 ms  query on task_data: 1 row ...
    FAIL redis      redis://127.0.0.1:6379/0  0.6 ms  Redis at ... unreachable ...; check [redis] url ...

Probes do what the jobs do, without side effects: a LIMIT 1 read of today's task rows, PING plus a
scratch key written, read and deleted, the topic's metadata (nothing is produced), and one contract
request to each HTTP service for the probe uid `later-read-check`. Secrets are never printed: targets
are built without passwords and every line goes through `redact` (URL passwords, the configured secrets).
What a service or a server says is printed escaped (`log.quote` for values, `log.printable` for each line),
so a trace_id with a newline cannot start a line of its own or forge an alert line.

Exit code: 0 when every line is ok, 3 (dependency) when any failed.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from later_read.clients.http import open_session
from later_read.clients.kafka import check_topic, open_producer
from later_read.clients.starrocks import StarRocks, UserQuery
from later_read.config.settings import Settings
from later_read.connections import build_services
from later_read.core.scope import RunScope
from later_read.errors import EXIT_DEPENDENCY, EXIT_OK, ServiceError
from later_read.inputs import current_hour, parse_date
from later_read.log import printable, quote
from later_read.redact import redact
from later_read.runtime import run
from later_read.store import Store
from later_read.store.client import describe, open_redis, target

PROBE_UID = "later-read-check"
PROBE_PROJECT = "novel"
DEFAULT_TIMEOUT_SECONDS = 10.0


@dataclass
class Result:
    """One dependency's line of `check`: reached or not, in how long, and what it said."""

    name: str
    target: str
    ok: bool
    ms: float
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL':<4} {self.name:<10} {self.target}  {self.ms:.1f} ms  {self.detail}"


@dataclass(frozen=True)
class Probe:
    """How `check` reaches one dependency, and the fix it names when that times out."""

    name: str
    target: str
    run: Callable[[], Awaitable[str]]  # returns the ok detail; raises with the failure's one line
    fix: str  # said when the probe times out


def run_check(settings: Settings, timeout: float = DEFAULT_TIMEOUT_SECONDS, echo=print) -> int:
    """Print the config line and one line per dependency; EXIT_DEPENDENCY if any failed."""
    echo(
        printable(
            redact(
                f"{'ok':<4} {'config':<10} {settings.source}  validated "
                f"(timezone {settings.timezone}, tasks {', '.join(settings.tasks.ids)})"
            )
        )
    )
    results = run(check_all, settings, timeout)
    for result in results:
        echo(printable(redact(result.line())))
    failed = [r.name for r in results if not r.ok]
    echo(
        f"check: {len(results) - len(failed)} ok, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")
    )
    return EXIT_DEPENDENCY if failed else EXIT_OK


async def check_all(settings: Settings, timeout: float) -> list[Result]:
    """Run every probe concurrently, each bounded by `timeout` seconds; results in a fixed order."""
    # the jobs' per-request timeout: a service slower than that fails them too
    timeout_per_request = min(settings.services.timeout_seconds, timeout)
    async with open_session(4, settings.services, timeout_per_request) as session:
        probes = _probes(settings, session, timeout)
        results: list[Result | None] = [None] * len(probes)

        async def one(index: int, probe: Probe) -> None:
            results[index] = await _timed(probe, timeout)

        async with anyio.create_task_group() as tg:
            for index, probe in enumerate(probes):
                tg.start_soon(one, index, probe)
    return [r for r in results if r is not None]


async def _timed(probe: Probe, timeout: float) -> Result:
    started = time.perf_counter()
    ok, detail = False, ""
    with anyio.move_on_after(timeout) as scope:
        try:
            detail, ok = await probe.run(), True
        except Exception as exc:  # noqa: BLE001 - every failure becomes this probe's FAIL line
            detail = str(exc) or type(exc).__name__
    if scope.cancelled_caught:
        detail = f"no answer within {timeout:g} s; {probe.fix}"
    return Result(probe.name, probe.target, ok, (time.perf_counter() - started) * 1000, detail)


def _probes(settings: Settings, session, timeout: float) -> list[Probe]:
    sr, k = settings.starrocks, settings.kafka
    probes = [
        Probe(
            "starrocks",
            f"{sr.user}@{sr.host}:{sr.port}/{sr.database}.{sr.table}{' (tls)' if sr.tls else ''}",
            lambda: _starrocks(settings, timeout),
            "check [starrocks] host/port and that it is up",
        ),
        Probe(
            "redis",
            target(settings.redis),
            lambda: _redis(settings, timeout),
            "check [redis] mode/url/sentinels and that Redis is up",
        ),
        Probe(
            "kafka",
            f"{k.bootstrap_servers} topic={k.topic}",
            lambda: _kafka(settings, timeout),
            "check [kafka] bootstrap_servers and that the brokers are up",
        ),
    ]
    one_try = dataclasses.replace(settings, services=dataclasses.replace(settings.services, max_attempts=1))
    services = build_services(one_try, session)
    calls = {
        "ab": lambda: services.ab.assign(PROBE_UID, PROBE_PROJECT),
        "rec": lambda: services.rec.get(PROBE_UID, PROBE_PROJECT, PROBE_UID),
        "material": lambda: services.material.get(PROBE_UID, PROBE_UID, "book", PROBE_UID),
    }
    for name, call in calls.items():
        caller = getattr(services, name).caller
        probes.append(
            Probe(
                name,
                caller.url,
                functools.partial(_http, name, call),
                f"check [services] {name}_url and that the service is up",
            )
        )
    probes += _metrics_probes(settings, timeout)
    return probes


async def _starrocks(settings: Settings, timeout: float) -> str:
    """A LIMIT 1 read of today's rows at this hour: proves login, database, table and columns."""
    # connect + read fit in the probe's timeout (a worker thread cannot be cancelled mid-query)
    sr = dataclasses.replace(
        settings.starrocks,
        read_timeout_seconds=timeout / 2,
        connect_timeout_seconds=min(settings.starrocks.connect_timeout_seconds, timeout / 2),
    )
    date, hour = parse_date(None, settings.zone), current_hour(settings.zone)
    query = UserQuery.of(settings, RunScope(date, hour))
    client = StarRocks(sr)
    try:
        rows = await client.query(*query.page(query.task_ids[0], None, 1))
    finally:
        client.close()
    found = "a row" if rows else "no row (a quiet hour, or a new day)"
    return f"SELECT ... LIMIT 1 on {sr.table} for {date} hour {hour}: {found}; table and columns ok"


async def _redis(settings: Settings, timeout: float) -> str:
    """PING and a scratch key written, read and deleted; the mode, and the master (sentinel) or the
    nodes and slot coverage (cluster). No failover retries: check reports the state now."""
    cfg = dataclasses.replace(
        settings.redis,
        max_connections=2,
        failover_seconds=0,
        socket_timeout_seconds=min(settings.redis.socket_timeout_seconds, timeout),
    )
    client = open_redis(cfg)
    try:
        store = Store(client, cfg)
        await store.ping()
        await store.scratch_roundtrip()
        topology = await describe(client, cfg)
    finally:
        await client.aclose()
    return f"{topology}; PING, scratch write/read/delete"


async def _kafka(settings: Settings, timeout: float) -> str:
    """Topic metadata only: nothing is produced (a test message would reach real users)."""

    def probe() -> int:
        return check_topic(open_producer(settings.kafka), settings.kafka, timeout=max(timeout - 0.5, 0.5))

    partitions = await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
    return f"metadata: topic {settings.kafka.topic!r} has {partitions} partitions"


async def _http(name: str, call: Callable[[], Awaitable[object]]) -> str:
    """One contract request. Reached = any answer below 500 (the status is named); a 200 whose body
    breaks the contract, a 5xx, a timeout or a refused connection fail."""
    try:
        answer = await call()
    except ServiceError as exc:
        status = exc.reason[5:] if exc.reason.startswith("http_") else ""
        if status.isdigit() and int(status) < 500:
            return f"HTTP {status} to the probe request (reached; the service refused uid {PROBE_UID})"
        raise RuntimeError(f"{_failure(exc, status)}; check [services] {name}_url and that the service is up") from None
    if answer is None:
        return f"HTTP 200/404: {_NOTHING[name]} for the probe uid (reached, answers per contract)"
    return f"HTTP 200 per contract: {_describe(answer)}"


def _failure(exc: ServiceError, status: str) -> str:
    if exc.reason == "connection":
        return f"unreachable ({exc.detail or 'connection failed'})"
    if exc.reason == "timeout":
        return "no answer within [services] timeout_seconds (the jobs' per-request timeout)"
    if status:
        return f"answered HTTP {status} (server error)"
    return f"answered outside the contract ({exc.reason}: {exc.detail})"


_NOTHING = {"ab": "no assignment", "rec": "no recommendation", "material": "no such material"}


def _describe(answer: object) -> str:
    fields = dataclasses.asdict(answer) if dataclasses.is_dataclass(answer) and not isinstance(answer, type) else {}
    shown = {k: v for k, v in fields.items() if k in ("value", "trace_id", "rec_id", "material_id", "title")}
    return ", ".join(f"{k}={quote(str(v))}" for k, v in shown.items()) or type(answer).__name__


def _metrics_probes(settings: Settings, timeout: float) -> list[Probe]:
    """The metrics sinks, when configured: a missing sink only costs monitoring, but say so now."""
    probes = []
    directory = settings.metrics.textfile_dir
    if directory:

        async def textfile() -> str:
            if not os.path.isdir(directory) or not os.access(directory, os.W_OK):  # noqa: ASYNC240 - two stats
                raise RuntimeError("not a writable directory; create it or fix [metrics] textfile_dir")
            return "writable directory"

        probes.append(Probe("textfile", directory, textfile, "check [metrics] textfile_dir"))
    gateway = settings.metrics.pushgateway_url
    if gateway:
        url = (gateway if "://" in gateway else f"http://{gateway}").rstrip("/") + "/-/ready"

        async def pushgateway() -> str:
            def get() -> int:
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as response:
                        return response.status
                except OSError as exc:
                    why = getattr(exc, "reason", None) or exc
                    raise RuntimeError(
                        f"unreachable ({why}); check [metrics] pushgateway_url and that the Pushgateway is up"
                    ) from None

            return f"GET /-/ready -> HTTP {await anyio.to_thread.run_sync(get, abandon_on_cancel=True)}"

        probes.append(Probe("pushgw", url, pushgateway, "check [metrics] pushgateway_url"))
    return probes
