"""The push's per-user codec work alone: decode the Redis value, build the message, encode it.

    python benchmarks/codec.py                          # this tree
    python benchmarks/codec.py --code /path/to/checkout # another tree's codec (e.g. before a change)

For N users (a simulator-shaped value, one of 2,000 cards, the wall clock), in one process with no
servers: the tree's decode + build + encode, its decode alone, and msgspec's decoding of the same value
into a Struct (the candidate for CachedValue). Prints the CPU microseconds per user (time.process_time)
of each of `--repeat` runs and their median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def product_path(users: list, raws: list[bytes], cards: list, clock, date: str, hour: int, expires: str):
    """The tree's own codec over every user: `decode`, then `PushMessage.build(...).encode()` (or, in a
    tree from before PushMessage, `build_message` + `encode`)."""
    from later_read.core import message
    from later_read.core.value import decode

    if hasattr(message, "PushMessage"):
        build = message.PushMessage.build

        def run() -> None:
            for user, raw, card in zip(users, raws, cards, strict=True):
                build(user, decode(raw), card, date=date, hour=hour, clock=clock, expires=expires).encode()
    else:

        def run() -> None:
            for user, raw, card in zip(users, raws, cards, strict=True):
                message.encode(
                    message.build_message(user, decode(raw), card, date=date, hour=hour, clock=clock, expires=expires)
                )

    return run


def decode_paths(raws: list[bytes]):
    """The value's decoding alone: the tree's `decode`, and msgspec's into a Struct (the candidate for
    CachedValue: its types checked by msgspec; the bounds and the product's error lines not)."""
    import msgspec

    from later_read.core.value import decode

    class Value(msgspec.Struct, frozen=True):
        outcome: str = "rec"
        date: str | None = None
        trace_id: str = ""
        rec_id: str = ""
        rec_type: str = ""
        material_id: str = ""

    decoder = msgspec.json.Decoder(Value)

    def product() -> None:
        for raw in raws:
            decode(raw)

    def candidate() -> None:
        for raw in raws:
            decoder.decode(raw)

    return product, candidate


def timed(run, count: int, repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        started = time.process_time()
        run()
        runs.append((time.process_time() - started) / count * 1e6)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose later_read is measured")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code))
    from zoneinfo import ZoneInfo

    from later_read.clients.material import Material
    from later_read.core.clock import Clock
    from later_read.core.users import TaskUser

    date, hour, expires = "20261123", 21, "2026-11-23T21:45:00+08:00"
    raws = [
        b'{"outcome":"rec","date":"20261123","trace_id":"tr-%016x","rec_id":"rec-%016x",'
        b'"rec_type":"audiobook","material_id":"m-%d"}' % (i * 7919, i % 2000, i % 2000)
        for i in range(args.users)
    ]
    users = [TaskUser(str(100_000_000 + i), "novel", "04-026-20261123-r0gdua") for i in range(args.users)]
    books = [
        Material(
            f"m-{i}",
            f"Book {i}",
            f"Readers who finished your last book loved Book {i}. Start chapter one tonight.",
            f"https://img.example.com/covers/m-{i}.jpg",
            f"reader://book/m-{i}",
        )
        for i in range(2000)
    ]
    cards = [books[i % 2000] for i in range(args.users)]
    zone = ZoneInfo("Asia/Shanghai")
    print(f"{args.users:,} users, 2,000 cards, code {args.code}")
    figures = {"decode, build, encode": product_path(users, raws, cards, Clock(zone), date, hour, expires)}
    figures["decode alone"], figures["decode alone, msgspec Struct"] = decode_paths(raws)
    for label, run in figures.items():
        runs = timed(run, args.users, args.repeat)
        print(f"{label:30} {statistics.median(runs):.2f} us/user (runs {' / '.join(f'{r:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()
