"""A small HTTP/1.1 server on `asyncio.Protocol`, just enough for the simulator.

Why hand-rolled: aiohttp.web spends several hundred microseconds of CPU per request, and the simulator must
serve thousands of requests per second on one core without becoming a benchmark's bottleneck. This parser
handles what HTTP clients send the simulator: a request line, headers, a Content-Length body, keep-alive.
Requests on one connection are answered in order (a pipelined request waits for the one before it).
Latency is a deadline handed to the precise clock (`simulator_timer`), not a sleeping task; a reply that
needs one of its service's slots first waits in that service's `Station` (simulator/capacity.py).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import traceback
from http import HTTPStatus

from later_read_sandbox.simulator.app import Reply, SimulatorApp, error
from later_read_sandbox.simulator.capacity import Station
from later_read_sandbox.simulator.hostile import Trickle
from later_read_sandbox.simulator.timer import Clock

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


class ResponseHeads:
    """Pre-encoded status lines, so a response costs one format and one write."""

    def __init__(self) -> None:
        self._lines: dict[int, bytes] = {}

    def build(self, status: int, length: int, close: bool) -> bytes:
        line = self._lines.get(status)
        if line is None:
            line = self._lines[status] = _status_line(status)
        tail = b"Connection: close\r\n\r\n" if close else b"\r\n"
        return b"%sContent-Type: application/json\r\nContent-Length: %d\r\n%s" % (line, length, tail)


class HttpConnection(asyncio.Protocol):
    """One client connection: parse a request, ask the app, write the reply when its delay is over."""

    __slots__ = ("app", "heads", "connections", "clock", "loop", "transport", "buffer", "pending", "owner")

    def __init__(self, app: SimulatorApp, heads: ResponseHeads, connections: set, clock: Clock) -> None:
        self.app = app
        self.heads = heads
        self.connections = connections
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.pending: object | None = None  # the handle of the reply waiting for its deadline / a slot
        self.owner: Clock | Station | Trickle = clock  # who holds `pending` (clock, station or a trickle)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None:
            self.owner.cancel(self.pending)  # type: ignore[arg-type]
            self.pending = None
        self.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if self.pending is None:
            self._next_request()

    def _next_request(self) -> None:
        """Answer the buffered request if it is complete; otherwise wait for more bytes."""
        data = self.buffer
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HEAD:
                self._send(error(431, "request head too large"), True)
            return
        parsed = _parse_head(data[:end])
        if isinstance(parsed, Reply):
            self._send(parsed, True)
            return
        method, target, length, close = parsed
        start = end + 4
        if len(data) < start + length:
            return
        body, self.buffer = data[start : start + length], data[start + length :]
        reply = self._answer(method, target, body)
        if reply.station is not None:
            self.owner = reply.station
            self.pending = reply.station.submit(reply.delay, lambda: self._send(reply, close))
        elif reply.delay > 0:
            self.owner = self.clock
            self.pending = self.clock.call_at(time.monotonic() + reply.delay, lambda: self._send(reply, close))
        else:
            self._send(reply, close)

    def _answer(self, method: bytes, target: bytes, body: bytes) -> Reply:
        try:
            return self.app.handle(method, target, body)
        except Exception as exc:  # noqa: BLE001 - a simulator bug: say so loudly, keep serving
            traceback.print_exc(file=sys.stderr)
            return error(500, f"simulator internal error: {exc!r}")

    def _send(self, reply: Reply, close: bool) -> None:
        self.pending = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = reply.body
        if isinstance(body, bytes):
            transport.write(self.heads.build(reply.status, len(body), close) + body)
        else:  # a hostile reply's pieces: large ones are written as they are, never joined
            head = self.heads.build(reply.status, sum(len(piece) for piece in body), close)
            if reply.trickle > 0:
                trickle = Trickle(transport, head + b"".join(body), reply.trickle, lambda: self._sent(reply, close))
                self.owner = self.pending = trickle  # no next request before it is written
                return
            transport.write(head)
            for piece in body:
                transport.write(piece)
        self._sent(reply, close)

    def _sent(self, reply: Reply, close: bool) -> None:
        self.pending = None
        if reply.stats is not None:
            reply.stats.completed(time.time())  # wall-clock seconds, as the job buckets its calls
        if close:
            if self.transport is not None:
                self.transport.close()
            self.buffer = b""
        elif self.buffer:
            self._next_request()


def _parse_head(head: bytes) -> tuple[bytes, bytes, int, bool] | Reply:
    """(method, target, content length, close after reply) or an error Reply that closes."""
    line_end = head.find(b"\r\n")
    parts = (head if line_end < 0 else head[:line_end]).split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return error(400, "bad request line")
    method, target, version = parts
    close = version == b"HTTP/1.0"
    if line_end < 0:
        return method, target, 0, close
    headers = head[line_end:].lower()
    if b"\r\ntransfer-encoding:" in headers:
        return error(411, "send a Content-Length body, chunked encoding is not supported")
    length = _content_length(headers)
    if length is None or length > MAX_BODY:
        return error(400 if length is None else 413, "bad or too large Content-Length")
    connection = _header(headers, b"\r\nconnection:")
    if connection is not None:
        close = b"close" in connection or (close and b"keep-alive" not in connection)
    return method, target, length, close


def _content_length(headers: bytes) -> int | None:
    value = _header(headers, b"\r\ncontent-length:")
    if value is None:
        return 0
    value = value.strip()
    return int(value) if value.isdigit() else None


def _header(headers: bytes, name: bytes) -> bytes | None:
    start = headers.find(name)
    if start < 0:
        return None
    start += len(name)
    stop = headers.find(b"\r\n", start)
    return headers[start:] if stop < 0 else headers[start:stop]
