"""Book cards for the push, each distinct (rec_id, rec_type, material_id) fetched once per run.

Thousands of users of an hour share a few hundred books: asking the material service once per user
would multiply its load by the users per book. The first user needing a card fetches it (at most
`push.concurrency` fetches in flight); users needing a card that is being fetched wait for that one
answer: the push parks them with the fetch (`park`) and the one that gets the answer finishes them
(`parked`). A failed fetch (after the client's retries) is remembered too, so a sick material service is
not asked again for the same card within the run; those users are counted failed and retried by the
next run (no sent marker).
"""

from __future__ import annotations

from typing import Any

import anyio

from later_read.clients.material import MaterialClient
from later_read.core.message import Material
from later_read.core.value import CachedValue
from later_read.errors import ServiceError

Key = tuple[str, str, str]


class _Entry:
    __slots__ = ("done", "material", "error", "abandoned", "answered", "parked")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.material: Material | None = None
        self.error: ServiceError | None = None
        self.abandoned = False  # the fetch was cancelled: no answer, a waiter fetches again
        self.answered = False  # done and not abandoned: the card (or its error) is known
        self.parked: list[Any] = []  # users left with the fetch in flight (`park`), taken by `parked`


class MaterialCache:
    def __init__(self, client: MaterialClient, concurrency: int, park_limit: int = 0) -> None:
        self.client = client
        self.limiter = anyio.CapacityLimiter(concurrency)
        self._entries: dict[Key, _Entry] = {}
        self.fetched = 0
        self.park_limit, self._parked = park_limit, 0  # at most park_limit items wait parked at once

    def ready(self, value: CachedValue) -> _Entry | None:
        """The finished fetch of the value's card, or None when it is not fetched yet (or in flight):
        lets the push handle the common case (a card already known) without a task switch."""
        entry = self._entries.get((value.rec_id, value.rec_type, value.material_id))
        return entry if entry is not None and entry.answered else None

    def park(self, value: CachedValue, item: Any) -> bool:
        """Leave `item` with the value's card while its fetch is in flight (True): whoever gets the answer
        takes it with `parked`, so users of a card being fetched wait with no task of their own. False
        when no fetch is in flight (the card is known, or nobody asked for it yet), or when `park_limit`
        items already wait (the caller then waits its turn: memory stays bounded)."""
        entry = self._entries.get((value.rec_id, value.rec_type, value.material_id))
        if entry is None or entry.answered or self._parked >= self.park_limit:
            return False
        entry.parked.append(item)
        self._parked += 1
        return True

    def parked(self, value: CachedValue) -> list[Any]:
        """The items left with the value's card until its answer (each handed out once)."""
        entry = self._entries.get((value.rec_id, value.rec_type, value.material_id))
        if entry is None or not entry.parked:
            return []
        items, entry.parked = entry.parked, []
        self._parked -= len(items)
        return items

    async def get(self, uid: str, value: CachedValue) -> Material | None:
        """The card for the user's recommendation; None when the service says it does not exist.

        Raises the fetch's ServiceError (for every user of that card); ServiceDown propagates.
        """
        key = (value.rec_id, value.rec_type, value.material_id)
        while True:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                await self._fetch(uid, key, entry)
            else:
                await entry.done.wait()
            if not entry.abandoned:
                break
        if entry.error is not None:
            raise entry.error
        return entry.material

    async def _fetch(self, uid: str, key: Key, entry: _Entry) -> None:
        try:
            async with self.limiter:
                self.fetched += 1
                entry.material = await self.client.get(uid, *key)
        except ServiceError as exc:
            entry.error = exc
        except BaseException:
            entry.abandoned = True  # cancelled or ServiceDown: not an answer, waiters must not hang
            del self._entries[key]
            self._parked -= len(entry.parked)  # the run stops: its parked users, like its queued ones, go
            entry.parked = []  # unsent, unmarked (the rerun sends them)
            raise
        finally:
            entry.answered = not entry.abandoned
            entry.done.set()
