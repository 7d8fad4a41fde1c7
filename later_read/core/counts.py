"""How a run names what happened to a user it did not finish: the failure reasons' spellings, in one place.

A failure is counted per reason in the summary's `failures` (the report, the metrics' `reason` label, the
ledger's `failed`) and its users are named per reason (the uids file next to `--report`). A service's
failure reason is the client's (`ServiceError.reason`: `timeout`, `http_503`, `oversize_reply`, ...)
spelled by where the call was made:

    prewarm, a user's A/B or recommend call       <service>.<reason>          ab.http_503, rec.malformed
    push --on-miss live, the same calls           live_<service>_<reason>     live_ab_timeout
    push, the user's card (material service)      material_<reason>           material_http_503

These names are what operators, alert rules and the documented reports read (docs/alerting.md,
tests/test_hostile_services.py, tests/test_prewarm.py), so they are kept as they are; every job spells
them through the functions below and the constants, never by hand.
"""

from __future__ import annotations

# A user the run did not get to, by why (counts, and the named uids per reason).
UNFINISHED = "unfinished"        # prewarm: a stop (down service, signal) came before the user was done
NOT_PROCESSED = "not_processed"  # push: taken after a stop; the rerun sends it
EXPIRED = "expired"              # push: its hour's window closed before it was sent
UNDELIVERED = "undelivered"      # push: produced, never confirmed by Kafka (no sent marker)


def service_failure(service: str, reason: str) -> str:
    """The prewarm's failure reason for a user whose `service` call ("ab", "rec") failed with `reason`."""
    return f"{service}.{reason}"


def live_failure(service: str, reason: str) -> str:
    """The push's failure reason for a missed user computed on the spot (`--on-miss live`) whose `service`
    call failed with `reason`."""
    return f"live_{service}_{reason}"


def material_failure(reason: str) -> str:
    """The push's failure reason for a user whose card fetch failed with `reason`."""
    return f"material_{reason}"


def undelivered(reason: str) -> str:
    """The name under which the push lists a user whose message Kafka reported undelivered for `reason`."""
    return f"{UNDELIVERED}_{reason}"
