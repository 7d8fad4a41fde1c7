"""Hostile replies of the simulator: what a misbehaving service sends, to test the job's bounds.

A stable share of the requests (`hostile_ratio` of the uids; of the material ids for material) gets,
instead of its normal 200 reply, the same reply changed by the service's knobs:

    hostile_field, hostile_field_bytes, hostile_text   that field's value replaced: `hostile_text` as it
                                                       is, or repeated ("x" when empty) to N characters
    hostile_reply_bytes                                the reply padded to N bytes with a "padding" field
    trickle_bytes_per_second                           the reply written at that rate, in 50 ms steps

Large values are built once per knob setting and written as separate pieces (the transport keeps a
reference, no copy per reply), so 50 concurrent replies of 15 MiB cost the simulator ~15 MiB, not 750.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from later_read_sandbox.simulator.knobs import ServiceKnobs

PLACEHOLDER = "\x00hostile\x00"
TRICKLE_STEP_SECONDS = 0.05


class HostileReplies:
    """Builds hostile bodies as tuples of pieces; caches the large pieces by their knobs."""

    def __init__(self) -> None:
        self._fields: dict[tuple[str, int], bytes] = {}
        self._padding: dict[int, bytes] = {}

    def body(self, knobs: ServiceKnobs, payload: bytes) -> tuple[bytes, ...]:
        """`payload` (a JSON object) changed by the knobs, as pieces to write one after the other."""
        data: dict[str, Any] = orjson.loads(payload)
        pieces: tuple[bytes, ...] = (payload,)
        if knobs.hostile_field and knobs.hostile_field in data:
            data[knobs.hostile_field] = PLACEHOLDER
            encoded = orjson.dumps(data)
            marker = orjson.dumps(PLACEHOLDER)[1:-1]
            before, _, after = encoded.partition(marker)
            pieces = (before, self._field(knobs.hostile_text, knobs.hostile_field_bytes), after)
        size = sum(len(piece) for piece in pieces)
        extra = knobs.hostile_reply_bytes - size - len(b',"padding":""')
        if extra > 0:
            last = pieces[-1]
            pieces = (*pieces[:-1], last[:-1], b',"padding":"', self._pad(extra), b'"}')
        return pieces

    def _field(self, text: str, length: int) -> bytes:
        """The JSON-encoded value (without its quotes): `text`, or `text` repeated to `length` characters."""
        key = (text, length)
        if key not in self._fields:
            value = text if length <= 0 else ((text or "x") * (length // max(len(text), 1) + 1))[:length]
            self._fields.clear()  # one setting at a time: a new size frees the old one
            self._fields[key] = orjson.dumps(value)[1:-1]
        return self._fields[key]

    def _pad(self, length: int) -> bytes:
        if length not in self._padding:
            self._padding.clear()
            self._padding[length] = b"x" * length
        return self._padding[length]


class Trickle:
    """Writes `data` at `rate` bytes per second in 50 ms steps, then calls `done`; `cancel` stops it.

    Used as the connection's pending handle and its owner (`owner.cancel(pending)` on a lost connection).
    """

    def __init__(self, transport: asyncio.Transport, data: bytes, rate: float, done: Callable[[], None]) -> None:
        self.transport, self.data, self.done = transport, memoryview(data), done
        self.step = max(1, int(rate * TRICKLE_STEP_SECONDS))
        self.loop = asyncio.get_running_loop()
        self.handle = self.loop.call_soon(self._write)

    def _write(self) -> None:
        if self.transport.is_closing():
            return
        chunk, self.data = self.data[: self.step], self.data[self.step :]
        self.transport.write(bytes(chunk))
        if self.data:
            self.handle = self.loop.call_later(TRICKLE_STEP_SECONDS, self._write)
        else:
            self.done()

    def cancel(self, _handle: object = None) -> None:
        self.handle.cancel()
