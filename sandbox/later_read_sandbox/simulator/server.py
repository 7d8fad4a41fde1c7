"""The simulator's server: `serve()` (in the current event loop), `RunningSimulator`, the click command
(`later-read sandbox simulator`, `python -m later_read_sandbox.simulator`)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
from typing import Any

import click
import orjson

from later_read_sandbox.simulator.app import SimulatorApp
from later_read_sandbox.simulator.http import HttpConnection, ResponseHeads
from later_read_sandbox.simulator.knobs import KnobError, SimulatorKnobs
from later_read_sandbox.simulator.timer import Clock, precise_clock


class RunningSimulator:
    """A simulator serving in the current event loop; `async with` or `await close()` stops it."""

    def __init__(self, server: asyncio.Server, app: SimulatorApp, connections: set, clock: Clock) -> None:
        self.server = server
        self.app = app
        self._connections = connections
        self._clock = clock
        host, port = server.sockets[0].getsockname()[:2]
        self.port: int = port
        self.url = f"http://{host}:{port}"

    @property
    def knobs(self) -> SimulatorKnobs:
        return self.app.knobs

    async def close(self) -> None:
        self.server.close()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        await self.server.wait_closed()
        self._clock.close()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


async def serve(knobs: SimulatorKnobs, host: str = "127.0.0.1", port: int = 0) -> RunningSimulator:
    """Start serving in the running loop and return at once; the server lives until closed."""
    _require_loopback(host)
    loop = asyncio.get_running_loop()
    clock = precise_clock(loop)
    app = SimulatorApp(knobs, clock)
    heads = ResponseHeads()
    connections: set = set()
    server = await loop.create_server(lambda: HttpConnection(app, heads, connections, clock), host, port, backlog=1024)
    return RunningSimulator(server, app, connections, clock)


def _require_loopback(host: str) -> None:
    """The simulator fakes company services with no auth: it must never listen beyond this machine."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the simulator binds loopback addresses only, not {host!r}")


async def _serve_until_signalled(knobs: SimulatorKnobs, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with await serve(knobs, port=port) as simulator:
        click.echo(f"simulator listening on {simulator.url}")
        await stop.wait()


def run_forever(knobs: SimulatorKnobs, port: int) -> None:
    """Serve on uvloop when it is installed (several times the request rate of the default loop)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_until_signalled(knobs, port))
    else:
        uvloop.run(_serve_until_signalled(knobs, port))


def knobs_from_options(config_json: str | None, flags: dict[str, Any]) -> SimulatorKnobs:
    """--config-json first, then the explicit flags on top of it."""
    try:
        changes = orjson.loads(config_json) if config_json else {}
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--config-json") from None
    try:
        knobs = SimulatorKnobs.from_dict(changes)
        overrides: dict[str, Any] = {}
        for name, value in flags.items():
            if value is None:
                continue
            service, _, knob = name.partition("_")
            if service in ("ab", "rec", "material"):
                overrides.setdefault(service, {})[knob] = value
            else:
                overrides[name] = value
        return knobs.updated(overrides)
    except KnobError as exc:
        raise click.BadParameter(str(exc), param_hint="--config-json / knob options") from None


@click.command(
    "simulator",
    epilog="""\b
Example:
  later-read sandbox simulator --port 8900 --seed 1 --ab-latency-ms 5 \\
      --rec-latency-ms 20 --material-latency-ms 10 \\
      --config-json '{"ab": {"error_5xx_rate": 0.01}, "no_rec_style": "mixed"}'
""",
)
@click.option("--port", type=int, default=8900, show_default=True, help="Port on 127.0.0.1; 0 picks a free one.")
@click.option("--seed", type=int, default=None, help="Seed of every deterministic answer and fault draw (default 1).")
@click.option("--ab-latency-ms", "ab_latency_ms", type=float, default=None, help="Fixed A/B latency.")
@click.option("--rec-latency-ms", "rec_latency_ms", type=float, default=None, help="Fixed recommend latency.")
@click.option("--material-latency-ms", "material_latency_ms", type=float, default=None, help="Fixed material latency.")
@click.option(
    "--config-json",
    default=None,
    help='Any knobs as JSON, same shape as GET /_sim/config, e.g. \'{"rec": {"timeout_rate": 0.1}}\'.',
)
@click.option("--cpu", type=int, default=None, help="Pin the simulator to this CPU (benchmarks).")
def simulator_command(
    port: int,
    seed: int | None,
    ab_latency_ms: float | None,
    rec_latency_ms: float | None,
    material_latency_ms: float | None,
    config_json: str | None,
    cpu: int | None,
) -> None:
    """Serve fake A/B, recommend and material services on 127.0.0.1 until SIGINT/SIGTERM.

    Answers are deterministic per uid for a seed; faults (5xx, 429, timeouts, malformed bodies) and
    latency are drawn per request from the knobs. Knobs can be changed while it runs with
    POST /_sim/config; counters are at GET /_sim/stats and are zeroed by POST /_sim/reset.
    Prints one line, "simulator listening on http://127.0.0.1:PORT", once it accepts connections.
    """
    knobs = knobs_from_options(
        config_json,
        {
            "seed": seed,
            "ab_latency_ms": ab_latency_ms,
            "rec_latency_ms": rec_latency_ms,
            "material_latency_ms": material_latency_ms,
        },
    )
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    run_forever(knobs, port)
