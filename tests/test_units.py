"""Pure logic: the cache codec, user query SQL, inputs, keys, breaker, histogram. No servers."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from redis.crc import key_slot

from later_read.clients.http import Breaker
from later_read.clients.latency import LatencyHistogram
from later_read.clients.starrocks import UserQuery
from later_read.core.scope import RunScope, Shard
from later_read.core.uids import write_file
from later_read.core.users import task_ids_for
from later_read.core.value import OUTCOME_NO_RECOMMENDATION, OUTCOME_NOT_IN_EXPERIMENT, CachedValue, decode, encode
from later_read.errors import CorruptValue, UsageError
from later_read.inputs import parse_date, parse_uid, read_uids_file
from later_read.store.keys import Keys


def test_value_round_trip_keeps_seed_fields():
    value = CachedValue("rec", "20261123", "t-1", "r-9", "book", "m-3")
    raw = encode(value)
    assert decode(raw) == value
    import orjson

    data = orjson.loads(raw)
    assert {k: data[k] for k in ("rec_id", "rec_type", "material_id", "trace_id")} == {
        "rec_id": "r-9",
        "rec_type": "book",
        "material_id": "m-3",
        "trace_id": "t-1",
    }


def test_no_push_outcomes_round_trip():
    for outcome in (OUTCOME_NOT_IN_EXPERIMENT, OUTCOME_NO_RECOMMENDATION):
        value = CachedValue(outcome, "20261123", "t-1")
        assert decode(encode(value)) == value
        assert not decode(encode(value)).is_rec


def test_seed_format_written_by_the_go_job_still_parses():
    value = decode(b'{"rec_id":"r","rec_type":"book","material_id":7,"trace_id":"t"}')
    assert value.is_rec and value.material_id == "7" and value.date is None


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"outcome":"maybe"}', "unknown outcome"),
        (b'{"outcome":"rec","date":"20261123","rec_id":"r"}', "missing or empty"),
        (b'{"outcome":"rec","date":20261123,"rec_id":"r","rec_type":"b","material_id":"m"}', "not strings"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_corrupt_values_raise_corrupt_value(raw, why):
    with pytest.raises(CorruptValue, match=why):
        decode(raw)


def test_user_query_pages_one_task_id_as_an_index_range_read():
    query = UserQuery("task_data", ["a-20261123", "b-20261123"], hour=9)
    sql, params = query.page("b-20261123", "100", 500)
    assert "WHERE task_id = %s AND push_hour = %s AND source_uid > %s GROUP BY source_uid" in sql
    assert " OR " not in sql.upper()
    assert sql.endswith("ORDER BY source_uid LIMIT %s")
    assert params == ["b-20261123", 9, "100", 500]


def test_user_query_counts_over_an_in_list_not_or_precedence():
    sql, params = UserQuery("task_data", ["a-20261123", "b-20261123"], hour=9).count()
    assert "WHERE task_id IN (%s, %s) AND push_hour = %s" in sql and " OR " not in sql.upper()
    assert params == ["a-20261123", "b-20261123", 9]


def test_user_query_uid_and_shard_filters():
    sql, params = UserQuery("t", ["a"], uids=["1", "2"], shard=Shard(3, 8)).page("a", None, 10)
    assert "source_uid IN (%s, %s)" in sql and "CRC32(source_uid) %% %s = %s" in sql
    assert params == ["a", "1", "2", 8, 3, 10]


def test_task_ids_fill_the_date():
    assert task_ids_for(["04-026-{date}-r0gdua"], "20261123") == ["04-026-20261123-r0gdua"]


def test_keys_are_built_in_one_place():
    keys = Keys("rec:later_read:")
    assert keys.rec("42") == "rec:later_read:42"
    assert keys.uid_of(b"rec:later_read:42") == "42"
    assert Keys.sent("20261123", "42") == "later_read:sent:20261123:42"
    assert Keys.lock("push", RunScope("20261123", 9)) == "later_read:lock:push:{20261123:09}"
    assert Keys.prewarm_done(RunScope("20261123")) == "later_read:prewarm:done:{20261123}"
    # A run's lock and its records share a hash tag, so one script can fence them in Redis Cluster too.
    sharded = RunScope("20261123", 9, Shard(1, 2))
    run = [Keys.lock("push", sharded), Keys.push_start(sharded), Keys.push_ledger(sharded)]
    assert run == [
        "later_read:lock:push:{20261123:09:shard1of2}",
        "later_read:push:start:{20261123:09:shard1of2}",
        "later_read:push:ledger:{20261123:09:shard1of2}",
    ]
    day = RunScope("20261123")
    prewarm = [Keys.lock("prewarm", day), Keys.prewarm_done(day), Keys.prewarm_ready(day, 5)]
    assert prewarm == [
        "later_read:lock:prewarm:{20261123}",
        "later_read:prewarm:done:{20261123}",
        "later_read:prewarm:ready:{20261123}:05",
    ]
    # The prewarm's markers are the day's: a push scope (with an hour) reads the same keys.
    assert Keys.prewarm_ready(sharded, 5) == "later_read:prewarm:ready:{20261123:shard1of2}:05"
    assert len({key_slot(k.encode()) for k in run}) == 1 and len({key_slot(k.encode()) for k in prewarm}) == 1


def test_dates_and_uids():
    zone = ZoneInfo("Asia/Shanghai")
    assert parse_date("20261123", zone) == "20261123"
    assert len(parse_date(None, zone)) == 8
    for bad in ("2026-11-23", "20261332", "19991231", ""):
        with pytest.raises(UsageError, match="--date"):
            parse_date(bad, zone)
    for uid in ("100000042", "a b", "x" * 65, "1;DROP TABLE", "ü", "ユーザー", "20000\n0002"):
        assert parse_uid(uid) == uid  # one rule: whatever StarRocks holds and the jobs serve
    for bad, words in (("", "uid: empty"), ("x" * 1025, "longer than 1024 bytes"), ("\udcff", "not valid UTF-8")):
        with pytest.raises(UsageError, match=words):
            parse_uid(bad)


def test_uids_file(tmp_path):
    path = tmp_path / "uids.txt"
    path.write_text("# on-call list\n1\n2  # dup below\n\n2\n3\n")
    assert read_uids_file(path) == ["1", "2", "3"]
    path.write_text('1\n"unterminated\n')
    with pytest.raises(UsageError, match="line 2"):
        read_uids_file(path)
    hostile = ["bad uid", "ユーザー", "20000\n0002", 'x LATER_READ_ALERT" reason=y', "#1", " pad ", '"q"', "a\\b"]
    write_file(path, ((uid, "test") for uid in hostile))
    assert read_uids_file(path) == hostile  # what a job writes, --uids-file reads back
    with pytest.raises(UsageError, match="cannot read"):
        read_uids_file(tmp_path / "missing.txt")


def test_breaker_trips_on_failure_ratio_over_window():
    breaker = Breaker(window=10, min_calls=5, ratio=0.5)
    for ok in (True, False, True, False):
        breaker.record(ok)
    assert not breaker.tripped  # fewer than min_calls
    for _ in range(10):
        breaker.record(True)
    assert not breaker.tripped and breaker.failures == 0  # old failures slid out of the window
    for _ in range(6):
        breaker.record(False)
    assert breaker.tripped and breaker.failure_ratio == 0.6


def test_latency_histogram_percentiles_within_two_percent():
    hist = LatencyHistogram()
    for ms in range(1, 1001):
        hist.add(ms / 1000)
    assert hist.count == 1000
    for q, expected in ((50, 500), (95, 950), (99, 990)):
        assert abs(hist.percentile(q) - expected) / expected < 0.03
    assert LatencyHistogram().percentile(50) == 0.0


@pytest.mark.parametrize("uid", ["100000001", "0", "", "é-ü 漢字", "x" * 300, "a:b:c"])
@pytest.mark.parametrize("date", ["20261123", "20270101"])
def test_msg_id_is_exactly_uuid5_of_the_namespace(uid, date):
    import uuid

    from later_read.core.message import MSG_NAMESPACE, msg_id

    assert msg_id(date, uid) == str(uuid.uuid5(MSG_NAMESPACE, f"later_read:{date}:{uid}"))


def test_numeric_rec_fields_are_read_as_strings():
    value = decode(b'{"outcome":"rec","date":"20261123","rec_id":7,"rec_type":"serial","material_id":12}')
    assert (value.rec_id, value.rec_type, value.material_id) == ("7", "serial", "12")
