"""Adaptive concurrency against services that queue: the prewarm with `adaptive = true` vs a fixed pool.

    python benchmarks/adaptive.py --quick      # small: ~2 minutes
    python benchmarks/adaptive.py              # the issue's figures (run on a quiet machine)
    python benchmarks/adaptive.py --quick --hog 1   # a noisy host: one CPU-bound process beside the job

The simulator serves A/B and recommend with capacity 50 each (50 calls at once, the rest queued FIFO)
at a base latency of 20 ms, so each service does at most 50 / 0.020 = 2,500 calls/s and a user (A/B
then recommend) at most 2,500 users/s. `[prewarm] concurrency = 400` is the bound. Three runs per mode
(adaptive, fixed), each a `later-read prewarm --force` process:

  steady  capacity 50 all along: in flight at the service (simulator: in service + queued, polled every
          0.1 s), users/s against 2,500, the job's p50/p99 call latency against the 20 ms base
  cut     capacity cut to 25 after CUT_AT s: how long until the in-flight count at the service is within
          20 % of 25, and how many whole seconds after that had their mean within 20 %
  storm   30 % of A/B and recommend calls answered 429 for STORM_SECONDS: in flight before, during, after

`--hog N` starts N CPU-bound processes for the whole run: the client's round trips then carry its own
scheduling delays (noise no queue at the service explains), the case where a latency-only limit collapses.

Prints one line per run; nothing is asserted. `users/s` is the whole run's (the job's start-up and drain
included); `ab_steady=` / `rec_steady=` are the calls/s each service took from STEADY_FROM s after the
first call to the job's stop, against the ceiling: the steady throughput. Per service too: the job's
p50/p99 round trip (whole run), and from STEADY_FROM s on the simulator's sojourn p50/p99 (arrival to
reply), its queue wait p99 (what the job's load causes) and its lateness p99 (reply timers firing late:
the host, not the job). `steal=` is
the CPU the hypervisor took during the run: on a VM whose CPU is stolen every figure is noisy (the
simulator's own lateness alone can pass the 10 ms a queue is allowed); rerun when it is above ~2 %.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from later_read_sandbox.seed import connect, seed_day  # noqa: E402
from later_read_sandbox.simulator import ServiceKnobs, SimulatorKnobs  # noqa: E402
from later_read_sandbox.stack import Stack  # noqa: E402

DATE = "20261123"
CAPACITY, BASE_MS, BOUND = 50, 20, 400
CEILING = CAPACITY / (BASE_MS / 1000)  # users/s: each service 2,500 calls/s, one call of each per user
VERBOSE = "--verbose" in sys.argv
STORM_RATE = 0.3  # below the breaker's 50 %: the job must back off, not stop
STEADY_FROM = 1.0  # s after the first call: start-up is over (~0.3 s from 20 to 50)


class Poller(threading.Thread):
    """(seconds since start, ab in flight, rec in flight) at the simulator every 0.1 s."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.samples, self.stop = stack, [], threading.Event()
        self.first_call: float | None = None
        self.last: dict = {}
        self.at_stop: dict = {}  # the simulator's counters as the job was told to stop (no drain in them)
        self.starved: list[str] = []  # services the job warned about (prewarm.adaptive_starved)
        self.steal = 0.0  # % of the host's CPU the hypervisor took from the first call to the end

    def run(self) -> None:
        """Samples are timed from the job's first call (its start-up, seconds on a busy host, is not
        part of any phase). The simulator's counters are reset STEADY_FROM s after the first call, so its
        sojourn percentiles are those of the phase, not of the limit's start-up (the job's own p99 in its
        report covers the whole run)."""
        reset = False
        while not self.stop.wait(0.1):
            self.last = stats = self.stack.simulator.stats()
            ab, rec = (stats[s]["in_service"] + stats[s]["queued"] for s in ("ab", "rec"))
            if self.first_call is None and ab + rec:
                self.first_call = time.monotonic()
            if self.first_call is not None:
                self.samples.append((time.monotonic() - self.first_call, ab, rec))
                if not reset and time.monotonic() - self.first_call >= STEADY_FROM:
                    self.stack.simulator.reset()
                    reset = True

    def wait_first_call(self) -> float:
        while self.first_call is None:
            time.sleep(0.01)
        return self.first_call

    def mean(self, start: float, end: float) -> float:
        values = [(ab + rec) / 2 for at, ab, rec in self.samples if start <= at < end]
        return round(statistics.fmean(values), 1) if values else float("nan")


def knobs() -> SimulatorKnobs:
    service = ServiceKnobs(latency_ms=BASE_MS, capacity=CAPACITY)
    return SimulatorKnobs(ab=service, rec=service, in_experiment_ratio=1.0)


def cpu_times() -> list[int]:
    """The host's cumulative CPU times (/proc/stat's first line: user nice system idle iowait irq softirq
    steal ...), in ticks."""
    return [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """The share of CPU time the hypervisor gave to other guests between the two readings (0 off a VM)."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return round(100 * spent[7] / max(sum(spent), 1), 1) if len(spent) > 7 else 0.0


def run_prewarm(
    stack: Stack, config: Path, report: Path, events: list[tuple[float, dict]], seconds: float
) -> tuple[dict, Poller]:
    """One prewarm run; `events` are (seconds after the first call, knob change); stopped with SIGTERM
    `seconds` after the first call."""
    stack.simulator.configure(**knobs().to_dict())
    stack.simulator.reset()
    poller = Poller(stack)
    quiet = [] if VERBOSE else ["-q"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "later_read",
            *quiet,
            "prewarm",
            "--force",
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
    poller.start()
    first = poller.wait_first_call()
    cpu_before = cpu_times()
    for at, change in sorted(events, key=lambda e: e[0]):
        time.sleep(max(0.0, at - (time.monotonic() - first)))
        stack.simulator.configure(**change)
    time.sleep(max(0.0, seconds - (time.monotonic() - first)))
    poller.steal = steal_percent(cpu_before, cpu_times())
    poller.at_stop = stack.simulator.stats()
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1].decode(errors="replace")
    poller.stop.set()
    poller.join()
    if process.returncode not in (0, 1, 4, 6):  # 4: the breaker stopped it (a starved host's timeouts)
        raise RuntimeError(f"prewarm exited {process.returncode}: {stderr[-2000:]}")
    poller.starved = re.findall(r"prewarm\.adaptive_starved service=(\w+)", stderr)
    if VERBOSE:
        print("\n".join(line for line in stderr.splitlines() if "prewarm.progress" in line))
        print(" ".join(f"{at:.1f}:{ab}/{rec}" for at, ab, rec in poller.samples[::5]))
    return json.loads(report.read_text()), poller


def follow(poller: Poller, cut_at: float, end: float, target: int) -> tuple[float | None, str]:
    """After the cut (until the job is stopped at `end`): seconds until the in-flight count at the service
    (the busier service) is first within 20 % of `target`, and from then on, how many of the whole
    seconds had a mean within 20 % of it."""
    samples = [(at, max(ab, rec)) for at, ab, rec in poller.samples if cut_at <= at < end]
    reached = next((at for at, value in samples if value <= target * 1.2), None)
    if reached is None:
        return None, "0/0"
    seconds: dict[int, list[int]] = {}
    for at, value in samples:
        if at >= reached and int(at - reached) < int(samples[-1][0] - reached):  # whole seconds only
            seconds.setdefault(int(at - reached), []).append(value)
    within = sum(1 for values in seconds.values() if statistics.fmean(values) <= target * 1.2)
    return round(reached - cut_at, 2), f"{within}/{len(seconds)}"


def line(mode: str, phase: str, report: dict, poller: Poller, extra: str) -> str:
    """Client latency is the job's round trips over the whole run (start-up and its own loop delays
    included); service latency is the simulator's sojourn (arrival to reply: queue wait + the 20 ms) from
    STEADY_FROM s on, i.e. the queueing the job causes once its limit has started up."""
    services, station = report["services"], poller.last
    latency = " ".join(
        f"{n}_p50={services[n]['p50_ms']}ms {n}_p99={services[n]['p99_ms']}ms "
        f"{n}_service_p50={station[n]['sojourn_p50_ms']}ms "
        f"{n}_service_p99={station[n]['sojourn_p99_ms']}ms "
        f"{n}_wait_p99={station[n]['wait_p99_ms']}ms {n}_late_p99={station[n]['late_p99_ms']}ms"
        for n in ("ab", "rec")
    )
    limits = " ".join(
        f"{n}_limit={services[n].get('adaptive_limit', '-')} "
        f"{n}_min_rtt={services[n].get('adaptive_min_rtt_ms', '-')}ms "
        f"{n}_stalls={services[n].get('adaptive_stalls', '-')}"
        for n in ("ab", "rec")
    )
    users = report["cached"] + report["not_in_experiment"] + report["no_recommendation"]
    rate = users / max(report["duration_seconds"], 1e-9)
    return (
        f"{mode:8} {phase:6} users/s={rate:,.0f} ({rate / CEILING:.2f} of {CEILING:,.0f}) "
        f"{steady_rates(poller.at_stop)} {latency} {limits} {extra} status={report['status']} "
        f"starved={','.join(poller.starved) or '-'} steal={poller.steal}%"
    )


def steady_rates(stats: dict) -> str:
    """Calls/s each service took from STEADY_FROM s after the first call to the job's stop, against the
    CEILING: the steady throughput, without the job's own start-up (connections, the first StarRocks
    page: ~0.4 s of an 8 s quick run) and drain that the whole run's users/s carries."""
    rates = []
    for name in ("ab", "rec"):
        endpoint = stats[name]
        span = (endpoint["last_at"] or 0) - (endpoint["first_at"] or 0)
        rate = endpoint["calls"] / span if span > 0 else 0.0
        rates.append(f"{name}_steady={rate:,.0f}/s ({rate / CEILING:.2f})")
    return " ".join(rates)


def start_hogs(count: int) -> list[subprocess.Popen]:
    """CPU-bound loops until killed (the noisy neighbours of `--hog`)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter phases (~2 minutes in all)")
    parser.add_argument("--modes", default="adaptive,fixed")
    parser.add_argument("--verbose", action="store_true", help="print the progress lines and in-flight samples")
    parser.add_argument("--hog", type=int, default=0, metavar="N", help="N CPU-bound processes beside the job")
    parser.add_argument("--phases", default="steady,cut,storm")
    args = parser.parse_args()
    if unknown := set(args.phases.split(",")) - set(PHASES):
        parser.error(f"--phases: unknown {','.join(sorted(unknown))}; choose from {','.join(PHASES)}")
    hogs = start_hogs(args.hog)
    try:
        run_all(args)
    finally:
        for process in hogs:
            process.kill()


def run_all(args: argparse.Namespace) -> None:
    users = int(CEILING * steady_seconds(args.quick) * 1.5)
    with tempfile.TemporaryDirectory(prefix="later-read-adaptive-") as tmp, Stack(knobs()) as stack:
        conn = connect(stack.mysql.host, stack.mysql.port, stack.mysql.user, stack.mysql.password, stack.mysql.database)
        seed_day(conn, DATE, users, stack.config()["tasks"]["ids"])
        conn.close()
        for mode in args.modes.split(","):
            config = stack.write_config(
                Path(tmp) / f"{mode}.toml",
                starrocks={"batch_size": 5000},
                prewarm={"concurrency": BOUND, "adaptive": mode == "adaptive", "progress_interval_seconds": 1},
            )
            for phase in args.phases.split(","):
                PHASES[phase](stack, config, Path(tmp) / "r.json", mode, quick=args.quick)


def steady_seconds(quick: bool) -> int:
    return 8 if quick else 30


def phase_steady(stack: Stack, config: Path, report_path: Path, mode: str, quick: bool) -> None:
    steady = steady_seconds(quick)
    report, poller = run_prewarm(stack, config, report_path, [], steady)
    print(
        line(mode, "steady", report, poller, f"in_flight_at_service={poller.mean(1, steady)} (capacity {CAPACITY})"),
        flush=True,
    )


def phase_cut(stack: Stack, config: Path, report_path: Path, mode: str, quick: bool) -> None:
    cut_at = 4 if quick else 15
    cut = [(cut_at, {"ab": {"capacity": CAPACITY // 2}, "rec": {"capacity": CAPACITY // 2}})]
    report, poller = run_prewarm(stack, config, report_path, cut, cut_at * 2)
    reached, held = follow(poller, cut_at, cut_at * 2, CAPACITY // 2)
    print(
        line(
            mode,
            "cut",
            report,
            poller,
            f"in_flight before={poller.mean(1, cut_at)} "
            f"after={poller.mean(cut_at + 2, cut_at * 2)} (capacity {CAPACITY // 2}) "
            f"within_20%_after={reached if reached is not None else 'never'}s "
            f"seconds_within_20%_since={held}",
        ),
        flush=True,
    )


def phase_storm(stack: Stack, config: Path, report_path: Path, mode: str, quick: bool) -> None:
    storm_at, storm_seconds = (4, 3) if quick else (15, 5)
    storm = [
        (storm_at, {"ab": {"error_429_rate": STORM_RATE}, "rec": {"error_429_rate": STORM_RATE}}),
        (storm_at + storm_seconds, {"ab": {"error_429_rate": 0}, "rec": {"error_429_rate": 0}}),
    ]
    end = storm_at + storm_seconds * 2
    report, poller = run_prewarm(stack, config, report_path, storm, end)
    backoffs = ",".join(str(report["services"][n].get("adaptive_backoffs", "-")) for n in ("ab", "rec"))
    print(
        line(
            mode,
            "storm",
            report,
            poller,
            f"in_flight before={poller.mean(1, storm_at)} "
            f"during={poller.mean(storm_at + 1, storm_at + storm_seconds)} "
            f"after={poller.mean(storm_at + storm_seconds + 1, end)} backoffs={backoffs} "
            f"failed={report['failed']}",
        ),
        flush=True,
    )


PHASES = {"steady": phase_steady, "cut": phase_cut, "storm": phase_storm}

if __name__ == "__main__":
    main()
