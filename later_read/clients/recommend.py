"""Recommend service: `POST /v1/rec/get` -> `{"rec_id","rec_type","material_id"}`; `{}` or 404 = none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from later_read.clients.http import ServiceCaller, malformed
from later_read.core.bounds import check_reply

PATH = "/v1/rec/get"
# Fixed request field of the recommend contract.
REC_SCENE = "pre-warming-process"
_FIELDS = ("rec_id", "rec_type", "material_id")


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The recommendation engine's answer for a user: the book it recommends."""

    rec_id: str
    rec_type: str
    material_id: str


class RecClient:
    def __init__(self, caller: ServiceCaller) -> None:
        self.caller = caller

    async def get(self, uid: str, project: str, trace_id: str) -> Recommendation | None:
        body = {"uid": uid, "project": project, "scene": REC_SCENE, "trace_id": trace_id}
        return await self.caller.post(body, _parse)


def _parse(data: dict[str, Any] | None) -> Recommendation | None:
    if not data:
        return None
    values = [data.get(name) for name in _FIELDS]
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) for v in values):
        raise malformed("rec", "reply lacks rec_id/rec_type/material_id")
    rec_id, rec_type, material_id = (str(v) for v in values)
    check_reply("rec", rec_id=rec_id, rec_type=rec_type, material_id=material_id)
    return Recommendation(rec_id, rec_type, material_id)
