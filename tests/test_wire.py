"""The HTTP/1.1 client behind the service callers, over real loopback TCP.

The simulator covers the common path; a scripted asyncio server covers what real servers do that the
simulator does not: chunked bodies, `Connection: close`, bodies that end at close, keep-alive connections
closed while idle, garbage, silence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import stamina

from later_read.clients.http import ServiceCaller
from later_read.clients.wire import HttpPool, Origin, WireClosed, WireError, WireTimeout, WireTooLarge
from later_read.config.settings import ServiceSettings
from later_read.errors import PermanentServiceError, TransientServiceError
from later_read_sandbox.simulator import ServiceKnobs, SimulatorKnobs, serve

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


@contextlib.asynccontextmanager
async def scripted(
    handler: Handler, limit: int = 1, timeout: float = 2, max_reply_bytes: int = 256 * 1024, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[HttpPool, Origin, list[int]]]:
    """A server running `handler` per connection and a pool to call it with (both closed on the way out);
    the list counts connections accepted."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, host, 0)
    port = server.sockets[0].getsockname()[1]
    pool = HttpPool(limit=limit, timeout_seconds=timeout, max_reply_bytes=max_reply_bytes)
    netloc = f"[{host}]" if ":" in host else host
    async with server:
        try:
            yield pool, Origin.parse(f"http://{netloc}:{port}/v1/x"), accepted
        finally:
            await pool.close()


def reply(status: int, body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def run(coro: Awaitable) -> object:
    return asyncio.run(coro)


def test_the_request_on_the_wire_is_a_plain_json_post():
    seen: list[bytes] = []

    async def handler(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head + await reader.readexactly(9))
        writer.write(reply(200, b"{}"))
        await writer.drain()

    async def main():
        async with scripted(handler, limit=2) as (pool, origin, _):
            assert await pool.post(origin, b'{"uid":1}') == (200, b"{}")

    run(main())
    port = seen[0].split(b"Host: 127.0.0.1:")[1].split(b"\r\n")[0]
    assert seen[0] == (
        b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nContent-Type: application/json\r\n"
        b'Accept: application/json\r\nContent-Length: 9\r\n\r\n{"uid":1}' % port
    )


def test_keep_alive_reuses_connections_and_the_pool_never_exceeds_its_limit():
    async def main():
        knobs = SimulatorKnobs(ab=ServiceKnobs(latency_ms=5))
        async with await serve(knobs) as sim:
            origin = Origin.parse(sim.url + "/v1/ab/assign")
            pool = HttpPool(limit=4, timeout_seconds=5)
            body = orjson.dumps({"uid": "u1", "project": "novel", "layer": "later_read", "default": "0"})
            answers = await asyncio.gather(*(pool.post(origin, body) for _ in range(200)))
            assert {status for status, _ in answers} == {200}
            assert all(orjson.loads(raw)["trace_id"] for _, raw in answers)
            assert len(sim._connections) == 4  # 200 requests, 4 connections, all kept alive
            await pool.close()

    run(main())


def test_chunked_and_read_until_close_bodies():
    async def chunked(reader, writer):
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n')
        await writer.drain()
        await read_request(reader)  # the connection stays usable after a chunked reply
        writer.write(reply(200, b"[2]"))
        await writer.drain()

    async def until_close(reader, writer):
        await read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\n\r\n{"b": 2}')
        await writer.drain()

    async def main():
        async with scripted(chunked) as (pool, origin, accepted):
            assert await pool.post(origin, b"{}") == (200, b'{"a":1}')
            assert await pool.post(origin, b"{}") == (200, b"[2]")
            assert len(accepted) == 1
        async with scripted(until_close) as (pool, origin, accepted):
            assert await pool.post(origin, b"{}") == (200, b'{"b": 2}')
            assert await pool.post(origin, b"{}") == (200, b'{"b": 2}')
            assert len(accepted) == 2  # HTTP/1.0 without keep-alive: a new connection per request

    run(main())


def test_connection_close_is_honoured():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(reply(503, b"busy", "Connection: close"))
        await writer.drain()

    async def main():
        async with scripted(handler) as (pool, origin, accepted):
            for _ in range(3):
                assert await pool.post(origin, b"{}") == (503, b"busy")
            assert len(accepted) == 3

    run(main())


def test_a_keep_alive_connection_closed_by_the_server_is_replaced_transparently():
    async def one_reply_per_connection(reader, writer):
        await read_request(reader)
        writer.write(reply(200, b"{}"))
        await writer.drain()
        await read_request(reader)  # keep-alive was promised, yet the next request is met by a close

    async def main():
        async with scripted(one_reply_per_connection) as (pool, origin, accepted):
            for _ in range(3):  # requests 2 and 3 meet a closing connection, retried on a fresh one
                assert await pool.post(origin, b"{}") == (200, b"{}")
            assert len(accepted) == 3
            await asyncio.sleep(0.05)  # the close of the idle connection has arrived: not reused at all
            assert await pool.post(origin, b"{}") == (200, b"{}")
            assert len(accepted) == 4

    run(main())


def test_silence_times_out_and_frees_the_connection_slot():
    async def handler(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    async def main():
        async with scripted(handler, timeout=0.2) as (pool, origin, accepted):
            for _ in range(2):  # the second never reaches the server if the first kept the only slot
                with pytest.raises(WireTimeout):
                    await pool.post(origin, b"{}")
            assert len(accepted) == 2

    run(main())


@pytest.mark.parametrize("garbage", [b"SSH-2.0-OpenSSH_9.2\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"])
def test_garbage_is_a_wire_error(garbage):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(garbage)
        await writer.drain()
        await asyncio.sleep(1)

    async def main():
        async with scripted(handler) as (pool, origin, _):
            with pytest.raises(WireError) as raised:
                await pool.post(origin, b"{}")
            assert not isinstance(raised.value, WireTimeout)

    run(main())


def test_refused_and_cut_connections_are_wire_errors():
    async def cut(reader, writer):
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"half')
        await writer.drain()

    async def main():
        async with scripted(cut) as (pool, origin, _):
            with pytest.raises(WireError, match="mid-reply"):
                await pool.post(origin, b"{}")
        pool = HttpPool(limit=1, timeout_seconds=2)
        with pytest.raises(WireError, match="failed") as raised:
            await pool.post(origin, b"{}")  # the server is gone: connection refused
        assert not isinstance(raised.value, (WireTimeout, WireClosed))
        await pool.close()

    run(main())


def test_cancelling_a_request_releases_its_slot():
    async def handler(reader, writer):
        while True:
            await read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(reply(200, b"{}"))
            await writer.drain()

    async def main():
        async with scripted(handler) as (pool, origin, _):
            task = asyncio.create_task(pool.post(origin, b"{}"))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.wait_for(pool.post(origin, b"{}"), 1) == (200, b"{}")

    run(main())


def test_only_plain_http_urls_are_accepted():
    with pytest.raises(ValueError, match="only http://"):
        Origin.parse("https://ab.internal/v1/ab/assign")
    assert Origin.parse("http://ab.internal/v1/x?a=1").path == "/v1/x?a=1"
    assert b"Host: ab.internal\r\n" in Origin.parse("http://ab.internal/v1/x").head


def test_oversized_and_unasked_replies_are_refused():
    async def huge(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(1)

    async def extra(reader, writer):
        while True:
            await read_request(reader)
            writer.write(reply(200, b"{}") + reply(200, b"[]"))  # a second reply nobody asked for
            await writer.drain()

    async def main():
        async with scripted(huge) as (pool, origin, _):
            with pytest.raises(WireTooLarge, match="Content-Length 999,999,999 over the 262,144-byte bound"):
                await pool.post(origin, b"{}")
        async with scripted(extra) as (pool, origin, accepted):
            assert await pool.post(origin, b"{}") == (200, b"{}")
            assert await pool.post(origin, b"{}") == (200, b"{}")
            assert len(accepted) == 2  # the connection that carried the extra reply was dropped

    run(main())


@pytest.mark.parametrize("framing", ["chunked", "until-close", "content-length"])
def test_a_body_over_the_bound_stops_the_read_and_closes_the_connection(framing):
    """The server streams up to 64 MiB; the client gives up as soon as the bound (64 KiB here) is passed
    and closes: a WireTooLarge, not a timeout, and the server's writes fail long before it is done."""
    written: list[int] = []
    piece = b"x" * 65536

    async def streaming(reader, writer):
        await read_request(reader)
        head = {
            "chunked": b"Transfer-Encoding: chunked\r\n",
            "until-close": b"Connection: close\r\n",
            "content-length": b"Content-Length: 65536\r\n",
        }[framing]
        writer.write(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n")
        total = 0
        try:
            for _ in range(1024):
                writer.write(b"10000\r\n" + piece + b"\r\n" if framing == "chunked" else piece)
                await writer.drain()
                total += len(piece)
        finally:
            written.append(total)

    async def main():
        async with scripted(streaming, timeout=30, max_reply_bytes=65536 - 1) as (pool, origin, _):
            with pytest.raises(WireTooLarge, match="over the 65,535-byte bound"):
                await pool.post(origin, b"{}")
            await asyncio.sleep(0.5)  # let the server see the closed connection

    run(main())
    assert written and written[0] < 1024 * len(piece)


def test_a_reply_over_the_bound_is_an_oversize_reply_and_never_retried():
    requests: list[int] = []

    async def handler(reader, writer):
        while True:
            await read_request(reader)
            requests.append(1)
            body = b'{"value": "1", "trace_id": "' + b"t" * 70_000 + b'"}'
            writer.write(reply(200, body))
            await writer.drain()

    async def main():
        async with scripted(handler, max_reply_bytes=65536) as (pool, origin, _):
            settings = ServiceSettings(
                ab_url="http://x",
                rec_url="http://x",
                material_url="http://x",
                max_attempts=3,
                backoff_initial_seconds=0,
                backoff_max_seconds=0,
            )
            caller = ServiceCaller("ab", f"http://{origin.host}:{origin.port}/v1/x", pool, settings)
            with pytest.raises(PermanentServiceError) as raised:
                await caller.post({}, lambda data: data)
            assert raised.value.reason == "oversize_reply"
            assert caller.stats.calls == 1 and caller.stats.retries == 0
            assert caller.stats.failures == {"oversize_reply": 1}
            assert caller.breaker.failures == 1  # counted like a malformed reply (docs/design.md)

    run(main())
    assert len(requests) == 1


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        (b"HTTP/1.1 103 Early Hints\r\nLink: </c.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"),
    ],
)
def test_interim_1xx_replies_are_skipped_and_the_final_status_is_returned(interim):
    async def handler(reader, writer):
        for body in (b'{"n": 1}', b'{"n": 2}'):  # the connection stays usable for the next request
            await read_request(reader)
            writer.write(interim)
            await writer.drain()
            await asyncio.sleep(0.01)  # the interim reply and the final one in separate reads too
            writer.write(reply(201, body))
            await writer.drain()

    async def main():
        async with scripted(handler) as (pool, origin, accepted):
            assert await pool.post(origin, b"{}") == (201, b'{"n": 1}')
            assert await pool.post(origin, b"{}") == (201, b'{"n": 2}')
            assert len(accepted) == 1

    run(main())


def test_an_ipv6_literal_host_is_bracketed_in_host_and_reached():
    """Against a real server on ::1 (a machine without an IPv6 loopback fails here: bind raises)."""
    heads: list[bytes] = []

    async def handler(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(reply(200, b"{}"))
        await writer.drain()

    async def main():
        async with scripted(handler, host="::1") as (pool, origin, _):
            assert origin.host == "::1"
            assert await pool.post(origin, b"{}") == (200, b"{}")
            return origin.port

    port = run(main())
    assert f"Host: [::1]:{port}\r\n".encode() in heads[0]
    assert b"Host: [::1]\r\n" in Origin.parse("http://[::1]/v1/x").head


# Retries (ServiceCaller over the pool) ---------------------------------------------------------------
def test_every_retry_waits_its_backoff_even_the_first():
    """503, 503, then 200: each retry reaches the server no sooner than backoff_initial_seconds after the
    failure before it (stamina's exponential backoff with jitter; a floor, never early)."""
    arrivals: list[float] = []

    async def handler(reader, writer):
        while True:
            await read_request(reader)
            arrivals.append(asyncio.get_running_loop().time())
            writer.write(reply(503 if len(arrivals) < 3 else 200, b'{"ok": 1}'))
            await writer.drain()

    async def main():
        async with scripted(handler) as (pool, origin, _):
            settings = ServiceSettings(
                ab_url="http://x",
                rec_url="http://x",
                material_url="http://x",
                max_attempts=3,
                backoff_initial_seconds=0.2,
                backoff_max_seconds=1,
            )
            caller = ServiceCaller("ab", f"http://{origin.host}:{origin.port}/v1/x", pool, settings)
            assert await caller.post({}, lambda data: data) == {"ok": 1}
            assert caller.stats.retries == 2 and caller.stats.calls == 3

    run(main())
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.2 and arrivals[2] - arrivals[1] >= 0.2


def test_stamina_testing_switch_removes_the_waits_not_the_attempts():
    arrivals: list[float] = []

    async def handler(reader, writer):
        while True:
            await read_request(reader)
            arrivals.append(1)
            writer.write(reply(503, b"{}"))
            await writer.drain()

    async def main():
        async with scripted(handler) as (pool, origin, _):
            settings = ServiceSettings(
                ab_url="http://x",
                rec_url="http://x",
                material_url="http://x",
                max_attempts=4,
                backoff_initial_seconds=60,
                backoff_max_seconds=60,
            )
            caller = ServiceCaller("ab", f"http://{origin.host}:{origin.port}/v1/x", pool, settings)
            with pytest.raises(TransientServiceError, match="http_503"):
                await asyncio.wait_for(caller.post({}, lambda data: data), 30)
            assert caller.stats.failures == {"http_503": 1}

    with stamina.set_testing(True, attempts=10, cap=True):
        run(main())
    assert len(arrivals) == 4
