"""The downstream simulator: one HTTP server standing in for the A/B, recommend and material services.

Used by tests, the demo and benchmarks. It answers the contracts of ../shared/BRIEF.md deterministically
per uid for a seed, injects faults and latency per request from knobs that can be changed while it runs
(`POST /_sim/config`), and counts calls (`GET /_sim/stats`). Modules:

  knobs.py     ServiceKnobs, SimulatorKnobs (validation, dict round trip)
  oracle.py    Oracle: the deterministic answers (also used by tests via `expected`)
  app.py       SimulatorApp: routing, faults, control endpoints; no I/O
  capacity.py  Station: K requests served at once per service, the rest queued FIFO
  hostile.py   hostile replies (huge fields, huge replies, trickling bytes) for a share of uids
  stats.py     call counters
  http.py      the HTTP/1.1 protocol on asyncio (uvloop when installed)
  timer.py     the clocks that time replies (timerfd, spin)
  process.py   SimulatorProcess: the simulator in its own OS process, with a urllib control client
  server.py    serve(), the click command; `python -m later_read_sandbox.simulator` runs it (__main__.py)
"""

from later_read_sandbox.simulator.knobs import KnobError, ServiceKnobs, SimulatorKnobs
from later_read_sandbox.simulator.oracle import Oracle
from later_read_sandbox.simulator.process import SimulatorProcess
from later_read_sandbox.simulator.server import RunningSimulator, knobs_from_options, serve, simulator_command

__all__ = [
    "KnobError",
    "Oracle",
    "RunningSimulator",
    "ServiceKnobs",
    "SimulatorKnobs",
    "SimulatorProcess",
    "knobs_from_options",
    "serve",
    "simulator_command",
]
