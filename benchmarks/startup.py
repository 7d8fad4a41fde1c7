"""A job's start-up, step by step, up to its first service call.

    python benchmarks/startup.py                         # the prewarm, 5 runs
    python benchmarks/startup.py --job push --runs 5
    python benchmarks/startup.py --code /path/to/other/checkout   # another tree's start-up, same servers
    python benchmarks/startup.py --install               # as deployed: from a virtualenv of `pip install .`

Brings up and seeds the servers as `run.py` does (S1's shape for the prewarm, S2's for the push, at
`--users`), then starts the job `--runs` times, each on a fresh Redis (the push: Redis filled as run.py
fills it, its sent markers and records deleted), in a child process that wraps a few of the job's own
functions to print when each step ends, in seconds since the parent spawned it: interpreter up, the CLI
imported, the job's modules imported, Redis pinged, the lock taken, the first page of users read, the
first service call sent (then the child exits: the rest of the run is not start-up), and, when it came
before, the day's or hour's count. Prints each run and the median of each step. The wrapping costs a few
microseconds per step; the times are the job's own.

`--floor` runs, after each start-up of the prewarm, its floor on the same servers: a child that does only
what must come before the first call, one step after the other, through the same libraries (redis-py,
pymysql through `clients/mysql_conn.py`, uvloop, the project's HTTP pool): import them, ping Redis, take the
lock (SET NX PX), read the first page of hour 0's users (500 rows), read their values (MGET), send the first
A/B call. No CLI, no settings beyond the TOML, no lifecycle. Its steps' medians are printed beside the job's.

`--install` first builds a virtualenv holding `pip install <code>` (the runtime dependencies alone, from
PyPI) and runs the job from it, outside the checkout: the interpreter then starts without this machine's
site hooks (an editable install's finder, the sandbox's certificate hook) and imports no test-only
package (pymysql imports `cryptography` when it is installed, as the TLS tests need it here).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench

# What both children (CHILD, FLOOR_CHILD) run first: `mark` prints a step's time since the parent spawned it.
MARK = r"""
import os, sys, time
T0 = float(os.environ["LATER_READ_SPAWNED"])
def mark(what):
    print(f"STEP {time.time() - T0:.4f} {what}", file=sys.stderr, flush=True)
mark("interpreter up")
"""

CHILD = r"""
import later_read.cli as cli
mark("cli imported")
import later_read.connections
from later_read.clients.starrocks import StarRocks
from later_read.clients.wire import HttpPool
from later_read.store import Store
from later_read.store.lock import JobLock
import importlib
importlib.import_module(f"later_read.jobs.{sys.argv[2]}.job")  # the job's own modules, as the CLI imports them
mark("job modules imported")

def after(cls, name, label):
    original = getattr(cls, name)
    async def wrapped(*args, **kwargs):
        result = await original(*args, **kwargs)
        mark(label)
        return result
    setattr(cls, name, wrapped)

after(Store, "ping", "redis pinged")
after(JobLock, "acquire", "lock taken")
after(StarRocks, "count", "count read")
reader = "pages" if hasattr(StarRocks, "pages") else "users"  # the jobs read with pages() since d5124b6
original_read = getattr(StarRocks, reader)
async def read(self, query):
    first = True
    async for page in original_read(self, query):
        if first:
            mark("first page read")
            first = False
        yield page
setattr(StarRocks, reader, read)
original_post = HttpPool.post
async def post(self, *args, **kwargs):
    mark("first service call sent")
    os._exit(0)
HttpPool.post = post
sys.argv = ["later-read"] + sys.argv[1:]
cli.main()
"""
STEPS = (
    "interpreter up",
    "cli imported",
    "job modules imported",
    "redis pinged",
    "lock taken",
    "first page read",
    "first service call sent",
    "count read",
)

FLOOR_CHILD = r"""
import asyncio, tomllib, orjson, uvloop
import redis.asyncio as aioredis
from later_read.clients import mysql_conn
from later_read.clients.wire import HttpPool, Origin
mark("libraries imported")
config = tomllib.loads(open(sys.argv[1]).read())
date, sr = sys.argv[2], config["starrocks"]
task = config["tasks"]["ids"][0].replace("{date}", date)
async def main():
    client = aioredis.Redis.from_url(config["redis"]["url"])
    await client.ping()
    mark("redis pinged")
    await client.set(f"later_read:lock:floor:{{{date}}}", "floor", nx=True, px=60_000)
    mark("lock taken")
    conn = mysql_conn.Connection(host=sr["host"], port=sr["port"], user=sr["user"], password=sr["password"],
                                 database=sr["database"], charset="utf8mb4", autocommit=True, ssl_disabled=True)
    with conn.cursor() as cur:
        cur.execute(f"SELECT source_uid, MIN(project) FROM `{sr['table']}` WHERE task_id = %s AND push_hour = 0 "
                    "GROUP BY source_uid ORDER BY source_uid LIMIT 500", [task])
        page = cur.fetchall()
    mark("first page read")
    await client.mget([config["redis"]["key_prefix"] + uid for uid, _ in page])
    pool = HttpPool(50, 2.0)
    origin = Origin.parse(config["services"]["ab_url"] + "/v1/ab/assign")
    uid, project = page[0]
    mark("first service call sent")
    await pool.post(origin, orjson.dumps({"uid": uid, "project": project, "layer": "later_read", "default": 0}))
    os._exit(0)
uvloop.run(main())
"""
FLOOR_STEPS = (
    "interpreter up",
    "libraries imported",
    "redis pinged",
    "lock taken",
    "first page read",
    "first service call sent",
)


def one_run(
    code: Path, args: list[str], python: str | None = None, cwd: Path | None = None, child: str = CHILD
) -> dict[str, float]:
    """One start-up of `child` (the job's, or FLOOR_CHILD); `python` a virtualenv's interpreter holding the
    installed package (run from `cwd`, with no PYTHONPATH), else this interpreter on the checkout `code`."""
    env = {**os.environ, "LATER_READ_SPAWNED": repr(time.time())}
    if python is None:
        env["PYTHONPATH"] = str(code)
    else:
        env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [python or sys.executable, "-c", MARK + child, *args], cwd=cwd or code, env=env, capture_output=True, text=True
    )
    steps = {}
    for line in done.stderr.splitlines():
        if line.startswith("STEP "):
            _, seconds, what = line.split(" ", 2)
            steps.setdefault(what, float(seconds))
    if "first service call sent" not in steps:
        raise RuntimeError(f"no service call (exit {done.returncode}): {done.stderr[-2000:]}")
    return steps


def install(code: Path, tmp: Path) -> str:
    """A fresh virtualenv under `tmp` holding `pip install code` (runtime dependencies only): its python."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(code)], check=True)
    return str(venv / "bin" / "python")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", choices=("prewarm", "push"), default="prewarm")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--code", type=Path, default=bench.ROOT, help="the checkout whose jobs are started")
    parser.add_argument(
        "--install", action="store_true", help="run the job from a virtualenv holding `pip install <code>`"
    )
    parser.add_argument("--floor", action="store_true", help="the prewarm's floor after each start-up (see above)")
    args = parser.parse_args()
    if args.floor and args.job != "prewarm":
        parser.error("--floor is the prewarm's: drop --job push")
    s = bench.Scenario("S2" if args.job == "push" else "S1", args.job, args.users)
    with tempfile.TemporaryDirectory(prefix="later-read-startup-") as tmp, bench.Stack(bench.knobs_for(s)) as stack:
        config = bench.scenario_config(stack, s, Path(tmp) / "config.toml")
        bench.seed(stack, s)
        import compileall

        compileall.compile_dir(args.code / "later_read", quiet=1)
        python = install(args.code, Path(tmp)) if args.install else None
        job = ["-q", s.job, "--date", bench.DATE, "--config", str(config)]
        if s.job == "push":
            job += ["--hour", str(bench.PUSH_HOUR), "--now", bench.PUSH_NOW, "--wait", "0"]
        runs, floors = [], []
        for i in range(args.runs):
            stack.redis.client().flushdb()
            if s.job == "push":
                bench.fill_values(stack, s)
            runs.append(one_run(args.code, job, python, Path(tmp) if python else None))
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[-1].items()), flush=True)
            if args.floor:
                stack.redis.client().flushdb()
                floors.append(one_run(args.code, [str(config), bench.DATE], python, None, FLOOR_CHILD))
                print(f"floor {i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in floors[-1].items()), flush=True)
    how = "installed in a virtualenv" if args.install else "on PYTHONPATH"
    print(f"median of {args.runs} ({args.job}, {args.users:,} users, code {args.code}, {how}):")
    print_medians(runs, STEPS)
    if floors:
        print(f"the floor, median of {len(floors)}:")
        print_medians(floors, FLOOR_STEPS)


def print_medians(runs: list[dict[str, float]], steps: tuple[str, ...]) -> None:
    for step in steps:
        values = [r[step] for r in runs if step in r]
        if values:
            print(
                f"  {statistics.median(values):7.3f} s  {step}"
                + ("" if len(values) == len(runs) else f" (in {len(values)} of {len(runs)} runs)")
            )


if __name__ == "__main__":
    main()
