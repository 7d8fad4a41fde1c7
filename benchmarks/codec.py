"""The push's per-user codec work alone: decode the Redis value, build the message, encode it.

    python benchmarks/codec.py                          # this tree, and the msgspec candidate
    python benchmarks/codec.py --code /path/to/checkout # another tree's codec (e.g. before a change)

For N users (a simulator-shaped value, one of 2,000 cards, a wall clock): the product's path (`decode`,
then `HourMessages.encode`, or `build_message` + `encode` in a tree that has no HourMessages) and, for
comparison, the same work with msgspec (`pip install msgspec`): the value decoded into a msgspec Struct
(types checked by msgspec, the bounds and the product's error lines not), the message a Struct encoded by
msgspec. Prints the CPU microseconds per user (time.process_time) of each of `--repeat` runs and their
median. The msgspec path must produce the product's bytes: checked before it is timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def product_path(users: list, raws: list[bytes], cards: list, clock, date: str, hour: int, expires: str):
    """A function running the tree's own codec over every user."""
    from later_read.core import message
    from later_read.core.value import decode
    if hasattr(message, "HourMessages"):
        messages = message.HourMessages(date, hour, clock, expires)

        def run() -> None:
            for user, raw, card in zip(users, raws, cards):
                messages.encode(user, decode(raw), card)
    else:
        def run() -> None:
            for user, raw, card in zip(users, raws, cards):
                value = decode(raw)
                message.encode(message.build_message(user, value, card, date=date, hour=hour, clock=clock,
                                                     expires=expires))
    return run


def msgspec_path(users: list, raws: list[bytes], cards: list, clock, date: str, hour: int, expires: str):
    """The same work with msgspec Structs (value and message) and msgspec's JSON codec."""
    import msgspec

    from later_read.core.message import msg_id

    class Value(msgspec.Struct, frozen=True):
        outcome: str = "rec"
        date: str | None = None
        trace_id: str = ""
        rec_id: str = ""
        rec_type: str = ""
        material_id: str = ""

    class Message(msgspec.Struct):
        msg_id: str
        source_uid: str
        project: str
        task_id: str
        push_date: str
        push_hour: int
        rec_id: str
        rec_type: str
        material_id: str
        trace_id: str
        title: str
        content: str
        cover_url: str
        deeplink: str
        created_at: str
        expires_at: str

    decoder, encoder = msgspec.json.Decoder(Value), msgspec.json.Encoder()

    def one(user, raw: bytes, card) -> bytes:
        value = decoder.decode(raw)
        return encoder.encode(Message(
            msg_id(date, user.uid), user.uid, user.project, user.task_id, date, hour, value.rec_id,
            value.rec_type, value.material_id, value.trace_id, card.title, card.content, card.cover_url,
            card.deeplink, clock.now().isoformat(timespec="milliseconds"), expires))

    def run() -> None:
        for user, raw, card in zip(users, raws, cards):
            one(user, raw, card)
    return run, one


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
    import datetime as dt
    from zoneinfo import ZoneInfo

    import orjson

    from later_read.clients.material import Material
    from later_read.core.clock import Clock
    from later_read.core.users import TaskUser

    date, hour, expires = "20261123", 21, "2026-11-23T21:45:00+08:00"
    raws = [b'{"outcome":"rec","date":"20261123","trace_id":"tr-%016x","rec_id":"rec-%016x",'
            b'"rec_type":"audiobook","material_id":"m-%d"}' % (i * 7919, i % 2000, i % 2000) for i in range(args.users)]
    users = [TaskUser(str(100_000_000 + i), "novel", "04-026-20261123-r0gdua") for i in range(args.users)]
    books = [Material(f"m-{i}", f"Book {i}", f"Readers who finished your last book loved Book {i}. Start "
                      "chapter one tonight.", f"https://img.example.com/covers/m-{i}.jpg", f"reader://book/m-{i}")
             for i in range(2000)]
    cards = [books[i % 2000] for i in range(args.users)]
    zone = ZoneInfo("Asia/Shanghai")
    print(f"{args.users:,} users, 2,000 cards, code {args.code}")
    product = timed(product_path(users, raws, cards, Clock(zone), date, hour, expires), args.users, args.repeat)
    print(f"product  {statistics.median(product):.2f} us/user (runs {' / '.join(f'{r:.2f}' for r in product)})")
    try:
        run, one = msgspec_path(users, raws, cards, Clock(zone), date, hour, expires)
    except ImportError:
        print("msgspec not installed: pip install msgspec")
        return
    fixed = Clock(zone, dt.datetime(2026, 11, 23, 21, 1, tzinfo=zone), monotonic=lambda: 0.0)
    from later_read.core.message import build_message
    from later_read.core.value import decode
    _, check = msgspec_path(users, raws, cards, fixed, date, hour, expires)
    expected = orjson.dumps(build_message(users[0], decode(raws[0]), cards[0], date=date, hour=hour, clock=fixed,
                                          expires=expires))
    assert check(users[0], raws[0], cards[0]) == expected, "msgspec's bytes differ from the product's"
    candidate = timed(run, args.users, args.repeat)
    print(f"msgspec  {statistics.median(candidate):.2f} us/user (runs {' / '.join(f'{r:.2f}' for r in candidate)})")


if __name__ == "__main__":
    main()
