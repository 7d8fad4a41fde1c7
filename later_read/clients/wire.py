"""A small HTTP/1.1 client on `asyncio.Protocol`: keep-alive POSTs of JSON to the three internal services.

Why not aiohttp or httpx: the prewarm is a bounded fan-out whose ceiling is C / (L_ab + L_rec), and the
client's CPU per request decides how close it gets. Measured here per prewarm user (two requests, 50
connections, the simulator at 5 + 20 ms): aiohttp 310-355 us, this client 97-108 us; httpx's default
transport spends 3.5 ms per request (docs/design.md, "HTTP stack"). What it speaks is
what the services speak: `POST` with a Content-Length body; replies with Content-Length, chunked, or
read-until-close bodies; keep-alive unless the server says `Connection: close`. No redirects, cookies,
proxies, compression or TLS (the services are plain HTTP on the internal network; see docs/design.md).

    pool = HttpPool(limit=50, timeout_seconds=2.0)
    status, body = await pool.post(Origin.parse("http://ab:8080/v1/ab/assign"), b'{"uid": "1"}')
    await pool.close()

Errors: `WireTimeout` (no complete reply within the timeout) and `WireError` (refused, reset, closed
early, unparsable reply); `ServiceCaller` translates both into the project's exception tree.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
IDLE_SECONDS = 15.0  # drop a pooled connection idle this long: servers close theirs at 30-75 s


class WireError(Exception):
    """The request failed on the wire: connect refused, reset, closed early, or an unparsable reply."""


class WireTimeout(WireError):
    """No complete reply within the timeout."""


class WireClosed(WireError):
    """The server closed the connection before sending a byte of the reply (a stale keep-alive)."""


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    path: str
    head: bytes  # the request head up to the Content-Length value

    @classmethod
    def parse(cls, url: str) -> "Origin":
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host[:port]/path URLs are supported, not {url!r}")
        port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.hostname if port == 80 else f"{parts.hostname}:{port}"
        head = (f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
                f"Accept: application/json\r\nContent-Length: ").encode()
        return cls(parts.hostname, port, path, head)


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.buffer = bytearray()
        self.open = False
        self.used = 0          # replies completed on this connection
        self.idle_since = 0.0

    # asyncio.Protocol ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.open = transport, True  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            if self._body_until_close():
                return
            if self.buffer:
                self.waiter.set_exception(WireError(f"connection lost mid-reply: {exc or 'closed'}"))
            else:
                self.waiter.set_exception(WireClosed(f"connection closed before the reply: {exc or 'closed'}"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        self.buffer += data
        try:
            self._try_complete()
        except WireError as exc:
            self.waiter.set_exception(exc)
            self.close()

    # requests --------------------------------------------------------------------------------------
    def send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        self.waiter = loop.create_future()
        self.buffer.clear()
        assert self.transport is not None
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    def _try_complete(self) -> None:
        """Resolve the waiter with (status, body, keep_alive) once the whole reply is buffered."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise WireError("reply head larger than 64 KiB")
            return
        status, length, chunked, keep_alive = _parse_head(bytes(buffer[:end]))
        start = end + 4
        if chunked:
            body = _dechunk(buffer, start)
            if body is None:
                return
        elif length is None:
            return  # read until the server closes (connection_lost completes it)
        else:
            if len(buffer) < start + length:
                return
            body = bytes(buffer[start:start + length])
        self.waiter.set_result((status, body, keep_alive))  # type: ignore[union-attr]

    def _body_until_close(self) -> bool:
        """A reply without length or chunking ends at close; True when that completed the waiter."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        try:
            status, length, chunked, _ = _parse_head(bytes(buffer[:end]))
        except WireError:
            return False
        if length is not None or chunked:
            return False
        self.waiter.set_result((status, bytes(buffer[end + 4:]), False))  # type: ignore[union-attr]
        return True


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content length or None, chunked, keep-alive) of a reply head."""
    line_end = head.find(b"\r\n")
    status_line = head if line_end < 0 else head[:line_end]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12 or not status_line[9:12].isdigit():
        raise WireError(f"not an HTTP/1.x reply: {status_line[:40]!r}")
    status = int(status_line[9:12])
    keep_alive = status_line[5:8] == b"1.1"
    length: int | None = None
    chunked = False
    if line_end >= 0:
        for line in head[line_end + 2:].split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit() or int(value) > MAX_BODY:
                    raise WireError(f"bad Content-Length {value[:20]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                token = value.strip().lower()
                keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return status, (None if chunked else length), chunked, keep_alive


def _dechunk(buffer: bytearray, start: int) -> bytes | None:
    """The body of a complete chunked reply starting at `start`, or None while it is incomplete."""
    body = bytearray()
    pos = start
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size_text = bytes(buffer[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise WireError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", line_end)
            if trailer_end < 0 and buffer[line_end:line_end + 4] != b"\r\n\r\n":
                return None
            return bytes(body)
        chunk_start = line_end + 2
        if len(buffer) < chunk_start + size + 2:
            return None
        body += buffer[chunk_start:chunk_start + size]
        if len(body) > MAX_BODY:
            raise WireError("chunked body larger than 16 MiB")
        pos = chunk_start + size + 2


class HttpPool:
    """Keep-alive connections per origin, at most `limit` open at once; waiters are served in order."""

    def __init__(self, limit: int, timeout_seconds: float) -> None:
        self.limit, self.timeout = limit, timeout_seconds
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._open = 0
        self._waiting: deque[asyncio.Future] = deque()
        self._closed = False

    async def post(self, origin: Origin, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one POST; WireTimeout or WireError when it fails."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        request = b"%s%d\r\n\r\n%s" % (origin.head, len(body), body)
        connection = await self._acquire(origin, loop, deadline)
        reused = connection.used > 0
        try:
            status, reply, keep_alive = await self._exchange(connection, request, loop, deadline)
        except WireClosed:
            if not reused:
                raise
            # A pooled connection the server had already closed: retry once on a fresh one.
            connection = await self._acquire(origin, loop, deadline, fresh=True)
            status, reply, keep_alive = await self._exchange(connection, request, loop, deadline)
        self._release(origin, connection, keep_alive)
        return status, reply

    async def _exchange(self, connection: _Connection, request: bytes, loop: asyncio.AbstractEventLoop,
                        deadline: float) -> tuple[int, bytes, bool]:
        waiter = connection.send(request, loop)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            return await waiter
        except BaseException:  # timeout, error or cancellation: the connection's state is unknown
            connection.close()
            self._forget()
            raise
        finally:
            timer.cancel()

    async def _acquire(self, origin: Origin, loop: asyncio.AbstractEventLoop, deadline: float,
                       fresh: bool = False) -> _Connection:
        """A live idle connection to `origin`, else a new one once the pool has room (waiting if full)."""
        key = (origin.host, origin.port)
        while True:
            if self._closed:
                raise WireError("the HTTP pool is closed")
            connection = None if fresh else self._pop_idle(key)
            if connection is not None:
                return connection
            if self._open < self.limit or self._evict_idle():
                return await self._connect(origin, loop, deadline)
            await self._wait_for_slot(loop, deadline)

    def _pop_idle(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.open and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
            self._forget()
        return None

    async def _connect(self, origin: Origin, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        self._open += 1
        try:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, origin.host, origin.port), remaining)
        except asyncio.TimeoutError:
            self._forget()
            raise WireTimeout(f"connect to {origin.host}:{origin.port} timed out") from None
        except OSError as exc:
            self._forget()
            raise WireError(f"connect to {origin.host}:{origin.port} failed: {exc.strerror or exc}") from None
        except BaseException:
            self._forget()
            raise
        return connection

    def _evict_idle(self) -> bool:
        """Close one idle connection (of any origin) to make room; False when none is idle."""
        for idle in self._idle.values():
            if idle:
                idle.popleft().close()
                self._forget()
                return True
        return False

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        waiter = loop.create_future()
        self._waiting.append(waiter)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._wake_one()  # woken, then cancelled before using the slot: pass it on
            raise
        finally:
            timer.cancel()
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    def _release(self, origin: Origin, connection: _Connection, keep_alive: bool) -> None:
        connection.used += 1
        connection.waiter = None
        if keep_alive and connection.open and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault((origin.host, origin.port), deque()).append(connection)
            self._wake_one()
        else:
            connection.close()
            self._forget()

    def _forget(self) -> None:
        """One connection fewer is open: let a waiter open one."""
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def __aenter__(self) -> "HttpPool":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(WireError("the HTTP pool is closed"))
        await asyncio.sleep(0)  # let the transports finish closing


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(WireTimeout("no reply within the timeout"))
