"""Book cards for the push, each distinct (rec_id, rec_type, material_id) fetched once per run.

Thousands of users of an hour share a few hundred books: asking the material service once per user
would multiply its load by the users per book. The first user needing a card fetches it (at most
`push.concurrency` fetches in flight); users needing a card that is being fetched wait for that one
answer. A failed fetch (after the client's retries) is remembered too, so a sick material service is
not asked again for the same card within the run; those users are counted failed and retried by the
next run (no sent marker).
"""

from __future__ import annotations

import anyio

from later_read.core.value import CachedValue
from later_read.clients.material import Material, MaterialClient
from later_read.errors import ServiceError

Key = tuple[str, str, str]


class _Entry:
    __slots__ = ("done", "material", "error", "abandoned", "answered")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.material: Material | None = None
        self.error: ServiceError | None = None
        self.abandoned = False  # the fetch was cancelled: no answer, a waiter fetches again
        self.answered = False   # done and not abandoned: the card (or its error) is known


class MaterialCache:
    def __init__(self, client: MaterialClient, concurrency: int) -> None:
        self.client = client
        self.limiter = anyio.CapacityLimiter(concurrency)
        self._entries: dict[Key, _Entry] = {}
        self.fetched = 0

    def ready(self, value: CachedValue) -> _Entry | None:
        """The finished fetch of the value's card, or None when it is not fetched yet (or in flight):
        lets the push handle the common case (a card already known) without a task switch."""
        entry = self._entries.get((value.rec_id, value.rec_type, value.material_id))
        return entry if entry is not None and entry.answered else None

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
            raise
        finally:
            entry.answered = not entry.abandoned
            entry.done.set()
