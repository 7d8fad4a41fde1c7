"""The Go job later-read replaces, side by side with later-read on the same servers, in one run.

    python benchmarks/anchor.py                               # prewarm and push, 3 rounds each
    python benchmarks/anchor.py --job prewarm --users 200000  # the prewarm at 200k users
    python benchmarks/anchor.py --job push --rounds 5
    python benchmarks/anchor.py --load 1                      # the same beside one CPU-bound neighbour

The Go job (`../shared/anchor-go`, built by its own build.sh; never part of this repository) and
later-read run in turn on one Stack (the project's simulator, redis-server, MariaDB, Kafka), so both see
the same servers, the same users and the same moment of a shared host. Rows are seeded with no user under
both task ids, so rows = users and both jobs make the same calls.

- prewarm: 20k users over the day, A/B 10 ms, recommend 40 ms, 70 % in the experiment, C = 50; Redis
  flushed and the simulator's counters reset before each run. Each job against its own ceiling (r = share
  of users in the experiment, the only ones that call recommend): the Go job's pool of C users, each
  calling A/B then recommend, reaches at most C / (L_ab + r * L_rec); later-read keeps C calls in flight
  to each service (fanout.py), at most C / max(L_ab, r * L_rec).
- push: one hour of 20k users (another date, all at hour 21), material 10 ms, C = 50: the Go job's
  `-hour H` (the seed's handler: one material call and one synchronous produce per user) against
  `later-read push --hour H`. One later-read prewarm (not measured) stores the values both read; before
  each run the sent markers and the push's own records are deleted and the simulator's counters reset.

Per round and as medians: wall seconds, users/s, CPU microseconds per user (wait4 on the job's process
alone), the first service call's time after the process was spawned (the simulator's first arrival),
the service calls, and later-read / Go (users/s). For the prewarm, where each job's time went: `start`
(spawn to the first call), `fan-out` (the first call to the last recommend call's reply, and its users/s
over the job's ceiling) and `end` (from that reply to the process's exit: the last writes, the summary);
and later-read's round trip per call over the service's own latency (`over`: its report's p50 less the
simulated latency; the Go job reports none). `--load N` runs N CPU-bound neighbours
(`python -c 'while True: pass'`, one process each) through every measured run: the "loaded host" rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import DATE, PUSH_HOUR, fanout_ceiling, pool_ceiling, run_job  # noqa: E402
from later_read_sandbox.seed import connect, seed_day  # noqa: E402
from later_read_sandbox.simulator import ServiceKnobs, SimulatorKnobs  # noqa: E402
from later_read_sandbox.stack import Stack  # noqa: E402

ANCHOR_DIR = ROOT.parent / "shared" / "anchor-go"
PUSH_DATE = "20261124"  # the push's day: its own rows, every user at PUSH_HOUR
PUSH_NOW = f"2026-11-24T{PUSH_HOUR}:01:00+08:00"
FIGURES = ("wall_seconds", "users_per_second", "cpu_us_per_user", "first_call_seconds", "fanout_seconds", "end_seconds")


def build_anchor(binary: Path) -> Path:
    """Build the Go job with its own script unless the binary is already there."""
    if not binary.exists():
        subprocess.run(["bash", str(ANCHOR_DIR / "build.sh"), str(binary)], check=True)
    return binary


def run_go(binary: Path, stack: Stack, concurrency: int, push: bool) -> dict:
    """One run of the Go job (its prewarm, or with `push` its `-hour` push); wait4 figures of its process."""
    mysql = stack.mysql
    dsn = f"{mysql.user}:{mysql.password}@tcp({mysql.host}:{mysql.port})/{mysql.database}"
    args = [
        str(binary),
        "-dsn",
        dsn,
        "-redis",
        f"127.0.0.1:{stack.redis.port}",
        "-svc",
        stack.simulator.url,
        "-date",
        PUSH_DATE if push else DATE,
        "-pool",
        str(concurrency),
    ]
    if push:
        args += ["-hour", str(PUSH_HOUR), "-kafka", stack.kafka.bootstrap, "-topic", stack.topic]
    spawned, started = time.time(), time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the Go job exited {os.waitstatus_to_exitcode(status)}")
    return {"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime, "spawned": spawned}


def run_later_read(config: Path, concurrency: int, push: bool) -> dict:
    if push:  # its concurrency is the config's [push] concurrency
        args = ["push", "--date", PUSH_DATE, "--hour", str(PUSH_HOUR), "--now", PUSH_NOW]
    else:
        args = ["prewarm", "--date", DATE, "--concurrency", str(concurrency)]
    report = config.parent / "report.json"
    spawned = time.time()
    figures = run_job([*args, "--config", str(config), "--report", str(report)])
    services = json.loads(report.read_text()).get("services", {})
    p50 = {name: stats["p50_ms"] for name, stats in services.items() if stats.get("calls")}
    return {**figures, "spawned": spawned, "p50_ms": p50}


def reset_push_state(stack: Stack) -> None:
    """Forget every push run: the sent markers, the hours' start records and ledger entries, their locks."""
    client = stack.redis.client()
    for pattern in ("later_read:sent:*", "later_read:push:*", "later_read:lock:push:*"):
        keys = list(client.scan_iter(pattern, count=10_000))
        for i in range(0, len(keys), 10_000):
            client.unlink(*keys[i : i + 10_000])


def one_run(name: str, run: Callable[[], dict], stack: Stack, users: int, push: bool) -> dict:
    """Reset, run, and the run's figures."""
    figures = run()
    stats = {k: v for k, v in stack.simulator.stats().items() if isinstance(v, dict)}
    knobs = stack.simulator.knobs.to_dict()
    first = stats.get("material" if push else "ab", {}).get("first_at")
    out = {
        "wall_seconds": figures["wall_seconds"],
        "users_per_second": users / figures["wall_seconds"],
        "cpu_us_per_user": figures["cpu_seconds"] / users * 1e6,
        "first_call_seconds": (first - figures["spawned"]) if first else float("nan"),
        "calls": {k: v.get("calls") for k, v in stats.items()},
        "over_ms": {k: v - knobs[k]["latency_ms"] for k, v in figures.get("p50_ms", {}).items()},
    }
    if not push and first and stats["rec"].get("last_at"):
        last_reply = stats["rec"]["last_at"] + knobs["rec"]["latency_ms"] / 1000
        out["fanout_seconds"] = last_reply - first
        out["end_seconds"] = figures["spawned"] + figures["wall_seconds"] - last_reply
    return out


def one_round(binary: Path, stack: Stack, config: Path, users: int, concurrency: int, push: bool) -> dict:
    out = {}
    for name, run in (
        ("go", lambda: run_go(binary, stack, concurrency, push)),
        ("later_read", lambda: run_later_read(config, concurrency, push)),
    ):
        if push:
            reset_push_state(stack)
        else:
            stack.redis.client().flushdb()
        stack.simulator.reset()
        out[name] = one_run(name, run, stack, users, push)
    out["ratio"] = out["later_read"]["users_per_second"] / out["go"]["users_per_second"]
    return out


def line(label: str, r: dict, ceilings: dict[str, float] | None, users: int) -> str:
    def side(f: dict, name: str) -> str:
        fraction = f" ({f['users_per_second'] / ceilings[name]:.3f} of its ceiling)" if ceilings else ""
        calls = ",".join(f"{k}:{v}" for k, v in sorted(f.get("calls", {}).items()) if v)
        text = (
            f"{f['wall_seconds']:.2f} s, {f['users_per_second']:,.0f} users/s{fraction}, "
            f"{f['cpu_us_per_user']:.0f} us CPU/user, first call {f['first_call_seconds']:.3f} s"
            + (f", calls {calls}" if calls else "")
        )
        if ceilings and f.get("fanout_seconds"):
            fanout = users / f["fanout_seconds"] / ceilings[name]
            text += (
                f", start {f['first_call_seconds']:.2f} + fan-out {f['fanout_seconds']:.2f} ({fanout:.3f} of its "
                f"ceiling) + end {f['end_seconds']:.2f} s"
            )
        if f.get("over_ms"):
            text += ", over " + ",".join(f"{k}:{v:+.2f}ms" for k, v in sorted(f["over_ms"].items()))
        return text

    go, later_read = side(r["go"], "go"), side(r["later_read"], "later_read")
    return f"{label}: go {go} | later-read {later_read} | later-read/go {r['ratio']:.3f}"


def median(rounds: list[dict]) -> dict:
    out: dict = {
        name: {k: statistics.median(r[name][k] for r in rounds) for k in FIGURES if k in rounds[0][name]}
        for name in ("go", "later_read")
    }
    for name in ("go", "later_read"):
        out[name]["calls"] = rounds[-1][name]["calls"]
        out[name]["over_ms"] = {
            k: statistics.median(r[name]["over_ms"][k] for r in rounds) for k in rounds[0][name]["over_ms"]
        }
    out["ratio"] = statistics.median(r["ratio"] for r in rounds)
    return out


@contextlib.contextmanager
def neighbours(count: int) -> Iterator[None]:
    """`count` CPU-bound processes beside the measured runs (the loaded host), stopped by their pids."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def seed(stack: Stack, users: int, push: bool) -> None:
    conn = connect(stack.mysql.host, stack.mysql.port, stack.mysql.user, stack.mysql.password, stack.mysql.database)
    tasks = stack.config()["tasks"]["ids"]
    if push:
        seed_day(conn, PUSH_DATE, users, tasks, both_ratio=0.0, hours=(PUSH_HOUR,))
    else:
        seed_day(conn, DATE, users, tasks, both_ratio=0.0)
    conn.close()


def compare(args: argparse.Namespace, binary: Path, push: bool) -> None:
    knobs = SimulatorKnobs(
        ab=ServiceKnobs(latency_ms=args.ab_ms),
        rec=ServiceKnobs(latency_ms=args.rec_ms),
        material=ServiceKnobs(latency_ms=args.material_ms),
        materials=args.materials,
        in_experiment_ratio=args.in_experiment,
    )
    rec_ms = args.in_experiment * args.rec_ms  # only the users in the experiment call recommend
    ceilings = None
    if not push:
        ceilings = {
            "go": pool_ceiling(args.concurrency, args.ab_ms, rec_ms),
            "later_read": fanout_ceiling(args.concurrency, args.ab_ms, rec_ms),
        }
    with tempfile.TemporaryDirectory(prefix="later-read-anchor-") as tmp, Stack(knobs) as stack:
        config = stack.write_config(
            Path(tmp) / "config.toml", starrocks={"batch_size": 5000}, push={"concurrency": args.concurrency}
        )
        seed(stack, args.users, push)
        if push:  # the values both pushes read: one later-read prewarm, not measured
            run_job(["prewarm", "--date", PUSH_DATE, "--config", str(config)])
            print(
                f"push: {args.users:,} users at hour {PUSH_HOUR}, C={args.concurrency}, material "
                f"{args.material_ms} ms, {args.materials:,} materials, load {args.load}",
                flush=True,
            )
        else:
            print(
                f"prewarm: {args.users:,} users, C={args.concurrency}, A/B {args.ab_ms} ms, rec {args.rec_ms} ms, "
                f"{args.in_experiment:.0%} in the experiment: ceilings go {ceilings['go']:,.0f}, later-read "
                f"{ceilings['later_read']:,.0f} users/s, load {args.load}",
                flush=True,
            )
        rounds = []
        with neighbours(args.load):
            for i in range(args.rounds):
                rounds.append(one_round(binary, stack, config, args.users, args.concurrency, push))
                print(line(f"round {i + 1}", rounds[-1], ceilings, args.users), flush=True)
    print(line(f"median of {args.rounds}", median(rounds), ceilings, args.users), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", choices=("prewarm", "push", "both"), default="both")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="Go then later-read, this many times (median)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--ab-ms", type=float, default=10)
    parser.add_argument("--rec-ms", type=float, default=40)
    parser.add_argument("--material-ms", type=float, default=10)
    parser.add_argument(
        "--materials", type=int, default=1000, help="distinct books of the push's users (the simulator's default)"
    )
    parser.add_argument("--in-experiment", type=float, default=0.7)
    parser.add_argument("--load", type=int, default=0, help="CPU-bound neighbour processes during the runs")
    parser.add_argument("--binary", type=Path, default=Path("/tmp/anchor-go"))
    args = parser.parse_args()
    binary = build_anchor(args.binary)
    for job in ("prewarm", "push") if args.job == "both" else (args.job,):
        compare(args, binary, job == "push")


if __name__ == "__main__":
    main()
