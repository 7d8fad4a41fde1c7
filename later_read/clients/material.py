"""Material service: `POST /v1/material/get` -> the book card; 404 = not found."""

from __future__ import annotations

from typing import Any

from later_read.clients.http import ServiceCaller, malformed
from later_read.core.bounds import check_reply
from later_read.core.message import Material

PATH = "/v1/material/get"
_CARD = ("title", "content", "cover_url", "deeplink")


class MaterialClient:
    def __init__(self, caller: ServiceCaller) -> None:
        self.caller = caller

    async def get(self, uid: str, rec_id: str, rec_type: str, material_id: str) -> Material | None:
        body = {"uid": uid, "rec_id": rec_id, "rec_type": rec_type, "material_id": material_id}
        return await self.caller.post(body, lambda data: _parse(data, material_id))


def _parse(data: dict[str, Any] | None, material_id: str) -> Material | None:
    if data is None:
        return None
    card: list[Any] = [data.get(name) for name in _CARD]
    if not all(isinstance(v, str) for v in card):
        raise malformed("material", "reply lacks title/content/cover_url/deeplink")
    title, content, cover_url, deeplink = card
    replied = str(data.get("material_id") or material_id)
    check_reply("material", material_id=replied, title=title, content=content, cover_url=cover_url, deeplink=deeplink)
    return Material(replied, title, content, cover_url, deeplink)
