"""Hostile services against the jobs' memory: 50 concurrent replies of 15 MiB, and 15 MiB fields.

    python benchmarks/hostile.py                          # this tree's jobs, 3 runs per scenario
    python benchmarks/hostile.py --code /path/to/checkout  # another checkout's jobs, the same simulator
    python benchmarks/hostile.py --scenario prewarm-field --repeat 1 --users 50

The servers and the simulator (its hostile knobs: sandbox/later_read_sandbox/simulator/hostile.py) come from this
tree; the job process runs `python -m later_read` with PYTHONPATH at `--code`, so the code before a change
can be measured against exactly the same hostile services. Prints figures and asserts nothing.

Scenarios (every reply of the service is hostile; concurrency 50, so 50 of them are in flight at once):
  prewarm-reply   A/B replies padded to 15 MiB
  prewarm-field   A/B replies whose trace_id is 15 MiB (half the users out of the experiment: a value
                  stores the trace_id as it is)
  push-reply      material replies padded to 15 MiB (the hour's users each have their own card)
  push-field      material replies whose content is 15 MiB
  prewarm-near-bound  A/B replies padded to 250,000 bytes, under the default 256 KiB bound: all accepted

Per run: the job's peak RSS (its own VmHWM: run.py's `PeakRss`), its exit code, its failures per
reason (from --report), the largest value under `rec:later_read:*` in Redis (STRLEN), and the
simulator's hostile replies. The breaker is off (`breaker_failure_ratio = 1`) and the timeout long, so
every user meets a hostile reply whatever the code does with it. A line per run, then the median of the
peak RSS per scenario.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import DATE, PUSH_HOUR, PUSH_NOW, run_job  # noqa: E402
from later_read_sandbox.seed import connect, seed_day  # noqa: E402
from later_read_sandbox.simulator import SimulatorKnobs  # noqa: E402
from later_read_sandbox.stack import Stack  # noqa: E402

MIB15 = 15 * 1024 * 1024
CONCURRENCY = 50


@dataclass(frozen=True)
class Scenario:
    name: str
    job: str  # prewarm | push
    knobs: dict  # the hostile service's knobs
    in_experiment: float = 1.0


SCENARIOS = [
    Scenario("prewarm-reply", "prewarm", {"ab": {"hostile_ratio": 1.0, "hostile_reply_bytes": MIB15}}),
    # half the users out of the experiment: their value holds the trace_id (the others send it to recommend)
    Scenario(
        "prewarm-field",
        "prewarm",
        {"ab": {"hostile_ratio": 1.0, "hostile_field": "trace_id", "hostile_field_bytes": MIB15}},
        0.5,
    ),
    Scenario("push-reply", "push", {"material": {"hostile_ratio": 1.0, "hostile_reply_bytes": MIB15}}),
    # just under the default bound: every reply accepted and parsed, the most a reply may cost
    Scenario("prewarm-near-bound", "prewarm", {"ab": {"hostile_ratio": 1.0, "hostile_reply_bytes": 250_000}}),
    Scenario(
        "push-field",
        "push",
        {"material": {"hostile_ratio": 1.0, "hostile_field": "content", "hostile_field_bytes": MIB15}},
    ),
]


def largest_value(stack: Stack) -> int:
    client = stack.redis.client()
    try:
        sizes = [client.strlen(key) for key in client.scan_iter(match="rec:later_read:*", count=1000)]
    finally:
        client.close()
    return max(sizes, default=0)


def measure(stack: Stack, code: Path, config: Path, work: Path, s: Scenario, run: int, base: SimulatorKnobs) -> dict:
    """One run on a flushed Redis: the simulator at `base`, then `s.knobs` on top for the measured job."""
    stack.redis.client().flushdb()
    stack.simulator.configure(**base.to_dict())
    if s.job == "push":  # the values the push reads, from an ordinary prewarm
        run_job(["prewarm", "--date", DATE, "--config", str(config)], code, exits=None)
    stack.simulator.configure(**s.knobs, in_experiment_ratio=s.in_experiment)
    stack.simulator.reset()
    report = work / f"{s.name}-{run}.json"
    args = [s.job, "--date", DATE, "--config", str(config), "--report", str(report)]
    push = ["--hour", str(PUSH_HOUR), "--now", PUSH_NOW] if s.job == "push" else []  # within the hour's window
    figures = run_job(args + push, code, exits=None)
    data = json.loads(report.read_text()) if report.exists() else {}
    service = next(iter(s.knobs))
    figures.update(
        failures=data.get("failures", {}),
        largest_value_bytes=largest_value(stack),
        hostile_replies=stack.simulator.stats()[service]["by_fault"]["hostile"],
    )
    return figures


def seed(stack: Stack, users: int) -> None:
    conn = connect(stack.mysql.host, stack.mysql.port, stack.mysql.user, stack.mysql.password, stack.mysql.database)
    try:
        seed_day(conn, DATE, users, stack.config()["tasks"]["ids"], hours=(PUSH_HOUR,))
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose jobs run (default: this one)")
    parser.add_argument("--scenario", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--users", type=int, default=100, help="users of the day, all in one push hour")
    args = parser.parse_args()
    wanted = [s for s in SCENARIOS if s.name in args.scenario.split(",")]
    # materials = users: every user of the push has a card of its own, so 50 fetches are in flight at once
    knobs = SimulatorKnobs(in_experiment_ratio=1.0, no_rec_ratio=0.0, not_found_ratio=0.0, materials=args.users)
    print(f"code={args.code.resolve()} users={args.users} concurrency={CONCURRENCY}", flush=True)
    with tempfile.TemporaryDirectory(prefix="later-read-hostile-") as tmp, Stack(knobs) as stack:
        work = Path(tmp)
        config = stack.write_config(
            work / "config.toml",
            prewarm={"concurrency": CONCURRENCY, "progress_interval_seconds": 600},
            push={"concurrency": CONCURRENCY, "wait_for_prewarm_seconds": 0, "progress_interval_seconds": 600},
            services={"timeout_seconds": 120.0, "max_attempts": 3, "breaker_failure_ratio": 1.0},
        )
        seed(stack, args.users)
        for s in wanted:
            peaks = []
            for run in range(args.repeat):
                figures = measure(stack, args.code, config, work, s, run, knobs)
                peaks.append(figures["peak_rss_mb"])
                print(
                    f"{s.name} run={run + 1} exit={figures['exit_code']} peak_rss={figures['peak_rss_mb']:.1f}MB "
                    f"failures={figures['failures']} largest_value={figures['largest_value_bytes']:,}B "
                    f"hostile_replies={figures['hostile_replies']}"
                    + (f" last_line={figures['last_line'][:160]!r}" if figures["exit_code"] not in (0, 1) else ""),
                    flush=True,
                )
            print(f"{s.name} median_peak_rss={statistics.median(peaks):.1f}MB runs={peaks}", flush=True)


if __name__ == "__main__":
    main()
