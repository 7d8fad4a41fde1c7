"""Every Redis key later-read reads or writes is built here, and nowhere else.

A run's own records share its lock's hash tag, `{<date>[:<HH>][shard suffix]}` (`run_tag`): the push
hour's lock, start record and ledger entry, the prewarm's lock, completion marker and readiness markers.
Redis Cluster puts keys with one tag in one hash slot, so a single script can check the lock and write the
record atomically in every mode (docs/design.md, "The job lock": fencing). Per-user keys (values, sent
markers) have no tag: they spread over the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from later_read import constants


@dataclass(frozen=True)
class Keys:
    """Key builder bound to the configured per-user value prefix."""

    value_prefix: str = "rec:later_read:"

    def rec(self, uid: str) -> str:
        """The per-user prewarmed value (seed format: `rec:later_read:<uid>`)."""
        return f"{self.value_prefix}{uid}"

    def uid_of(self, key: str | bytes) -> str:
        """Inverse of `rec` (for `show`/scans)."""
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(self.value_prefix):]

    @staticmethod
    def run_tag(date: str, hour: int | None = None, suffix: str = "") -> str:
        """`{<date>[:<HH>][shard suffix]}`: the hash tag of one run's lock and records."""
        return "{" + date + ("" if hour is None else f":{hour:02d}") + suffix + "}"

    @staticmethod
    def prewarm_done(date: str, suffix: str = "") -> str:
        """`later_read:prewarm:done:{<date>[shard suffix]}`: the prewarm's completion marker; `suffix` is the
        shard's (`Shard.suffix`, "" unsharded)."""
        return f"{constants.PREWARM_DONE_PREFIX}{Keys.run_tag(date, None, suffix)}"

    @staticmethod
    def prewarm_ready(date: str, hour: int, suffix: str = "") -> str:
        """`later_read:prewarm:ready:{<date>[shard suffix]}:<HH>`: every user of that push hour is prewarmed
        (in the hash slot of the prewarm's lock)."""
        return f"{constants.PREWARM_READY_PREFIX}{Keys.run_tag(date, None, suffix)}:{hour:02d}"

    @staticmethod
    def sent(date: str, uid: str) -> str:
        return f"{constants.SENT_PREFIX}{date}:{uid}"

    @staticmethod
    def push_start(date: str, hour: int, suffix: str = "") -> str:
        """`later_read:push:start:{<date>:<HH>[shard suffix]}`: the topic offsets where the hour's push began."""
        return f"{constants.PUSH_START_PREFIX}{Keys.run_tag(date, hour, suffix)}"

    @staticmethod
    def lock(job: str, date: str, hour: int | None = None, suffix: str = "") -> str:
        """`later_read:lock:<job>:{<date>[:<HH>][shard suffix]}`: a run's lock; one per shard when sharded
        (`suffix` = `Shard.suffix`)."""
        return f"{constants.LOCK_PREFIX}{job}:{Keys.run_tag(date, hour, suffix)}"

    @staticmethod
    def push_ledger(date: str, hour: int, suffix: str = "") -> str:
        """`later_read:push:ledger:{<date>:<HH>[shard suffix]}`: the hour's day-ledger entry (ledger.py)."""
        return f"{constants.PUSH_LEDGER_PREFIX}{Keys.run_tag(date, hour, suffix)}"

    @staticmethod
    def check_scratch(token: str) -> str:
        return f"{constants.CHECK_SCRATCH_PREFIX}{token}"
