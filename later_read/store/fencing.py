"""Fenced writes: a run's records are written only while Redis still holds its lock's token.

A fence is the run's `JobLock` (lock.py): its `key`, its `token`, whether it is `lost`, `lose(why)` and
`error()`. The Store's fenced writes (store.py) run FENCED_SET, one script that compares `GET <lock key>`
with the token and only then writes, so the check and the write are one atomic step in Redis:

    standalone, sentinel   any keys: the start record, ledger entry, prewarm markers and the sent markers
                           of a whole batch, each batch in one script call
    cluster                a script's keys must share a hash slot: the lock, start record, ledger entry
                           and prewarm markers do (keys.py, `run_tag`); the sent markers spread over the
                           slots, so their batch carries `GET <lock key>` in the same pipeline round trip
                           as the writes, checked when it returns (docs/design.md, "The job lock", says
                           what each mode guarantees)

A write that finds the lock lost (or a fence already known lost: then Redis is not asked) calls
`fence.lose` and raises the fence's LockLost.
"""

from __future__ import annotations

from typing import Protocol

from later_read.errors import LockLost
from later_read.log import quote

# KEYS[1] the lock, KEYS[2..] the keys; ARGV[1] the token, ARGV[2] the TTL, ARGV[3] "NX" or "", ARGV[4..]
# the values. -1 when the lock does not hold the token (nothing written), else the keys written.
FENCED_SET = """if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local written = 0
for i = 2, #KEYS do
  if ARGV[3] == 'NX' then
    if redis.call('SET', KEYS[i], ARGV[i + 2], 'NX', 'EX', ARGV[2]) then written = written + 1 end
  else
    redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ARGV[2])
    written = written + 1
  end
end
return written"""
LOST = -1


class Fence(Protocol):
    key: str
    token: str
    lost: str | None

    def lose(self, why: str) -> None: ...

    def error(self) -> LockLost: ...


def refuse_if_lost(fence: Fence | None) -> None:
    """A fence already known lost writes nothing: LockLost at once."""
    if fence is not None and fence.lost is not None:
        raise fence.error()


def checked(fence: Fence, result: int, what: str) -> int:
    """FENCED_SET's result: LockLost (after `lose`) when the script found the lock not the run's."""
    if result == LOST:
        fence.lose(f"{what} found it gone or held by another run; nothing was written")
        raise fence.error()
    return result


def check_owner(fence: Fence, holder: bytes | None, what: str) -> None:
    """The lock's value read beside a batch (`GET <lock key>` in the batch's round trip): LockLost (after
    `lose`) when it is not the fence's token."""
    if holder == fence.token.encode():
        return
    found = "gone" if holder is None else f"held by {quote(holder.decode('utf-8', 'replace'))}"
    fence.lose(f"{what} found it {found}")
    raise fence.error()
