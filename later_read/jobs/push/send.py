"""A hit's way to the sink: its card, its message, librdkafka (or the dry run's printer).

    route    the reader's batch of hits: a hit whose card is known is finished at once (no task switch
             while librdkafka takes it); one whose card is being fetched is parked with that fetch; the
             others go to the workers
    worker   takes hits from the stream: fetches the card (`MaterialCache`), finishes the hit, then the
             hits parked with the card

Nothing is sent once the hour's window has closed (each such user counted `expired`), nor once the run
stops taking users (`not_processed`: the rerun sends them). A failed card fetch is counted per reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import ObjectReceiveStream, ObjectSendStream

from later_read.core.counts import EXPIRED, NOT_PROCESSED, material_failure
from later_read.core.message import Material, PushMessage
from later_read.errors import ServiceError
from later_read.jobs.push.select import Hit

if TYPE_CHECKING:
    from later_read.jobs.push.hour import PushRun


async def route(run: PushRun, hits: list[Hit], send: ObjectSendStream[Hit] | None) -> None:
    """A batch's hits to the sink, their card's fetch or the workers; with `send` None (the expiry pass),
    every hit is counted expired."""
    for hit in hits:
        if _expired(run, hit) or send is None:
            continue
        known = run.materials.ready(hit.value)
        if known is None:
            if not run.materials.park(hit.value, hit):  # parked: finished with its card's answer
                await send.send(hit)
        elif (message := _message(run, hit, known.material, known.error, checked=True)) is not None:
            if not run.sink.offer(hit.user.uid, message):  # waits only while librdkafka's queue is full
                await run.sink.send(hit.user.uid, message)
            run.counts.settle()  # counted `sent` once Kafka confirms it, else a failure (hour's `_collect`)


async def worker(run: PushRun, receive: ObjectReceiveStream[Hit]) -> None:
    async with receive:
        async for hit in receive:
            if not _stopping(run, hit) and not _expired(run, hit):
                await _push_one(run, hit)


def _stopping(run: PushRun, hit: Hit) -> bool:
    """True, counting the user not processed, once the run is stopping: no new user is taken (the rerun
    sends them)."""
    if not run.shutdown.stopping:
        return False
    run.counts.note(NOT_PROCESSED, hit.user.uid)
    return True


def _expired(run: PushRun, hit: Hit) -> bool:
    """True, counting the user expired, once the hour's window has closed: nothing more is sent."""
    if not run.window.closed():
        return False
    run.counts.done(EXPIRED, hit.user.uid)
    return True


async def _push_one(run: PushRun, hit: Hit) -> None:
    """Card, message, sink: one user, then the users parked with the same card. A failed card fetch is
    counted per reason, not fatal."""
    try:
        material, error = await run.materials.get(hit.user.uid, hit.value), None
    except ServiceError as exc:
        material, error = None, exc
    for user_hit in (hit, *run.materials.parked(hit.value)):
        if user_hit is not hit and _stopping(run, user_hit):
            continue
        if (message := _message(run, user_hit, material, error)) is not None:
            await run.sink.send(user_hit.user.uid, message)
            run.counts.settle()  # counted `sent` once Kafka confirms it, else a failure


def _message(
    run: PushRun, hit: Hit, material: Material | None, error: ServiceError | None, checked: bool = False
) -> bytes | None:
    """The user's message (encoded) for the sink, or None once the reason it has none is counted (card
    not found, card fetch failed, the window closed)."""
    if error is not None:
        run.counts.failed(material_failure(error.reason), hit.user.uid)
    elif material is None:
        run.counts.done("material_not_found")
    elif checked or not _expired(run, hit):  # `checked`: the caller has just checked the window
        assert run.scope.hour is not None  # a push run's scope has its hour (not .slot: this is per message)
        return PushMessage.build(
            hit.user,
            hit.value,
            material,
            date=run.scope.date,
            hour=run.scope.hour,
            clock=run.ctx.clock,
            expires=run.expires,
        ).encode()
    return None
