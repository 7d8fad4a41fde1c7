"""The bytes other systems read, pinned for a fixed input: a push message (Kafka consumers) and a cached
value (Redis, read by the push and by other systems). A change here is a change of the wire format."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import orjson

from later_read.core.clock import Clock
from later_read.core.message import Material, PushMessage, expires_at, msg_id, msg_id_of
from later_read.core.schedule import Schedule
from later_read.core.users import TaskUser
from later_read.core.value import CachedValue, decode, encode as encode_value

ZONE = ZoneInfo("Asia/Shanghai")
# A hostile uid and card: non-ASCII, a newline, quotes, a backslash, a tab, U+2028.
USER = TaskUser('ユーザー 1\n"x"', "proj-a", "later_read_20261123")
VALUE = CachedValue("rec", "20261123", "00-abc-01", "r-9", "book", "m-3")
CARD = Material("m-3", "Title \u2028 é", 'Body\t"quoted" \\ end', "https://c/x.png?a=1&b=2", "app://book/m-3")
MESSAGE = (
    b'{"msg_id":"f2290e43-652e-5c89-b2aa-eef07d4fa7b7",'
    b'"source_uid":"\xe3\x83\xa6\xe3\x83\xbc\xe3\x82\xb6\xe3\x83\xbc 1\\n\\"x\\"",'
    b'"project":"proj-a","task_id":"later_read_20261123","push_date":"20261123","push_hour":9,'
    b'"rec_id":"r-9","rec_type":"book","material_id":"m-3","trace_id":"00-abc-01",'
    b'"title":"Title \xe2\x80\xa8 \xc3\xa9","content":"Body\\t\\"quoted\\" \\\\ end",'
    b'"cover_url":"https://c/x.png?a=1&b=2","deeplink":"app://book/m-3",'
    b'"created_at":"2026-11-23T09:05:00.123+08:00","expires_at":"2026-11-23T09:45:00+08:00"}'
)


def fixed_clock(iso: str) -> Clock:
    """A clock that does not advance: `now()` is `iso` whenever it is read."""
    return Clock(ZONE, dt.datetime.fromisoformat(iso), monotonic=lambda: 0.0)


def test_a_push_message_is_these_bytes():
    clock = fixed_clock("2026-11-23T09:05:00.123456+08:00")
    schedule = Schedule(ZONE, 45)
    message = PushMessage.build(
        USER, VALUE, CARD, date="20261123", hour=9, clock=clock, expires=expires_at(schedule, "20261123", 9)
    )
    assert message.encode() == MESSAGE
    assert PushMessage.decode(MESSAGE) == message


def test_a_late_message_expires_a_window_after_the_send():
    schedule = Schedule(ZONE, 45)
    late = dt.datetime.fromisoformat("2026-11-23T11:00:00+08:00")
    assert expires_at(schedule, "20261123", 9, late) == "2026-11-23T11:45:00+08:00"


def test_a_cached_value_is_these_bytes():
    assert encode_value(VALUE) == (
        b'{"outcome":"rec","date":"20261123","trace_id":"00-abc-01","rec_id":"r-9",'
        b'"rec_type":"book","material_id":"m-3"}'
    )
    quiet = CachedValue("not_in_experiment", "20261123", "t\u00e9")
    assert encode_value(quiet) == b'{"outcome":"not_in_experiment","date":"20261123","trace_id":"t\xc3\xa9"}'
    undated = CachedValue("no_recommendation", None, "")
    assert encode_value(undated) == b'{"outcome":"no_recommendation","date":null,"trace_id":""}'
    for value in (VALUE, quiet, undated):
        assert decode(encode_value(value)) == value


def test_messages_are_orjsons_bytes_of_their_fields_and_carry_their_msg_id_first():
    """PushMessage (a msgspec Struct) encodes as orjson writes the fields' dict, hostile strings included,
    and `msg_id_of` reads the msg_id back from the bytes (the delivery reports do)."""
    clock = fixed_clock("2026-11-23T09:05:00.123456+08:00")
    other = TaskUser("2\u2028", "p\u00e9\x7f", "t\x01\x1f")
    card = Material("m-3", "New title \\", "", '"', "x\u2029\ud7ff")
    for user, value, material in ((USER, VALUE, CARD), (other, VALUE._replace(trace_id="\t\b\f"), card)):
        message = PushMessage.build(
            user, value, material, date="20261123", hour=9, clock=clock, expires="2026-11-23T09:45:00+08:00"
        )
        raw = message.encode()
        assert raw == orjson.dumps(message.to_dict())
        assert msg_id_of(raw) == message.msg_id == msg_id("20261123", user.uid)


def test_the_clocks_millisecond_text_is_nows():
    """Clock.iso_ms is now().isoformat(timespec="milliseconds") at every reading, a set clock advancing
    by monotonic time (across a second and a millisecond boundary, and a DST zone's change)."""
    ticks = iter(
        [
            0.0,
            0.0,
            0.0,
            0.0002985,
            0.0002985,
            0.0002995,
            0.0002995,
            0.0004,
            0.0004,
            0.8765432,
            0.8765432,
            0.8765435,
            0.8765435,
            1.0000005,
            1.0000005,
            3600.25,
            3600.25,
        ]
    )
    clock = Clock(ZONE, dt.datetime.fromisoformat("2026-11-23T09:05:00.999700+08:00"), monotonic=ticks.__next__)
    for _ in range(8):
        assert clock.iso_ms() == clock.now().isoformat(timespec="milliseconds")
    paris = ZoneInfo("Europe/Paris")
    dst = Clock(
        paris,
        dt.datetime.fromisoformat("2026-10-25T02:59:59.9995+02:00"),
        monotonic=iter([0.0, 0.0, 0.0, 0.001, 0.001]).__next__,
    )
    for _ in range(2):
        assert dst.iso_ms() == dst.now().isoformat(timespec="milliseconds")
    wall = Clock(ZONE)
    assert dt.datetime.fromisoformat(wall.iso_ms()).utcoffset() == dt.timedelta(hours=8)
