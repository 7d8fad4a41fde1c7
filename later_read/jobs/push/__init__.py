"""The hourly push: `job` (the command), `select` (sort the hour's users by their cached value),
`material` (one card fetch per distinct book), `live` (the --on-miss live fallback), `message` (the
Kafka message and its msg_id) and `delivery` (confirmed delivery and sent markers, or the dry run)."""

from later_read.jobs.push.job import run_push

__all__ = ["run_push"]
