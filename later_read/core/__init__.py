"""The domain, without I/O: the run's scope, the cached value, the push message, the run's counts, the
schedule, the clock, the uid rule, the day ledger's shape and the task user. Nothing here imports redis,
pymysql, confluent_kafka or anyio; every other package builds on it."""
