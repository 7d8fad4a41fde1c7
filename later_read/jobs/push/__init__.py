"""The hourly push: `job` (the command), `day_run` (the hours a run handles: expire, catch up, its own),
`hour` (one hour: recovery, the wait for the prewarm, the pipeline, the ledger entry), `recovery` (a dead
run's deliveries marked from the topic), `wait` (the hour's prewarm marker), `select` (sort the hour's
users by their cached value), `material` (one card fetch per distinct book), `live` (the --on-miss live
fallback), `message` (the Kafka message, its msg_id and expires_at) and `delivery` (confirmed delivery and
sent markers, or the dry run)."""
