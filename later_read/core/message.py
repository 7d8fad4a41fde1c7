"""The push message: what one user receives, as the JSON the Kafka consumers read (key = uid).

`msg_id` is a pure function of (date, uid): a rerun, a `--force` or a duplicate delivery after a crash
carries the same id, which is what lets consumers deduplicate. Never change MSG_NAMESPACE: doing so
would make every consumer see yesterday's retries as new messages. `created_at` is read from the run's
clock (later_read/core/clock.py: `--now`, else the wall clock); `expires_at` is the end of the message's hour's
window (later_read/core/schedule.py), after which a sender should drop it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

import orjson

from later_read.clients.material import Material
from later_read.core.clock import Clock
from later_read.core.schedule import Hour, Schedule
from later_read.core.users import TaskUser
from later_read.core.value import CachedValue

# uuid5(NAMESPACE_URL, "https://later-read/push-message"), written out so it can never drift.
MSG_NAMESPACE = uuid.UUID("56ceba24-d476-55d4-8d79-7a252494d8f7")
_NAMESPACE_BYTES = MSG_NAMESPACE.bytes


def msg_id(date: str, uid: str) -> str:
    """The message id of `uid`'s later-read push on `date` (YYYYMMDD): the same on every run.

    Exactly `str(uuid.uuid5(MSG_NAMESPACE, f"later_read:{date}:{uid}"))` (a test holds them equal), computed
    from the SHA-1 digest directly (docs/design.md, "The push message", says why).
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"later_read:{date}:{uid}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def expires_at(schedule: Schedule, date: str, hour: int, late_from: dt.datetime | None = None) -> str:
    """The message's `expires_at` (ISO 8601 with the zone's offset), after which the sender should drop
    it rather than deliver a stale push: `Schedule.expiry` (the hour's window end; with `late_from`, the
    now of an --allow-late send, a fresh window from then)."""
    return schedule.iso(schedule.expiry(Hour(date, hour), late_from))


def build_message(user: TaskUser, value: CachedValue, material: Material, *, date: str, hour: int,
                  clock: Clock, expires: str) -> dict[str, Any]:
    """The message dict (brief's fields); `created_at` is when it was built by the run's clock, in the push
    timezone; `expires` is `expires_at(...)` of its hour."""
    return {
        "msg_id": msg_id(date, user.uid),
        "source_uid": user.uid,
        "project": user.project,
        "task_id": user.task_id,
        "push_date": date,
        "push_hour": hour,
        "rec_id": value.rec_id,
        "rec_type": value.rec_type,
        "material_id": value.material_id,
        "trace_id": value.trace_id,
        "title": material.title,
        "content": material.content,
        "cover_url": material.cover_url,
        "deeplink": material.deeplink,
        "created_at": clock.now().isoformat(timespec="milliseconds"),
        "expires_at": expires,
    }


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)
