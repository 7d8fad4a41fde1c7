"""A/B service: `POST /v1/ab/assign` -> `{"value", "trace_id"}`; value == default means not in the experiment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from later_read.clients.http import ServiceCaller, malformed
from later_read.core.bounds import check_reply

PATH = "/v1/ab/assign"
# Fixed request fields of the A/B contract.
AB_LAYER = "later_read"
AB_DEFAULT = "0"


@dataclass(frozen=True, slots=True)
class Assignment:
    """The A/B service's answer for a user: the experiment value (AB_DEFAULT: not in it) and its trace id."""

    value: str
    trace_id: str

    @property
    def in_experiment(self) -> bool:
        return self.value != AB_DEFAULT


class ABClient:
    def __init__(self, caller: ServiceCaller) -> None:
        self.caller = caller

    async def assign(self, uid: str, project: str) -> Assignment:
        body = {"uid": uid, "project": project, "layer": AB_LAYER, "default": AB_DEFAULT}
        return await self.caller.post(body, _parse)


def _parse(data: dict[str, Any] | None) -> Assignment:
    if data is None:
        raise malformed("ab", "404 from /v1/ab/assign")
    value, trace_id = data.get("value"), data.get("trace_id", "")
    if not isinstance(value, str) or not isinstance(trace_id, str):
        raise malformed("ab", "reply lacks string value/trace_id")
    check_reply("ab", value=value, trace_id=trace_id)
    return Assignment(value, trace_id)
