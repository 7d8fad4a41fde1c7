"""Sharded runs side by side: N = 1, 2, 4 shard processes over the same day, one table.

    python benchmarks/shards.py --users 20000                   # prewarm and push, N = 1, 2, 4
    python benchmarks/shards.py --users 50000 --shards 1,2,4,8 --jobs prewarm

For each N: a flushed Redis, the simulator reset, then N `later-read prewarm --shard K/N` processes
started together (then N `push --shard K/N` for the seeded hour). Figures per row:
  users/s      the day's users / wall time until the last shard exited
  cpu/user     the shards' CPU time (wait4 on each process, user + system) summed, per user
  peak QPS     the simulator's busiest wall-clock second per service (A/B, recommend, material)

Services answer after a fixed latency (A/B 5 ms, recommend 20 ms, material 10 ms) and the concurrency is
per shard, so N shards can keep N times as many calls in flight: the speed-up holds until the CPU runs
out. On a machine with few cores the shards, Redis, MariaDB, Kafka and the simulator share them; the
machine's core count is printed with the table so the reader can tell where the CPU caps it.
"""

from __future__ import annotations

import argparse
import os
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
PUSH_HOUR = 21
CONCURRENCY = 50  # per shard, the shipped default


def run_shards(job: str, config: Path, shards: int) -> dict:
    """Start the N shard processes of one job together; wall time to the last exit, CPU summed."""
    started = time.monotonic()
    extra = ["--hour", str(PUSH_HOUR), "--now", "2026-11-23T21:01:00+08:00"] if job == "push" else []
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "later_read",
                "-q",
                job,
                "--date",
                DATE,
                "--config",
                str(config),
                "--shard",
                f"{k}/{shards}",
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for k in range(shards)
    ]
    cpu = 0.0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 1):
            raise RuntimeError(f"{job} shard exited {code}: {proc.stderr.read().decode()[-2000:]}")
        proc.stderr.close()
    return {"wall": time.monotonic() - started, "cpu": cpu}


def measure(stack: Stack, work: Path, shards: int, jobs: list[str], users: dict[str, int]) -> list[dict]:
    config = stack.write_config(
        work / f"config-{shards}.toml",
        shards={"count": shards},
        prewarm={"concurrency": CONCURRENCY, "progress_interval_seconds": 600},
        push={"concurrency": CONCURRENCY, "wait_for_prewarm_seconds": 0, "progress_interval_seconds": 600},
        starrocks={"batch_size": 5000},
    )
    stack.redis.client().flushdb()
    rows = []
    for job in ("prewarm", "push"):
        stack.simulator.reset()
        figures = run_shards(job, config, shards)
        peaks = {name: ep.get("peak_qps", 0) for name, ep in stack.simulator.stats().items() if isinstance(ep, dict)}
        if job in jobs:
            n = users[job]
            rows.append(
                {
                    "job": job,
                    "shards": shards,
                    "users": n,
                    "wall": figures["wall"],
                    "users_per_second": n / figures["wall"],
                    "cpu_us_per_user": figures["cpu"] / n * 1e6,
                    "peaks": peaks,
                }
            )
    return rows


def print_table(rows: list[dict]) -> None:
    print(
        f"{'job':8} {'N':>2} {'users':>8} {'wall s':>7} {'users/s':>8} {'cpu/user us':>11} "
        f"{'peak ab':>8} {'peak rec':>8} {'peak material':>13}"
    )
    for r in rows:
        p = r["peaks"]
        print(
            f"{r['job']:8} {r['shards']:>2} {r['users']:>8,} {r['wall']:>7.2f} {r['users_per_second']:>8,.0f} "
            f"{r['cpu_us_per_user']:>11.0f} {p.get('ab', 0):>8} {p.get('rec', 0):>8} {p.get('material', 0):>13}"
        )
    print(f"machine: {os.cpu_count()} cores; the shards share them with Redis, MariaDB, Kafka and the simulator")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20000, help="users of the day, all in one push hour")
    parser.add_argument("--shards", default="1,2,4", help="comma-separated shard counts")
    parser.add_argument("--jobs", default="prewarm,push", help="prewarm, push or both")
    args = parser.parse_args()
    jobs = args.jobs.split(",")
    knobs = SimulatorKnobs(
        ab=ServiceKnobs(latency_ms=5),
        rec=ServiceKnobs(latency_ms=20),
        material=ServiceKnobs(latency_ms=10),
        materials=2000,
        in_experiment_ratio=1.0,
    )
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="later-read-bench-shards-") as tmp, Stack(knobs) as stack:
        conn = connect(stack.mysql.host, stack.mysql.port, stack.mysql.user, stack.mysql.password, stack.mysql.database)
        seed_day(conn, DATE, args.users, stack.config()["tasks"]["ids"], hours=(PUSH_HOUR,))
        conn.close()
        users = {"prewarm": args.users, "push": args.users}
        for shards in (int(n) for n in args.shards.split(",")):
            rows += measure(stack, Path(tmp), shards, jobs, users)
            print(f"N={shards} done", file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
