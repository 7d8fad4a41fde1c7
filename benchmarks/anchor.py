"""The Go job later-read replaces, side by side with `later-read prewarm` on the same servers, in one run.

    python benchmarks/anchor.py                       # 20k users, A/B 10 ms, rec 40 ms, 70 % in the experiment
    python benchmarks/anchor.py --users 5000 --rounds 1
    python benchmarks/anchor.py --binary /tmp/anchor-go --rounds 5

The Go job (`../shared/anchor-go`, built by its own build.sh; never part of this repository) and the
prewarm run in turn on one Stack (the project's simulator, redis-server, MariaDB), Redis flushed and the
simulator's counters reset before each run, so both see the same servers, the same users and the same
moment of a shared host. Rows are seeded with no user under both task ids, so rows = users and both jobs
make the same calls. Printed per round and as medians: users/s, fraction of the ceiling
C / (L_ab + r * L_rec) (r = share of users in the experiment, the only ones that call recommend), CPU
microseconds per user (wait4 on the job's process alone) and later-read / Go.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import DATE, run_job  # noqa: E402
from later_read_sandbox.seed import connect, seed_day  # noqa: E402
from later_read_sandbox.simulator import ServiceKnobs, SimulatorKnobs  # noqa: E402
from later_read_sandbox.stack import Stack  # noqa: E402

ANCHOR_DIR = ROOT.parent / "shared" / "anchor-go"


def build_anchor(binary: Path) -> Path:
    """Build the Go job with its own script unless the binary is already there."""
    if not binary.exists():
        subprocess.run(["bash", str(ANCHOR_DIR / "build.sh"), str(binary)], check=True)
    return binary


def run_go(binary: Path, stack: Stack, concurrency: int) -> dict:
    """One run of the Go prewarm; its own JSON line plus wait4 figures of its process."""
    mysql = stack.mysql
    dsn = f"{mysql.user}:{mysql.password}@tcp({mysql.host}:{mysql.port})/{mysql.database}"
    args = [str(binary), "-dsn", dsn, "-redis", f"127.0.0.1:{stack.redis.port}", "-svc", stack.simulator.url,
            "-date", DATE, "-pool", str(concurrency)]
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the Go job exited {os.waitstatus_to_exitcode(status)}")
    return {"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime}


def run_later_read(stack: Stack, config: Path, concurrency: int) -> dict:
    return run_job(["prewarm", "--date", DATE, "--config", str(config), "--concurrency", str(concurrency)])


def one_round(binary: Path, stack: Stack, config: Path, users: int, concurrency: int, ceiling: float) -> dict:
    out = {}
    for name, run in (("go", lambda: run_go(binary, stack, concurrency)),
                      ("later_read", lambda: run_later_read(stack, config, concurrency))):
        stack.redis.client().flushdb()
        stack.simulator.reset()
        figures = run()
        rate = users / figures["wall_seconds"]
        out[name] = {"users_per_second": rate, "fraction": rate / ceiling,
                     "cpu_us_per_user": figures["cpu_seconds"] / users * 1e6,
                     "calls": {k: v.get("calls") for k, v in stack.simulator.stats().items() if isinstance(v, dict)}}
    out["ratio"] = out["later_read"]["users_per_second"] / out["go"]["users_per_second"]
    return out


def line(label: str, r: dict) -> str:
    go, lr = r["go"], r["later_read"]
    return (f"{label}: go {go['users_per_second']:,.0f} users/s ({go['fraction']:.3f} of ceiling, "
            f"{go['cpu_us_per_user']:.0f} us CPU/user) | later-read {lr['users_per_second']:,.0f} users/s "
            f"({lr['fraction']:.3f}, {lr['cpu_us_per_user']:.0f} us CPU/user) | later-read/go {r['ratio']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="Go then later-read, this many times (median)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--ab-ms", type=float, default=10)
    parser.add_argument("--rec-ms", type=float, default=40)
    parser.add_argument("--in-experiment", type=float, default=0.7)
    parser.add_argument("--binary", type=Path, default=Path("/tmp/anchor-go"))
    args = parser.parse_args()
    binary = build_anchor(args.binary)
    knobs = SimulatorKnobs(ab=ServiceKnobs(latency_ms=args.ab_ms), rec=ServiceKnobs(latency_ms=args.rec_ms),
                           in_experiment_ratio=args.in_experiment)
    ceiling = args.concurrency / ((args.ab_ms + args.in_experiment * args.rec_ms) / 1000)
    with tempfile.TemporaryDirectory(prefix="later-read-anchor-") as tmp, Stack(knobs) as stack:
        config = stack.write_config(Path(tmp) / "config.toml", starrocks={"batch_size": 5000})
        conn = connect(stack.mysql.host, stack.mysql.port, stack.mysql.user, stack.mysql.password,
                       stack.mysql.database)
        seed_day(conn, DATE, args.users, stack.config()["tasks"]["ids"], both_ratio=0.0)
        conn.close()
        print(f"{args.users:,} users, C={args.concurrency}, A/B {args.ab_ms} ms, rec {args.rec_ms} ms, "
              f"{args.in_experiment:.0%} in the experiment: ceiling {ceiling:,.0f} users/s", flush=True)
        rounds = []
        for i in range(args.rounds):
            rounds.append(one_round(binary, stack, config, args.users, args.concurrency, ceiling))
            print(line(f"round {i + 1}", rounds[-1]), flush=True)
    median = {name: {k: statistics.median(r[name][k] for r in rounds)
                     for k in ("users_per_second", "fraction", "cpu_us_per_user")} for name in ("go", "later_read")}
    median["ratio"] = statistics.median(r["ratio"] for r in rounds)
    print(line(f"median of {args.rounds}", median))


if __name__ == "__main__":
    main()
