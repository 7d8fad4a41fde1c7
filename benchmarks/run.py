"""Benchmarks: prewarm and push against their ceilings, on the real local servers and the simulator.

    python benchmarks/run.py --quick                 # the same shapes, small: under 2 minutes
    python benchmarks/run.py --repeat 3              # S1, S2, S3 at full size, median of 3
    python benchmarks/run.py --scenario S1 --json out.json
    python benchmarks/run.py --scenario S1 --users 50000 --repeat 3   # S1's shape at another size
    python benchmarks/run.py --scenario S2 --repeat 10 --code /tmp/before --code .   # two trees, interleaved

Each job runs as its own process (`python -m later_read ...`); its CPU time comes from wait4() on that
process alone, its peak RSS from its own VmHWM (`PeakRss`). The prewarm's ceiling is C / max(L_ab, L_rec)
users per second (every user in the experiment): the most it can do with C calls in flight to each service
(jobs/prewarm/fanout.py) when every call takes exactly its simulated latency. A pool of C users in flight,
each calling one service after the other (the Go job; later-read before 2026-12-02), has
C / (L_ab + L_rec): the row's `pool=`.

Scenarios (brief + issue 6):
  S1 prewarm 200k users, A/B 5 ms, rec 20 ms, C=50 (ceiling 2,500 users/s; a pool of C users: 2,000)
  S2 push one hour of 100k users, 2,000 distinct materials at 10 ms, C=50
  S3 prewarm 1M users, as S1: the memory curve (peak RSS at 200k vs 1M)
  G  prewarm 20k users, A/B 10 ms, rec 40 ms, C=50: the conditions the Go job was measured under
     (91 % of its pool's 1,000 users/s ceiling at 330 us CPU per user), for a like-for-like comparison
  P  push one hour of 1M users, as S2: the push's memory at scale (peak RSS, target < 200 MB)

The push scenarios read the values a prewarm of their hour would store, written straight into Redis from
the simulator's oracle (a prewarm of 1M users takes many minutes), with the prewarm's done and ready
markers, so the push takes its usual path. At the end it prints S3's peak RSS against S1's and P's against
200 MB when they ran.

With `--code` given more than once, each scenario runs every tree in turn on the same servers (the first
tree's run 1, the second's run 1, ...), and prints each tree's median: on a shared host whose speed moves by
a fifth within minutes, a change is measured against the code before it this way, not against another
hour's figures.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from later_read_sandbox.seed import connect, seed_day  # noqa: E402
from later_read_sandbox.simulator import ServiceKnobs, SimulatorKnobs  # noqa: E402
from later_read_sandbox.simulator.process import process_cpu_seconds  # noqa: E402
from later_read_sandbox.stack import Stack  # noqa: E402

DATE = "20261123"
PUSH_HOUR = 21
PUSH_NOW = "2026-11-23T21:01:00+08:00"  # the push runs at its hour (--now): inside the hour's window


@dataclass(frozen=True)
class Scenario:
    name: str
    job: str  # prewarm | push
    users: int
    concurrency: int = 50
    ab_ms: float = 5
    rec_ms: float = 20
    material_ms: float = 10
    materials: int = 2000

    @property
    def ceiling(self) -> float:
        return fanout_ceiling(self.concurrency, self.ab_ms, self.rec_ms)

    @property
    def pool_ceiling(self) -> float:
        return pool_ceiling(self.concurrency, self.ab_ms, self.rec_ms)


def fanout_ceiling(concurrency: int, ab_ms: float, rec_ms: float) -> float:
    """Users/s with C calls in flight to each service (later-read's prewarm): the slower service's rate.
    `rec_ms` is the mean recommend time per user (times the share of users that call it)."""
    return concurrency / (max(ab_ms, rec_ms) / 1000)


def pool_ceiling(concurrency: int, ab_ms: float, rec_ms: float) -> float:
    """Users/s of a pool of C users, each calling A/B then recommend (the Go job's model)."""
    return concurrency / ((ab_ms + rec_ms) / 1000)


FULL = [
    Scenario("S1", "prewarm", 200_000),
    Scenario("S2", "push", 100_000),
    Scenario("S3", "prewarm", 1_000_000),
    Scenario("G", "prewarm", 20_000, ab_ms=10, rec_ms=40),
    Scenario("P", "push", 1_000_000),
]
QUICK = [
    Scenario("S1", "prewarm", 10_000),
    Scenario("S2", "push", 10_000),
    Scenario("S3", "prewarm", 30_000),
    Scenario("G", "prewarm", 5_000, ab_ms=10, rec_ms=40),
    Scenario("P", "push", 50_000),
]
RSS_PUSH_TARGET_MB = 200


@functools.cache
def compile_package(code: Path = ROOT) -> None:
    """Write later_read's .pyc files as a production install has them: this environment sets
    PYTHONDONTWRITEBYTECODE=1, and a job compiling its ~40 modules at every start-up spends ~0.1 s of
    CPU that is no part of its work."""
    compileall.compile_dir(code / "later_read", quiet=1)


class PeakRss:
    """A process's own peak RSS: the VmHWM of /proc/<pid>/status, read every 20 ms while it runs.

    Not wait4's ru_maxrss: Linux carries over exec the high-water RSS of what the process was before it
    (the benchmark itself, forked or vforked: several hundred MB once it has seeded and filled 1M users),
    so ru_maxrss reports the benchmark's peak whenever that is the higher one. Until 2026-12-02 run.py
    used it, and P's "236 MB" and S2's "110 MB" were this script's own memory (the push's is ~75 MB).
    """

    def __init__(self, pid: int) -> None:
        self.path, self.kb = f"/proc/{pid}/status", 0
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            try:
                with open(self.path) as f:
                    found = re.search(r"^VmHWM:\s+(\d+)", f.read(), re.MULTILINE)
            except OSError:
                return  # reaped
            if found is None:
                return  # exited (a zombie has no memory left)
            self.kb = max(self.kb, int(found.group(1)))
            time.sleep(0.02)

    def mb(self) -> float:
        """The peak, once the process has been waited for."""
        self._thread.join()
        return round(self.kb / 1024, 1)


def run_job(args: list[str], code: Path = ROOT, exits: tuple[int, ...] | None = (0, 1)) -> dict:
    """Run one job process of the tree `code` (its later_read comes first on the path: the process starts
    in it); `run_process`'s figures. An exit code not in `exits` raises (None: any is the caller's to read,
    as hostile.py does)."""
    compile_package(code)
    return run_process([sys.executable, "-m", "later_read", "-q", *args], code, exits, f"later-read {args[0]}")


def run_process(argv: list[str], cwd: Path, exits: tuple[int, ...] | None, name: str) -> dict:
    """Run `argv` in `cwd`: wall time, CPU seconds and peak RSS of that process alone, its exit code and its
    last stderr line (`name` in the error when the exit code is not in `exits`)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rss = PeakRss(proc.pid)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")  # read while it runs: a full pipe would block it
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.stderr.close()
    exit_code = os.waitstatus_to_exitcode(status)
    if exits is not None and exit_code not in exits:
        raise RuntimeError(f"{name} exited {exit_code}: {stderr[-2000:]}")
    return {
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "sys_seconds": round(usage.ru_stime, 3),  # of cpu_seconds, in the kernel (syscalls, loopback TCP)
        "peak_rss_mb": rss.mb(),
        "exit_code": exit_code,
        "last_line": stderr.strip().splitlines()[-1] if stderr.strip() else "",
    }


def scenario_config(stack: Stack, s: Scenario, path: Path) -> Path:
    """The config a scenario's job runs with (also startup.py's and profile.py's): C for both jobs, pages
    of 5,000 rows."""
    concurrency = {"concurrency": s.concurrency}
    return stack.write_config(path, prewarm=concurrency, push=concurrency, starrocks={"batch_size": 5000})


def knobs_for(s: Scenario) -> SimulatorKnobs:
    """Prewarm: every user in the experiment, so every user makes both calls and C / max(L_ab, L_rec) is
    the true ceiling (with the default 80 % a fifth of users skip recommend and the ratio passes 1)."""
    in_experiment = 1.0 if s.job == "prewarm" else 0.8
    return SimulatorKnobs(
        ab=ServiceKnobs(latency_ms=s.ab_ms),
        rec=ServiceKnobs(latency_ms=s.rec_ms),
        material=ServiceKnobs(latency_ms=s.material_ms),
        materials=s.materials,
        in_experiment_ratio=in_experiment,
    )


def seed(stack: Stack, s: Scenario) -> float:
    started = time.monotonic()
    conn = connect(stack.mysql.host, stack.mysql.port, stack.mysql.user, stack.mysql.password, stack.mysql.database)
    hours = (PUSH_HOUR,) if s.job == "push" else tuple(range(24))
    seed_day(conn, DATE, s.users, stack.config()["tasks"]["ids"], hours=hours)
    conn.close()
    return time.monotonic() - started


def fill_values(stack: Stack, s: Scenario) -> None:
    """The values a prewarm of the push's hour stores, written straight into Redis from the simulator's
    oracle (the same bytes: `encode` of the decision the prewarm makes over the oracle's answers)."""
    from later_read.core.scope import RunScope
    from later_read.core.value import encode
    from later_read.store.keys import Keys
    from later_read_sandbox.seed import expected_users
    from later_read_sandbox.simulator.oracle import Oracle

    config = stack.config()
    oracle, keys = Oracle(knobs_for(s)), Keys(config["redis"]["key_prefix"])
    uids = list(expected_users(DATE, s.users, config["tasks"]["ids"], hour=PUSH_HOUR, hours=(PUSH_HOUR,)))
    client = stack.redis.client()
    for start in range(0, len(uids), 10_000):
        pipe = client.pipeline(transaction=False)
        for uid in uids[start : start + 10_000]:
            pipe.set(keys.rec(uid), encode(oracle.expected_value(uid, DATE)), ex=86_400)
        pipe.execute()
    # The prewarm's markers too (the day done, the hour ready), so the push runs its usual path and not the
    # one for a prewarm that never finished (which is measured apart and costs more).
    marker = json.dumps({"status": "ok", "date": DATE, "written_by": "benchmarks/run.py fill_values"})
    client.set(Keys.prewarm_done(RunScope(DATE)), marker, ex=86_400)
    client.set(Keys.prewarm_ready(RunScope(DATE), PUSH_HOUR), marker, ex=86_400)


def simulator_figures(stats: dict) -> dict:
    return {
        name: {"calls": ep.get("calls"), "peak_qps": ep.get("peak_qps")}
        for name, ep in stats.items()
        if isinstance(ep, dict)
    }


def measure(stack: Stack, s: Scenario, config: Path, work: Path, run: int, code: Path = ROOT) -> dict:
    """One measured run of the scenario's job (of the tree `code`) on a freshly flushed Redis."""
    stack.redis.client().flushdb()
    report = work / f"{s.name}-{run}.json"
    if s.job == "push":  # the push reads what a prewarm would have stored
        fill_values(stack, s)
    stack.simulator.reset()
    args = [s.job, "--date", DATE, "--config", str(config), "--report", str(report)]
    if s.job == "push":
        args += ["--hour", str(PUSH_HOUR), "--now", PUSH_NOW]
    pids = server_pids(stack)
    before = {name: process_cpu(pid) for name, pid in pids.items()}
    figures = run_job(args, code)
    # What the servers spent while the job ran (on a 2-core host, the CPU the job's wall time shares).
    figures["servers_cpu_seconds"] = {name: round(process_cpu(pid) - before[name], 2) for name, pid in pids.items()}
    job_report = json.loads(report.read_text())
    users = job_report.get("users") or s.users
    figures.update(
        users=users,
        users_per_second=round(users / figures["wall_seconds"], 1),
        cpu_us_per_user=round(figures["cpu_seconds"] / users * 1e6, 1),
        simulator=simulator_figures(stack.simulator.stats()),
        report=job_report,
    )
    if s.job == "prewarm":
        figures["ceiling_users_per_second"] = s.ceiling
        figures["fraction_of_ceiling"] = round(figures["users_per_second"] / s.ceiling, 3)
        figures["fraction_of_pool_ceiling"] = round(figures["users_per_second"] / s.pool_ceiling, 3)
    return figures


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def servers_median(runs: list[dict]) -> dict[str, float]:
    """Each server's median CPU seconds over the runs."""
    names = runs[0]["servers_cpu_seconds"] if runs else {}
    return {name: statistics.median(r["servers_cpu_seconds"].get(name, 0.0) for r in runs) for name in names}


def server_pids(stack: Stack) -> dict[str, int]:
    """The pids of the servers this stack started (one reused through LATER_READ_TEST_* has none here)."""
    pids = {}
    for name, label in (("mysql", "mariadb"), ("redis", "redis"), ("kafka", "kafka")):
        child = getattr(stack, name).child
        if child is not None and child.popen is not None:
            pids[label] = child.popen.pid
    if stack.simulator.process is not None:
        pids["simulator"] = stack.simulator.process.pid
    return pids


def process_cpu(pid: int) -> float:
    """A process's CPU seconds so far (`process_cpu_seconds`); 0.0 once it is gone."""
    try:
        return process_cpu_seconds(pid)
    except OSError:
        return 0.0


def scenario(s: Scenario, repeat: int, codes: list[Path]) -> list[dict]:
    """The scenario's `repeat` runs of each tree in `codes`, interleaved on one set of servers: a result
    per tree."""
    with tempfile.TemporaryDirectory(prefix=f"later-read-bench-{s.name}-") as tmp, Stack(knobs_for(s)) as stack:
        work = Path(tmp)
        config = scenario_config(stack, s, work / "config.toml")
        seed_seconds = seed(stack, s)
        runs: dict[Path, list[dict]] = {code: [] for code in codes}
        for i in range(repeat):
            for code in codes:
                runs[code].append(measure(stack, s, config, work, i, code))
    keys = ["wall_seconds", "users_per_second", "cpu_seconds", "sys_seconds", "cpu_us_per_user", "peak_rss_mb"]
    if s.job == "prewarm":
        keys += ["fraction_of_ceiling", "fraction_of_pool_ceiling"]
    return [
        {
            "scenario": s.__dict__,
            "code": str(code),
            "seed_seconds": round(seed_seconds, 1),
            "runs": code_runs,
            "median": {k: median_of(code_runs, k) for k in keys} | {"servers_cpu_seconds": servers_median(code_runs)},
        }
        for code, code_runs in runs.items()
    ]


def print_result(result: dict) -> None:
    s, m = result["scenario"], result["median"]
    line = (
        f"{s['name']} {s['job']:7} users={s['users']:>9,} C={s['concurrency']} "
        f"wall={m['wall_seconds']:.2f}s users/s={m['users_per_second']:,.0f} "
        f"cpu={m['cpu_seconds']:.2f}s (sys {m['sys_seconds']:.2f}s) cpu/user={m['cpu_us_per_user']:.0f}us "
        f"rss={m['peak_rss_mb']:.0f}MB"
    )
    if "fraction_of_ceiling" in m:
        line += (
            f" ceiling={result['runs'][-1]['ceiling_users_per_second']:,.0f}/s "
            f"fraction={m['fraction_of_ceiling']:.3f} pool={m['fraction_of_pool_ceiling']:.3f}"
        )
    servers = m.get("servers_cpu_seconds") or {}
    if servers:
        line += " servers=" + ",".join(f"{name}:{cpu:.2f}s" for name, cpu in servers.items())
    sim = result["runs"][-1]["simulator"]
    line += " sim=" + ",".join(f"{k}:{v['calls']}@{v['peak_qps']}qps" for k, v in sim.items())
    if result["code"] != str(ROOT):
        line += f" code={result['code']}"
    print(line, flush=True)


def print_memory(results: list[dict]) -> None:
    """S3's peak RSS against S1's (the prewarm's memory does not grow with the day), P's against its
    target (a 1M-user push hour)."""
    rss = {r["scenario"]["name"]: r["median"]["peak_rss_mb"] for r in results}
    if "S1" in rss and "S3" in rss:
        print(f"memory: S3 {rss['S3']:.0f} MB / S1 {rss['S1']:.0f} MB = {rss['S3'] / rss['S1']:.3f} (target <= 1.10)")
    if "P" in rss:
        users = next(r["scenario"]["users"] for r in results if r["scenario"]["name"] == "P")
        print(f"memory: P (a push hour of {users:,} users) {rss['P']:.0f} MB (target < {RSS_PUSH_TARGET_MB} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, same shapes (< 2 min)")
    parser.add_argument("--scenario", default="S1,S2,S3,G,P", help="comma-separated subset of S1,S2,S3,G,P")
    parser.add_argument("--repeat", type=int, default=None, help="runs per scenario (median); default 3, quick 1")
    parser.add_argument("--users", type=int, default=None, help="override every chosen scenario's user count")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    parser.add_argument(
        "--code",
        type=Path,
        action="append",
        help="a checkout whose later_read runs (default: this one); give it twice or more to interleave trees",
    )
    args = parser.parse_args()
    codes = [code.resolve() for code in args.code or [ROOT]]
    wanted = set(args.scenario.split(","))
    repeat = args.repeat or (1 if args.quick else 3)
    results = []
    for listed in QUICK if args.quick else FULL:
        s = dataclasses.replace(listed, users=args.users) if args.users else listed
        if s.name in wanted:
            for result in scenario(s, repeat, codes):
                results.append(result)
                print_result(result)
    print_memory([r for r in results if r["code"] == str(codes[-1])])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    args.json.write_text(
        json.dumps({"machine": machine, "quick": args.quick, "repeat": repeat, "results": results}, indent=2)
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
