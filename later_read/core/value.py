"""The per-user Redis value: what the prewarm decided for a user on a date.

Seed format `{"rec_id","rec_type","material_id","trace_id"}` plus `date` (the day it was computed
for, so yesterday's value is never pushed today) and `outcome` (so the push can tell "looked at, nothing
to send" from "never computed").

What a stored value (or its absence) stands for on a date is decided here, once (`judge`), for the
prewarm (done already?), the push (send, count, or miss), `show` and `rerun`:

    ABSENT    no value under the key                        a miss
    CORRUPT   does not parse, or a field over its bound     counted and alerted; recomputed by the prewarm
    STALE     parses, computed for another date             a miss (yesterday's value is never pushed)
    USABLE    parses, computed for the date                 its outcome: a recommendation is sent, the
                                                            other outcomes are quiet (nothing to send)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
import orjson

from later_read.core.bounds import MAX_VALUE_BYTES, SURELY_WITHIN, over
from later_read.errors import CorruptValue

# Outcomes stored in the per-user value. "rec" carries a recommendation; the other two tell the push
# that the prewarm looked at the user and decided there is nothing to send (quiet, not a miss).
OUTCOME_REC = "rec"
OUTCOME_NOT_IN_EXPERIMENT = "not_in_experiment"
OUTCOME_NO_RECOMMENDATION = "no_recommendation"
OUTCOMES = (OUTCOME_REC, OUTCOME_NOT_IN_EXPERIMENT, OUTCOME_NO_RECOMMENDATION)
# Each outcome in words, for people (`show`, `rerun`).
MEANING = {
    OUTCOME_REC: "a recommendation for the date: the push of the user's hour sends it once",
    OUTCOME_NOT_IN_EXPERIMENT: "the prewarm looked: not in the experiment, nothing to send (quiet)",
    OUTCOME_NO_RECOMMENDATION: "the prewarm looked: recommend had nothing, nothing to send (quiet)",
}

# A stored value's state for a date (`judge`).
ABSENT, CORRUPT, STALE, USABLE = "absent", "corrupt", "stale", "usable"

_REC_FIELDS = ("rec_id", "rec_type", "material_id")
_TRACE_IN, _REC_ID_IN, _TYPE_IN, _MATERIAL_IN = (SURELY_WITHIN[n] for n in ("trace_id", *_REC_FIELDS))


# A NamedTuple made from all its fields in C: what the class's own __new__ (a Python function) does, for
# the tuples the push makes per user (a value, its verdict, its Hit).
new_tuple = tuple.__new__


class CachedValue(NamedTuple):
    """Immutable; a NamedTuple because the push builds one per user (a frozen dataclass costs 3x)."""

    outcome: str
    date: str | None
    trace_id: str = ""
    rec_id: str = ""
    rec_type: str = ""
    material_id: str = ""

    @property
    def is_rec(self) -> bool:
        """A recommendation: the push sends it (the other outcomes have nothing to send)."""
        return self.outcome == OUTCOME_REC

    def usable_for(self, date: str) -> bool:
        """Computed for `date` (else stale: another day's value is never served)."""
        return self.date == date

    def to_dict(self) -> dict[str, str | None]:
        data = {"outcome": self.outcome, "date": self.date, "trace_id": self.trace_id}
        if self.is_rec:
            data.update(rec_id=self.rec_id, rec_type=self.rec_type, material_id=self.material_id)
        return data


class Verdict(NamedTuple):
    """What a stored value stands for on a date (`judge`)."""

    state: str  # ABSENT, CORRUPT, STALE or USABLE
    value: CachedValue | None = None  # the parsed value (STALE, USABLE)
    problem: str = ""  # what is wrong with it (CORRUPT)


def judge(raw: bytes | None, date: str) -> Verdict:
    """The stored value `raw` (None: absent) for `date`: absent, corrupt (why), stale or usable (the value)."""
    if raw is None:
        return Verdict(ABSENT)
    try:
        value = decode(raw)
    except CorruptValue as exc:
        return Verdict(CORRUPT, None, str(exc))
    return new_tuple(Verdict, (USABLE if value.usable_for(date) else STALE, value, ""))


def encode(value: CachedValue) -> bytes:
    return orjson.dumps(value.to_dict())


class _Stored(msgspec.Struct, forbid_unknown_fields=True):
    """A value as the prewarm writes it: its known fields only, each a string (`date` may be null)."""

    outcome: str = OUTCOME_REC  # the seed's Go job wrote no outcome
    date: str | None = None
    trace_id: str = ""
    rec_id: str = ""
    rec_type: str = ""
    material_id: str = ""


_decode_stored = msgspec.json.Decoder(_Stored).decode


def decode(raw: bytes | str) -> CachedValue:
    """Parse a stored value; anything unusable raises CorruptValue naming what is wrong. A value over
    MAX_VALUE_BYTES is refused before it is parsed; a field over its bound (core/bounds.py) too.

    What the prewarm writes (the known fields, strings, within their bounds) is read by msgspec into
    `_Stored`, in C (the push decodes one per user); anything else, and every corrupt value, by
    `_decode_any`: the one that decides what is accepted and what is wrong (a property test holds the two
    equal wherever the first accepts)."""
    if len(raw) > MAX_VALUE_BYTES:
        raise CorruptValue(f"{len(raw):,} bytes, over the {MAX_VALUE_BYTES:,}-byte bound of a value")
    try:
        v = _decode_stored(raw)
    except (msgspec.DecodeError, UnicodeEncodeError):  # ValidationError too; a str with a lone surrogate
        return _decode_any(raw)
    outcome, trace_id = v.outcome, v.trace_id
    if outcome == OUTCOME_REC:
        rec_id, rec_type, material_id = v.rec_id, v.rec_type, v.material_id
        if (
            rec_id
            and rec_type
            and material_id
            and len(trace_id) <= _TRACE_IN
            and len(rec_id) <= _REC_ID_IN
            and len(rec_type) <= _TYPE_IN
            and len(material_id) <= _MATERIAL_IN
        ):  # surely within their bounds whatever their characters (bounds.SURELY_WITHIN); else bytes counted
            return new_tuple(CachedValue, (outcome, v.date, trace_id, rec_id, rec_type, material_id))
    elif outcome in OUTCOMES and len(trace_id) <= _TRACE_IN:
        return new_tuple(CachedValue, (outcome, v.date, trace_id, "", "", ""))
    return _decode_any(raw)


def _decode_any(raw: bytes | str) -> CachedValue:
    """`decode` of any value within MAX_VALUE_BYTES: JSON parsed by orjson, each field checked (its bytes
    counted against its bound)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CorruptValue(f"not JSON: {_preview(raw)}") from None
    if not isinstance(data, dict):
        raise CorruptValue(f"not a JSON object: {_preview(raw)}")
    outcome = data.get("outcome", OUTCOME_REC)  # the seed's Go job wrote no outcome
    if outcome not in OUTCOMES:
        raise CorruptValue(f"unknown outcome {outcome!r}")
    date, trace_id = data.get("date"), data.get("trace_id", "")
    if not isinstance(date, (str, type(None))) or not isinstance(trace_id, str):
        raise CorruptValue(f"date/trace_id are not strings: {_preview(raw)}")
    if outcome != OUTCOME_REC:
        _bounded(("trace_id", trace_id))
        return new_tuple(CachedValue, (outcome, date, trace_id, "", "", ""))
    rec_id, rec_type, material_id = _rec_fields(data, raw)
    _bounded(("trace_id", trace_id), ("rec_id", rec_id), ("rec_type", rec_type), ("material_id", material_id))
    return new_tuple(CachedValue, (outcome, date, trace_id, rec_id, rec_type, material_id))


def _bounded(*fields: tuple[str, str]) -> None:
    """CorruptValue when a field is over its bound: the prewarm never writes one (core/bounds.py)."""
    for name, text in fields:
        problem = over(name, text)
        if problem is not None:
            raise CorruptValue(problem)


def _rec_fields(data: dict[str, Any], raw: bytes | str) -> tuple[str, str, str]:
    """rec_id, rec_type, material_id as strings (numbers are accepted and turned into strings)."""
    rec = [data.get(name) for name in _REC_FIELDS]
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) for v in rec):
        raise CorruptValue(f"missing or empty {'/'.join(_REC_FIELDS)}: {_preview(raw)}")
    return str(rec[0]), str(rec[1]), str(rec[2])


def _preview(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return repr(text[:80])
