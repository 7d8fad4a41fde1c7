"""The prewarm's rule for one user, shared by `prewarm`, `push --on-miss live` and `rerun`.

A/B first; a value equal to the default means "not in the experiment". Otherwise ask recommend with
the A/B trace_id; an empty answer means "no recommendation". Both no-push outcomes are returned as
values too, so the push can tell them from a user the prewarm never covered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from later_read.connections import Services
from later_read.core import value
from later_read.core.value import CachedValue


async def decide(
    services: Services, uid: str, project: str, date: str, on_step: Callable[[str, Any], None] | None = None
) -> CachedValue:
    """The value to store for `uid` on `date`; ServiceError/ServiceDown propagate to the caller.

    `on_step("ab", Assignment)` / `on_step("rec", Recommendation | None)` is called as each answer
    arrives (`rerun` prints them); the jobs pass nothing.
    """
    assignment = await services.ab.assign(uid, project)
    if on_step is not None:
        on_step("ab", assignment)
    if not assignment.in_experiment:
        return CachedValue(value.OUTCOME_NOT_IN_EXPERIMENT, date, assignment.trace_id)
    rec = await services.rec.get(uid, project, assignment.trace_id)
    if on_step is not None:
        on_step("rec", rec)
    if rec is None:
        return CachedValue(value.OUTCOME_NO_RECOMMENDATION, date, assignment.trace_id)
    return CachedValue(value.OUTCOME_REC, date, assignment.trace_id, rec.rec_id, rec.rec_type, rec.material_id)
