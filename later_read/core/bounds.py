"""The bounds of what the services may send: one reply, and every string field taken from a reply.

One place for them, read by the wire (`max_reply_bytes`), the three contract parsers (ab.py,
recommend.py, material.py) and the Redis value's decoder (core/value.py). A reply or a field over its
bound fails that user with reason `oversize_reply` (not retried; docs/design.md, "Bounded memory").

Field bounds are UTF-8 bytes, far above what the contracts carry and low enough that no reply can make a
Redis value or a Kafka message grow without bound:

    value, trace_id   256    an A/B value ("0", "1") and a trace id (W3C traceparent: 55 characters)
    rec_id            256    an engine's id of a recommended item
    rec_type           64    a word such as "book", "serial", "audiobook"
    material_id       256    a book id
    title           1,024    a push title (~340 CJK characters; a notification shows ~50)
    content        16,384    a push body or card blurb (APNs and FCM refuse payloads over 4 KiB)
    cover_url       4,096    URLs: 2,048 is the common limit of browsers and CDNs, twice that for deep
    deeplink        4,096    links carrying tracking parameters

A card at every bound is 25.6 KiB of strings; JSON may escape each control character as 6 bytes, so
the largest legitimate reply is under 160 KiB, and `[services] max_reply_bytes` defaults to 256 KiB.
"""

from __future__ import annotations

from later_read.errors import PermanentServiceError

FIELD_BYTES = {
    "value": 256,
    "trace_id": 256,
    "rec_id": 256,
    "rec_type": 64,
    "material_id": 256,
    "title": 1024,
    "content": 16 * 1024,
    "cover_url": 4096,
    "deeplink": 4096,
}
# Characters up to which a field is within its bound whatever it holds (4 UTF-8 bytes at most each): no
# need to count its bytes (the push's per-user value check is these comparisons alone).
SURELY_WITHIN = {name: bound // 4 for name, bound in FIELD_BYTES.items()}
DEFAULT_MAX_REPLY_BYTES = 256 * 1024
# The reply bound's range: a card at every field bound must fit (32 KiB); 50 replies of 16 MiB are 800 MiB.
MIN_REPLY_BYTES = 32 * 1024
MAX_REPLY_BYTES = 16 * 1024 * 1024
# A stored value (trace_id, rec_id, rec_type, material_id, date, outcome) is 924 bytes at every field
# bound, 5,084 if every byte were a control character JSON escapes as \u00XX; 8 KiB leaves room for a
# foreign writer's extra fields. A larger value is `corrupt`, never parsed.
MAX_VALUE_BYTES = 8 * 1024
OVERSIZE = "oversize_reply"


def size(text: str) -> int:
    """UTF-8 bytes of `text` (its length for ASCII, which CPython knows without encoding)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def over(name: str, text: str) -> str | None:
    """What is wrong when `text` is over the field's bound (`<name> of N bytes, over its B-byte bound`),
    else None."""
    if len(text) <= SURELY_WITHIN[name]:
        return None
    bound, length = FIELD_BYTES[name], size(text)
    return f"{name} of {length:,} bytes, over its {bound:,}-byte bound" if length > bound else None


def check_reply(service: str, **fields: str) -> None:
    """PermanentServiceError `oversize_reply` when a string the service sent is over its bound."""
    for name, text in fields.items():
        problem = over(name, text)
        if problem is not None:
            raise PermanentServiceError(service, OVERSIZE, problem)
