"""The `later-read` command line: each command parses options, loads settings and hands off.

Exit codes (also in the README): 0 done; 1 done with failed users; 2 bad config or input; 3 a dependency
(Redis, StarRocks, Kafka) unreachable; 4 a service down, stopped early; 5 another run holds the lock;
6 stopped by SIGTERM/SIGINT; 7 (push) users of an hour expired unsent; 8 the run lost its lock and stopped;
70 internal error.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading

import click

from later_read import __version__
from later_read.config.settings import Settings, load_settings
from later_read.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    INTERNAL_ERROR_LINE,
    LaterReadError,
    UsageError,
    error_line,
    traceback_text,
)
from later_read.log import set_zone, setup_logging
from later_read.redact import redact

CONFIG_HELP = "Config file (default: $LATER_READ_CONFIG, else ./config.toml)."


# Commands imported only when asked for: the sandbox (simulator, local servers, seeding) is a distribution
# of its own (sandbox/, the `sandbox` extra) that a production install does not contain.
LAZY_COMMANDS = {"sandbox": "later_read_sandbox.cli:sandbox"}
INSTALL_LAZY = "pip install 'later-read[{name}]' (from a checkout: pip install -e '.[{name}]' -e ./{name})"


def load_lazy(name: str) -> click.Command:
    """LAZY_COMMANDS[name], or, when its distribution is not installed, a stand-in command that fails with
    one line naming INSTALL_LAZY (exit 2) whatever its arguments (`--help` included)."""
    module, attr = LAZY_COMMANDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:
            raise
    fix = INSTALL_LAZY.format(name=name)

    @click.command(
        name,
        help=f"Not installed: {fix}.",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def missing() -> None:
        raise UsageError(f"the {name} is not installed: {fix}")

    return missing


class Group(click.Group):
    """Turns the project's errors into one stderr line and their documented exit code; loads the
    commands named in LAZY_COMMANDS on first use (click's lazy group pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            self.add_command(load_lazy(name), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LaterReadError as exc:
            click.echo(error_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # click's own three-line usage block, as one line
            where = exc.ctx.command_path if exc.ctx is not None else "later-read"
            click.echo(redact(f"later-read: error: {exc.format_message()} (see `{where} --help`)"), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("later-read: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback (redacted), still a documented exit code
            click.echo(traceback_text(exc), err=True, nl=False)
            click.echo(INTERNAL_ERROR_LINE, err=True)
            sys.exit(EXIT_INTERNAL)


def echo(line: str) -> None:
    """stdout for the on-call commands' lines (check, show, sent, rerun), redacted."""
    click.echo(redact(line))


def config_option(func):
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)(
        func
    )


LOCK_WAIT_HELP = (
    "Seconds to wait for another run holding this job's lock (default: [lock] wait_seconds, "
    "a little over the lock's TTL, so a killed run's lock is taken over); 0 = fail at once."
)


def lock_wait_option(func):
    return click.option(
        "--lock-wait",
        "lock_wait",
        type=click.FloatRange(0, 86400),
        default=None,
        metavar="SECONDS",
        help=LOCK_WAIT_HELP,
    )(func)


NOW_HELP = (
    "Act as if it were this time: ISO 8601 with an offset, e.g. 2026-11-22T05:05:00+08:00 (default: the "
    "wall clock in the configured timezone); without --date/--hour it also gives both."
)
ALLOW_LATE_HELP = (
    "Push even though the hour's window (its start + [push] catch_up_minutes) has closed: the "
    "users get a stale push; without it such an hour is refused."
)


def now_option(func):
    return click.option("--now", metavar="ISO8601", default=None, help=NOW_HELP)(func)


def allow_late_option(func):
    return click.option("--allow-late", "allow_late", is_flag=True, help=ALLOW_LATE_HELP)(func)


def settings_from(config_path: str | None) -> Settings:
    """The checked settings; from here on log timestamps are in the configured zone."""
    settings = load_settings(config_path)
    set_zone(settings.zone)
    return settings


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="later-read")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and alerts only.")
def cli(verbose: bool, quiet: bool) -> None:
    """Nightly prewarm and hourly push of the "later reading" book recommendation.

    \b
    Example:
        later-read prewarm --config /etc/later-read/config.toml
    """
    setup_logging(verbose=verbose, quiet=quiet)


@cli.command()
@click.option("--date", help="Day to prewarm, YYYYMMDD (default: today in the configured timezone).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 2000),
    help="Calls in flight to A/B and to recommend, each (default: [prewarm] concurrency).",
)
@click.option("--force", is_flag=True, help="Recompute users already done for the date.")
@click.option("--uids-file", type=click.Path(dir_okay=False), help="Only these uids (one per line).")
@click.option(
    "--shard",
    metavar="K/N",
    help="Only shard K of N of the users (CRC32(uid) % N = K, K from 0); "
    "default: K from $JOB_COMPLETION_INDEX with N = [shards] count, else the whole day.",
)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the summary as JSON here.")
@lock_wait_option
@config_option
def prewarm(config_path, **options) -> None:
    """Compute every user's recommendation for the day and store it in Redis.

    Reads the day's users of every configured task id from StarRocks in batches, calls A/B then
    recommend for each with bounded concurrency, and writes `rec:later_read:<uid>`. Safe to rerun:
    users already done for the date are skipped.

    \b
    Example:
        later-read prewarm --date 20261123 --report /var/log/later-read/prewarm.json
    """
    settings = settings_from(config_path)
    from later_read.jobs.prewarm.job import run_prewarm

    sys.exit(run_prewarm(settings, **options))


@cli.command()
@click.option("--date", help="Push date, YYYYMMDD (default: today in the configured timezone).")
@click.option(
    "--hour",
    type=click.IntRange(0, 23),
    help="Push exactly this hour 0-23 (default: the current "
    "hour, after the earlier hours still inside their window that are not done).",
)
@now_option
@allow_late_option
@click.option("--dry-run", is_flag=True, help="Build and print the messages; no Kafka, no sent markers.")
@click.option("--output", type=click.Path(dir_okay=False), help="With --dry-run: write messages here (JSON lines).")
@click.option(
    "--force",
    is_flag=True,
    help="Send even to users already pushed today (same msg_id, so "
    "consumers that deduplicate will drop a copy they already have).",
)
@click.option(
    "--on-miss",
    type=click.Choice(["skip", "live"]),
    default="skip",
    show_default=True,
    help="A user the prewarm missed: skip with an alert, or compute it live (budgeted).",
)
@click.option(
    "--shard",
    metavar="K/N",
    help="Only shard K of N of the users (CRC32(uid) % N = K, K from 0); "
    "default: K from $JOB_COMPLETION_INDEX with N = [shards] count, else the whole day.",
)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the summary as JSON here.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Wait up to this long for the prewarm to mark the hour ready, with a progress line "
    "every 5 s (default: [push] wait_for_prewarm_seconds; 0 with --dry-run).",
)
@lock_wait_option
@config_option
def push(config_path, **options) -> None:
    """Send the hour's push messages from the prewarmed recommendations.

    Reads the hour's users from StarRocks, their values from Redis, fetches each distinct book card
    once, and produces one message per user to Kafka (key = uid). A user is pushed at most once a day.
    Without --date/--hour (the hourly schedule) it first counts the earlier hours whose window closed
    unsent as expired and sends those not done whose window is open, oldest first; with --hour it
    pushes exactly that hour, refused once the window has closed unless --allow-late. Exit 7: users of
    an hour expired unsent.

    \b
    Example:
        later-read push --date 20261123 --hour 23 --report /var/log/later-read/push.json
    """
    settings = settings_from(config_path)
    from later_read.jobs.push.job import run_push

    sys.exit(run_push(settings, **options))


@cli.command()
@click.option(
    "--timeout",
    type=click.FloatRange(0.5, 120),
    default=10.0,
    show_default=True,
    help="Seconds each dependency may take before it is reported as not answering.",
)
@config_option
def check(config_path, timeout: float) -> None:
    """Validate the config, then reach every dependency: one line each with latency and verdict.

    StarRocks (a LIMIT 1 read of today's rows), Redis (PING plus a scratch key written, read and
    deleted), Kafka (the topic's metadata; nothing is produced), the A/B, recommend and material
    services (one contract request each), and the metrics sinks when configured. The probes run
    concurrently. Exit 0 when all pass, 3 when any fails. Secrets are never printed.

    \b
    Example:
        later-read check --config /etc/later-read/config.toml
    """
    from later_read.oncall.check import run_check

    sys.exit(run_check(settings_from(config_path), timeout=timeout, echo=echo))


@cli.command()
@click.argument("uid")
@click.option("--date", help="Date, YYYYMMDD (default: today in the configured timezone).")
@click.option(
    "--hour",
    type=click.IntRange(0, 23),
    help="The message's push_hour (default: the user's earliest push_hour in the task rows).",
)
@click.option("--prewarm-only", is_flag=True, help="Compute and store the value; send nothing.")
@click.option("--push-only", is_flag=True, help="Send from the value already in Redis; compute nothing.")
@click.option("--dry-run", is_flag=True, help="Print what would be written and sent; write and send nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Send even if the user was already pushed on the date; replace a value Redis holds for another date.",
)
@now_option
@allow_late_option
@lock_wait_option
@config_option
def rerun(
    config_path,
    uid: str,
    date: str | None,
    hour: int | None,
    prewarm_only: bool,
    push_only: bool,
    dry_run: bool,
    force: bool,
    now: str | None,
    allow_late: bool,
    lock_wait: float | None,
) -> None:
    """Run the prewarm and/or push path for one user, printing each step as it happens.

    Task rows found, A/B value and trace_id, recommendation, value written and its TTL, material,
    the message, and the delivery's partition/offset, or the reason it stopped. Respects the sent
    marker unless --force. Exit 0 done (or nothing to send), 1 the user could not be completed.

    \b
    Example:
        later-read rerun 100000042 --date 20261123 --config /etc/later-read/config.toml
    """
    from later_read.inputs import parse_uid
    from later_read.oncall.rerun import RerunOptions, run_rerun

    if prewarm_only and push_only:
        raise click.UsageError(
            "--prewarm-only and --push-only exclude each other; give at most one (neither runs both paths)"
        )
    settings = settings_from(config_path)
    clock, day = clock_and_date(settings, now, date)
    options = RerunOptions(
        parse_uid(uid),
        day,
        hour,
        prewarm=not push_only,
        push=not prewarm_only,
        dry_run=dry_run,
        force=force,
        lock_wait=lock_wait,
        clock=clock,
        allow_late=allow_late,
    )
    sys.exit(run_rerun(settings, options, echo=echo))


def clock_and_date(settings: Settings, now: str | None, date: str | None):
    """The run's clock (--now, else the wall clock) and --date, else the clock's date in the zone."""
    from later_read.core.clock import Clock
    from later_read.inputs import parse_date

    clock = Clock.parse(now, settings.zone)
    return clock, parse_date(date, settings.zone) if date is not None else clock.now().strftime("%Y%m%d")


@cli.command()
@click.option("--date", help="Push date, YYYYMMDD (default: today by --now, else by the wall clock).")
@now_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@config_option
def day(config_path, date: str | None, now: str | None, as_json: bool) -> None:
    """The push's day at a glance: one row per hour from the day ledger.

    Each hour's state (pending, running, done, partial, expired) and figures (users, sent, recovered,
    already sent, earlier hour, quiet, misses, no card, unservable, failed, unsent, expired, minutes
    late), whether the prewarm marked it ready, and its verdict at --now: done, expired, late (not done
    30 min after its start), due, upcoming or untracked; then what is late or expired and the day's
    totals.
    Read-only. Exit 0 when every hour that should be done by now is done, 1 when one is late or
    expired, 2 bad input, 3 Redis unreachable.

    \b
    Example:
        later-read day --date 20261123 --now 2026-11-23T13:05:00+08:00 --config /etc/later-read/config.toml
    """
    from later_read.oncall.day import run_day

    settings = settings_from(config_path)
    clock, day = clock_and_date(settings, now, date)
    sys.exit(run_day(settings, day, clock, as_json, echo=echo))


@cli.command()
@click.argument("uid")
@click.option("--date", help="Push date, YYYYMMDD (default: today in the configured timezone).")
@click.option(
    "--hour",
    type=click.IntRange(0, 23),
    help="The user's push hour whose ledger entry to show "
    "(default: its earliest push_hour in the task rows, read from StarRocks).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
@config_option
def show(config_path, uid: str, date: str | None, hour: int | None, as_json: bool) -> None:
    """Show what Redis holds for UID on a date, and what the push will make of it.

    The value (raw and parsed) and its TTL, the case it stands for (rec, not_in_experiment,
    no_recommendation, miss: never computed / stale, corrupt), the sent marker, the date's prewarm
    marker, and the user's push hour with its window and day-ledger entry (state: done, expired...).
    Read-only; exits 0 whatever it finds.

    \b
    Example:
        later-read show 100000042 --date 20261123 --config /etc/later-read/config.toml
    """
    from later_read.inputs import parse_date, parse_uid
    from later_read.oncall.show import run_show

    settings = settings_from(config_path)
    sys.exit(run_show(settings, parse_uid(uid), parse_date(date, settings.zone), as_json, echo=echo, hour=hour))


@cli.command()
@click.option("--date", help="Push date, YYYYMMDD (default: today in the configured timezone).")
@click.option("--hour", type=click.IntRange(0, 23), help="Only this push hour 0-23 (default: the whole date).")
@click.option(
    "--uid", help="Only this user's messages, each listed with its partition, offset, created_at and expires_at."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10000),
    default=20,
    show_default=True,
    help="Duplicates and messages listed at most (counts are always complete).",
)
@click.option(
    "--max-messages",
    type=click.IntRange(1, 100_000_000),
    default=2_000_000,
    show_default=True,
    help="Messages read from the topic at most (about 150 bytes of memory each).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    help="Seconds to read the topic to its end before giving up (exit 3).",
)
@config_option
def sent(
    config_path,
    date: str | None,
    hour: int | None,
    uid: str | None,
    as_json: bool,
    limit: int,
    max_messages: int,
    timeout: float,
) -> None:
    """Read back from the topic what the push sent: counts per hour and any msg_id seen twice.

    Starts at the offsets the push recorded for the date's hours in Redis (later_read:push:start:*),
    or, without them, at the start of the hour (or date) by message time; reads each partition to its
    current end and keeps the messages of the date (hour, uid). Read-only. Exit 0 whatever it finds
    (duplicates included), 2 bad input, 3 Kafka unreachable or the topic not read in --timeout.

    \b
    Example:
        later-read sent --date 20261123 --hour 9 --uid 100000042 --config /etc/later-read/config.toml
    """
    from later_read.inputs import parse_date, parse_uid
    from later_read.oncall.sent import SentQuery, run_sent

    settings = settings_from(config_path)
    query = SentQuery(
        parse_date(date, settings.zone), hour, None if uid is None else parse_uid(uid), limit, max_messages, timeout
    )
    sys.exit(run_sent(settings, query, as_json, echo=echo))


def main() -> None:
    """The `later-read` command: `cli`, then `leave` with its exit status."""
    try:
        cli(prog_name="later-read")
    except SystemExit as done:  # click ends every run so, the project's errors too (Group.invoke)
        leave(done.code)


def leave(code: object) -> None:
    """Exit with `code` (sys.exit's meaning: None is 0, an int itself, anything else printed and 1) once
    the output is flushed and the atexit handlers ran (logging's shutdown among them), skipping the rest of
    the interpreter's teardown: freeing every module and object one by one, librdkafka's handles joining
    their threads, about 0.1 s of every run (docs/design.md, "Exit codes"). A job has
    delivered or purged its messages, closed its connections and written its files before it returns, so
    nothing is left for that teardown to do. Threads that are not daemons are waited for first, as the
    interpreter would (anyio's idle workers end with the event loop). Falls back to `sys.exit` when the
    output cannot be flushed (a closed pipe: Python reports it as it always does)."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():  # as the interpreter's own exit does: wait for what is not a daemon
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code or 0)


if __name__ == "__main__":
    main()
