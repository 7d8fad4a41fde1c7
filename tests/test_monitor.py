"""The dead-man's switch pings ([monitor] prewarm_ping_url / push_ping_url) against a real local HTTP server
that records them: /start then <url> on success, /start then /fail with the exit code on failure, and a ping
service that is down, failing or silent changes nothing about the run (exit code, work done), costing one
`monitor.ping_failed` warning per ping, its URL's token never printed."""

from __future__ import annotations

import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import DATE, TASKS, count_values, invoke, seed_day, seeding, servers

NOW = "2026-11-23T09:05:00+08:00"  # inside hour 9's window: an explicit push of it is not refused
USERS = 60


class PingServer:
    """A real HTTP server on loopback recording every request (method, path, body); `status` is its answer."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[str, str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                recorder.requests.append(("POST", self.path, body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pings():
    server = PingServer()
    yield server
    server.close()


def seed(mysql) -> int:
    """The seeded day; how many users it has."""
    seed_day(mysql, USERS)
    return len(seeding.expected_users(DATE, USERS, TASKS))


def ping_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " monitor.ping_failed " in line]


def test_a_successful_prewarm_pings_start_then_success(redis_url, mysql, sim, make_config, pings):
    seed(mysql)
    check = uuid.uuid4()
    config = make_config(monitor={"prewarm_ping_url": f"http://127.0.0.1:{pings.port}/{check}"})
    result = invoke("prewarm", "--config", str(config), "--date", DATE)
    assert result.exit_code == 0, result.output
    assert [(m, p) for m, p, _ in pings.requests] == [("POST", f"/{check}/start"), ("POST", f"/{check}")]
    body = pings.requests[1][2].splitlines()
    assert body[0] == "exit_code=0" and body[1].startswith("prewarm.summary status=ok ")
    assert ping_lines(result.stderr) == []


def test_a_failing_push_pings_start_then_fail_with_its_exit_code(mysql, make_config, pings, tmp_path):
    dead = servers.free_port()
    check = uuid.uuid4()
    config = make_config(
        redis={"url": f"redis://127.0.0.1:{dead}/0"},
        monitor={"push_ping_url": f"http://127.0.0.1:{pings.port}/ping/{check}?rid=7"},
    )
    result = invoke("push", "--config", str(config), "--date", DATE, "--hour", "9", "--now", NOW)
    assert result.exit_code == 3, result.output
    assert [p for _, p, _ in pings.requests] == [f"/ping/{check}/start?rid=7", f"/ping/{check}/fail?rid=7"]
    body = pings.requests[1][2].splitlines()
    assert body[0] == "exit_code=3"
    assert (
        body[1].startswith("later-read: error: Redis at redis://127.0.0.1:")
        and body[1] == result.stderr.splitlines()[-1]
    )


class Silent:
    """A listening socket that accepts and never answers (a hung ping service)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("failure", ["down", "http_500", "silent"])
def test_a_failing_ping_changes_nothing(failure, redis_url, mysql, sim, make_config):
    users = seed(mysql)
    target = {"down": None, "http_500": PingServer(500), "silent": Silent()}[failure]
    port = target.port if target is not None else servers.free_port()
    token = uuid.uuid4()
    try:
        config = make_config(
            monitor={"prewarm_ping_url": f"http://127.0.0.1:{port}/{token}", "ping_timeout_seconds": 0.5}
        )
        result = invoke("prewarm", "--config", str(config), "--date", DATE)
        down = invoke(
            "push",
            "--config",
            str(
                make_config(
                    redis={"url": "redis://127.0.0.1:1/0"},
                    monitor={"push_ping_url": f"http://127.0.0.1:{port}/{token}", "ping_timeout_seconds": 0.5},
                )
            ),
            "--date",
            DATE,
            "--hour",
            "1",
            "--now",
            "2026-11-23T01:05:00+08:00",
        )
    finally:
        if target is not None:
            target.close()
    assert result.exit_code == 0, result.output  # the run's outcome, as without pings
    assert count_values(redis_url) == users  # its work done
    assert down.exit_code == 3  # a failed run keeps its own code too
    for output, job, last in ((result.stderr, "prewarm", "success"), (down.stderr, "push", "fail")):
        lines = ping_lines(output)
        assert [line.split(" ping=")[1].split(" ")[0] for line in lines] == ["start", last], output
        assert all(f" job={job} " in line and "WARNING" in line for line in lines)
        assert str(token) not in output and f"url=http://127.0.0.1:{port}/***" in lines[0]
    if failure == "silent":
        assert all("no answer within 0.5 s" in line for line in ping_lines(result.stderr))
