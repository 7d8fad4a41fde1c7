"""Properties over generated input (hypothesis): the cached value's codec, the push message's codec and
msg_id, log-line escaping, the users' merge across task ids, and the Redis commands' packing. Each holds
for any string, including newlines, control characters, quotes, the alert keyword and key=value
lookalikes; no timing is asserted (deadline off)."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import re
import uuid
from zoneinfo import ZoneInfo

import orjson
from hypothesis import HealthCheck, example, given, settings, strategies as st
from redis.asyncio.connection import Connection
from redis.connection import HiredisRespSerializer

from helpers import unquote
from later_read import log
from later_read.clients.material import Material
from later_read.core.bounds import FIELD_BYTES, MAX_VALUE_BYTES
from later_read.core.clock import Clock
from later_read.core.message import MSG_NAMESPACE, BadMessage, PushMessage, msg_id
from later_read.core.users import TaskUser, merge_pages
from later_read.core.value import (
    ABSENT,
    CORRUPT,
    OUTCOME_REC,
    OUTCOMES,
    STALE,
    USABLE,
    CachedValue,
    Verdict,
    _decode_any,
    decode,
    encode,
    judge,
)
from later_read.errors import CorruptValue
from later_read.log import ALERT_KEYWORD
from later_read.store.client import _with_hiredis_packing

QUICK = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ZONE = ZoneInfo("Asia/Shanghai")

# Strings that try to break a line or a field: the alphabet leans on what escaping must handle. LOGGED
# adds lone surrogates (a uids file read with surrogateescape), which JSON cannot carry.
SPECIAL = st.sampled_from(list('\n\r\t\x00\x07\x0b\x0c\x1b\x7f\x85\u2028\u2029"\\= _'))


def hostile(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    tricky = st.text(st.one_of(SPECIAL, chars), max_size=40)
    return st.one_of(
        tricky,
        st.builds(lambda a, b: f"{a}{ALERT_KEYWORD}{b}", tricky, tricky),
        st.builds(lambda a, b: f'{a}" {b}=x {ALERT_KEYWORD}', tricky, tricky),
    )


HOSTILE = hostile(st.characters(exclude_categories=["Cs"]))
LOGGED = hostile(st.characters())


DATES = st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)).map(lambda d: d.strftime("%Y%m%d"))


def bounded(name: str, min_size: int = 0) -> st.SearchStrategy[str]:
    """Any text within the field's byte bound (core/bounds.py): what the prewarm may store."""
    return st.text(min_size=min_size, max_size=FIELD_BYTES[name] // 4)


# The cached value ----------------------------------------------------------------------------------
REC_VALUES = st.builds(
    CachedValue,
    st.just(OUTCOME_REC),
    st.one_of(st.none(), DATES, st.text(max_size=16)),
    bounded("trace_id"),
    bounded("rec_id", 1),
    bounded("rec_type", 1),
    bounded("material_id", 1),
)
QUIET_VALUES = st.builds(
    CachedValue,
    st.sampled_from([o for o in OUTCOMES if o != OUTCOME_REC]),
    st.one_of(st.none(), DATES, st.text(max_size=16)),
    bounded("trace_id"),
    st.just(""),
    st.just(""),
    st.just(""),
)  # no recommendation: nothing else is stored


@QUICK
@given(st.one_of(REC_VALUES, QUIET_VALUES))
def test_any_cached_value_round_trips(value):
    raw = encode(value)
    assert decode(raw) == value
    assert decode(raw.decode("utf-8")) == value  # as str too (redis-py may hand either)
    assert len(raw) <= MAX_VALUE_BYTES


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.text(max_size=30)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("outcome", "date", "trace_id", "rec_id", "rec_type", "material_id")
OBJECTS = st.dictionaries(st.sampled_from(FIELDS), st.one_of(JSON, st.sampled_from(OUTCOMES)), max_size=6)


def decodes_or_is_corrupt(raw: bytes | str) -> None:
    try:
        value = decode(raw)
    except CorruptValue as error:
        assert str(error) and "\n" not in str(error)  # one line naming what is wrong  # noqa: PT017
        assert_decoded_alike(raw)
        return
    assert_decoded_alike(raw)
    assert isinstance(value, CachedValue) and value.outcome in OUTCOMES
    assert value.date is None or isinstance(value.date, str)
    if value.is_rec:
        assert all(isinstance(v, str) and v for v in (value.rec_id, value.rec_type, value.material_id))
    assert decode(encode(value)) == value  # what decodes is a value this code would write


def assert_decoded_alike(raw: bytes | str) -> None:
    """`decode`'s msgspec fast path decides nothing: the same value, or the same error, as `_decode_any`."""
    outcomes = []
    for read in (decode, _decode_any):
        try:
            outcomes.append(read(raw))
        except CorruptValue as error:
            outcomes.append(str(error))
    if len(raw) <= MAX_VALUE_BYTES:
        assert outcomes[0] == outcomes[1]


# JSON text a prewarm never writes but a hand or another writer might: spacing, escapes, duplicate keys,
# unknown fields (also ones orjson refuses, a number too large), strings where the fast path wants them.
LOOKALIKES = st.builds(
    lambda fields, extra, space: "{" + f",{space}".join(fields + extra) + "}",
    st.lists(
        st.builds(
            lambda name, text: f'"{name}":{text}',
            st.sampled_from(FIELDS),
            st.one_of(
                st.text(max_size=12).map(lambda t: orjson.dumps(t).decode()),
                st.sampled_from(["null", "1", '""', '"rec"', '"not_in_experiment"', '"\\u00e9"', '"\\ud800"']),
                st.sampled_from(OUTCOMES).map(lambda o: f'"{o}"'),
            ),
        ),
        max_size=8,
    ),
    st.lists(st.sampled_from(['"x":1e999', '"x":[1,{"y":null}]', '"":0']), max_size=2),
    st.sampled_from(["", " ", "\n"]),
)


@QUICK
@given(LOOKALIKES)
@example('{"rec_id":"a","rec_type":"b","material_id":"c","x":1e999}')
@example('{"rec_id":"a","rec_type":"b","material_id":"c","rec_id":""}')
@example('{"rec_id":"\ud800","rec_type":"b","material_id":"c"}')  # a lone surrogate in a str (not JSON text)
@example('{"outcome":"rec","rec_id":"a","rec_type":"b","material_id":"' + "m" * 5000 + '"}')
def test_json_lookalikes_decode_alike_on_both_paths(text):
    decodes_or_is_corrupt(text)
    decodes_or_is_corrupt(text.encode("utf-8", "surrogatepass"))


@QUICK
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_reported_corrupt(raw):
    decodes_or_is_corrupt(raw)


def test_edge_bytes_decode_or_are_reported_corrupt():
    for raw in (
        b"",
        b"null",
        b"[1]",
        b'{"outcome":"rec"}',
        b"\xff\xfe",
        b"[" * 2000,
        b"1" * 400,
        b'{"outcome":"rec","rec_id":1,"rec_type":2,"material_id":3}',
        b"x" * (MAX_VALUE_BYTES + 1),
        b'{"outcome":"rec","rec_id":true,"rec_type":"b","material_id":"m"}',
        b'{"outcome":["rec"]}',
    ):
        decodes_or_is_corrupt(raw)


@QUICK
@given(OBJECTS)
def test_any_json_object_decodes_or_is_reported_corrupt(data):
    decodes_or_is_corrupt(orjson.dumps(data))


@QUICK
@given(
    raw=st.one_of(
        st.none(), st.binary(max_size=100), OBJECTS.map(orjson.dumps), st.one_of(REC_VALUES, QUIET_VALUES).map(encode)
    ),
    date=DATES,
)
def test_any_stored_value_has_one_verdict_for_a_date(raw, date):
    verdict = judge(raw, date)
    if raw is None:
        assert verdict == Verdict(ABSENT)
        return
    try:
        value = decode(raw)
    except CorruptValue as error:
        assert verdict == Verdict(CORRUPT, None, str(error))  # noqa: PT017
        return
    assert verdict == Verdict(USABLE if value.date == date else STALE, value)


# The push message ----------------------------------------------------------------------------------


@QUICK
@given(
    uid=HOSTILE,
    project=HOSTILE,
    task_id=HOSTILE,
    value=REC_VALUES,
    date=DATES,
    hour=st.integers(0, 23),
    card=st.builds(Material, HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE),
    expires=HOSTILE,
)
def test_any_push_message_round_trips_and_its_msg_id_is_date_and_uid_only(
    uid, project, task_id, value, date, hour, card, expires
):
    clock = Clock(ZONE, dt.datetime(2026, 11, 23, 9, 5, tzinfo=ZONE), monotonic=lambda: 0.0)
    message = PushMessage.build(
        TaskUser(uid, project, task_id), value, card, date=date, hour=hour, clock=clock, expires=expires
    )
    raw = message.encode()
    assert PushMessage.decode(raw) == message and b"\n" not in raw  # one JSON line, nothing lost
    assert orjson.loads(raw) == message.to_dict()  # the fields by name, as a consumer reads them
    assert (message.source_uid, message.push_date, message.push_hour) == (uid, date, hour)
    assert message.msg_id == msg_id(date, uid) == str(uuid.uuid5(MSG_NAMESPACE, f"later_read:{date}:{uid}"))


@QUICK
@given(
    st.one_of(
        st.binary(max_size=200),
        OBJECTS.map(orjson.dumps),
        st.dictionaries(st.sampled_from(["msg_id", "source_uid", "push_hour", "x"]), JSON).map(orjson.dumps),
    )
)
def test_anything_on_the_topic_decodes_or_is_a_bad_message(raw):
    try:
        message = PushMessage.decode(raw)
    except BadMessage as error:
        assert str(error) in ("not JSON", "not a JSON object with a string msg_id")  # noqa: PT017
        return
    assert isinstance(message.msg_id, str) and message.to_dict() == {
        name: orjson.loads(raw).get(name) for name in message.to_dict()
    }


@QUICK
@given(date=DATES, uid=HOSTILE, other=HOSTILE)
def test_msg_id_is_a_pure_uuid5_of_date_and_uid(date, uid, other):
    first = msg_id(date, uid)
    assert first == msg_id(date, uid) and uuid.UUID(first).version == 5
    assert (msg_id(date, other) == first) == (other == uid)


# Log lines -----------------------------------------------------------------------------------------
FIELD = re.compile(r'([A-Za-z0-9_.:-]+)=("(?:[^"\\]|\\.)*"|[^\s"]+)')


@QUICK
@given(value=LOGGED)
@example(value=ALERT_KEYWORD)
@example(value='x" hour=10 LATER_READ_ALERT')
@example(value="a=b\nc=d")
def test_any_value_is_one_field_on_one_line_and_reads_back(value):
    text = log.fields(uid=value, hour=9)
    assert len(text.splitlines()) == 1 and text.isprintable()
    assert ALERT_KEYWORD not in text
    assert [m.group(1) for m in FIELD.finditer(text)] == ["uid", "hour"]  # no forged key
    match = re.fullmatch(r'uid=("(?:[^"\\]|\\.)*"|[^\s"]+) hour=9', text)
    assert match, text
    assert unquote(match.group(1)) == value


@QUICK
@given(key=LOGGED, value=LOGGED)
def test_any_key_is_one_safe_key(key, value):
    text = log.fields(**{key: value})
    found = FIELD.fullmatch(text)
    assert found, text
    assert unquote(found.group(2)) == value


@QUICK
@given(values=st.lists(LOGGED, min_size=1, max_size=4))
def test_a_logged_event_is_one_line_and_never_an_alert(values):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log._Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("later_read.test_properties")
    logger.addHandler(handler)
    try:
        log.event(logger, "push.cache_miss", logging.WARNING, **{f"k{i}": v for i, v in enumerate(values)})
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and ALERT_KEYWORD not in lines[0]
    assert " push.cache_miss k0=" in lines[0]


@QUICK
@given(text=LOGGED)
def test_printable_keeps_any_text_on_one_line_without_the_keyword(text):
    shown = log.printable(text)
    assert len(shown.splitlines()) <= 1 and shown.isprintable() and ALERT_KEYWORD not in shown
    if text.isprintable() and ALERT_KEYWORD not in text:
        assert shown == text  # plain text is left as it is


@QUICK
@given(text=HOSTILE)
def test_defused_json_is_the_same_data_on_one_line_without_the_keyword(text):
    as_json = log.defused_json(orjson.dumps({"v": text}).decode())
    assert ALERT_KEYWORD not in as_json and "\n" not in as_json and "\r" not in as_json
    assert orjson.loads(as_json) == {"v": text}


def _packed(pack, args):
    """What `pack(*args)` gives: the bytes, or the error's type (both packers must refuse alike)."""
    try:
        return pack(*args)
    except Exception as exc:  # noqa: BLE001 - the comparison is of what each does
        return type(exc)


@QUICK
@given(
    command=st.sampled_from(["MGET", "SET", "EVALSHA", "GET", "CLIENT SETINFO", "SCRIPT LOAD"]),
    args=st.lists(
        st.one_of(
            LOGGED,
            st.binary(max_size=40),
            st.integers(),
            st.floats(allow_nan=False),
            st.binary(max_size=8).map(bytearray),
            st.binary(max_size=8).map(memoryview),
        ),
        max_size=6,
    ),
)
def test_the_stores_packer_writes_what_redis_pys_hiredis_packer_writes(command, args):
    """store/client.py packs with hiredis.pack_command directly; for any arguments it writes the bytes
    redis-py's HiredisRespSerializer writes (or refuses them alike)."""
    packing = _with_hiredis_packing(Connection)
    pack = packing.__new__(packing).pack_command  # packing alone: no connection made
    assert _packed(pack, (command, *args)) == _packed(HiredisRespSerializer().pack, (command, *args))


@st.composite
def task_streams(draw):
    """Per task id, its users as StarRocks pages them: rising uids (any text, byte order), each with a
    project, cut into pages of any sizes (the last may be empty, as a keyset read's end)."""
    streams, rows = [], []
    for task_id in draw(st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=4, unique=True)):
        uids = sorted(draw(st.sets(st.text(max_size=4), max_size=30)))
        users = [TaskUser(uid, draw(st.sampled_from(["novel", "comic", "audio"])), task_id) for uid in uids]
        rows += users
        cuts = sorted(draw(st.lists(st.integers(0, len(users)), max_size=5)))
        bounds = [0, *cuts, len(users)]
        pages = [users[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        streams.append(pages + draw(st.sampled_from([[], [[]]])))
    return streams, rows


@QUICK
@given(task_streams())
def test_the_users_merge_is_one_per_uid_in_byte_order_with_its_smallest_project_and_task(drawn):
    """`merge_pages` (the users' reader across task ids) against its definition: every uid of any stream
    once, in byte order, with the smallest project and the smallest task id of its rows; and lazy: a
    stream's page is read only when its users are reached."""
    streams, rows = drawn
    wanted: dict[str, TaskUser] = {}
    for user in rows:
        held = wanted.get(user.uid)
        wanted[user.uid] = (
            user
            if held is None
            else TaskUser(user.uid, min(held.project, user.project), min(held.task_id, user.task_id))
        )
    merged = list(merge_pages([iter(pages) for pages in streams]))
    assert merged == [wanted[uid] for uid in sorted(wanted, key=lambda uid: uid.encode("utf-8", "surrogatepass"))]
    read = [0] * len(streams)

    def counted(i, pages):
        for page in pages:
            read[i] += 1
            yield page

    first = next(merge_pages([counted(i, pages) for i, pages in enumerate(streams)]), None)
    assert all(n <= 1 for n in read), read  # the first user after one page of each stream, not more
    assert first == (merged[0] if merged else None)
