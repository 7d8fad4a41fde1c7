"""The simulator's capacity knobs (K served at once, FIFO queue, bounded queue sheds 429s), over real HTTP.

Each test gets its own SimulatorProcess (requests held by one test must not occupy the next one's slots).
Requests are held long (seconds) so the tests read the station's
state (`in_service`, `queued`) from `GET /_sim/stats` while they wait, instead of timing anything; the only
times compared are floors the simulator guarantees by construction (a reply never leaves before its
deadline) and the order replies come back in.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from later_read_sandbox.simulator import KnobError, SimulatorProcess

REC = "/v1/rec/get"


@pytest.fixture
def sim():
    with SimulatorProcess() as process:
        yield process


class Caller(threading.Thread):
    """One blocking POST on its own connection; records the status, how long it took, the finishing order."""

    def __init__(self, url: str, uid: str, lock: threading.Lock, order: list[str]) -> None:
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split(":")
        self.address, self.uid, self.lock, self.order = (host, int(port)), uid, lock, order
        self.status: int | None = None
        self.seconds = self.started = self.finished = 0.0
        self.sock = socket.create_connection(self.address, timeout=30)

    def run(self) -> None:
        body = orjson.dumps({"uid": self.uid, "project": "novel", "scene": "s", "trace_id": "t"})
        self.started = started = time.monotonic()
        self.sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (REC.encode(), len(body), body)
        )
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        self.finished = time.monotonic()
        self.seconds = self.finished - started
        self.status = int(data.split(b" ", 2)[1]) if data else None
        with self.lock:
            self.order.append(self.uid)
        self.sock.close()


def start_callers(
    sim: SimulatorProcess, count: int, prefix: str = "u", spacing: float = 0.0
) -> tuple[list[Caller], list[str]]:
    lock, order = threading.Lock(), []
    callers = [Caller(sim.url, f"{prefix}{n}", lock, order) for n in range(count)]
    for caller in callers:
        caller.start()
        if spacing:
            time.sleep(spacing)
    return callers, order


def wait_for(
    predicate: Callable[[dict[str, Any]], bool], sim: SimulatorProcess, what: str, limit: float = 10.0
) -> dict[str, Any]:
    """Poll the rec station's stats until `predicate` holds (a bound on waiting, not a timing check)."""
    deadline = time.monotonic() + limit
    while True:
        rec = sim.stats()["rec"]
        if predicate(rec):
            return rec
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}; last rec stats: {rec}")
        time.sleep(0.02)


def test_k_served_at_once_the_rest_queued(sim):
    sim.configure(rec={"latency_ms": 3000, "capacity": 3})
    callers, _ = start_callers(sim, 10)
    rec = wait_for(lambda s: s["in_service"] == 3 and s["queued"] == 7, sim, "3 in service, 7 queued")
    assert (rec["capacity"], rec["max_queued"]) == (3, 7)
    assert all(caller.status is None for caller in callers)  # nobody answered while 3 s have not passed


def test_capacity_changes_while_requests_wait(sim):
    sim.configure(rec={"latency_ms": 4000, "capacity": 2})
    start_callers(sim, 8)
    wait_for(lambda s: s["in_service"] == 2 and s["queued"] == 6, sim, "2 in service, 6 queued")
    sim.configure(rec={"capacity": 5})  # more slots: three queued requests start at once
    wait_for(lambda s: s["in_service"] == 5 and s["queued"] == 3, sim, "5 in service, 3 queued")
    sim.configure(rec={"capacity": 1})  # fewer: those in service finish, nothing new starts
    rec = sim.stats()["rec"]
    assert (rec["in_service"], rec["queued"]) == (5, 3)


def test_queue_is_fifo_and_latency_grows_with_the_queue(sim):
    """capacity 1, 300 ms per request: the n-th caller is served only after the n-1 before it finished.

    The floors are taken from what the callers saw (when the first one sent, when each one's reply came), never
    from when the test meant to start them: on a loaded machine a caller thread may start late, which shortens
    its own wait but not the station's (CI measured 0.544 s for caller 2 against a planned 0.545 s floor). Gaps
    between two callers' replies are not compared either: each is read by its own thread, which may wake late."""
    latency = 0.3
    sim.configure(rec={"latency_ms": latency * 1000, "capacity": 1})
    callers, order = start_callers(sim, 6, spacing=0.05)  # spaced so they arrive in this order
    for caller in callers:
        caller.join(10)
    assert order == [caller.uid for caller in callers]
    assert all(caller.status == 200 and caller.seconds >= latency - 0.005 for caller in callers)
    first_sent = callers[0].started
    for position, caller in enumerate(callers, start=1):
        # one in service at a time, each served after the one before it left: the n-th reply leaves the station
        # n x latency after the first request arrived at the earliest, and arrived after the first caller sent
        assert caller.finished - first_sent >= position * latency - 0.005, (position, first_sent, caller.finished)
    assert sim.stats()["rec"]["max_queued"] >= 4


def test_the_station_reports_the_latency_the_service_itself_sees(sim):
    """`sojourn` is arrival to reply at the service (queue wait + service time), not the client's round trip;
    `wait` the queue wait alone. Capacity 1, 1 s, three callers all at the station at once (one served, two
    queued, checked): the last one queued waits for the two before it, so its sojourn is at least 2 x 1 s
    and its wait over 1 s (the two services before it, less the moment it arrived after the first)."""
    sim.configure(rec={"latency_ms": 1000, "capacity": 1})
    callers, _ = start_callers(sim, 3)
    wait_for(lambda s: s["in_service"] == 1 and s["queued"] == 2, sim, "1 in service, 2 queued")
    for caller in callers:
        caller.join(10)
    rec = sim.stats()["rec"]
    assert rec["sojourn_p50_ms"] >= 990 and rec["sojourn_p99_ms"] >= 1980, rec  # 2 % buckets: mid-bucket
    # the last one's wait is its sojourn less its 1 s of service (2 % buckets: +-60 ms at 3 s)
    assert 990 <= rec["wait_p99_ms"] <= rec["sojourn_p99_ms"] - 900, rec
    sim.reset()
    rec = sim.stats()["rec"]
    assert [rec[f"{name}_ms"] for name in ("sojourn_p50", "sojourn_p99", "wait_p99", "late_p99")] == [0] * 4


def test_a_full_queue_sheds_with_429(sim):
    sim.configure(rec={"latency_ms": 3000, "capacity": 2, "max_queue": 3})
    callers, _ = start_callers(sim, 9, spacing=0.01)
    wait_for(lambda s: s["by_fault"]["shed"] == 4, sim, "4 requests shed")
    deadline = time.monotonic() + 2  # the sheds are answered at once; the others after 3 s
    while len(shed := [c for c in callers if c.status is not None]) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(shed) == 4 and {caller.status for caller in shed} == {429}
    assert [caller.uid for caller in shed] == ["u5", "u6", "u7", "u8"]  # the last four: 2 served, 3 queued
    rec = sim.stats()["rec"]
    assert (rec["in_service"], rec["queued"], rec["by_status"]["429"]) == (2, 3, 4)


def test_a_client_that_leaves_the_queue_frees_its_place(sim):
    sim.configure(rec={"latency_ms": 4000, "capacity": 1})
    callers, _ = start_callers(sim, 4, spacing=0.01)
    wait_for(lambda s: s["queued"] == 3, sim, "3 queued")
    callers[-1].sock.shutdown(socket.SHUT_RDWR)
    wait_for(lambda s: s["queued"] == 2 and s["in_service"] == 1, sim, "the leaver gone from the queue")


def test_a_429_storm_and_timeouts_do_not_take_slots(sim):
    sim.configure(rec={"latency_ms": 2000, "capacity": 1, "error_429_rate": 1.0})
    callers, _ = start_callers(sim, 5)
    for caller in callers:
        caller.join(10)
    assert {caller.status for caller in callers} == {429}
    rec = sim.stats()["rec"]
    assert (rec["by_fault"]["429"], rec["max_queued"], rec["in_service"]) == (5, 0, 0)


def test_capacity_knobs_are_validated(sim):
    for change, words in [
        ({"capacity": 1.5}, "rec.capacity must be an integer"),
        ({"capacity": -1}, "rec.capacity must be >= 0"),
        ({"max_queue": "9"}, "rec.max_queue must be an integer"),
    ]:
        with pytest.raises(KnobError, match=words):
            sim.configure(rec=change)
    assert sim.config()["rec"]["capacity"] == 0
