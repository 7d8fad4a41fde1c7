"""How many requests per second the downstream simulator serves on one core.

The simulator must never be a benchmark's bottleneck (the prewarm benchmark drives ~4,000 req/s of A/B +
recommend at 50 connections with 5-20 ms latencies). This starts it pinned to one CPU, drives it with a
load generator pinned to another, and prints requests/s with both sides' CPU use, median of --repeats runs.

Three load generators: "wire" (the product's `wire.HttpPool`), "aiohttp" and "raw" (a minimal
asyncio.Protocol HTTP/1.1 client); the summary line gives both sides' CPU per request. aiohttp spends
more CPU per request than the simulator does, so on a two-core machine it saturates its core first and
cannot show the simulator's limit; the raw client can. The verdict line says which side ran out of CPU.

    python benchmarks/simulator_rps.py                      # raw and aiohttp, latency 0 and 5 ms
    python benchmarks/simulator_rps.py --client raw --latency-ms 0 --connections 200
    python benchmarks/simulator_rps.py --client wire --latency-ms 5   # the product client's CPU per request
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from later_read_sandbox.simulator import ServiceKnobs, SimulatorKnobs, SimulatorProcess
from later_read_sandbox.simulator.process import process_cpu_seconds as cpu_seconds

UIDS = 2000


class RunResult(NamedTuple):
    requests: int
    errors: int
    seconds: float
    sim_cpu: float
    load_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def request_bodies(count: int) -> list[tuple[str, bytes]]:
    """Alternating A/B and recommend calls for `count` uids, like the prewarm's traffic."""
    bodies = []
    for n in range(count):
        uid = f"u{n}"
        bodies.append(
            ("/v1/ab/assign", b'{"uid":"%s","project":"novel","layer":"later_read","default":"0"}' % uid.encode())
        )
        bodies.append(
            (
                "/v1/rec/get",
                b'{"uid":"%s","project":"novel","scene":"pre-warming-process","trace_id":"t"}' % uid.encode(),
            )
        )
    return bodies


# Raw generator -----------------------------------------------------------------------------------
class RawClient(asyncio.Protocol):
    """One keep-alive connection sending the next request as soon as the previous answer is complete."""

    def __init__(self, requests: list[bytes], offset: int, counters: list[int]) -> None:
        self.requests, self.index, self.counters = requests, offset, counters
        self.buffer = b""
        self.loop = asyncio.get_running_loop()
        self.closed = self.loop.create_future()
        self.stop_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def start(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self._send()

    def _send(self) -> None:
        self.index = (self.index + 1) % len(self.requests)
        self.transport.write(self.requests[self.index])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        start = self.buffer.find(b"Content-Length: ", 0, end) + 16
        total = end + 4 + int(self.buffer[start : self.buffer.find(b"\r\n", start)])
        if len(self.buffer) < total:
            return
        ok = self.buffer[9:12] == b"200"
        self.buffer = self.buffer[total:]
        self.counters[0 if ok else 1] += 1
        if self.loop.time() < self.stop_at:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def drive_raw(url: str, connections: int, seconds: float, ready: Any, go: Any) -> tuple[int, int]:
    host, port = url.removeprefix("http://").split(":")
    requests = [
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), host.encode(), len(body), body)
        for path, body in request_bodies(UIDS)
    ]
    counters = [0, 0]
    loop = asyncio.get_running_loop()
    clients = []
    for n in range(connections):
        _, client = await loop.create_connection(lambda n=n: RawClient(requests, n * 37, counters), host, int(port))
        clients.append(client)
    ready.put(os.getpid())
    await loop.run_in_executor(None, go.wait)
    stop_at = loop.time() + seconds
    for client in clients:
        client.start(stop_at)
    await asyncio.gather(*(client.closed for client in clients))
    return counters[0], counters[1]


# aiohttp generator -------------------------------------------------------------------------------
async def drive_aiohttp(url: str, connections: int, seconds: float, ready: Any, go: Any) -> tuple[int, int]:
    import aiohttp

    bodies = request_bodies(UIDS)
    counters = [0, 0]
    loop = asyncio.get_running_loop()

    async def worker(offset: int, stop_at: float) -> None:
        index = offset
        while loop.time() < stop_at:
            index = (index + 1) % len(bodies)
            path, body = bodies[index]
            async with session.post(url + path, data=body, headers={"Content-Type": "application/json"}) as response:
                await response.read()
                counters[0 if response.status == 200 else 1] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        ready.put(os.getpid())
        await loop.run_in_executor(None, go.wait)
        stop_at = loop.time() + seconds
        await asyncio.gather(*(worker(n * 37, stop_at) for n in range(connections)))
    return counters[0], counters[1]


def generator_main(
    kind: str, url: str, connections: int, seconds: float, cpu: int, ready: Any, go: Any, results: Any
) -> None:
    """Entry of a load generator process: pin, get ready, wait for `go`, drive, report."""
    os.sched_setaffinity(0, {cpu})
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    drive = DRIVERS[kind]
    results.put(run(drive(url, connections, seconds, ready, go)))


# wire generator ----------------------------------------------------------------------------------
async def drive_wire(url: str, connections: int, seconds: float, ready: Any, go: Any) -> tuple[int, int]:
    from later_read.clients.wire import HttpPool, Origin

    origins = {path: Origin.parse(url + path) for path in ("/v1/ab/assign", "/v1/rec/get")}
    bodies = [(origins[path], body) for path, body in request_bodies(UIDS)]
    counters = [0, 0]
    loop = asyncio.get_running_loop()

    async def worker(offset: int, stop_at: float) -> None:
        index = offset
        while loop.time() < stop_at:
            index = (index + 1) % len(bodies)
            status, _ = await pool.post(*bodies[index])
            counters[0 if status == 200 else 1] += 1

    async with HttpPool(limit=connections, timeout_seconds=5.0) as pool:
        ready.put(os.getpid())
        await loop.run_in_executor(None, go.wait)
        stop_at = loop.time() + seconds
        await asyncio.gather(*(worker(n * 37, stop_at) for n in range(connections)))
    return counters[0], counters[1]


DRIVERS = {"raw": drive_raw, "aiohttp": drive_aiohttp, "wire": drive_wire}


# Orchestration -----------------------------------------------------------------------------------
def one_run(sim: SimulatorProcess, args: argparse.Namespace, kind: str) -> RunResult:
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    per_process = max(1, args.connections // args.generators)
    processes = [
        context.Process(
            target=generator_main, args=(kind, sim.url, per_process, args.seconds, args.load_cpu, ready, go, results)
        )
        for _ in range(args.generators)
    ]
    for process in processes:
        process.start()
    for _ in processes:  # imports and connection setup happen before the measured window
        ready.get(timeout=60)
    sim.reset()
    sim_before, load_before = cpu_seconds(sim.pid), [cpu_seconds(p.pid) for p in processes]
    started = time.monotonic()
    go.set()
    counts = [results.get(timeout=args.seconds + 60) for _ in processes]
    elapsed = time.monotonic() - started
    sim_cpu = (cpu_seconds(sim.pid) - sim_before) / elapsed
    load_cpu = sum(cpu_seconds(p.pid) - before for p, before in zip(processes, load_before, strict=False)) / elapsed
    for process in processes:
        process.join()
    return RunResult(sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed, sim_cpu, load_cpu)


def verdict(result: RunResult) -> str:
    if result.sim_cpu >= 0.9:
        return "simulator CPU-bound: this is its limit on one core"
    if result.load_cpu >= 0.9:
        return "load generator CPU-bound: the simulator has headroom (it is not the bottleneck)"
    return "neither side saturated: latency x connections bounds the rate"


def bench(args: argparse.Namespace, kind: str, latency_ms: float) -> None:
    service = ServiceKnobs(latency_ms=latency_ms)
    knobs = SimulatorKnobs(ab=service, rec=service, material=service)
    with SimulatorProcess(knobs, cpu=args.sim_cpu) as sim:
        runs = [one_run(sim, args, kind) for _ in range(args.repeats)]
        stats = sim.stats()
    for n, run in enumerate(runs, 1):
        print(
            f"  run {n}: {run.rps:8.0f} req/s  errors {run.errors}  simulator CPU {run.sim_cpu:4.0%}  "
            f"generator CPU {run.load_cpu:4.0%}"
        )
    median = sorted(runs, key=lambda run: run.rps)[len(runs) // 2]
    peak = max(stats[name]["peak_qps"] for name in ("ab", "rec"))
    print(
        f"{kind:8s} latency {latency_ms:g} ms, {args.connections} connections: median {median.rps:.0f} req/s, "
        f"simulator CPU {median.sim_cpu:.0%} of one core, "
        f"{median.sim_cpu / median.rps * 1e6:.0f} us CPU/request; client {median.load_cpu / median.rps * 1e6:.0f} us "
        f"CPU/request; last run peak_qps per endpoint {peak}"
    )
    print(f"         -> {verdict(median)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", choices=("raw", "aiohttp", "wire", "both"), default="both")
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 5.0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sim-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(
        f"simulator on CPU {args.sim_cpu}, load on CPU {args.load_cpu}, {os.cpu_count()} CPUs; "
        f"{args.seconds:g} s x {args.repeats} runs each"
    )
    kinds = ("raw", "aiohttp") if args.client == "both" else (args.client,)
    for kind in kinds:
        for latency_ms in args.latency_ms:
            bench(args, kind, latency_ms)


if __name__ == "__main__":
    main()
