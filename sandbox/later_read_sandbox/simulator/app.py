"""Routing and answers of the simulator, free of I/O: a request in, a `Reply` out.

The HTTP protocol (simulator/http.py) parses bytes and schedules the reply after `Reply.delay`; everything
that decides *what* is answered lives here, so it can be read in one place.

Faults are drawn per request from one `random.Random(seed)` (a retry can succeed), with a single draw
deciding among 5xx / 429 / timeout / malformed / none, so each rate is exactly its own share. The
deterministic part of the answer comes from `Oracle`.

Capacity (simulator/capacity.py): a reply that does work (200, 404, 5xx, malformed) goes through its
service's `Station` (K at once, FIFO queue); a drawn 429 or timeout does not (a rate limiter in front of
the service, a request lost on the way). A request refused by a full queue (`max_queue`) is answered 429
at once and counted as fault "shed".

Hostile replies (simulator/hostile.py) replace the normal 200 reply of a stable share of the uids (of the
material ids for material) and are counted as fault "hostile"; their body is a tuple of pieces.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import orjson

from later_read_sandbox.simulator.capacity import Occupancy, Station
from later_read_sandbox.simulator.hostile import HostileReplies
from later_read_sandbox.simulator.knobs import SERVICES, KnobError, ServiceKnobs, SimulatorKnobs
from later_read_sandbox.simulator.oracle import Oracle
from later_read_sandbox.simulator.stats import EndpointStats, SimulatorStats
from later_read_sandbox.simulator.timer import Clock

SERVICE_PATHS = {b"/v1/ab/assign": "ab", b"/v1/rec/get": "rec", b"/v1/material/get": "material"}
NO_REC_BODY = orjson.dumps({"error": "no recommendation"})
NOT_FOUND_BODY = orjson.dumps({"error": "material not found"})
TOO_MANY_BODY = b'{"error":"too many requests"}'


class Reply(NamedTuple):
    """What to answer and when; `stats` is told when the reply is written (for peak_qps); a reply with a
    `station` waits there for a free slot before its `delay` starts. `body` is bytes, or pieces written
    one after the other (a hostile reply's large parts); `trickle` > 0 writes it at that many bytes/s."""

    status: int
    body: bytes | tuple[bytes, ...]
    delay: float = 0.0
    stats: EndpointStats | None = None
    station: Station | None = None
    trickle: float = 0.0


def error(status: int, message: str) -> Reply:
    return Reply(status, orjson.dumps({"error": message}))


class BadRequest(Exception):
    """The client's request is unusable (bad JSON, missing field): answered 400."""


class SimulatorApp:
    """The simulator's state: knobs, oracle, fault RNG and counters."""

    def __init__(self, knobs: SimulatorKnobs, clock: Clock) -> None:
        knobs.validate()
        self.knobs = knobs
        self.oracle = Oracle(knobs)
        self.rng = random.Random(knobs.seed)
        self.stats = SimulatorStats(SERVICES)
        together = Occupancy()
        self.stations = {
            name: Station(clock, knobs.service(name).capacity, knobs.service(name).max_queue, together)
            for name in SERVICES
        }
        self._malformed_turn = dict.fromkeys(SERVICES, False)
        self.hostile = HostileReplies()
        self._answers: dict[str, Callable[[dict[str, Any]], tuple[int, bytes]]] = {
            "ab": self._ab,
            "rec": self._rec,
            "material": self._material,
        }
        self._control = {
            (b"GET", "stats"): self._stats,
            (b"GET", "calls"): self._calls,
            (b"POST", "reset"): self._reset,
            (b"GET", "config"): lambda query, body: self.knobs.to_dict(),
            (b"POST", "config"): self._configure,
            (b"GET", "health"): lambda query, body: {"ok": True},
        }

    def handle(self, method: bytes, target: bytes, body: bytes) -> Reply:
        path, _, query = target.partition(b"?")
        service = SERVICE_PATHS.get(path)
        if service is not None:
            if method != b"POST":
                return error(405, f"{path.decode()} takes POST")
            return self._service(service, body)
        if path.startswith(b"/_sim/"):
            return self._control_call(method, path[6:].decode("latin-1"), query, body)
        return error(404, f"no such path: {path.decode('latin-1')}")

    # Services ------------------------------------------------------------------------------------
    def _service(self, name: str, body: bytes) -> Reply:
        stats = self.stats.endpoints[name]
        try:
            request = _json_object(body)
            uid = _text(request, "uid")
            status, payload = self._answers[name](request)
        except BadRequest as exc:
            stats.decided(None, 400, "none")
            return Reply(400, orjson.dumps({"error": str(exc)}), 0.0, stats)
        knobs, station = self.knobs.service(name), self.stations[name]
        if station.full():
            stats.decided(uid, 429, "shed")
            return Reply(429, TOO_MANY_BODY, 0.0, stats)
        fault = self._draw_fault(knobs)
        if fault == "5xx":
            status, payload = self._server_error()
        elif fault == "429":
            status, payload = 429, TOO_MANY_BODY
        elif fault == "malformed":
            status, payload = 200, self._malformed(name, request)
        reply: bytes | tuple[bytes, ...] = payload
        if fault == "none" and status == 200 and self._hostile(name, knobs, request):
            fault, reply = "hostile", self.hostile.body(knobs, payload)
        stats.decided(uid, status, fault)
        if fault == "timeout":
            return Reply(status, payload, self.knobs.timeout_hold_seconds, stats)
        queued = station if station.capacity > 0 and fault != "429" else None  # no capacity: no queue
        trickle = knobs.trickle_bytes_per_second if fault == "hostile" else 0.0
        return Reply(status, reply, self._latency(knobs), stats, queued, trickle)

    def _hostile(self, name: str, knobs: ServiceKnobs, request: dict[str, Any]) -> bool:
        """Whether this request's reply is hostile: a stable share of the uids (material: of the ids)."""
        if knobs.hostile_ratio <= 0:
            return False
        key = request.get("material_id") if name == "material" else request["uid"]
        return self.oracle.fraction("hostile", str(key)) < knobs.hostile_ratio

    def _ab(self, request: dict[str, Any]) -> tuple[int, bytes]:
        default = request.get("default", "0")
        if not isinstance(default, str):
            raise BadRequest("default must be a string")
        return 200, orjson.dumps(self.oracle.ab(request["uid"], default))

    def _rec(self, request: dict[str, Any]) -> tuple[int, bytes]:
        rec = self.oracle.rec(request["uid"])
        if rec is not None:
            return 200, orjson.dumps(rec)
        if self.oracle.no_rec_status(request["uid"]) == 404:
            return 404, NO_REC_BODY
        return 200, b"{}"

    def _material(self, request: dict[str, Any]) -> tuple[int, bytes]:
        card = self.oracle.card(_text(request, "material_id"))
        return (200, orjson.dumps(card)) if card is not None else (404, NOT_FOUND_BODY)

    # Faults --------------------------------------------------------------------------------------
    def _draw_fault(self, knobs: ServiceKnobs) -> str:
        if knobs.fault_rate() <= 0:
            return "none"
        draw = self.rng.random()
        for fault, rate in (
            ("5xx", knobs.error_5xx_rate),
            ("429", knobs.error_429_rate),
            ("timeout", knobs.timeout_rate),
            ("malformed", knobs.malformed_rate),
        ):
            if draw < rate:
                return fault
            draw -= rate
        return "none"

    def _server_error(self) -> tuple[int, bytes]:
        if self.rng.random() < 0.5:
            return 500, b'{"error":"internal server error"}'
        return 503, b'{"error":"service unavailable"}'

    def _latency(self, knobs: ServiceKnobs) -> float:
        if knobs.jitter_ms > 0:
            return (knobs.latency_ms + self.rng.uniform(0, knobs.jitter_ms)) / 1000
        return knobs.latency_ms / 1000

    def _malformed(self, name: str, request: dict[str, Any]) -> bytes:
        """Alternately: JSON missing the fields a client needs, or that JSON cut in half (unparsable)."""
        uid = request["uid"]
        partial = {
            "ab": {"trace_id": "tr-" + self.oracle.token("trace", uid)},
            "rec": {"rec_id": "rec-" + self.oracle.token("rec_id", uid)},
            "material": {"material_id": request.get("material_id")},
        }[name]
        body = orjson.dumps(partial)
        self._malformed_turn[name] = not self._malformed_turn[name]
        return body[: len(body) // 2] if self._malformed_turn[name] else body

    # Control -------------------------------------------------------------------------------------
    def _control_call(self, method: bytes, name: str, query: bytes, body: bytes) -> Reply:
        handler = self._control.get((method, name))
        if handler is None:
            if any(key[1] == name for key in self._control):
                return error(405, f"/_sim/{name} does not take {method.decode('latin-1')}")
            return error(404, f"no such control endpoint: /_sim/{name}")
        try:
            return Reply(200, orjson.dumps(handler(query, body)))
        except (BadRequest, KnobError) as exc:
            return error(400, str(exc))

    def _calls(self, query: bytes, body: bytes) -> dict[str, int]:
        endpoint = parse_qs(query.decode("latin-1")).get("endpoint", [""])[0]
        if endpoint not in self.stats.endpoints:
            raise BadRequest(f"endpoint must be one of {', '.join(SERVICES)}, got {endpoint!r}")
        return self.stats.endpoints[endpoint].per_uid

    def _stats(self, query: bytes, body: bytes) -> dict[str, Any]:
        """The counters, plus each service's capacity state (in service, queued, most queued)."""
        stats = self.stats.to_dict()
        for name, station in self.stations.items():
            stats[name].update(station.snapshot())
        return stats

    def _reset(self, query: bytes, body: bytes) -> dict[str, bool]:
        """Zero the counters and restart the fault sequence, so a test's faults are reproducible."""
        self.stats = SimulatorStats(SERVICES)
        for station in self.stations.values():
            station.reset_peaks()
        self.rng = random.Random(self.knobs.seed)
        self._malformed_turn = dict.fromkeys(SERVICES, False)
        return {"ok": True}

    def _configure(self, query: bytes, body: bytes) -> dict[str, Any]:
        knobs = self.knobs.updated(_json_object(body))
        if knobs.seed != self.knobs.seed:
            self.rng = random.Random(knobs.seed)
        self.knobs, self.oracle = knobs, Oracle(knobs)
        for name, station in self.stations.items():
            station.resize(knobs.service(name).capacity, knobs.service(name).max_queue)
        return knobs.to_dict()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def _text(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} must be a non-empty string")
    return value
