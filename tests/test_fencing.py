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
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import redis

from later_read.core.scope import RunScope
from later_read.store.keys import Keys
from test_prewarm import seed as seed_day, start_prewarm, stop_children, wait_until  # noqa: F401
from test_push import DATE, at, consume, oracle_value, prewarm, pushable, seed_hour, sent_markers, subprocess_env

HOUR = 9
THIEF = "thief-host:4242:cafe"
# Delete the lock and take it with another token, and list the run's keys, in one atomic step.
THEFT = """redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', 120)
return redis.call('KEYS', ARGV[2])"""


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
            last_sent[connection(command)] = {key[len(prefix):] for key in args[1:]}
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
        redis_url, mysql, kafka_topic, sim, make_config, tmp_path):
    users = seed_hour(mysql, 300, HOUR, prefix="f")
    prewarm(redis_url, {uid: oracle_value(sim, uid) for uid in users})
    sim.configure(material={"latency_ms": 100})  # ~10 s of sending: the theft lands mid-run
    config = make_config(push={"wait_for_prewarm_seconds": 0, "progress_interval_seconds": 60, "concurrency": 1},
                         lock={"ttl_seconds": 3}, redis={"batch_size": 10})  # refreshed every second
    lock = Keys.lock("push", RunScope(DATE, HOUR))
    log = tmp_path / "push.log"
    with Monitor(redis_url) as monitor:
        with log.open("wb") as err:
            child = subprocess.Popen([sys.executable, "-m", "later_read", "push", "--config", str(config), "--date",
                                      DATE, "--hour", str(HOUR), "--now", at(HOUR)], env=subprocess_env(),
                                     stdout=subprocess.DEVNULL, stderr=err)
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
    assert "check" in events and "batch" not in events[events.index("check") + 1:]  # no batch after it
    assert len(marked) < len(pushable(sim, users))  # it stopped mid-hour
    print(f"after the theft: {len(late_batches)} batch check(s), events {events[:6]}; "
          f"{len(messages) - len(marked)} message(s) in the topic without a marker (in flight at the theft)")

    redis.Redis.from_url(redis_url).delete(lock)  # the thief is done
    sim.configure(material={"latency_ms": 0})
    rerun = subprocess.run([sys.executable, "-m", "later_read", "push", "--config", str(config), "--date", DATE,
                            "--hour", str(HOUR), "--now", at(HOUR, 5)], env=subprocess_env(),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = consume(kafka_topic)
    assert set(Counter(body["msg_id"] for _, body in final).values()) == {1}
    assert {key for key, _ in final} == set(pushable(sim, users))


def test_a_prewarm_whose_lock_is_taken_stops_and_marks_nothing_after(
        sim, redis_url, mysql, make_config, tmp_path, stop_children):
    seed_day(mysql, 2000)
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


def fenced_writes(url: str, settings_extra: dict | None = None) -> dict:
    """Every fenced Store call, first while the run holds its lock, then after the lock was stolen: what
    each did (used by test_redis_ha.py in sentinel and cluster mode too)."""
    import anyio

    from later_read.config.settings import LockSettings, RedisSettings
    from later_read.errors import LockLost
    from later_read.store import Store
    from later_read.store.client import open_redis
    from later_read.store.lock import JobLock

    settings = RedisSettings(**{"url": url, **(settings_extra or {})})
    found: dict = {}

    async def attempt(name: str, call) -> None:
        try:
            found[name] = await call()
        except LockLost as lost:
            found[name] = f"LockLost: {lost}"

    async def main() -> None:
        client = open_redis(settings)
        try:
            store = Store(client, settings)
            lock = JobLock(client, Keys.lock("push", RunScope(DATE, HOUR)), "push run", LockSettings(ttl_seconds=30))
            await lock.acquire(anyio.Event())
            await attempt("start", lambda: store.put_push_start(RunScope(DATE, HOUR), {"at": 1}, lock))
            await attempt("sent", lambda: store.put_sent(DATE, [("u1", "m1"), ("u2", "m2")], lock))
            await attempt("state", lambda: store.get_push_state(DATE, ["u1", "u3"], lock))
            await client.eval(THEFT, 1, lock.key, THIEF, "x")
            await attempt("ledger_after", lambda: store.put_ledger(RunScope(DATE, HOUR), {"state": "done"}, lock))
            found["lost_after_ledger"] = lock.lost
            lock.lost = None  # as if unnoticed: each kind of call must find the theft on its own
            await attempt("sent_after", lambda: store.put_sent(DATE, [("u3", "m3")], lock))
            await attempt("sent_after_known", lambda: store.put_sent(DATE, [("u4", "m4")], lock))
            lock.lost = None
            await attempt("state_after", lambda: store.get_push_state(DATE, ["u1"], lock))
            lock.lost = None
            await attempt("start_after", lambda: store.put_push_start(RunScope(DATE, HOUR), {"at": 2}, lock))
            await attempt("refused_without_asking",
                          lambda: store.put_ledger(RunScope(DATE, HOUR), {"state": "x"}, lock))
            keys = [Keys.sent(DATE, u) for u in ("u1", "u2", "u3", "u4")] + [Keys.push_start(RunScope(DATE, HOUR)),
                                                                      Keys.push_ledger(RunScope(DATE, HOUR))]
            found["values"] = {key: await client.get(key) for key in keys}
        finally:
            await client.aclose()

    anyio.run(main)
    return found


def check_fenced_writes(found: dict, cluster: bool = False) -> None:
    """Standalone and sentinel: nothing after the theft. Cluster: the marker batch whose round trip found
    the theft may have landed (its lock GET and its per-slot writes go to different masters at once; each
    marker is still true: Kafka confirmed its message); no later write."""
    assert found["start"] is True and found["state"] == ([None, None], [b"m1", None])
    for name in ("ledger_after", "sent_after", "sent_after_known", "state_after", "refused_without_asking"):
        assert str(found[name]).startswith("LockLost: lost the lock"), (name, found[name])
    assert str(found["start_after"]).startswith("LockLost"), found["start_after"]
    assert "found it" in found["lost_after_ledger"]
    values = found["values"]
    assert values[Keys.sent(DATE, "u1")] == b"m1" and values[Keys.sent(DATE, "u2")] == b"m2"
    assert values[Keys.push_start(RunScope(DATE, HOUR))] == b'{"at":1}'  # the first, not the one tried after the theft
    assert values[Keys.sent(DATE, "u4")] is None and values[Keys.push_ledger(RunScope(DATE, HOUR))] is None
    assert values[Keys.sent(DATE, "u3")] == (b"m3" if cluster else None)


def test_every_fenced_write_and_the_batch_check_refuse_once_the_lock_is_stolen(redis_url):
    check_fenced_writes(fenced_writes(redis_url))
