"""The invariants every fault run must end with, read from the real servers after the last rerun.

every expected user has exactly one message   count per msg_id in the topic: each pushable user whose
                                              hour (its earliest push hour) did not expire
no message for anyone else                    a uid not pushable, a wrong msg_id or push_hour (not the
                                              user's earliest hour), a user of an hour expired before
                                              any run began it
nothing sent after expiry                     every message created before its expires_at; none for an
                                              hour expired before any run began it
the ledger says what the servers hold         each hour's entry: users, sent + already_sent = its users
                                              with a message, earlier_hour, quiet, the rest unsent
no sent marker without its message            a marker whose user has no message, or another msg_id
every value right                             Redis value and message fields vs the simulator's oracle
no traceback, each failure one line           stderr of every job, exit codes documented in README
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from later_read.core.message import PushMessage, msg_id
from later_read.core.scope import RunScope
from later_read.core.value import CachedValue, decode
from later_read.store.keys import Keys
from later_read_sandbox import seed as seeding
from later_read_sandbox.faults.lab import DATE, KNOBS, Day, Job, Lab
from later_read_sandbox.simulator import SimulatorKnobs
from later_read_sandbox.simulator.oracle import Oracle
from later_read_sandbox.stack import DEFAULT_TASKS
from later_read_sandbox.topic import read_topic

DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7, 8}  # README "Exit codes"; 70 is a bug by definition
ONE_LINE_ERROR_CODES = {2, 3, 4, 5, 8}  # these end with exactly one `later-read: error:` line
KILLED = -9


@dataclass
class Verdict:
    lost: int = 0
    duplicates: int = 0  # messages beyond the first of each msg_id
    unexpected: int = 0
    after_expiry: int = 0  # messages created at or after their expires_at, or of an hour expired unrun
    problems: list[str] = field(default_factory=list)


def oracle() -> Oracle:
    return Oracle(SimulatorKnobs.from_dict(KNOBS))


def expected_value(sim: Oracle, uid: str) -> CachedValue:
    """What the prewarm must have stored for uid."""
    return sim.expected_value(uid, DATE)


def day_users(day: Day) -> dict[str, tuple[str, str]]:
    """uid -> (project, task id) of every user the day's jobs must pick up (at the day's hours)."""
    return seeding.expected_users(DATE, day.users, DEFAULT_TASKS, hours=day.hours)


def hour_users(day: Day, hour: int) -> set[str]:
    """The users with a row at `hour` (a push of that hour reads them all)."""
    return set(seeding.expected_users(DATE, day.users, DEFAULT_TASKS, hour=hour, hours=day.hours))


def first_hours(day: Day) -> dict[str, int]:
    """uid -> its earliest push hour: the only hour whose runs may send it."""
    return {uid: hour for hour in range(23, -1, -1) for uid in hour_users(day, hour)}


def ledger(lab: Lab) -> dict[int, dict | None]:
    """The date's ledger entries (unsharded), by hour."""
    raws = lab.redis_client().mget([Keys.push_ledger(RunScope(DATE, hour)) for hour in range(24)])
    return {hour: orjson.loads(raw) if raw else None for hour, raw in enumerate(raws)}


def pushable_users(day: Day, sim: Oracle | None = None) -> set[str]:
    """The users who must end with exactly one message: in the experiment, a recommendation, a card."""
    sim = sim or oracle()
    return {
        uid
        for uid in day_users(day)
        if (e := sim.expected(uid))["in_experiment"] and e["has_rec"] and e["material_found"]
    }


def check_day(lab: Lab, day: Day) -> Verdict:
    sim = oracle()
    users, first, entries = day_users(day), first_hours(day), ledger(lab)
    pushable = pushable_users(day, sim)
    state = {hour: (entry or {}).get("state") for hour, entry in entries.items()}
    unrun = {hour for hour, entry in entries.items() if entry and entry["state"] == "expired" and not entry.get("runs")}
    want = {uid for uid in pushable if state[first[uid]] != "expired"}
    forbid = {uid for uid in users if first[uid] in unrun}
    verdict = Verdict()
    messages = read_topic(lab.kafka.bootstrap, day.topic)
    per_id = Counter(m.message.msg_id for m in messages)
    seen = {m.key for m in messages}
    verdict.lost = len(want - seen)
    verdict.duplicates = sum(n - 1 for n in per_id.values())
    verdict.unexpected = sum(
        1 for m in messages if m.key not in pushable or m.key in forbid or m.message.msg_id != msg_id(DATE, m.key)
    )
    verdict.after_expiry = sum(1 for m in messages if m.key in forbid or not _before_expiry(m.message))
    _check_fields(sim, messages, users, first, verdict)
    _check_ledger(day, entries, first, seen, sim, verdict)
    _check_markers(lab, seen, verdict)
    _check_values(lab, sim, users, verdict)
    return verdict


def _before_expiry(message: PushMessage) -> bool:
    try:
        return dt.datetime.fromisoformat(message.created_at) < dt.datetime.fromisoformat(message.expires_at)
    except (TypeError, ValueError):
        return False


def _check_ledger(day: Day, entries: dict, first: dict, seen: set[str], sim: Oracle, verdict: Verdict) -> None:
    """Each hour with an entry: its figures against the users of the hour and what the topic holds."""
    for hour, entry in entries.items():
        if entry is None or entry.get("state") not in ("done", "partial", "expired"):
            continue
        users = hour_users(day, hour)
        sent = users & seen
        own = [sim.expected(u) for u in users - seen if first[u] == hour]
        hits = sum(1 for e in own if e["in_experiment"] and e["has_rec"])
        unsent = sum(entry.get(k) or 0 for k in ("expired", "material_not_found", "failed", "not_processed"))
        # A user of an earlier hour read before that hour's run sent it is earlier_hour here, already_sent
        # after: the two are taken together (the entry is its run's view when it read the user).
        got = {
            "users": entry.get("users"),
            "quiet": entry.get("quiet") or 0,
            "sent_or_earlier": sum(entry.get(k) or 0 for k in ("sent", "already_sent", "earlier_hour")),
            "unsent": unsent + sum((entry.get("misses") or {}).values()),
        }
        want = {
            "users": len(users),
            "quiet": len(own) - hits,
            "unsent": hits,
            "sent_or_earlier": len(sent | {u for u in users if first[u] < hour}),
        }
        if got != want:
            verdict.problems.append(f"ledger of hour {hour} ({entry['state']}) says {got}, the servers hold {want}")


def _check_fields(sim: Oracle, messages, users: dict, first: dict, verdict: Verdict) -> None:
    wrong = 0
    for m in messages:
        e, body = sim.expected(m.key), m.message
        card = sim.card(e["material_id"]) if e["material_id"] else None
        if (
            body.source_uid != m.key
            or body.push_date != DATE
            or body.push_hour != first.get(m.key)
            or body.rec_id != e["rec_id"]
            or body.material_id != e["material_id"]
            or body.trace_id != e["trace_id"]
            or card is None
            or body.title != card["title"]
            or (m.key in users and body.project != users[m.key][0])
        ):
            wrong += 1
    if wrong:
        verdict.problems.append(f"{wrong} message(s) with a field that differs from the oracle")


def _markers(lab: Lab) -> tuple[list[bytes], list[Any]]:
    client = lab.redis_client()
    keys = list(client.scan_iter(match=Keys.sent(DATE, "*"), count=1000))
    return keys, (client.mget(keys) if keys else [])


def unmarked_deliveries(lab: Lab, day: Day) -> int:
    """Users whose message is in the topic without a sent marker: what a plain rerun would send twice."""
    keys, _ = _markers(lab)
    marked = {key.decode().rsplit(":", 1)[1] for key in keys}
    return len({m.key for m in read_topic(lab.kafka.bootstrap, day.topic)} - marked)


def _check_markers(lab: Lab, seen: set[str], verdict: Verdict) -> None:
    keys, values = _markers(lab)
    orphans = wrong = 0
    for key, value in zip(keys, values, strict=False):
        uid = key.decode().rsplit(":", 1)[1]
        orphans += uid not in seen
        wrong += value is None or value.decode() != msg_id(DATE, uid)
    if orphans or wrong:
        verdict.problems.append(f"sent markers without their message: {orphans}, with another msg_id: {wrong}")


def _check_values(lab: Lab, sim: Oracle, users: dict, verdict: Verdict) -> None:
    keys = Keys()
    uids = sorted(users)
    wrong = missing = 0
    for start in range(0, len(uids), 1000):
        chunk = uids[start : start + 1000]
        for uid, raw in zip(chunk, lab.redis_client().mget([keys.rec(u) for u in chunk]), strict=False):
            if raw is None:
                missing += 1
            elif decode(raw) != expected_value(sim, uid):
                wrong += 1
    if wrong or missing:
        verdict.problems.append(f"Redis values: {missing} missing, {wrong} differ from the oracle")


def check_job(job: Job) -> list[str]:
    """No traceback; a documented exit code; a one-line error for the codes that end with one."""
    text, code = job.stderr(), job.code
    name = job.argv[3] if len(job.argv) > 3 else "job"
    problems = []
    if "Traceback" in text:
        problems.append(f"{name} ({job.log.name}): a traceback on stderr")
    if code != KILLED and code not in DOCUMENTED_EXIT_CODES:
        problems.append(f"{name} ({job.log.name}): exit {code} is not a documented exit code")
    if code in ONE_LINE_ERROR_CODES and not _ends_with_one_error(text):
        problems.append(f"{name} ({job.log.name}): exit {code} without exactly one final error line")
    return problems


def _ends_with_one_error(text: str) -> bool:
    """The last line says what failed and what to do: the CLI's `later-read: error: ...` line, only one (a
    job that stopped itself, the prewarm's tripped breaker, ends with it too, after its alert line)."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("later-read: error:")]
    return len(errors) == 1 and lines[-1] == errors[0]
