"""The push schedule (later_read/core/schedule.py), the clock (clock.py) and the ledger's rules (ledger.py): pure
code, so unit tests at the DST transitions and hypothesis properties over instants in three zones."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from later_read.core import ledger
from later_read.core.clock import Clock
from later_read.core.schedule import LOOKBACK, Hour, Schedule
from later_read.core.scope import RunScope
from later_read.errors import UsageError

UTC = dt.UTC
ZONES = ("Asia/Shanghai", "America/New_York", "Europe/Berlin")
H = dt.timedelta(hours=1)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def schedule(zone: str = "Asia/Shanghai", minutes: int = 120) -> Schedule:
    return Schedule(ZoneInfo(zone), minutes)


# Unit cases ---------------------------------------------------------------------------------------
def test_an_hour_starts_at_local_h00_and_its_window_is_catch_up_minutes_long():
    s = schedule()
    assert s.start(Hour("20261123", 5)) == at("2026-11-22T21:00:00+00:00")
    assert s.iso(s.window_end(Hour("20261123", 5))) == "2026-11-23T07:00:00+08:00"
    assert s.current(at("2026-11-23T05:59:59+08:00")) == Hour("20261123", 5)
    assert s.current(at("2026-11-22T22:30:00+00:00")) == Hour("20261123", 6)  # any offset in, the zone's hour
    assert s.is_open(Hour("20261123", 5), at("2026-11-23T06:59:59+08:00"))
    assert s.is_closed(Hour("20261123", 5), at("2026-11-23T07:00:00+08:00"))
    assert s.late_minutes(Hour("20261123", 5), at("2026-11-23T05:50:30+08:00")) == 50.5


@pytest.mark.parametrize("zone, date, missing", [("America/New_York", "20260308", 2), ("Europe/Berlin", "20260329", 2)])
def test_spring_forward_the_missing_hour_starts_with_the_next_and_is_caught_up_by_its_run(zone, date, missing):
    s = schedule(zone)
    gone, next_hour = Hour(date, missing), Hour(date, missing + 1)
    assert s.start(gone) == s.start(next_hour)  # the transition instant
    assert s.current(s.start(gone)) == next_hour  # no instant is in the missing hour
    assert s.start(Hour(date, missing - 1)) == s.start(gone) - H
    run_at = s.start(next_hour) + dt.timedelta(minutes=5)
    assert s.current(run_at) == next_hour and gone in s.open_before(run_at)
    plan = s.plan(run_at, {Hour(date, h): "done" for h in range(missing)}, s.start(Hour(date, 0)))
    assert (plan.own, plan.catch_up, plan.expire) == (next_hour, [gone], [])
    assert s.window_end(gone) - s.start(gone) == dt.timedelta(minutes=120)


@pytest.mark.parametrize("zone, date, twice", [("America/New_York", "20261101", 1), ("Europe/Berlin", "20261025", 2)])
def test_fall_back_the_doubled_hour_starts_at_its_first_pass_and_the_second_run_finds_it_done(zone, date, twice):
    s = schedule(zone)
    hour = Hour(date, twice)
    first = s.start(hour)
    second = first + H  # the same local wall time, one hour later
    assert s.local(first).hour == s.local(second).hour == twice and s.local(second).fold == 1
    assert s.current(first + dt.timedelta(minutes=5)) == s.current(second + dt.timedelta(minutes=5)) == hour
    assert s.start(Hour(date, twice + 1)) == first + 2 * H  # the next hour starts after both passes
    plan = s.plan(second + dt.timedelta(minutes=5), {hour: "done"}, first)
    assert plan.own == hour and plan.own_final == "done" and not plan.catch_up and not plan.expire


def test_catch_up_and_expiry_cross_midnight_into_the_previous_date():
    s = schedule()
    now = at("2026-11-23T00:30:00+08:00")
    assert s.open_before(now) == [Hour("20261122", 23)]  # 22:00's window closed at 00:00
    plan = s.plan(now, {Hour("20261122", h): "done" for h in range(21)}, s.start(Hour("20261120", 0)))
    assert plan.expire == [Hour("20261122", 21), Hour("20261122", 22)]
    assert plan.catch_up == [Hour("20261122", 23)] and plan.own == Hour("20261123", 0)


def test_the_lookback_and_the_ledger_start_bound_what_a_run_judges():
    s = schedule()
    now = at("2026-11-23T10:05:00+08:00")
    first_run = s.plan(now, {}, None)  # a first deployment: nothing before its own hour
    assert (first_run.expire, first_run.catch_up, first_run.own) == ([], [], Hour("20261123", 10))
    since_8 = s.plan(now, {}, s.start(Hour("20261123", 8)))
    assert since_8.expire == [Hour("20261123", 8)] and since_8.catch_up == [Hour("20261123", 9)]
    long_ago = s.plan(now, {}, now - 3 * LOOKBACK)  # only the last 24 h are judged
    assert long_ago.expire[0] == Hour("20261122", 11) and len(long_ago.expire) == 22
    final = s.plan(
        now,
        {Hour("20261123", 7): "done", Hour("20261123", 9): "expired", Hour("20261123", 8): "partial"},
        s.start(Hour("20261123", 7)),
    )
    assert final.expire == [Hour("20261123", 8)] and final.catch_up == []  # partial, window closed: expired


def test_a_short_window_expires_the_own_hour_late_in_the_hour_and_a_retry_leaves_it():
    s = schedule(minutes=30)
    plan = s.plan(at("2026-11-23T10:45:00+08:00"), {}, None)
    assert plan.expire == [Hour("20261123", 10)] and not plan.catch_up and plan.own_final is None
    retry = s.plan(at("2026-11-23T10:50:00+08:00"), {Hour("20261123", 10): "expired"}, None)
    assert (retry.expire, retry.catch_up, retry.own_final) == ([], [], "expired")


def test_refusal_names_allow_late_and_the_override_passes():
    s = schedule()
    with pytest.raises(UsageError) as refused:
        s.refuse_if_closed(Hour("20261123", 3), at("2026-11-23T09:00:00+08:00"), allow_late=False)
    assert str(refused.value) == (
        "hour 3 of 20261123 is expired: its window closed at 2026-11-23T05:00:00+08:00 (start + [push] "
        "catch_up_minutes = 120), so a push now would be stale; add --allow-late to send it anyway"
    )
    s.refuse_if_closed(Hour("20261123", 3), at("2026-11-23T09:00:00+08:00"), allow_late=True)
    s.refuse_if_closed(Hour("20261123", 3), at("2026-11-23T04:59:00+08:00"), allow_late=False)
    s.refuse_if_closed(Hour("20261123", 23), at("2026-11-23T09:00:00+08:00"), allow_late=False)  # early


def test_a_late_send_expires_a_window_after_it_runs_an_on_time_one_at_its_hours_end():
    s, hour = schedule(), Hour("20261123", 3)
    assert s.iso(s.expiry(hour)) == "2026-11-23T05:00:00+08:00"
    assert s.iso(s.expiry(hour, at("2026-11-23T09:00:00+08:00"))) == "2026-11-23T11:00:00+08:00"
    # an --allow-late send while the window is still open is not late: it keeps the hour's own end
    assert s.expiry(hour, at("2026-11-23T04:30:00+08:00")) == s.window_end(hour)


def test_day_verdicts():
    s, hour = schedule(), Hour("20261123", 10)
    verdict = lambda now, state, tracked=True: s.verdict(hour, at(now), state, tracked)  # noqa: E731
    assert verdict("2026-11-23T09:00:00+08:00", None) == "upcoming"
    assert verdict("2026-11-23T10:10:00+08:00", None) == "due"
    assert verdict("2026-11-23T10:30:00+08:00", "running") == "late"
    assert verdict("2026-11-23T11:30:00+08:00", "done") == "done"
    assert verdict("2026-11-23T12:00:00+08:00", "partial") == "expired"
    assert verdict("2026-11-23T10:40:00+08:00", "expired") == "expired"
    assert verdict("2026-11-23T15:00:00+08:00", None, tracked=False) == "untracked"


# The clock --------------------------------------------------------------------------------------------
def test_the_clock_takes_an_offset_refuses_a_naive_time_and_advances():
    ticks = iter([100.0, 100.0, 160.5, 160.5])
    clock = Clock(ZoneInfo("Asia/Shanghai"), at("2026-11-22T21:05:00+00:00"), monotonic=lambda: next(ticks))
    assert clock.now().isoformat() == "2026-11-23T05:05:00+08:00"
    assert clock.now().isoformat() == "2026-11-23T05:06:00.500000+08:00"  # 60.5 s of monotonic time later
    assert Clock.parse("2026-11-22T05:05:00Z", ZoneInfo("Asia/Shanghai")).is_set
    assert not Clock.parse(None, ZoneInfo("Asia/Shanghai")).is_set
    with pytest.raises(
        UsageError,
        match=r"--now: '2026-11-22T05:05:00' has no UTC offset.*e\.g\. "
        r"2026-11-22T05:05:00\+08:00",
    ):
        Clock.parse("2026-11-22T05:05:00", ZoneInfo("Asia/Shanghai"))
    with pytest.raises(UsageError, match="expected an ISO 8601 time with an offset"):
        Clock.parse("five past five", ZoneInfo("Asia/Shanghai"))


def test_a_deadline_on_the_monotonic_clock():
    ticks = iter([50.0, 50.0, 50.0])
    clock = Clock(ZoneInfo("Asia/Shanghai"), at("2026-11-23T06:59:00+08:00"), monotonic=lambda: next(ticks))
    assert clock.monotonic_at(at("2026-11-23T07:00:00+08:00")) == 110.0


# The ledger's rules -----------------------------------------------------------------------------------
NOW = at("2026-11-23T05:10:00+08:00")


def _ended(clean=True, failures=None, total=10, window_closed=False, **counts) -> dict:
    base = ledger.running(None, RunScope("20261123", 5), NOW, 10.0)
    return ledger.finished(
        base,
        Counter(counts),
        Counter(failures or {}),
        total,
        clean=clean,
        recovered=0,
        produced=counts.get("sent", 0),
        now=NOW,
        window_closed=window_closed,
    )


def test_done_partial_and_expired_come_from_what_the_run_ended_with():
    assert (
        _ended(users=10, sent=6, already_sent=1, not_in_experiment=1, no_recommendation=1, material_not_found=1)[
            "state"
        ]
        == "done"
    )
    assert _ended(users=10, sent=6, unservable=4)["state"] == "done"  # nothing a rerun could change
    assert _ended(users=10, sent=9, misses=1)["state"] == "partial"
    assert _ended(users=10, sent=9, failures={"material_timeout": 1})["state"] == "partial"
    assert _ended(users=10, sent=10, clean=False)["state"] == "partial"  # undelivered or unmarked
    stopped = _ended(users=6, sent=5, not_processed=1)
    assert (stopped["state"], stopped["not_processed"]) == ("partial", 5)  # 1 dropped + 4 never read
    late = _ended(users=6, sent=5, expired=1, window_closed=True)
    assert (late["state"], late["expired"], late["not_processed"]) == ("expired", 5, 0)
    assert late["misses"] == {"absent": 0, "stale": 0, "corrupt": 0} and late["runs"] == 1


def test_the_expiry_pass_keeps_the_earlier_runs_start_and_counts_what_it_read():
    dead = ledger.running(None, RunScope("20261123", 5), NOW, 61.5, caught_up=True)
    base = ledger.closing(dead, RunScope("20261123", 5))
    entry = ledger.finished(
        base,
        Counter(users=10, already_sent=3, earlier_hour=1, not_in_experiment=2, expired=4),
        Counter(),
        10,
        clean=True,
        recovered=3,
        produced=0,
        now=NOW,
        window_closed=True,
    )
    assert (entry["state"], entry["expired"], entry["already_sent"], entry["earlier_hour"], entry["quiet"]) == (
        "expired",
        4,
        3,
        1,
        2,
    )
    assert (entry["runs"], entry["late_minutes"], entry["caught_up"], entry["expired_by"]) == (
        1,
        61.5,
        True,
        "schedule",
    )
    nobody_left = ledger.finished(
        ledger.closing(None, RunScope("20261123", 3)),
        Counter(users=2, already_sent=2),
        Counter(),
        2,
        clean=True,
        recovered=0,
        produced=0,
        now=NOW,
        window_closed=True,
    )
    assert (nobody_left["state"], nobody_left["runs"], nobody_left["late_minutes"]) == ("done", 0, None)


def test_unreadable_entries_are_never_clean_and_shards_merge_to_the_least_advanced():
    assert ledger.parse(b"not json") == {"state": "unreadable", "clean": False, "raw": "not json"}
    assert ledger.parse(b'{"no": "state"}')["state"] == "unreadable" and ledger.parse(None) is None
    done = _ended(users=10, sent=10)
    merged = ledger.merge([done, done])
    assert (merged["state"], merged["users"], merged["sent"], merged["clean"]) == ("done", 20, 20, True)
    assert ledger.merge([done, None])["state"] == "pending" and ledger.merge([done, None])["finished_at"] is None
    assert ledger.merge([done, {"state": "expired", "expired": 3}])["expired"] == 3
    assert ledger.merge([{"state": "done", "users": "lots"}])["users"] == 0  # a foreign value counts 0


# Properties over instants -----------------------------------------------------------------------------
instants = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 12, 31), timezones=st.just(UTC))
hours = st.builds(
    lambda day, hour: Hour((dt.date(2020, 1, 1) + dt.timedelta(days=day)).strftime("%Y%m%d"), hour),
    st.integers(0, 365 * 11),
    st.integers(0, 23),
)


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), now=instants, minutes=st.integers(10, 1440))
def test_now_falls_in_the_hour_it_names(zone, now, minutes):
    s = schedule(zone, minutes)
    hour = s.current(now)
    start = s.start(hour)
    assert start <= now < start + 2 * H
    assert (now - start < H) == (s.local(now).fold == 0)  # only the second pass of a doubled hour is later
    assert s.window_end(hour) - start == dt.timedelta(minutes=minutes)


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), hour=hours)
def test_starts_never_go_back_and_only_a_skipped_hour_shares_its_start(zone, hour):
    s = schedule(zone)
    following = (
        Hour(hour.date, hour.hour + 1)
        if hour.hour < 23
        else Hour((dt.datetime.strptime(hour.date, "%Y%m%d") + dt.timedelta(days=1)).strftime("%Y%m%d"), 0)
    )
    assert s.start(hour) <= s.start(following)
    if s.start(hour) == s.start(following):  # the missing hour: its start belongs to the next one
        assert s.current(s.start(hour)) == following
    else:
        assert s.current(s.start(hour)) == hour


def _every_hour_near(s: Schedule, now: dt.datetime) -> list[Hour]:
    today = s.local(now).date()
    return [Hour((today - dt.timedelta(days=back)).strftime("%Y%m%d"), h) for back in range(3) for h in range(24)]


@settings(max_examples=200, deadline=None)
@given(zone=st.sampled_from(ZONES), now=instants, minutes=st.integers(10, 1440))
def test_open_and_closed_hours_are_exactly_those_the_windows_say(zone, now, minutes):
    s = schedule(zone, minutes)
    own, near = s.current(now), _every_hour_near(s, now)
    opened = s.open_before(now)
    assert opened == sorted(opened, key=lambda h: (s.start(h), h))
    assert set(opened) == {h for h in near if h < own and s.start(h) <= now < s.window_end(h)}
    since = now - LOOKBACK
    closed = s.closed_since(since, now)
    assert set(closed) == {h for h in near if since <= s.start(h) and s.window_end(h) <= now}


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    now=instants,
    minutes=st.integers(10, 1440),
    done=st.sets(st.integers(0, 47), max_size=20),
)
def test_a_plan_judges_each_recent_hour_once_and_never_a_final_one(zone, now, minutes, done):
    s = schedule(zone, minutes)
    near = sorted(_every_hour_near(s, now))
    states = {near[i]: "done" for i in done if i < len(near)}
    plan = s.plan(now, states, now - 3 * LOOKBACK)
    judged = plan.expire + plan.catch_up
    assert len(judged) == len(set(judged)) and not set(judged) & set(states)
    assert all(s.is_closed(h, now) for h in plan.expire)
    assert all(s.is_open(h, now) and h < plan.own for h in plan.catch_up)
    recent = {h for h in near if now - LOOKBACK <= s.start(h) <= now and h not in states}
    assert set(judged) | ({plan.own} - set(plan.expire)) == recent | {plan.own} - set(states)
