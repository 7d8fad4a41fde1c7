"""What the simulated services answer, as a pure function of (knobs, request).

Every per-uid and per-material decision is a stable hash of (seed, purpose, key): the same seed gives the
same answers in every process and on every run (Python's `hash()` is salted per process, so it is not used),
and tests can compute the expected answer locally with `Oracle(knobs).expected(uid)`.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

from later_read.core.value import CachedValue
from later_read_sandbox.simulator.knobs import SimulatorKnobs

REC_TYPES = ("book", "serial", "audiobook")
_SCALE = float(2**64)


class Oracle:
    """Deterministic answers of the three services for one set of knobs."""

    def __init__(self, knobs: SimulatorKnobs) -> None:
        self.knobs = knobs
        self._prefix = f"{knobs.seed}\x1f".encode()

    def _digest(self, purpose: str, key: str) -> bytes:
        return blake2b(self._prefix + f"{purpose}\x1f{key}".encode(), digest_size=8).digest()

    def fraction(self, purpose: str, key: str) -> float:
        """A uniform number in [0, 1), stable for (seed, purpose, key)."""
        return int.from_bytes(self._digest(purpose, key), "big") / _SCALE

    def token(self, purpose: str, key: str) -> str:
        return self._digest(purpose, key).hex()

    # A/B -----------------------------------------------------------------------------------------
    def in_experiment(self, uid: str) -> bool:
        return self.fraction("ab", uid) < self.knobs.in_experiment_ratio

    def ab(self, uid: str, default: str) -> dict[str, str]:
        """In the experiment: a value unlike the default ("1", or "2" when the default is "1")."""
        if self.in_experiment(uid):
            value = "2" if default == "1" else "1"
        else:
            value = default
        return {"value": value, "trace_id": "tr-" + self.token("trace", uid)}

    # Recommend -----------------------------------------------------------------------------------
    def has_rec(self, uid: str) -> bool:
        return self.fraction("no_rec", uid) >= self.knobs.no_rec_ratio

    def no_rec_status(self, uid: str) -> int:
        """How "no recommendation" is answered for this uid: 200 with `{}` or 404."""
        style = self.knobs.no_rec_style
        if style == "mixed":
            return 404 if self.fraction("no_rec_style", uid) < 0.5 else 200
        return 404 if style == "404" else 200

    def rec(self, uid: str) -> dict[str, str] | None:
        if not self.has_rec(uid):
            return None
        index = int(self.fraction("material", uid) * self.knobs.materials)
        # A real engine's rec_id names the recommended item (strategy slot + book), not the user, so
        # everything about the recommendation is derived from the book: `materials` distinct cards.
        material_id = f"m-{index}"
        return {
            "rec_id": "rec-" + self.token("rec_id", material_id),
            "rec_type": REC_TYPES[int(self.fraction("rec_type", material_id) * len(REC_TYPES))],
            "material_id": material_id,
        }

    # Material ------------------------------------------------------------------------------------
    def material_exists(self, material_id: str) -> bool:
        """Only `m-<n>` with n < materials exists, minus a stable not_found_ratio share of those."""
        if not material_id.startswith("m-") or not material_id[2:].isdigit():
            return False
        if int(material_id[2:]) >= self.knobs.materials or material_id[2:] != str(int(material_id[2:])):
            return False
        return self.fraction("not_found", material_id) >= self.knobs.not_found_ratio

    def card(self, material_id: str) -> dict[str, str] | None:
        if not self.material_exists(material_id):
            return None
        number = material_id[2:]
        return {
            "material_id": material_id,
            "title": f"Book {number}",
            "content": f"Readers who finished your last book loved Book {number}. Start chapter one tonight.",
            "cover_url": f"https://img.example.com/covers/{material_id}.jpg",
            "deeplink": f"reader://book/{material_id}",
        }

    # Tests ---------------------------------------------------------------------------------------
    def expected(self, uid: str, default: str = "0") -> dict[str, Any]:
        """Everything the simulator deterministically answers for uid (faults aside)."""
        ab = self.ab(uid, default)
        rec = self.rec(uid)
        answer: dict[str, Any] = {
            "uid": uid,
            "in_experiment": self.in_experiment(uid),
            "ab_value": ab["value"],
            "trace_id": ab["trace_id"],
            "has_rec": rec is not None,
            "rec_id": None,
            "rec_type": None,
            "material_id": None,
            "material_found": None,
            "no_rec_status": None if rec is not None else self.no_rec_status(uid),
        }
        if rec is not None:
            answer.update(rec, material_found=self.material_exists(rec["material_id"]))
        return answer

    def expected_value(self, uid: str, date: str) -> CachedValue:
        """The value a prewarm of `date` must store for uid (the decision rule over `expected`)."""
        e = self.expected(uid)
        if not e["in_experiment"]:
            return CachedValue("not_in_experiment", date, e["trace_id"])
        if not e["has_rec"]:
            return CachedValue("no_recommendation", date, e["trace_id"])
        return CachedValue("rec", date, e["trace_id"], e["rec_id"], e["rec_type"], e["material_id"])
