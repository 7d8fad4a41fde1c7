"""`later-read sandbox ...`: the local stand-ins for the company's services, for demos and practice.

Every command here acts only on servers the sandbox started itself (`guard.py`): `seed` takes a config
only from `--config`, marked `[sandbox] own_servers = true` and pointing at a MariaDB the sandbox runs;
`up` and `demo` start their own servers (never the LATER_READ_TEST_* ones), write that marker, and run
their child commands without $LATER_READ_CONFIG or LATER_READ__* overrides.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from later_read.config.settings import ENV_CONFIG_PATH, load_settings
from later_read.errors import EXIT_DEPENDENCY, UsageError
from later_read.inputs import parse_date
from later_read_sandbox.guard import sandbox_settings
from later_read_sandbox.simulator import simulator_command

UP_POLL_SECONDS = 1.0  # `sandbox up` notices a dead server within a second


@click.group()
def sandbox() -> None:
    """Local sandbox: the downstream simulator, real servers, seeded data.

    \b
    Example:
        later-read sandbox demo --users 5000
    """


sandbox.add_command(simulator_command, name="simulator")


@sandbox.command()
@click.option("--users", type=click.IntRange(1, 50_000_000), default=10_000, show_default=True)
@click.option("--date", help="Day to fill, YYYYMMDD (default: today in the configured timezone).")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (same seed, same rows).")
@click.option(
    "--both-ratio",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of users listed under both task ids.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The config `sandbox up` wrote (required: $LATER_READ_CONFIG is never read).",
)
def seed(users: int, date: str | None, seed: int, both_ratio: float, config_path: str | None) -> None:
    """Create `task_data` in the sandbox's MariaDB and fill a day with USERS users.

    Users are spread over the 24 hours under the configured task ids (some under both), plus rows of
    the days before and after and of other task ids that the jobs must never pick up. The day's
    earlier rows of the configured task ids are replaced; nothing else is deleted. Only a config
    `sandbox up` wrote is accepted ([sandbox] own_servers = true, a MariaDB the sandbox runs).

    \b
    Example:
        later-read sandbox seed --users 50000 --date 20261123 --config sandbox.toml
    """
    from later_read_sandbox.seed import open_seed_connection, seed_day

    settings = sandbox_settings(config_path, "seed")
    day = parse_date(date, settings.zone)
    sr = settings.starrocks
    started = time.monotonic()
    with open_seed_connection(sr) as conn:
        result = seed_day(conn, day, users, settings.tasks.ids, table=sr.table, seed=seed, both_ratio=both_ratio)
    click.echo(
        f"seeded date={result.date} users={result.users} rows={result.rows} "
        f"under_both_task_ids={result.both} seconds={time.monotonic() - started:.1f}"
    )


@sandbox.command()
@click.option("--users", type=click.IntRange(1, 5_000_000), default=5000, show_default=True)
@click.option(
    "--config-out",
    type=click.Path(dir_okay=False),
    default="sandbox.toml",
    show_default=True,
    help="Where to write the config pointing at the sandbox.",
)
def up(users: int, config_out: str) -> None:
    """Start the sandbox (Redis, MariaDB, Kafka, simulator), seed today, and wait for Ctrl-C.

    Prints the config path to use with every other command while it runs.

    \b
    Example:
        later-read sandbox up --users 20000 --config-out /tmp/sandbox.toml
    """
    from later_read_sandbox.stack import Stack

    _check_overwrite(Path(config_out))
    with Stack(own_servers=True) as stack:
        path = stack.write_config(config_out)
        _seed_today(path, users)
        click.echo(f"sandbox up; try: later-read check --config {path}   (Ctrl-C stops it)")
        try:
            while (dead := stack.dead()) is None:
                time.sleep(UP_POLL_SECONDS)
        except KeyboardInterrupt:
            click.echo("sandbox stopping")
            return
        click.echo(
            f"later-read: error: the sandbox's {dead} died; the other servers are stopped; "
            "run `later-read sandbox up` again",
            err=True,
        )
        raise SystemExit(EXIT_DEPENDENCY)


@sandbox.command()
@click.option("--users", type=click.IntRange(1, 1_000_000), default=5000, show_default=True)
def demo(users: int) -> None:
    """Run the whole flow on the sandbox: seed, prewarm, push of the current hour, read the topic, then
    send one user twice and find the copy with `later-read sent`.

    \b
    Example:
        later-read sandbox demo --users 5000
    """
    from later_read_sandbox.stack import Stack

    with tempfile.TemporaryDirectory(prefix="later-read-demo-") as tmp, Stack(own_servers=True) as stack:
        path = stack.write_config(Path(tmp) / "config.toml")
        _seed_today(path, users)
        hour = dt.datetime.now(load_settings(path, environ={}).zone).hour
        for args in (["prewarm"], ["push", "--hour", str(hour)], ["push", "--hour", str(hour)]):
            click.echo(f"\n$ later-read {' '.join(args)} --config {path}")
            code = subprocess.call([sys.executable, "-m", "later_read", *args, "--config", str(path)], env=_child_env())
            click.echo(f"(exit code {code})")
            if code not in (0, 1):
                raise SystemExit(code)
        _show_topic(stack)
        _got_it_twice(stack, path, hour)


def _check_overwrite(path: Path) -> None:
    """`sandbox up --config-out` may replace only a config the sandbox wrote (never a production one)."""
    if not path.exists():
        return
    try:
        ours = load_settings(path, environ={}).sandbox.own_servers
    except UsageError:
        ours = False
    if not ours:
        raise UsageError(
            f"sandbox up: {path} exists and is not a sandbox config (no [sandbox] own_servers = "
            "true); refusing to overwrite it: pass another --config-out"
        )


def _child_env() -> dict[str, str]:
    """The environment of the sandbox's child commands: without $LATER_READ_CONFIG and the LATER_READ__*
    overrides, which could point them at anything else than the sandbox's servers."""
    return {k: v for k, v in os.environ.items() if k != ENV_CONFIG_PATH and not k.startswith("LATER_READ__")}


def _seed_today(config_path: Path, users: int) -> None:
    code = subprocess.call(
        [sys.executable, "-m", "later_read", "sandbox", "seed", "--users", str(users), "--config", str(config_path)],
        env=_child_env(),
    )
    if code:
        raise SystemExit(code)


def _show_topic(stack) -> None:
    """Count the topic's messages and print one, to show what the push produced."""
    import orjson

    from later_read_sandbox.topic import read_topic

    messages = read_topic(stack.kafka.bootstrap, stack.topic)
    ids = {m.message.msg_id for m in messages}
    click.echo(f"\ntopic {stack.topic}: {len(messages)} messages, {len(ids)} distinct msg_id")
    if messages:
        click.echo(orjson.dumps(messages[0].message.to_dict(), option=orjson.OPT_INDENT_2).decode())


def _got_it_twice(stack, config_path: Path, hour: int) -> None:
    """On-call's "I got it twice": send one user's message again (`rerun --force`), then find the copy
    with `later-read sent`."""
    from later_read_sandbox.topic import read_topic

    messages = read_topic(stack.kafka.bootstrap, stack.topic)
    if not messages:
        return
    uid, date = messages[0].key, messages[0].message.push_date
    for args in (
        ["rerun", uid, "--date", date, "--hour", str(hour), "--push-only", "--force"],
        ["sent", "--date", date, "--hour", str(hour), "--uid", uid],
    ):
        click.echo(f"\n$ later-read {' '.join(args)} --config {config_path}")
        code = subprocess.call(
            [sys.executable, "-m", "later_read", *args, "--config", str(config_path)], env=_child_env()
        )
        click.echo(f"(exit code {code})")


@sandbox.command("fetch-kafka")
def fetch_kafka() -> None:
    """Download the Kafka broker's jars from Maven Central into the cache and print the folder.

    The cache is $LATER_READ_CACHE, else ~/.cache/later-read; a filled cache is reused as it is.

    \b
    Example:
        later-read sandbox fetch-kafka
    """
    from later_read_sandbox.servers import ServerUnavailable, ensure_kafka_classpath

    try:
        click.echo(ensure_kafka_classpath())
    except ServerUnavailable as error:
        raise click.ClickException(str(error)) from None


@sandbox.command("servers")
@click.argument("kinds", nargs=-1, type=click.Choice(["redis", "mariadb", "kafka"]))
def servers_command(kinds: tuple[str, ...]) -> None:
    """Run real local servers until Ctrl-C, printing the `export` lines that point the tests at them.

    KINDS are redis, mariadb and kafka (default: all three).

    \b
    Example:
        later-read sandbox servers redis kafka
    """
    from later_read_sandbox.servers import FACTORIES, ServerUnavailable

    running = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for kind in kinds or tuple(FACTORIES):
            running.append(FACTORIES[kind]().start())
            click.echo(f"# {kind} ready in {running[-1].startup_seconds:.2f} s", err=True)
            click.echo(_env_line(running[-1]))
        click.echo("# servers are up; Ctrl-C stops them", err=True)
        while True:
            time.sleep(3600)
    except ServerUnavailable as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        pass
    finally:
        for server in reversed(running):
            server.stop()


def _env_line(server) -> str:
    """The `export` line that points later tests (or a demo) at this running server."""
    from later_read_sandbox import servers

    if isinstance(server, servers.RedisServer):
        return f"export {servers.REDIS_ENV}={server.url}"
    if isinstance(server, servers.MariaDBServer):
        return f"export {servers.MYSQL_ENV}={server.dsn()}"
    return f"export {servers.KAFKA_ENV}={server.bootstrap}"


def _interrupt(*_) -> None:
    """SIGTERM handler for `servers`: stop like Ctrl-C does, so the servers are stopped too."""
    raise KeyboardInterrupt
