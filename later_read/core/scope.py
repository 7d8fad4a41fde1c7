"""The run's scope: RunScope (date, hour, shard), and Shard, the slice of a day's users one process works
on (a Kubernetes Indexed Job completion).

A RunScope is built once at the command line (`push_options`, `prewarm_options`, the on-call commands) and
handed to everything that reads or writes the run's records: the Store (whose keys take it: store/keys.py),
recovery, the wait for the prewarm, the ledger, the hour tracker, the locks. Its key suffix and its SQL
filter are its shard's.

Every run of a deployment splits the users the same way: N is always `[shards] count` (`--shard K/N` with
another N is refused), and with count > 1 a run without a shard is refused too, so no run takes a lock of
another split (the whole day's, another N's) and works beside the shards on their users.

A user belongs to shard `CRC32(source_uid) % count`; the database evaluates it (`UserQuery.shard`), so a
shard reads only its own users. MariaDB's CRC32() and StarRocks' crc32() (StarRocks >= 3.3) are zlib's
CRC-32, the same function as Python's `zlib.crc32` (`Shard.owns` below), so the split is the same
everywhere. Per-run Redis keys (locks, markers) take `.suffix`, empty for the unsharded whole day, so
an unsharded deployment keeps every key it had.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from later_read.core.schedule import Hour
from later_read.errors import UsageError

#: Set by Kubernetes in every pod of an Indexed Job (completionMode: Indexed): 0 .. completions-1.
JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise UsageError(
                f"shard {self.index}/{self.count}: expected K/N with N >= 1 and 0 <= K < N, e.g. --shard 2/4"
            )

    @classmethod
    def whole(cls) -> Shard:
        """The whole day: shard 0 of 1."""
        return cls(0, 1)

    @classmethod
    def of(cls, uid: str, count: int) -> Shard:
        """The shard of `count` that `uid` belongs to."""
        return cls(zlib.crc32(uid.encode()) % count, count)

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def suffix(self) -> str:
        """What per-run Redis keys end with: "" for the whole day, else ":shard<K>of<N>"."""
        return "" if self.count == 1 else f":shard{self.index}of{self.count}"

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def siblings(self) -> list[Shard]:
        """Every shard of the same split (this one included), in index order."""
        return [Shard(i, self.count) for i in range(self.count)]

    def owns(self, uid: str) -> bool:
        """Whether `uid` is in this shard: the same test as the SQL (zlib CRC-32 of the UTF-8 uid)."""
        return zlib.crc32(uid.encode()) % self.count == self.index

    @property
    def sql(self) -> tuple[str, list[int]] | None:
        """The users query's condition for this shard (the test of `owns`, in pymysql's paramstyle) and its
        parameters; None for the whole day."""
        return ("CRC32(source_uid) %% %s = %s", [self.count, self.index]) if self.sharded else None


WHOLE = Shard(0, 1)


@dataclass(frozen=True)
class RunScope:
    """What one run works on: a date, one push hour of it (None: the whole day, the prewarm's) and a shard
    of the day's users (WHOLE unsharded)."""

    date: str
    hour: int | None = None
    shard: Shard = WHOLE

    @classmethod
    def split(cls, date: str, count: int, hour: int | None = None) -> RunScope:
        """Shard 0 of `count` on `date`: what the readers of every shard's records (`day`, `sent`) hold to
        list them (`shards()`, `whole_and_shards()`)."""
        return cls(date, hour, Shard(0, count))

    @property
    def suffix(self) -> str:
        """What the run's Redis keys end with (the shard's: "" unsharded)."""
        return self.shard.suffix

    @property
    def slot(self) -> Hour:
        """The push hour of the scope (the schedule's key); only for a scope with an hour."""
        assert self.hour is not None, "a day's scope has no push hour"
        return Hour(self.date, self.hour)

    def at(self, hour: Hour) -> RunScope:
        """The same shard at push hour `hour` (of its date: a run catches up hours of the day before)."""
        return dataclasses.replace(self, date=hour.date, hour=hour.hour)

    def day(self) -> RunScope:
        """The same shard's whole day (the prewarm's records: its lock and markers)."""
        return dataclasses.replace(self, hour=None)

    def shards(self) -> list[RunScope]:
        """Every shard's scope of the same split (this one included), in index order."""
        return [dataclasses.replace(self, shard=shard) for shard in self.shard.siblings()]

    def whole_and_shards(self) -> list[RunScope]:
        """The unsharded scope, then every shard's when sharded: where a record of the split may be (the
        prewarm's markers, which the push reads whichever way the prewarm ran; the push's start records)."""
        whole = dataclasses.replace(self, shard=WHOLE)
        return [whole, *self.shards()] if self.shard.sharded else [whole]

    def describe(self, job: str) -> str:
        """`<job> run for <date>[ hour <h>][ shard K/N]`: the lock holder's name for the run."""
        hour = "" if self.hour is None else f" hour {self.hour}"
        return f"{job} run for {self.date}{hour}" + (f" shard {self.shard.label}" if self.shard.sharded else "")


def parse_shard(text: str | None, count: int, environ: Mapping[str, str] | None = None) -> Shard:
    """The shard from `--shard K/N`, else K from JOB_COMPLETION_INDEX with N = `[shards] count`, else
    the whole day. N must be `[shards] count`: a run of another split would take other locks and records
    than the deployment's runs and work beside them on the same users. UsageError (exit 2) names the
    problem and the fix."""
    environ = os.environ if environ is None else environ
    if text:
        index, sep, total = text.partition("/")
        if not (sep and index.strip().isdigit() and total.strip().isdigit()):
            raise UsageError(f"--shard {text!r}: expected K/N (shard K of N, counted from 0), e.g. 2/4")
        shard = Shard(int(index), int(total))
        if shard.count != count:
            raise UsageError(
                f"--shard {shard.label}: N is {shard.count} but [shards] count = {count}, so it "
                "would take other locks than the deployment's runs and work beside them on the "
                f"same users; use --shard K/{count}" + (", or no --shard" if count == 1 else "")
            )
        return shard
    job_index = environ.get(JOB_INDEX_ENV)
    if job_index is not None and count > 1:
        if not job_index.strip().isdigit():
            raise UsageError(f"{JOB_INDEX_ENV}={job_index!r}: expected a number 0..{count - 1}")
        return Shard(int(job_index), count)
    return Shard.whole() if count == 1 else _needs_index(count)


def _needs_index(count: int) -> Shard:
    raise UsageError(
        f"[shards] count = {count} but no shard given: pass --shard K/{count} or run "
        f"as an Indexed Job (which sets {JOB_INDEX_ENV})"
    )
