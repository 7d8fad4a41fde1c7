"""The push's floor: what one hour of S2 costs a process that does only the unavoidable work, beside the push.

    python benchmarks/floor.py --repeat 3                 # S2 (100k users), the push and the floor in turn
    python benchmarks/floor.py --users 20000 --repeat 5

The floor reads the same users, values and sent markers, fetches the same 2,000 cards, produces the same
messages and writes the same markers through the same libraries and the project's own wire-level readers
(`clients/mysql_conn.py`'s rows, `clients/wire.py`'s HTTP pool, redis-py with hiredis parsing and packing
as `store/client.py` sets it up, msgspec, confluent-kafka), with the push's own `PushMessage`, `msg_id`
and value decoder, in one asyncio task with nothing else: no lock or fence, no start record or recovery, no
earlier-hour lookup, no window or signal checks, no counts, progress, ledger, summary or alert lines, no
retries, no bounds on what comes back, no parking of users behind a card in flight (the loop waits for the
batch's cards), and none of the product's other modules imported. What it skips is what the push's
guarantees cost; what it does is the least a Python push with these libraries can spend per user. Its
messages differ from the push's only in `created_at` (one per batch).

Brings up and seeds S2's servers as `run.py` does, then runs the push (`python -m later_read push`, as
run.py) and the floor (`python -c FLOOR`, the same Redis filled again before each run) in turn, `--repeat`
times each, and prints each run and the medians: wall seconds and CPU microseconds per user (from wait4() on
the process alone, as run.py), and the push's CPU over the floor's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench

FLOOR = r"""
import asyncio, json, sys, tomllib
import confluent_kafka, hiredis, msgspec, orjson, redis.asyncio as redis, uvloop
from later_read.clients import mysql_conn
from later_read.clients.wire import HttpPool, Origin
from later_read.core.message import PushMessage, msg_id, msg_id_of
from later_read.core.users import TaskUser, merge_pages  # the push's merge of the task ids' pages
from later_read.core.value import _Stored  # the push's own decoder of a stored value, without its checks

config = tomllib.loads(open(sys.argv[1]).read())
DATE, HOUR, NOW = sys.argv[2], int(sys.argv[3]), sys.argv[4]
sr, rc, kc, sc = config["starrocks"], config["redis"], config["kafka"], config["services"]
TASKS = sorted(t.replace("{date}", DATE) for t in config["tasks"]["ids"])
BATCH = 5000
SENT = f"later_read:sent:{DATE}:"  # keys.py's sent markers (the store package costs ~50 ms to import)
SET_EX_MANY = "for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1]) end"

decode = msgspec.json.Decoder(_Stored).decode
new_user = tuple.__new__  # a TaskUser made in C, as the push makes it

def users(conn):
    def task_pages(task):
        after = None
        while True:
            where, params = "task_id = %s AND push_hour = %s", [task, HOUR]
            if after is not None:
                where, params = where + " AND source_uid > %s", params + [after]
            with conn.cursor() as cur:
                cur.execute(f"SELECT source_uid, MIN(project) FROM `{sr['table']}` WHERE {where} "
                            "GROUP BY source_uid ORDER BY source_uid LIMIT %s", params + [BATCH])
                rows = cur.fetchall()
            yield [new_user(TaskUser, (uid, project, task)) for uid, project in rows]
            if len(rows) < BATCH:
                return
            after = rows[-1][0]
    return merge_pages([task_pages(t) for t in TASKS])

async def main():
    conn = mysql_conn.Connection(host=sr["host"], port=sr["port"], user=sr["user"], password=sr["password"],
                                 database=sr["database"], charset="utf8mb4", autocommit=True,
                                 ssl_disabled=True)
    class Packed(redis.Connection):  # commands packed by hiredis, as store/client.py has the push's
        def pack_command(self, *args):
            return [hiredis.pack_command(args)]
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(rc["url"], connection_class=Packed))
    producer = confluent_kafka.Producer({"bootstrap.servers": kc["bootstrap_servers"], "enable.idempotence": True,
        "acks": "all", "compression.type": "lz4", "linger.ms": 20, "batch.num.messages": 10000,
        "queue.buffering.max.messages": 200000, "enable.sparse.connections": False})
    pool, origin = HttpPool(50, 2.0), Origin.parse(sc["material_url"] + "/v1/material/get")
    cards, confirmed, limit = {}, [], asyncio.Semaphore(50)
    def report(error, message):
        if error is None:
            confirmed.append((message.key(), msg_id_of(message.value())))
    async def fetch(key):
        async with limit:
            status, body = await pool.post(origin, orjson.dumps(
                {"uid": "floor", "rec_id": key[0], "rec_type": key[1], "material_id": key[2]}))
        data = orjson.loads(body) if status == 200 else None
        cards[key] = None if data is None else (data["title"], data["content"], data["cover_url"], data["deeplink"])
    async def mark():
        batch = confirmed[:]
        del confirmed[:]
        if batch:
            keys = [SENT.encode() + uid for uid, _ in batch]
            await client.eval(SET_EX_MANY, len(keys), *keys, 7 * 86400, *(m for _, m in batch))
    reader, expires, sent = users(conn), NOW[:11] + f"{HOUR:02d}:59:59.999+08:00", 0
    while True:
        page = [next(reader, None) for _ in range(BATCH)]
        page = [u for u in page if u is not None]
        if not page:
            break
        pipe = client.pipeline(transaction=False)
        pipe.mget([rc["key_prefix"] + u[0] for u in page])
        pipe.mget([SENT + u[0] for u in page])
        raws, markers = await pipe.execute()
        todo = []
        for user, raw, marker in zip(page, raws, markers):
            if raw is None or marker is not None:
                continue
            value = decode(raw)
            if value.outcome == "rec" and value.date == DATE:
                todo.append((user, value))
        missing = {(v.rec_id, v.rec_type, v.material_id) for _, v in todo} - cards.keys()
        await asyncio.gather(*(fetch(key) for key in missing))
        created = NOW[:19] + ".000" + NOW[19:]
        for (uid, project, task), v in todo:
            card = cards[(v.rec_id, v.rec_type, v.material_id)]
            if card is None:
                continue
            message = PushMessage(msg_id(DATE, uid), uid, project, task, DATE, HOUR, v.rec_id, v.rec_type,
                                  v.material_id, v.trace_id, *card, created, expires).encode()
            while True:
                try:
                    producer.produce(kc["topic"], message, uid, -1, report)  # positional, as the push's
                    break
                except BufferError:
                    producer.poll(0.01)
            sent += 1
        producer.poll(0)
        await mark()
    while len(producer):
        producer.poll(0.005)
        await mark()
    await mark()
    await pool.close()
    await client.aclose()
    conn.close()
    print(json.dumps({"users_sent": sent}), file=sys.stderr)

uvloop.run(main())
"""


def run_floor(config: Path) -> dict:
    """One floor run, measured as run.py measures a job (`run_process`), with the users it sent (its last line)."""
    argv = [sys.executable, "-c", FLOOR, str(config), bench.DATE, str(bench.PUSH_HOUR), bench.PUSH_NOW]
    figures = bench.run_process(argv, bench.ROOT, (0,), "the floor")
    figures["sent"] = json.loads(figures["last_line"])["users_sent"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000, help="users of the hour (S2: 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, in turn")
    args = parser.parse_args()
    s = bench.Scenario("S2", "push", args.users)
    push_runs: list[dict] = []
    floor_runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="later-read-floor-") as tmp, bench.Stack(bench.knobs_for(s)) as stack:
        work = Path(tmp)
        config = bench.scenario_config(stack, s, work / "config.toml")
        bench.seed(stack, s)
        for i in range(args.repeat):
            push = bench.measure(stack, s, config, work, i)
            push_runs.append(push)
            stack.redis.client().flushdb()
            bench.fill_values(stack, s)
            stack.simulator.reset()
            floor = run_floor(config)
            floor["cpu_us_per_user"] = round(floor["cpu_seconds"] / push["users"] * 1e6, 1)
            calls = stack.simulator.stats().get("material", {}).get("calls")
            floor_runs.append(floor)
            print(
                f"run {i + 1}: push {push['wall_seconds']:.2f} s, {push['cpu_us_per_user']:.1f} us/user "
                f"(sent {push['report'].get('sent')}); floor {floor['wall_seconds']:.2f} s, "
                f"{floor['cpu_us_per_user']:.1f} us/user (sent {floor['sent']}, {calls} material calls)",
                flush=True,
            )
    push_us = statistics.median(r["cpu_us_per_user"] for r in push_runs)
    floor_us = statistics.median(r["cpu_us_per_user"] for r in floor_runs)
    push_wall = statistics.median(r["wall_seconds"] for r in push_runs)
    floor_wall = statistics.median(r["wall_seconds"] for r in floor_runs)
    print(
        f"median of {args.repeat} ({args.users:,} users): push {push_wall:.2f} s, "
        f"{push_us:.1f} us/user; floor {floor_wall:.2f} s, "
        f"{floor_us:.1f} us/user; push / floor CPU {push_us / floor_us:.2f}"
    )


if __name__ == "__main__":
    main()
