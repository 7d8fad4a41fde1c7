"""Many fault runs and their table: per fault, runs, lost, duplicate msg_ids, unexpected messages, exit
codes, time to stop. `benchmarks/faults.py` is its command line; tests/test_faults.py runs each fault once.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from later_read_sandbox.faults.catalogue import FAULTS, Outcome, run_fault
from later_read_sandbox.faults.lab import Lab

SHORT_USERS = 1500  # each fault once at this size: a few minutes for the whole catalogue
FULL_USERS = 2500


def plan(runs: int, seed: int, only: Iterable[str] | None = None) -> list[tuple[str, int]]:
    """(fault, run seed) pairs: the faults in turns (each turn shuffled), each run its own seed."""
    rng = random.Random(seed)
    names = sorted(only or FAULTS)
    order: list[str] = []
    while len(order) < runs:
        turn = names[:]
        rng.shuffle(turn)
        order += turn
    return [(name, rng.randrange(2**31)) for name in order[:runs]]


def replay_command(outcome: Outcome, users: int) -> str:
    return f"python benchmarks/faults.py --fault {outcome.fault} --run-seed {outcome.seed} --users {users}"


def run_plan(lab: Lab, runs: list[tuple[str, int]], users: int, echo: Callable[[str], None] = print) -> list[Outcome]:
    outcomes = []
    for i, (name, seed) in enumerate(runs, 1):
        began = time.monotonic()
        outcome = run_fault(lab, FAULTS[name], seed, users)
        outcomes.append(outcome)
        v = outcome.verdict
        echo(
            f"[{i}/{len(runs)}] fault={name} seed={seed} {'ok' if outcome.ok else 'FAILED'} "
            f"codes={outcome.codes} lost={v.lost} duplicates={v.duplicates} unexpected={v.unexpected} "
            f"after_expiry={v.after_expiry} stop_s={outcome.stop_seconds} exit5_seen={outcome.exit5_seen} "
            f"gap={outcome.gap} took_s={time.monotonic() - began:.1f}"
            + (f"\n    drawn: {outcome.detail}" if outcome.detail else "")
            + ("".join(f"\n    problem: {p}" for p in v.problems))
            + ("" if outcome.ok else f"\n    replay: {replay_command(outcome, users)}")
        )
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    """One row per fault (markdown): the target is 0 / 0 / 0 and no other problem on every row."""
    rows = defaultdict(list)
    for outcome in outcomes:
        rows[outcome.fault].append(outcome)
    lines = [
        (
            "| fault | runs | lost | duplicate msg_ids | unexpected | sent after expiry | exit codes (faulted "
            "run, reruns) | time to stop s (median / max) | unmarked at the fault (runs with any, users) "
            "| other problems |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(rows):
        group = rows[name]
        codes = Counter(code for o in group for code in o.codes)
        stops = [o.stop_seconds for o in group if o.stop_seconds is not None]
        stop = f"{statistics.median(stops):.1f} / {max(stops):.1f}" if stops else "-"
        others = sum(len(o.verdict.problems) + o.exit5_seen for o in group)
        lines.append(
            f"| {name} | {len(group)} | {sum(o.verdict.lost for o in group)} "
            f"| {sum(o.verdict.duplicates for o in group)} | {sum(o.verdict.unexpected for o in group)} "
            f"| {sum(o.verdict.after_expiry for o in group)} "
            f"| {', '.join(f'{c}x{n}' for c, n in sorted(codes.items())) or '-'} | {stop} "
            f"| {sum(1 for o in group if o.gap)}, {sum(o.gap for o in group)} | {others} |"
        )
    return "\n".join(lines)


def main(
    runs: int, seed: int, users: int, workdir: Path, only: list[str] | None = None, run_seed: int | None = None
) -> int:
    """The full mode (or one replayed run); prints each run and the table; 0 when every run is clean."""
    runs_plan = [(only[0], run_seed)] if run_seed is not None and only else plan(runs, seed, only)
    print(f"fault runs: {len(runs_plan)}, seed={seed}, users={users}, logs under {workdir}", flush=True)
    with Lab(workdir) as lab:
        outcomes = run_plan(lab, runs_plan, users, lambda line: print(line, flush=True))
    print(table(outcomes))
    return 0 if all(o.ok for o in outcomes) else 1
