"""Hostile uids from StarRocks through a real prewarm and push (child processes, real servers).

Every stderr line must start with a timestamp and an event name, and only real alert lines may carry the
alert keyword: a uid can neither split a line nor forge an alert. The uids no job can serve (empty) and
the rows no push reaches (push_hour 99) are counted and named, never sent to A/B, never dropped silently.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from helpers import at, insert_rows, read_topic, run_cli
from later_read.core.uids import read_file
from later_read.log import ALERT_KEYWORD

DATE, HOUR = "20261123", 9
TASK = "04-026-{date}-r0gdua"
HOSTILE = [
    "bad uid",
    "ユーザー",
    "20000\n0002",
    f'x {ALERT_KEYWORD}" reason=forged',
    ALERT_KEYWORD,
    "tab\there",
    'quote"d',
    "back\\slash=1",
]
LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d (DEBUG|INFO|SUMMARY|WARNING|ERROR) "
    r"[a-z_]+\.[a-z_.]+( |$)"
)
# The alert lines these runs may write (docs/alerting.md), each ending with the keyword.
ALERTS = {
    "push.cache_miss",
    "push.misses",
    "push.unservable",
    "push.prewarm_unfinished",
    "prewarm.unservable",
    "prewarm.unservable_rows",
    "push.cache_miss_suppressed",
}


def seed(mysql) -> None:
    task = TASK.replace("{date}", DATE)
    rows = [(task, uid, "novel", HOUR, "b1") for uid in [*HOSTILE, "", "100000001"]]
    rows.append((task, "late-user", "novel", 99, "b1"))
    insert_rows(mysql, rows)


def run(config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, "--config", str(config))


def check_lines(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    for line in lines:
        assert LINE.match(line), f"not a timestamped event line: {line!r}"
        if ALERT_KEYWORD in line:
            event = line.split(" ")[2]
            assert line.endswith(" " + ALERT_KEYWORD) and line.count(ALERT_KEYWORD) == 1, line
            assert event in ALERTS, f"unexpected alert (forged?): {line!r}"
    return lines


def test_hostile_uids_through_prewarm_and_push(redis_url, mysql, kafka_topic, sim, make_config, tmp_path):
    seed(mysql)
    sim.configure(in_experiment_ratio=1.0, no_rec_ratio=0.0, not_found_ratio=0.0)
    config = make_config(tasks={"ids": [TASK]}, push={"wait_for_prewarm_seconds": 0})
    servable = [*HOSTILE, "100000001"]

    # Push before the prewarm: every user is a miss, alerted by uid (the uid inside the quoted field).
    early = run(
        config, "push", "--date", DATE, "--hour", str(HOUR), "--now", at(HOUR), "--report", str(tmp_path / "early.json")
    )
    assert early.returncode == 0, early.stderr
    lines = check_lines(early.stderr)
    misses = [line for line in lines if " push.cache_miss " in line]
    assert len(misses) == len(servable)
    report = json.loads((tmp_path / "early.json").read_text())
    assert report["uids_count"] == {"miss_absent": len(servable), "uid_empty": 1}
    assert sorted(read_file(report["uids_file"])) == sorted(servable)  # --uids-file takes the job's list

    prewarm = run(config, "prewarm", "--date", DATE, "--report", str(tmp_path / "prewarm.json"))
    assert prewarm.returncode == 0, prewarm.stderr
    lines = check_lines(prewarm.stderr)
    assert any(
        " prewarm.unservable " in line and " count=1 " in line and "reasons=uid_empty:1" in line for line in lines
    )
    assert any(
        " prewarm.unservable_rows " in line and "first_uid=late-user" in line and "push_hour=99" in line
        for line in lines
    )
    data = json.loads((tmp_path / "prewarm.json").read_text())
    assert data["unservable"] == 2 and data["cached"] == len(servable)  # the empty uid, late-user
    assert data["users"] == data["total"] == len(servable) + 2 and data["remaining"] == 0
    assert data["uids"]["push_hour_out_of_range"] == ["late-user"] and data["uids"]["uid_empty"] == [""]
    assert set(sim.calls("ab")) == set(servable)  # the empty uid never reached A/B

    push = run(config, "push", "--date", DATE, "--hour", str(HOUR), "--now", at(HOUR))
    assert push.returncode == 0, push.stderr
    check_lines(push.stderr)
    summary = next(line for line in push.stderr.splitlines() if " push.summary " in line)
    assert f"sent={len(servable)}" in summary and "unservable=1" in summary
    assert sorted(m.key for m in read_topic(*kafka_topic)) == sorted(servable)

    for uid in HOSTILE:  # show takes every uid the jobs take, and prints it escaped on one line each
        shown = run(config, "show", uid, "--date", DATE)
        assert shown.returncode == 0, shown.stderr
        assert "outcome    rec:" in shown.stdout and "sent       none" not in shown.stdout
        lines = shown.stdout.splitlines()
        assert len(lines) == 9  # uid, key, raw, value, ttl, outcome, sent, prewarm, hour
        assert lines[-1].startswith(f"hour       {HOUR} (from task rows, shard 0/1)") and " ledger state=" in lines[-1]


def test_rows_with_a_bad_push_hour_alone_are_their_own_alert(redis_url, mysql, sim, make_config, tmp_path):
    """Rows no push reaches, and no bad uid: counted unservable and alerted as rows, not as bad uids."""
    task = TASK.replace("{date}", DATE)
    insert_rows(mysql, [(task, "100000001", "novel", HOUR, "b1"), (task, "late-user", "novel", 99, "b1")])
    config = make_config(tasks={"ids": [TASK]})
    prewarm = run(config, "prewarm", "--date", DATE, "--report", str(tmp_path / "prewarm.json"))
    assert prewarm.returncode == 0, prewarm.stderr
    lines = check_lines(prewarm.stderr)
    assert not [line for line in lines if " prewarm.unservable " in line]
    assert len([line for line in lines if " prewarm.unservable_rows " in line]) == 1
    data = json.loads((tmp_path / "prewarm.json").read_text())
    assert data["unservable"] == 1 and data["uids"] == {"push_hour_out_of_range": ["late-user"]}
