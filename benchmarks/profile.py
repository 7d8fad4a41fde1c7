"""Where a benchmark scenario's job spends its time: py-spy samples of the job process, summarised.

    python benchmarks/profile.py --scenario S1 --users 30000
    python benchmarks/profile.py --scenario S2 --out /tmp/push-stacks.txt

Brings up the stack and seeds exactly as `run.py` does, then runs the job under
`py-spy record --nonblocking` (py-spy from PyPI; the job is never paused, but its figures are not
benchmark figures: use run.py for those). Prints the functions holding the most samples, inclusive and
self, and writes the collapsed stacks (flamegraph.pl / speedscope input) to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench


def frame_name(frame: str) -> str:
    """'func (path/to/module.py:12)' -> 'func module.py'."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.split(':')[0].rsplit('/', 1)[-1]}".strip()


def summarise(stacks: Path, top: int) -> None:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        total += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
        own[frames[-1]] += int(count)
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}")
        for name, count in counter.most_common(top):
            print(f"{count / max(total, 1):6.1%}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="S1", choices=[s.name for s in bench.FULL])
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL (py-spy --gil): what runs, not threads waiting for the GIL",
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "later-read-stacks.txt")
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy not found: pip install py-spy")
    s = dataclasses.replace(next(x for x in bench.FULL if x.name == args.scenario), users=args.users)
    with tempfile.TemporaryDirectory(prefix="later-read-profile-") as tmp, bench.Stack(bench.knobs_for(s)) as stack:
        config = bench.scenario_config(stack, s, Path(tmp) / "config.toml")
        bench.seed(stack, s)
        common = ["--date", bench.DATE, "--config", str(config)]
        if s.job == "push":
            bench.fill_values(stack, s)
        bench.compile_package()
        job = [s.job, *common] + (["--hour", str(bench.PUSH_HOUR), "--now", bench.PUSH_NOW] if s.job == "push" else [])
        subprocess.run(
            [
                "py-spy",
                "record",
                "--nonblocking",
                "-r",
                str(args.rate),
                "-f",
                "raw",
                *(["--gil"] if args.gil else []),
                "-o",
                str(args.out),
                "--",
                sys.executable,
                "-m",
                "later_read",
                "-q",
                *job,
            ],
            cwd=bench.ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    summarise(args.out, args.top)
    print(f"stacks: {args.out}")


if __name__ == "__main__":
    main()
