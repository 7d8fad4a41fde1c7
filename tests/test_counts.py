"""RunCounts (core/counts.py), the recorder both jobs use: each user counted once under one name, failures
per reason spelled once, the users not finished named per reason (bounded in the report), and what follows
the run fed by the same call (the progress lines, the prewarm's per-hour readiness). Pure: no server."""

from __future__ import annotations

import json
import logging

import anyio

from later_read.core.counts import (
    CACHED,
    EXPIRED,
    NOT_PROCESSED,
    UNDELIVERED,
    UNFINISHED,
    UNSERVABLE,
    RunCounts,
    live_failure,
    material_failure,
    service_failure,
    undelivered,
)
from later_read.core.scope import RunScope
from later_read.core.users import TaskUser
from later_read.core.value import OUTCOME_NOT_IN_EXPERIMENT, OUTCOME_REC, CachedValue, encode
from later_read.inputs import read_uids_file
from later_read.jobs.prewarm import job as prewarm_job
from later_read.jobs.prewarm.hours import HourTracker
from later_read.jobs.progress import Progress
from later_read.jobs.push import job as push_job
from later_read.jobs.push.live import LiveResolver
from later_read.jobs.push.select import Sorter
from later_read.jobs.summary import NAMED_IN_JSON, Summary

DATE = "20261123"


def test_each_call_counts_its_users_once_under_one_name():
    counts = RunCounts()
    counts.done(CACHED)
    counts.done(CACHED)
    counts.done("skipped_existing", n=5)
    counts.done(UNSERVABLE, "", "uid_empty")
    counts.note(UNFINISHED, "u-stop")
    counts.failed(service_failure("ab", "http_503"), "u-ab")
    counts.settle(3)
    assert counts.counts == {CACHED: 2, "skipped_existing": 5, UNSERVABLE: 1, UNFINISHED: 1}
    assert counts.failures == {"ab.http_503": 1}
    assert counts.named == {"uid_empty": [""], UNFINISHED: ["u-stop"], "ab.http_503": ["u-ab"]}
    # settled: the users the run is through with (done, failed, settle), not those left for the rerun
    assert counts.settled == 2 + 5 + 1 + 1 + 3


def test_a_user_without_a_uid_is_counted_and_not_named():
    counts = RunCounts()
    counts.done(UNSERVABLE, None, "uid_too_long")
    counts.note("misses", None, "miss_absent")
    counts.failed(live_failure("rec", "timeout"))
    assert counts.counts == {UNSERVABLE: 1, "misses": 1}
    assert counts.failures == {"live_rec_timeout": 1}
    assert counts.named == {}
    assert counts.settled == 2


def test_failure_reasons_are_spelled_by_where_the_call_was_made():
    assert service_failure("ab", "http_503") == "ab.http_503"
    assert service_failure("rec", "malformed") == "rec.malformed"
    assert live_failure("ab", "timeout") == "live_ab_timeout"
    assert material_failure("http_503") == "material_http_503"
    assert undelivered("msg_timed_out") == "undelivered_msg_timed_out"
    assert (UNFINISHED, NOT_PROCESSED, EXPIRED, UNDELIVERED) == (
        "unfinished",
        "not_processed",
        "expired",
        "undelivered",
    )


def test_the_reports_print_the_recorders_names():
    """The prewarm counts a stored recommendation `cached` as it happens (no renaming afterwards); the
    names the jobs record are the report's keys."""
    assert CACHED == "cached" and OUTCOME_REC == "rec"
    assert {CACHED, UNFINISHED, UNSERVABLE} <= set(prewarm_job.REPORT_KEYS)
    assert OUTCOME_REC not in prewarm_job.REPORT_KEYS
    assert {NOT_PROCESSED, EXPIRED, UNSERVABLE, "live_budget_exhausted"} <= set(push_job.REPORT_KEYS)


def test_failed_after_counts_only_real_failures_and_names_each_user():
    counts = RunCounts()
    counts.settle(4)  # four messages handed to Kafka
    counts.failed_after("oversize_message", 0, ())
    assert counts.failures == {} and not counts.failures  # no key at 0: the run's status stays ok
    counts.failed_after(UNDELIVERED, 2, [(undelivered("msg_timed_out"), "u1"), (undelivered("purged"), "u2")])
    assert counts.failures == {UNDELIVERED: 2}
    assert counts.named == {"undelivered_msg_timed_out": ["u1"], "undelivered_purged": ["u2"]}
    assert counts.settled == 4  # already settled when handed on: not again


def test_moved_and_merge():
    counts = RunCounts({EXPIRED: 5})
    counts.moved(EXPIRED, "material_not_found", 2)
    assert counts.counts == {EXPIRED: 3, "material_not_found": 2}
    part = RunCounts()
    part.done(CACHED, n=3)
    part.failed("rec.timeout", "u9")
    part.note(UNFINISHED, "u10")
    counts.name("push_hour_out_of_range", "u0")
    counts.merge(part)
    assert counts.counts == {EXPIRED: 3, "material_not_found": 2, CACHED: 3, UNFINISHED: 1}
    assert counts.failures == {"rec.timeout": 1}
    assert counts.named == {"push_hour_out_of_range": ["u0"], "rec.timeout": ["u9"], UNFINISHED: ["u10"]}
    assert counts.settled == 4


def test_named_uids_are_all_kept_and_the_report_shows_the_first_of_each_reason(tmp_path):
    summary = Summary("push", DATE, 8)
    many = [f"u{n:03d}" for n in range(NAMED_IN_JSON + 7)]
    for uid in many:
        summary.run_counts.done(EXPIRED, uid)
    summary.run_counts.note(NOT_PROCESSED, "late")
    summary.finish("expired")
    report = tmp_path / "r.json"
    summary.save_uids(str(report))
    data = summary.report(push_job.REPORT_KEYS)
    assert data["expired"] == len(many) and data["not_processed"] == 1
    assert data["uids"] == {EXPIRED: many[:NAMED_IN_JSON], NOT_PROCESSED: ["late"]}
    assert data["uids_count"] == {EXPIRED: len(many), NOT_PROCESSED: 1}
    assert sorted(read_uids_file(tmp_path / "r.uids.txt")) == sorted([*many, "late"])  # the file has them all
    json.dumps(data)  # the report is JSON as it is


def test_progress_reads_the_users_settled_since_it_began():
    counts = RunCounts()
    counts.done("already_sent", n=7)  # an earlier hour of the run
    hour = Progress("push", 60, counts, total=10)
    assert hour.done == 0
    counts.done("earlier_hour")
    counts.failed(material_failure("timeout"), "u1")
    counts.note("misses", "u2", "miss_absent")  # not through yet: no progress
    counts.settle(2)
    assert hour.done == 4 and counts.settled == 11


def test_a_failed_user_settles_its_push_hour():
    """The prewarm's recorder tells the HourTracker of each failure: the hour is ready once every user
    is written or failed (the writer settles the written ones)."""
    tracker = HourTracker(None, RunScope(DATE, None), False, lambda exc: None)  # type: ignore[arg-type]
    counts = RunCounts(hour_failed=tracker.user_failed)
    tracker.sent(0, 2, 0)
    tracker.sent(1, 1, 0)
    tracker.close(0)
    tracker.close(1)
    counts.failed(service_failure("ab", "timeout"), "u1", 0)
    assert tracker.failed[0] == 1 and tracker.pending[0] == 1 and tracker.next_hour == 0
    counts.done(CACHED)
    tracker.written([("u2", b"{}", 0)])
    assert tracker.next_hour == 1
    counts.failed(service_failure("rec", "http_503"), "u3", 1)
    assert tracker.next_hour == 2 and tracker.hour_info(1)["failed"] == 1
    assert counts.failures == {"ab.timeout": 1, "rec.http_503": 1} and counts.settled == 3


class _Lines(logging.Handler):
    """The log lines of a logger, as written."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _value(outcome: str, date: str = DATE) -> bytes:
    if outcome == OUTCOME_REC:
        return encode(CachedValue(OUTCOME_REC, date, "t", "r1", "book", "m1"))
    return encode(CachedValue(outcome, date, "t"))


def test_the_sorter_records_each_user_once():
    users = [TaskUser(uid, "p", "t") for uid in ("hit", "quiet", "sent", "early", "absent", "stale", "bad", "")]
    values = [
        _value(OUTCOME_REC),
        _value(OUTCOME_NOT_IN_EXPERIMENT),
        _value(OUTCOME_REC),
        _value(OUTCOME_REC),
        None,
        _value(OUTCOME_REC, "20261122"),
        b"{not json",
        None,
    ]
    sent = [None, None, b"1", None, None, None, None, None]
    counts = RunCounts()
    sorter = Sorter(DATE, 8, False, counts, 0, alerts=False)
    hits, missing = sorter.sort(users, values, sent, {"early"})
    assert [hit.user.uid for hit in hits] == ["hit"]
    assert [user.uid for user in missing] == ["absent", "stale", "bad"]
    assert counts.counts == {
        "users": 8,
        OUTCOME_NOT_IN_EXPERIMENT: 1,
        "already_sent": 1,
        "earlier_hour": 1,
        "misses": 2,
        "stale": 1,
        "corrupt": 1,
        UNSERVABLE: 1,
    }
    assert counts.named == {"miss_absent": ["absent"], "miss_stale": ["stale"], "corrupt": ["bad"], "uid_empty": [""]}
    assert counts.settled == 4  # the hit and the missing ones are settled further on


def test_the_sorter_names_nobody_when_misses_may_be_computed_live():
    counts = RunCounts()
    sorter = Sorter(DATE, 8, False, counts, 0, names=False, alerts=False)
    sorter.sort([TaskUser("absent", "p", "t"), TaskUser("", "p", "t")], [None, None], [None, None])
    assert counts.counts == {"users": 2, "misses": 1, UNSERVABLE: 1} and counts.named == {}


def test_live_budget_exhausted_alerts_once_per_run_over_its_hours():
    """Every hour of a run has its own live resolver and budget; all record into the run's counts, so the
    alert comes once per run, and every user over the budget is counted and settled."""
    counts = RunCounts()
    users = [TaskUser(f"u{n}", "p", "t") for n in range(3)]
    lines: list[str] = []
    handler = _Lines(lines)
    logger = logging.getLogger("later_read.push")
    logger.addHandler(handler)
    try:
        for hour in (7, 8):
            sorter = Sorter(DATE, hour, False, counts, 0, alerts=False)
            live = LiveResolver(
                None,
                None,
                sorter,
                counts,
                date=DATE,
                budget=0,  # type: ignore[arg-type]
                concurrency=1,
                write=False,
            )
            assert anyio.run(live.resolve, users) == []
            assert anyio.run(live.resolve, users[:1]) == []
    finally:
        logger.removeHandler(handler)
    alerts = [line for line in lines if line.startswith("push.live_budget_exhausted ")]
    assert len(alerts) == 1 and "budget=0" in alerts[0] and alerts[0].endswith("LATER_READ_ALERT"), lines
    assert counts.counts == {"live_budget_exhausted": 8} and counts.settled == 8
