"""Knobs of the downstream simulator and their validation.

The same dictionaries travel over `POST /_sim/config`, `--config-json` and `SimulatorKnobs.to_dict()`, so
a partial update is validated here once, completely, before anything changes: a bad change leaves the
running simulator as it was and is answered with a 400 that names the knob.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SERVICES = ("ab", "rec", "material")
NO_REC_STYLES = ("empty", "404", "mixed")
INTEGER_KNOBS = ("capacity", "max_queue", "hostile_reply_bytes", "hostile_field_bytes")  # per service
TEXT_KNOBS = ("hostile_field", "hostile_text")
REPLY_FIELDS = {
    "ab": ("value", "trace_id"),
    "rec": ("rec_id", "rec_type", "material_id"),
    "material": ("material_id", "title", "content", "cover_url", "deeplink"),
}
MAX_HOSTILE_BYTES = 256 * 1024 * 1024  # one cached value of the simulator's own memory


class KnobError(ValueError):
    """A knob change names an unknown knob or gives a bad value (the message says which)."""


@dataclass
class ServiceKnobs:
    """Latency, capacity and fault rates of one simulated service (rates are per request, 0..1).

    `capacity`: requests served at once, the rest wait in a FIFO queue (0 = no limit);
    `max_queue`: a request finding that many already waiting is refused with a 429 (0 = unbounded).
    See simulator/capacity.py. `hostile_*` and `trickle_bytes_per_second`: the replies of a stable share
    of the uids made hostile (a huge field, a huge reply, a trickle); see simulator/hostile.py.
    """

    latency_ms: float = 0
    jitter_ms: float = 0
    error_5xx_rate: float = 0
    error_429_rate: float = 0
    timeout_rate: float = 0
    malformed_rate: float = 0
    capacity: int = 0
    max_queue: int = 0
    hostile_ratio: float = 0
    hostile_field: str = ""
    hostile_field_bytes: int = 0
    hostile_text: str = ""
    hostile_reply_bytes: int = 0
    trickle_bytes_per_second: float = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "service") -> ServiceKnobs:
        return cls().updated(data, where)

    def updated(self, changes: dict[str, Any], where: str = "service") -> ServiceKnobs:
        """A copy with `changes` applied; raises KnobError (nothing applied) on any bad entry."""
        values = asdict(self)
        for name, value in _mapping(changes, where).items():
            if name not in values:
                raise KnobError(f"unknown knob {where}.{name}; known: {', '.join(values)}")
            if name in INTEGER_KNOBS:
                values[name] = _integer(value, f"{where}.{name}", 0)
            elif name in TEXT_KNOBS:
                values[name] = _text(value, f"{where}.{name}")
            else:
                values[name] = _number(value, f"{where}.{name}", 0, None)
        knobs = ServiceKnobs(**values)
        knobs.validate(where)
        return knobs

    def validate(self, where: str = "service") -> None:
        for name in ("latency_ms", "jitter_ms"):
            _number(getattr(self, name), f"{where}.{name}", 0, None)
        for name in INTEGER_KNOBS:
            _integer(getattr(self, name), f"{where}.{name}", 0)
        for name in ("error_5xx_rate", "error_429_rate", "timeout_rate", "malformed_rate", "hostile_ratio"):
            _number(getattr(self, name), f"{where}.{name}", 0, 1)
        _number(self.trickle_bytes_per_second, f"{where}.trickle_bytes_per_second", 0, None)
        for name in ("hostile_reply_bytes", "hostile_field_bytes"):
            if getattr(self, name) > MAX_HOSTILE_BYTES:
                raise KnobError(f"{where}.{name} must be <= {MAX_HOSTILE_BYTES}, got {getattr(self, name)}")
        fields = REPLY_FIELDS.get(where)
        if self.hostile_field and fields is not None and self.hostile_field not in fields:
            raise KnobError(f"{where}.hostile_field must be one of {', '.join(fields)}, got {self.hostile_field!r}")
        if self.fault_rate() > 1 + 1e-9:
            raise KnobError(f"{where}: the four fault rates add up to {self.fault_rate():g}, more than 1")

    def fault_rate(self) -> float:
        return self.error_5xx_rate + self.error_429_rate + self.timeout_rate + self.malformed_rate


@dataclass
class SimulatorKnobs:
    """Every knob of the simulator; `to_dict()` is the `/_sim/config` JSON."""

    seed: int = 1
    timeout_hold_seconds: float = 30
    ab: ServiceKnobs = field(default_factory=ServiceKnobs)
    rec: ServiceKnobs = field(default_factory=ServiceKnobs)
    material: ServiceKnobs = field(default_factory=ServiceKnobs)
    in_experiment_ratio: float = 0.8
    no_rec_ratio: float = 0.1
    no_rec_style: str = "empty"
    not_found_ratio: float = 0.02
    materials: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatorKnobs:
        """Knobs from a full or partial dict; missing knobs keep their defaults."""
        return cls().updated(data)

    def updated(self, changes: dict[str, Any]) -> SimulatorKnobs:
        """A copy with a partial, possibly nested change applied; raises KnobError on any bad entry."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in _mapping(changes, "config").items():
            if name not in values:
                raise KnobError(f"unknown knob {name}; known: {', '.join(values)}")
            if name in SERVICES:
                values[name] = values[name].updated(value, name)
            else:
                values[name] = _scalar(name, value)
        knobs = SimulatorKnobs(**values)
        knobs.validate()
        return knobs

    def validate(self) -> None:
        for name in (
            "seed",
            "materials",
            "no_rec_style",
            "timeout_hold_seconds",
            "in_experiment_ratio",
            "no_rec_ratio",
            "not_found_ratio",
        ):
            _scalar(name, getattr(self, name))
        for name in SERVICES:
            getattr(self, name).validate(name)

    def service(self, name: str) -> ServiceKnobs:
        return getattr(self, name)


def _scalar(name: str, value: Any) -> Any:
    """Check one top-level knob's value and return it in its canonical type."""
    if name == "seed":
        return _integer(value, name, None)
    if name == "materials":
        return _integer(value, name, 1)
    if name == "no_rec_style":
        if value not in NO_REC_STYLES:
            raise KnobError(f"no_rec_style must be one of {', '.join(NO_REC_STYLES)}, got {value!r}")
        return value
    if name == "timeout_hold_seconds":
        return _number(value, name, 0, None)
    return _number(value, name, 0, 1)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KnobError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _number(value: Any, name: str, low: float | None, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KnobError(f"{name} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise KnobError(f"{name} must be {span}, got {value!r}")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise KnobError(f"{name} must be a string, got {value!r}")
    return value


def _integer(value: Any, name: str, low: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KnobError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise KnobError(f"{name} must be >= {low}, got {value!r}")
    return value
