"""A run whose lock is taken from it stops: the lock deleted and taken by another token mid-run (by this
test, a process of its own, in one script), against real Redis, MariaDB, Kafka and the simulator.

Redis's MONITOR records every command in the order Redis ran them, so "after the moment the lock was lost"
is exact: the theft is one script call, and each command of the push comes before or after it. What must
hold (docs/design.md, "The job lock"):

- no sent marker, ledger entry or start record is written after the theft (the theft script lists the
  markers in the same atomic step; the final markers are exactly those);
- no user of a batch whose ownership check (`GET <lock>` in the batch's MGET round trip) ran after the
  theft has a message; after the first check that ran after the theft (a batch's, a fenced write's or the
  refresh's, which comes every ttl/3 = 1 s here) the run reads no further batch;
- the run exits 8 with one `lock.lost` alert and one error line; a rerun once the thief is gone finishes
  the hour with one message per user (the dead run's unmarked deliveries recovered from the topic).

The prewarm likewise: no readiness or completion marker after the theft, exit 8, and it did not go on to
finish the day.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import redis

from helpers import (
    DATE,
    FENCE_HOUR as HOUR,
    THEFT,
    THIEF,
    at,
    check_fenced_writes,
    consume,
    fenced_writes,
    oracle_value,
    prewarm_values,
    pushable,
    run_cli,
    seed_hour,
    seed_users,
    sent_markers,
    start_cli,
    start_prewarm,
    wait_until,
)
from later_read.core.scope import RunScope
from later_read.store.keys import Keys


@dataclass
class Monitor:
    """Every command Redis runs, in its order, from a MONITOR connection read in a thread."""

    url: str
    commands: list[dict] = field(default_factory=list)
    stopping: bool = False

    def __enter__(self) -> Monitor:
        self.client = redis.Redis.from_url(self.url)
        self.monitor = self.client.monitor()
        self.monitor.__enter__()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        while not self.stopping:
            try:
                self.commands.append(self.monitor.next_command())
            except (redis.RedisError, OSError, ValueError):
                return

    def __exit__(self, *exc) -> None:
        self.stopping = True
        redis.Redis.from_url(self.url).ping()  # one more line, so the reader wakes and sees the flag
        self.thread.join(timeout=10)
        self.monitor.__exit__(*exc)
        self.client.close()


def steal(url: str, lock: str, pattern: str) -> set[str]:
    client = redis.Redis.from_url(url)
    try:
        return {k.decode() for k in client.eval(THEFT, 1, lock, THIEF, pattern)}
    finally:
        client.close()


def split_at_theft(commands: list[dict]) -> list[tuple[bool, dict]]:
    """(ran after the theft, command) for every command but those run inside scripts (`lua`)."""
    theft = next(i for i, c in enumerate(commands) if c["command"].startswith("EVAL ") and THIEF in c["command"])
    return [(i > theft, c) for i, c in enumerate(commands) if i != theft and c.get("client_type") != "lua"]


def connection(command: dict) -> str:
    return f"{command.get('client_address')}:{command.get('client_port')}"


def batches_checked_after(commands: list[dict], lock: str) -> list[set[str]]:
    """The uids of each batch whose ownership check (`MGET <lock>`) ran after the theft: its sent-marker
    MGET is the last one before the check on the same connection (one pipeline; it may precede the theft)."""
    prefix = Keys.sent(DATE, "")
    last_sent: dict[str, set[str]] = {}
    checked = []
    for after, command in split_at_theft(commands):
        args = command["command"].split()
        if args[0] == "MGET" and args[1].startswith(prefix):
            last_sent[connection(command)] = {key[len(prefix) :] for key in args[1:]}
        elif after and args == ["MGET", lock]:
            checked.append(last_sent.get(connection(command), set()))
    return checked


def checks_after(commands: list[dict], lock: str) -> list[str]:
    """After the theft, in order: `check` for each command that compares the lock's value (a batch's
    `MGET <lock>`, the refresh or a fenced write: EVALSHA naming the lock), `batch` for each new batch read."""
    events = []
    for command in (c for after, c in split_at_theft(commands) if after):
        args = command["command"].split()
        if args[:2] == ["MGET", lock] or (args[0] == "EVALSHA" and lock in args[3:4]):
            events.append("check")
        elif args[0] == "MGET" and args[1].startswith(Keys().rec("")):
            events.append("batch")
    return events


def test_a_push_whose_lock_is_taken_mid_run_stops_with_nothing_written_after(
    redis_url, mysql, kafka_topic, sim, make_config, tmp_path
):
    users = seed_hour(mysql, 300, HOUR, prefix="f")
    prewarm_values(redis_url, {uid: oracle_value(sim, uid) for uid in users})
    sim.configure(material={"latency_ms": 100})  # ~10 s of sending: the theft lands mid-run
    config = make_config(
        push={"wait_for_prewarm_seconds": 0, "progress_interval_seconds": 60, "concurrency": 1},
        lock={"ttl_seconds": 3},
        redis={"batch_size": 10},
    )  # refreshed every second
    lock = Keys.lock("push", RunScope(DATE, HOUR))
    log = tmp_path / "push.log"
    with Monitor(redis_url) as monitor:
        with log.open("wb") as err:
            child = start_cli(
                "push",
                "--config",
                str(config),
                "--date",
                DATE,
                "--hour",
                str(HOUR),
                "--now",
                at(HOUR),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            wait_until(lambda: len(sent_markers(redis_url)) >= 30, what="30 users sent")
            before = steal(redis_url, lock, "later_read:*")
            stolen_at = time.monotonic()
            code = child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        stopped_after = time.monotonic() - stolen_at
    stderr = log.read_text()
    print(f"the push exited {code} {stopped_after:.2f} s after the theft")

    assert code == 8, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"later-read: error: lost the lock {lock} of the push run for {DATE} hour {HOUR}")
    assert sum(1 for line in lines if " lock.lost " in line and line.endswith("LATER_READ_ALERT")) == 1
    marked = {Keys.sent(DATE, uid) for uid in sent_markers(redis_url)}
    run_keys = {Keys.push_start(RunScope(DATE, HOUR)), Keys.push_ledger(RunScope(DATE, HOUR))}
    assert marked == {k for k in before if k.startswith(Keys.sent(DATE, ""))}  # no marker after the theft
    assert run_keys <= before  # written before it, and never again after it (the entry stays unclean)
    messages = consume(kafka_topic)
    late_batches = batches_checked_after(monitor.commands, lock)
    assert not {uid for batch in late_batches for uid in batch} & {key for key, _ in messages}
    events = checks_after(monitor.commands, lock)
    assert "check" in events and "batch" not in events[events.index("check") + 1 :]  # no batch after it
    assert len(marked) < len(pushable(sim, users))  # it stopped mid-hour
    print(
        f"after the theft: {len(late_batches)} batch check(s), events {events[:6]}; "
        f"{len(messages) - len(marked)} message(s) in the topic without a marker (in flight at the theft)"
    )

    redis.Redis.from_url(redis_url).delete(lock)  # the thief is done
    sim.configure(material={"latency_ms": 0})
    rerun = run_cli(
        "push", "--config", str(config), "--date", DATE, "--hour", str(HOUR), "--now", at(HOUR, 5), timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = consume(kafka_topic)
    assert set(Counter(body["msg_id"] for _, body in final).values()) == {1}
    assert {key for key, _ in final} == set(pushable(sim, users))


def test_a_prewarm_whose_lock_is_taken_stops_and_marks_nothing_after(
    sim, redis_url, mysql, make_config, tmp_path, stop_children
):
    seed_users(mysql, 2000)
    sim.configure(ab={"latency_ms": 30})
    config = make_config(prewarm={"concurrency": 10}, lock={"ttl_seconds": 3})
    lock = Keys.lock("prewarm", RunScope(DATE))
    log = tmp_path / "prewarm.log"
    child = start_prewarm(config, log)
    stop_children.append(child)
    ready = Keys.prewarm_ready(RunScope(DATE), 0).rsplit(":", 1)[0] + ":*"
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: len(client.keys(ready)) >= 2, what="two hours marked ready")
        before = steal(redis_url, lock, "later_read:prewarm:*")
        code = child.wait(timeout=60)
        after = {k.decode() for k in client.keys("later_read:prewarm:*")}
        values = len(client.keys(Keys().rec("*")))
    finally:
        client.close()
    stderr = log.read_text()
    assert code == 8, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(f"later-read: error: lost the lock {lock} of the prewarm run")
    assert after == before and Keys.prewarm_done(RunScope(DATE)) not in after  # no marker after the theft
    assert values < 2000  # it stopped instead of finishing the day


def test_every_fenced_write_and_the_batch_check_refuse_once_the_lock_is_stolen(redis_url):
    check_fenced_writes(fenced_writes(redis_url))
