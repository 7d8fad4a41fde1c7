"""Fault suite: the jobs against real servers that die, restart, fail and hang, at random points.

    python benchmarks/faults.py --short                    # each fault once (what CI runs via pytest)
    python benchmarks/faults.py --runs 50 --seed 7         # the full mode: a table per fault
    python benchmarks/faults.py --fault push_kill9_mid_produce --run-seed 123   # replay one run

Each run prints its fault, its seed and, when an invariant broke, the command that replays it. The
faults, the invariants and how a run goes: sandbox/later_read_sandbox/faults/ (catalogue.py, checks.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from later_read_sandbox.faults.catalogue import FAULTS  # noqa: E402
from later_read_sandbox.faults.runner import FULL_USERS, SHORT_USERS, main  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=len(FAULTS), help="number of runs (faults in turns)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the plan (which fault, which seed)")
    parser.add_argument("--short", action="store_true", help="each fault once, small days")
    parser.add_argument(
        "--users", type=int, default=None, help=f"users per day (default {FULL_USERS}, --short {SHORT_USERS})"
    )
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS), help="only these faults")
    parser.add_argument("--run-seed", type=int, help="replay one run: with --fault NAME")
    parser.add_argument("--workdir", type=Path, help="where job logs go (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.run_seed is not None and not args.fault:
        parser.error("--run-seed replays one run: give its --fault too")
    if args.short:
        args.runs = len(args.fault or FAULTS)
    args.users = args.users or (SHORT_USERS if args.short else FULL_USERS)
    return args


if __name__ == "__main__":
    options = parse()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="later-read-faults-"))
    sys.exit(main(options.runs, options.seed, options.users, workdir, options.fault, options.run_seed))
