"""How `later-read` leaves (cli.leave): the exit status sys.exit would give, everything printed delivered,
atexit handlers and threads that are not daemons seen through, and a closed pipe reported as Python
reports it; only the interpreter's teardown is skipped."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import child_env, run_cli

PROGRAM = """
import atexit, sys, threading, time
from later_read.cli import leave
atexit.register(lambda: print("atexit ran", file=sys.stderr))
def late():
    time.sleep(0.3)
    sys.stdout.write("thread done\\n")
threading.Thread(target=late).start()
sys.stdout.write("x" * 1_000_000 + "\\n")
sys.stdout.buffer.write(b"raw bytes\\n")
leave(CODE)
"""


def buffered_env() -> dict[str, str]:
    """The child's environment with its output block-buffered (as under cron), whatever this shell says."""
    return child_env({k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})


def run_program(code: str, **kwargs) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", PROGRAM.replace("CODE", code)]
    return subprocess.run(argv, env=buffered_env(), capture_output=True, timeout=60, **kwargs)


@pytest.mark.parametrize(("code", "status", "printed"), [("None", 0, b""), ("3", 3, b""), ("'gone'", 1, b"gone\n")])
def test_leave_exits_as_sys_exit_with_everything_printed_and_seen_through(code, status, printed):
    done = run_program(code)
    assert done.returncode == status
    assert done.stdout.count(b"x") == 1_000_000
    assert b"raw bytes\n" in done.stdout and b"thread done\n" in done.stdout  # buffered bytes and a late thread
    assert done.stderr == printed + b"atexit ran\n"


def test_a_closed_pipe_is_reported_as_pythons_own_exit_reports_it():
    """The reader went away before the last flush (`later-read ... | head -1`): leave's flush fails and the
    exit is the interpreter's own, with the same status and report as after sys.exit."""
    program = "import sys\nfrom later_read.cli import leave\nprint('x' * 100)\nsys.stdin.readline()\nLEAVE(0)\n"
    outcomes = []
    for leave in ("leave", "sys.exit"):
        argv = [sys.executable, "-c", program.replace("LEAVE", leave)]
        with subprocess.Popen(
            argv, env=buffered_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as child:
            assert child.stdin is not None and child.stdout is not None and child.stderr is not None
            child.stdout.close()  # nothing read: the 100 bytes are still in the child's buffer
            child.stdin.write(b"go\n")
            child.stdin.close()
            report = child.stderr.read()
            outcomes.append((child.wait(timeout=60), b"BrokenPipeError" in report))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1]  # reported, not silently lost


def test_the_command_leaves_with_its_documented_status():
    """Through `python -m later_read`: a usage error is one line and exit 2, --version exit 0."""
    done = run_cli("prewarm", "--no-such-option")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "later-read: error:" in done.stderr
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip()
