"""The nightly prewarm: `job` (the command), `fanout` (users -> A/B -> recommend), `writer` (batched SETs)."""

from later_read.jobs.prewarm.job import run_prewarm

__all__ = ["run_prewarm"]
