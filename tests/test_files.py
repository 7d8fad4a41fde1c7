"""The files the jobs write (`--report`, its uids file, the metrics textfile) go through one helper,
later_read/files.py: a new file with a random name created exclusively next to the target (no symlink
followed, mode 0640), then renamed over it. A symlink planted at the old fixed temporary name, or at the
target itself, leaves its target untouched.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import orjson
import pytest

from later_read.config.settings import load_settings
from later_read.core.uids import read_file, write_file
from later_read.files import atomic_file, write_atomic
from later_read.jobs import metrics
from later_read.jobs.progress import write_report
from later_read.jobs.summary import Summary

SECRET = b"the victim's content\n"


def plant(link: Path, victim: Path) -> None:
    victim.write_bytes(SECRET)
    link.symlink_to(victim)


def assert_written(target: Path, victim: Path) -> None:
    assert victim.read_bytes() == SECRET  # the planted link was not followed
    assert not target.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o640
    leftovers = [p for p in target.parent.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]
    assert leftovers == []  # the only temporary names left are the planted links


@pytest.fixture
def umask():
    """Set the process umask for one test (the mode must be 0640 whatever it is), then restore it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def test_the_report_and_its_uids_file_never_follow_a_planted_link(tmp_path, umask):
    umask(0o077)
    report, uids = tmp_path / "r.json", tmp_path / "r.uids.txt"
    plant(tmp_path / ".r.json.tmp", tmp_path / "victim-report")  # the old fixed temporary names
    plant(tmp_path / ".r.uids.txt.tmp", tmp_path / "victim-uids")
    write_report(report, {"job": "push", "sent": 3})
    write_file(uids, [("100000001", "miss_absent"), ("a b", "corrupt")])
    assert orjson.loads(report.read_bytes()) == {"job": "push", "sent": 3}
    assert read_file(uids) == ["100000001", "a b"]
    assert_written(report, tmp_path / "victim-report")
    assert_written(uids, tmp_path / "victim-uids")


def test_a_link_at_the_target_itself_is_replaced_not_written_through(tmp_path):
    target = tmp_path / "r.json"
    plant(target, tmp_path / "victim")
    write_report(target, {"ok": True})
    assert orjson.loads(target.read_bytes()) == {"ok": True}
    assert_written(target, tmp_path / "victim")


def test_the_metrics_textfile_never_follows_a_link_at_the_old_temporary_name(make_config, tmp_path, umask):
    umask(0o002)
    folder = tmp_path / "textfiles"
    folder.mkdir()
    settings = load_settings(make_config(metrics={"textfile_dir": str(folder)}), environ={})
    target = metrics.textfile_path(settings, "prewarm")
    # prometheus_client's write_to_textfile used `<path>.<pid>.<thread id>`: predictable from outside
    old = Path(f"{target}.{os.getpid()}.{threading.current_thread().ident}")
    plant(old, tmp_path / "victim")
    summary = Summary("prewarm", "20261123")
    summary.counts.update(users=5, rec=5)
    summary.finish("ok")
    metrics.record_job(settings, "prewarm", summary)
    assert "later_read_prewarm_users_total 5.0" in target.read_text()
    assert (tmp_path / "victim").read_bytes() == SECRET and old.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_target_as_it_was_and_no_temporary_file(tmp_path):
    target = tmp_path / "r.json"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as out:  # noqa: PT012 - the writer fails mid-block
        out.write(b"half of the new")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
