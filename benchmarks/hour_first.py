"""Hour 0 no longer waits for the whole day: the prewarm and the hour-0 push started at the same moment.

    python benchmarks/hour_first.py --users 200000     # the issue's figure (a quiet machine)
    python benchmarks/hour_first.py --quick            # 20k users

Seeds a day (users spread over the 24 push hours, as in S1: A/B 5 ms, recommend 20 ms, C = 50), then
starts `later-read push --hour 0 --wait 900` and `later-read prewarm` together, each as its own
process, on an empty Redis. Prints when the push had sent every hour-0 user (its exit, all delivered)
against the prewarm's total time, and when the prewarm marked hour 0 ready. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from later_read_sandbox.seed import connect, seed_day  # noqa: E402
from later_read_sandbox.simulator import ServiceKnobs, SimulatorKnobs  # noqa: E402
from later_read_sandbox.stack import Stack  # noqa: E402

DATE = "20261123"


def start(config: Path, report: Path, *args: str) -> subprocess.Popen:
    quiet = [] if "--verbose" in sys.argv else ["-q"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "later_read",
            *quiet,
            *args,
            "--date",
            DATE,
            "--config",
            str(config),
            "--report",
            str(report),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen, started: float, what: str) -> float:
    stderr = process.communicate(timeout=3600)[1].decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{what} exited {process.returncode}: {stderr[-2000:]}")
    if "--verbose" in sys.argv:
        print(stderr[-3000:])
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20,000 users")
    parser.add_argument("--verbose", action="store_true", help="print the jobs' log lines")
    args = parser.parse_args()
    users = 20_000 if args.quick else args.users
    knobs = SimulatorKnobs(
        ab=ServiceKnobs(latency_ms=5), rec=ServiceKnobs(latency_ms=20), material=ServiceKnobs(latency_ms=10)
    )
    with tempfile.TemporaryDirectory(prefix="later-read-hour-first-") as tmp, Stack(knobs) as stack:
        work = Path(tmp)
        conn = connect(stack.mysql.host, stack.mysql.port, stack.mysql.user, stack.mysql.password, stack.mysql.database)
        seed_day(conn, DATE, users, stack.config()["tasks"]["ids"])
        conn.close()
        config = stack.write_config(
            work / "config.toml", starrocks={"batch_size": 5000}, prewarm={"concurrency": 50}, push={"concurrency": 50}
        )
        stack.redis.client().flushdb()
        started = time.monotonic()
        push = start(
            config, work / "push.json", "push", "--hour", "0", "--now", "2026-11-23T00:00:30+08:00", "--wait", "900"
        )
        prewarm = start(config, work / "prewarm.json", "prewarm")
        push_seconds = finish(push, started, "push")
        prewarm_seconds = finish(prewarm, started, "prewarm")
        push_report = json.loads((work / "push.json").read_text())
        prewarm_report = json.loads((work / "prewarm.json").read_text())
    hour0 = prewarm_report["hours"]["00"]
    print(
        f"users={users:,} hour0_users={push_report['users']:,} sent={push_report['sent']:,} "
        f"misses={push_report['misses']} prewarm_marker={push_report['prewarm_marker']}"
    )
    print(
        f"hour 0 ready after {hour0['seconds']:.2f} s of prewarm; hour-0 push done (every hour-0 user "
        f"sent) {push_seconds:.2f} s after the start; prewarm done {prewarm_seconds:.2f} s after the start"
    )
    services = {
        k: {"calls": v["calls"], "old_flow_calls": v["old_flow_calls"]} for k, v in push_report["services"].items()
    }
    print(f"push peak_calls_saved={push_report.get('peak_calls_saved')} services={json.dumps(services)}")


if __name__ == "__main__":
    main()
