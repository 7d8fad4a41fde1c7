"""The push message: what one user receives, as the JSON the Kafka consumers read (key = uid).

`msg_id` is a pure function of (date, uid): a rerun, a `--force` or a duplicate delivery after a crash
carries the same id, which is what lets consumers deduplicate. Never change MSG_NAMESPACE: doing so
would make every consumer see yesterday's retries as new messages. `created_at` is read from the run's
clock (later_read/core/clock.py: `--now`, else the wall clock); `expires_at` is the end of the message's hour's
window (later_read/core/schedule.py), after which a sender should drop it.

`PushMessage` is the message's one shape: `PushMessage.build` (what the push and `rerun` send),
`encode()` (the bytes produced: JSON, the fields in their declared order) and `PushMessage.decode(raw)`
(what recovery, `sent`, the fault suite and the sandbox demo read back from the topic).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from typing import Any

import msgspec
import orjson

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
    from the SHA-1 hex digest directly: its version nibble is 5 and its variant's two bits 10
    (docs/design.md, "The push message", says why).
    """
    h = _sha1(_NAMESPACE_BYTES + f"later_read:{date}:{uid}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_sha1 = hashlib.sha1
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # (nibble & 0x3) | 0x8


def expires_at(schedule: Schedule, date: str, hour: int, late_from: dt.datetime | None = None) -> str:
    """The message's `expires_at` (ISO 8601 with the zone's offset), after which the sender should drop
    it rather than deliver a stale push: `Schedule.expiry` (the hour's window end; with `late_from`, the
    now of an --allow-late send, a fresh window from then)."""
    return schedule.iso(schedule.expiry(Hour(date, hour), late_from))


@dataclasses.dataclass(frozen=True, slots=True)
class Material:
    """A book's card as the material service returns it (clients/material.py), carried by the message."""

    material_id: str
    title: str
    content: str
    cover_url: str
    deeplink: str


class BadMessage(ValueError):
    """Bytes on the topic that are not a push message: not a JSON object with a string msg_id."""


class PushMessage(msgspec.Struct):
    """One user's push message (the brief's fields, in the order they are encoded). A msgspec Struct: the
    push builds and encodes one per user, in C (docs/design.md, "The push message").

    What the push builds holds the types below. A message read back from the topic (`decode`) holds each
    field as it was found there (None when absent): a topic may be shared, so its readers compare the
    fields they need, they do not trust them."""

    msg_id: str
    source_uid: str
    project: str
    task_id: str
    push_date: str
    push_hour: int
    rec_id: str
    rec_type: str
    material_id: str
    trace_id: str
    title: str
    content: str
    cover_url: str
    deeplink: str
    created_at: str
    expires_at: str

    @classmethod
    def build(
        cls, user: TaskUser, value: CachedValue, material: Material, *, date: str, hour: int, clock: Clock, expires: str
    ) -> PushMessage:
        """The message of `user` for push hour `hour` of `date`: `created_at` is when it was built by the
        run's clock, in the push timezone; `expires` is `expires_at(...)` of its hour."""
        return cls(
            msg_id(date, user.uid),
            user.uid,
            user.project,
            user.task_id,
            date,
            hour,
            value.rec_id,
            value.rec_type,
            value.material_id,
            value.trace_id,
            material.title,
            material.content,
            material.cover_url,
            material.deeplink,
            clock.iso_ms(),
            expires,
        )

    def encode(self) -> bytes:
        """The bytes produced to Kafka: a JSON object of the fields in their declared order, each string as
        orjson writes it (`msg_id_of` reads the msg_id back from them)."""
        return _encode(self)

    @classmethod
    def decode(cls, raw: bytes | str | None) -> PushMessage:
        """A message read from the topic; BadMessage when it is not one (not a JSON object, or no string
        msg_id). Every other field is kept as found, None when absent; fields not of the message are
        ignored."""
        try:
            data = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            raise BadMessage("not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("msg_id"), str):
            raise BadMessage("not a JSON object with a string msg_id")
        found: list[Any] = [data.get(name) for name in _FIELDS]  # as found: a field may be absent (None)
        return cls(*found)

    def to_dict(self) -> dict[str, Any]:
        """The fields by name, in their order (what `encode` writes)."""
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = PushMessage.__struct_fields__
_encode = msgspec.json.Encoder().encode
_ID_START = len(b'{"msg_id":"')
_ID_SPAN = slice(_ID_START, _ID_START + 36)


def msg_id_of(raw: bytes) -> str:
    """The msg_id of an encoded PushMessage: its first field, at a fixed place (the push's delivery reports
    read it back instead of carrying it beside every message)."""
    return raw[_ID_SPAN].decode()
