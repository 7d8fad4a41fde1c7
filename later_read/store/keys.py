"""Every Redis key later-read reads or writes is built here, and nowhere else.

A run's own records share its lock's hash tag, `{<date>[:<HH>][shard suffix]}` (`run_tag`): the push
hour's lock, start record and ledger entry, the prewarm's lock, completion marker and readiness markers.
Redis Cluster puts keys with one tag in one hash slot, so a single script can check the lock and write the
record atomically in every mode (docs/design.md, "The job lock": fencing). Per-user keys (values, sent
markers) have no tag: they spread over the cluster.

The key prefixes and TTLs are below, each with the reason for its value; the per-user value prefix
(`rec:later_read:`) and its TTL come from the config because the seed fixed them and other systems may
read them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from later_read.core.scope import RunScope

# Internal keys share one prefix so an operator can list them (`SCAN MATCH later_read:*`) and so a
# Redis ACL can grant the job exactly this namespace plus the value prefix.
INTERNAL_PREFIX = "later_read:"

# The prewarm's completion marker. Three days: the push of day D reads it all day D, and an
# on-call engineer looking at yesterday's run the next morning still finds it.
PREWARM_DONE_PREFIX = INTERNAL_PREFIX + "prewarm:done:"
PREWARM_DONE_TTL_SECONDS = 3 * 86400

# Per-hour readiness: every user of that push hour is prewarmed (written as each hour completes, so the
# push of hour H waits only for H). Same TTL as the day's marker, for the same reasons.
PREWARM_READY_PREFIX = INTERNAL_PREFIX + "prewarm:ready:"
PREWARM_READY_TTL_SECONDS = PREWARM_DONE_TTL_SECONDS

# "This user got today's push" markers. Two days: long enough to cover the whole push date in any
# timezone offset between the job host and the configured zone, short enough to expire on their own.
SENT_PREFIX = INTERNAL_PREFIX + "sent:"
SENT_TTL_SECONDS = 2 * 86400

# Where an hour's messages start in the topic: {"topic", "offsets": {"<partition>": int}, "at": epoch}, set
# (NX) by the first push run of that (date, hour). Three days, like the prewarm marker: on-call reads it
# back with `later-read sent` the morning after a complaint.
PUSH_START_PREFIX = INTERNAL_PREFIX + "push:start:"
PUSH_START_TTL_SECONDS = 3 * 86400

# Job locks (`later_read.store.lock`). Their TTL and how long a run waits for one are config ([lock]): short
# and refreshed, so a job killed with -9 frees the lock within a minute, and the next run takes it over.
LOCK_PREFIX = INTERNAL_PREFIX + "lock:"

# The day ledger: one entry per (date, push hour[, shard]) (later_read/core/ledger.py has its shape): the hour's
# state (running, done, partial, expired), its users per outcome, when it ran and how late. Catch-up, the
# lateness rule, `later-read day` and alerting read it. Its `clean` field says "every message a run of this
# hour produced was confirmed and marked": a run writes the entry unclean before it produces and clean only
# when it ends so; an entry that is absent or unclean while a start key exists = a run died or lost track
# of deliveries, and the next run first marks what the topic holds (jobs/push/recovery.py). Its own key (not
# a field of the start key) so the start stays write-once (SET NX). Three days, like the start record it is
# read with: a run judges the last 24 h and looks for the ledger's earliest entry over its whole life
# (LEDGER_DAYS dates), so a first deployment neither sends nor alerts on the hours before it.
PUSH_LEDGER_PREFIX = INTERNAL_PREFIX + "push:ledger:"
PUSH_LEDGER_TTL_SECONDS = PUSH_START_TTL_SECONDS
LEDGER_DAYS = PUSH_LEDGER_TTL_SECONDS // 86400 + 1  # dates whose entries can still exist, today included

# Scratch key used by `later-read check` to prove Redis accepts writes; deleted right after.
CHECK_SCRATCH_PREFIX = INTERNAL_PREFIX + "check:"
CHECK_SCRATCH_TTL_SECONDS = 60


@dataclass(frozen=True)
class Keys:
    """Key builder bound to the configured per-user value prefix."""

    value_prefix: str = "rec:later_read:"

    def rec(self, uid: str) -> str:
        """The per-user prewarmed value (seed format: `rec:later_read:<uid>`)."""
        return f"{self.value_prefix}{uid}"

    def recs(self, uids: Iterable[str]) -> list[str]:
        """`rec` of each uid (the push reads a batch's values with them)."""
        prefix = self.value_prefix
        return [prefix + uid for uid in uids]

    def uid_of(self, key: str | bytes) -> str:
        """Inverse of `rec` (for `show`/scans)."""
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(self.value_prefix) :]

    @staticmethod
    def run_tag(scope: RunScope) -> str:
        """`{<date>[:<HH>][shard suffix]}`: the hash tag of one run's lock and records."""
        hour = "" if scope.hour is None else f":{scope.hour:02d}"
        return "{" + scope.date + hour + scope.suffix + "}"

    @staticmethod
    def prewarm_done(scope: RunScope) -> str:
        """`later_read:prewarm:done:{<date>[shard suffix]}`: the completion marker of the prewarm of the scope's
        day and shard (its hour, if any, plays no part)."""
        return f"{PREWARM_DONE_PREFIX}{Keys.run_tag(scope.day())}"

    @staticmethod
    def prewarm_ready(scope: RunScope, hour: int) -> str:
        """`later_read:prewarm:ready:{<date>[shard suffix]}:<HH>`: every user of push hour `hour` is prewarmed
        by the scope's day and shard (in the hash slot of the prewarm's lock)."""
        return f"{PREWARM_READY_PREFIX}{Keys.run_tag(scope.day())}:{hour:02d}"

    @staticmethod
    def sent(date: str, uid: str) -> str:
        return f"{SENT_PREFIX}{date}:{uid}"

    @staticmethod
    def sents(date: str, uids: Iterable[str]) -> list[str]:
        """`sent` of each uid (a batch's markers, read and written)."""
        prefix = f"{SENT_PREFIX}{date}:"
        return [prefix + uid for uid in uids]

    @staticmethod
    def push_start(scope: RunScope) -> str:
        """`later_read:push:start:{<date>:<HH>[shard suffix]}`: the topic offsets where the hour's push began."""
        return f"{PUSH_START_PREFIX}{Keys.run_tag(scope)}"

    @staticmethod
    def lock(job: str, scope: RunScope) -> str:
        """`later_read:lock:<job>:{<date>[:<HH>][shard suffix]}`: a run's lock; one per shard when sharded."""
        return f"{LOCK_PREFIX}{job}:{Keys.run_tag(scope)}"

    @staticmethod
    def push_ledger(scope: RunScope) -> str:
        """`later_read:push:ledger:{<date>:<HH>[shard suffix]}`: the hour's day-ledger entry (core/ledger.py)."""
        return f"{PUSH_LEDGER_PREFIX}{Keys.run_tag(scope)}"

    @staticmethod
    def check_scratch(token: str) -> str:
        return f"{CHECK_SCRATCH_PREFIX}{token}"
