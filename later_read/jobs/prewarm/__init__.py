"""The nightly prewarm: `job` (the command), `fanout` (users -> A/B -> recommend), `writer` (batched SETs)."""
