"""What the prewarm saves: the calls each run made against what the old real-time flow would have made.

The Go job this replaces called, at push time, A/B, recommend and the material service once per user of
the hour: three calls per user at the 23:00 peak. Every prewarm and push report carries, per service,
the calls the run made, its peak calls per second and `old_flow_calls` (one per user the run handled);
the push also gets `peak_calls_saved`: the old flow's calls for the hour's users minus the calls this
push made (its material fetches, plus A/B and recommend calls under `--on-miss live`).
"""

from __future__ import annotations

from typing import Any

OLD_FLOW_SERVICES = ("ab", "rec", "material")


def with_old_flow(services: dict[str, dict[str, Any]], users: int) -> dict[str, dict[str, Any]]:
    """Each service's figures (calls, peak_qps, ...) plus `old_flow_calls`; services the run did not
    call appear with zero calls, so the three are always there to compare."""
    out: dict[str, dict[str, Any]] = {}
    for name in OLD_FLOW_SERVICES:
        stats = dict(services.get(name) or {"calls": 0, "peak_qps": 0})
        stats["old_flow_calls"] = users
        out[name] = stats
    for name, stats in services.items():
        out.setdefault(name, stats)
    return out


def peak_calls_saved(services: dict[str, dict[str, Any]], users: int) -> int:
    """The old flow's calls for `users` (three per user) minus the calls this run made."""
    made = sum(int(services.get(name, {}).get("calls", 0)) for name in OLD_FLOW_SERVICES)
    return len(OLD_FLOW_SERVICES) * users - made
