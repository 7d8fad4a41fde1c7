"""Every Redis key later-read reads or writes is built here, and nowhere else.

Keeping key construction in one object is what lets a later Redis Cluster deployment add hash tags
(`{...}`) in one place.
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
    def prewarm_done(date: str, suffix: str = "") -> str:
        """The prewarm's completion marker; `suffix` is the shard's (`Shard.suffix`, "" unsharded)."""
        return f"{constants.PREWARM_DONE_PREFIX}{date}{suffix}"

    @staticmethod
    def prewarm_ready(date: str, hour: int, suffix: str = "") -> str:
        """`later_read:prewarm:ready:<date>:<HH>[shard suffix]`: every user of that push hour is prewarmed."""
        return f"{constants.PREWARM_READY_PREFIX}{date}:{hour:02d}{suffix}"

    @staticmethod
    def sent(date: str, uid: str) -> str:
        return f"{constants.SENT_PREFIX}{date}:{uid}"

    @staticmethod
    def push_start(date: str, hour: int, suffix: str = "") -> str:
        """`later_read:push:start:<date>:<HH>[shard suffix]`: the topic offsets where the hour's push began."""
        return f"{constants.PUSH_START_PREFIX}{date}:{hour:02d}{suffix}"

    @staticmethod
    def lock(job: str, date: str, hour: int | None = None, suffix: str = "") -> str:
        """A run's lock; one per shard when sharded (`suffix` = `Shard.suffix`)."""
        when = f"{date}" if hour is None else f"{date}:{hour:02d}"
        return f"{constants.LOCK_PREFIX}{job}:{when}{suffix}"

    @staticmethod
    def push_ledger(date: str, hour: int, suffix: str = "") -> str:
        """`later_read:push:ledger:<date>:<HH>[shard suffix]`: the hour's day-ledger entry (ledger.py)."""
        return f"{constants.PUSH_LEDGER_PREFIX}{date}:{hour:02d}{suffix}"

    @staticmethod
    def check_scratch(token: str) -> str:
        return f"{constants.CHECK_SCRATCH_PREFIX}{token}"
