"""Keep-alive HTTP/1.1 POSTs of JSON on `asyncio.Protocol`, replies parsed by `httptools` (llhttp).

`HttpPool` keeps at most `limit` connections open (idle ones reused per origin, waiters served in order),
gives each request a deadline, and retries once on a fresh connection when a pooled one turns out closed.
Replies may carry a Content-Length, chunked or read-until-close body; interim 1xx replies (100 Continue,
103 Early Hints) are skipped. A reply is read up to `max_reply_bytes` of body: a longer Content-Length is
refused before its body is read, a longer body as soon as the bytes received pass the bound, and the
connection is closed (`WireTooLarge`). Plain HTTP only (no TLS, redirects, proxies, cookies or
compression); docs/design.md, "HTTP stack", says why this client exists.

    pool = HttpPool(limit=50, timeout_seconds=2.0, max_reply_bytes=256 * 1024)
    status, body = await pool.post(Origin.parse("http://ab:8080/v1/ab/assign"), b'{"uid": "1"}')
    await pool.close()

Errors: `WireTimeout` (no complete reply within the timeout), `WireTooLarge` (a reply over the bound)
and `WireError` (refused, reset, closed early, unparsable reply); `ServiceCaller` translates them into
the project's exception tree.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from later_read.core.bounds import DEFAULT_MAX_REPLY_BYTES

MAX_HEAD = 64 * 1024
IDLE_SECONDS = 15.0  # drop a pooled connection idle this long: servers close theirs at 30-75 s


class WireError(Exception):
    """The request failed on the wire: connect refused, reset, closed early, or an unparsable reply."""


class WireTimeout(WireError):
    """No complete reply within the timeout."""


class WireClosed(WireError):
    """The server closed the connection before sending a byte of the reply (a stale keep-alive)."""


class WireTooLarge(WireError):
    """The reply's body is over the pool's `max_reply_bytes` (by its Content-Length or the bytes sent)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """A service URL split for the pool: the host and port connected to, and the request head sent."""

    host: str
    port: int
    path: str
    head: bytes  # the request head up to the Content-Length value

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host[:port]/path URLs are supported, not {url!r}")
        port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 literal
        host_header = host if port == 80 else f"{host}:{port}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: "
        ).encode()
        return cls(parts.hostname, port, path, head)


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; replies are parsed by llhttp."""

    def __init__(self, max_body: int = DEFAULT_MAX_REPLY_BYTES) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.max_body = max_body
        self.body: bytes | bytearray = b""  # one piece as received; a bytearray once a second arrives
        self.received = 0  # bytes of the current reply so far (interim 1xx replies included)
        self.head_done = False  # the current reply's head is parsed
        self.framed = False  # the current reply has a Content-Length or chunked body (else: until close)
        self.interim = False  # the reply being parsed is a 1xx: skipped, the final one follows
        self.open = False
        self.used = 0  # replies completed on this connection
        self.idle_since = 0.0

    # asyncio.Protocol ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.open = transport, True  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.head_done and not self.framed and not self.interim:  # a body that ends at close has ended
            waiter.set_result((self.parser.get_status_code(), self.body, False))
        elif self.received:
            waiter.set_exception(WireError(f"connection lost mid-reply: {exc or 'closed'}"))
        else:
            waiter.set_exception(WireClosed(f"connection closed before the reply: {exc or 'closed'}"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        self.received += len(data)
        try:
            self.parser.feed_data(data)
            if not self.head_done and self.received > MAX_HEAD:
                raise WireError("reply head larger than 64 KiB")
        except (httptools.HttpParserError, httptools.HttpParserUpgrade, WireError) as exc:
            if not self.waiter.done():
                self.waiter.set_exception(_wire_error(exc))
            self.close()

    # llhttp callbacks ------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.waiter is None or self.waiter.done():
            raise WireError("a reply nobody asked for")  # bytes after the reply: drop the connection

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            if value.strip().isdigit() and int(value) > self.max_body:
                raise WireTooLarge(
                    f"Content-Length {int(value):,} over the {self.max_body:,}-byte bound ([services] max_reply_bytes)"
                )
            self.framed = True
        elif name == b"transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.interim = self.parser.get_status_code() < 200  # 100 Continue, 103 Early Hints: not the answer

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > self.max_body:
            raise WireTooLarge(f"reply body over the {self.max_body:,}-byte bound ([services] max_reply_bytes)")
        if not self.body:
            self.body = body  # the common case: the whole body in one piece, kept without a copy
        elif isinstance(self.body, bytearray):
            self.body += body
        else:
            self.body = bytearray(self.body) + body

    def on_message_complete(self) -> None:
        if self.waiter is None or self.waiter.done():
            raise WireError("a reply nobody asked for")
        if self.interim:  # the final reply follows on the same connection
            self.body, self.head_done, self.framed, self.interim = b"", False, False, False
            return
        parser = self.parser
        self.waiter.set_result((parser.get_status_code(), self.body, parser.should_keep_alive()))

    # requests --------------------------------------------------------------------------------------
    def send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        self.waiter = loop.create_future()
        self.body = b""
        self.received = 0
        self.head_done = self.framed = self.interim = False
        assert self.transport is not None
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


def _wire_error(exc: Exception) -> WireError:
    """The WireError behind a parser failure (a callback's own WireError, else the parser's reason)."""
    if isinstance(exc, WireError):
        return exc
    if isinstance(exc.__context__, WireError):
        return exc.__context__
    return WireError(f"unparsable reply: {exc}")


class HttpPool:
    """Keep-alive connections per origin, at most `limit` open at once; waiters are served in order."""

    def __init__(self, limit: int, timeout_seconds: float, max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> None:
        self.limit, self.timeout = limit, timeout_seconds
        self._protocol = functools.partial(_Connection, max_reply_bytes)
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._open = 0
        self._waiting: deque[asyncio.Future] = deque()
        self._closed = False

    async def post(self, origin: Origin, body: bytes) -> tuple[int, bytes | bytearray]:
        """(status, body) of one POST; WireTimeout, WireTooLarge or WireError when it fails."""
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

    async def _exchange(
        self, connection: _Connection, request: bytes, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> tuple[int, bytes | bytearray, bool]:
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

    async def _acquire(
        self, origin: Origin, loop: asyncio.AbstractEventLoop, deadline: float, fresh: bool = False
    ) -> _Connection:
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
                raise TimeoutError
            _, connection = await asyncio.wait_for(
                loop.create_connection(self._protocol, origin.host, origin.port), remaining
            )
        except TimeoutError:
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

    async def __aenter__(self) -> HttpPool:
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
