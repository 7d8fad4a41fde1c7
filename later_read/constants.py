"""Every Redis key prefix and TTL the jobs use, each with the reason for its value.

Keys themselves are assembled only in `later_read.keys`; the per-user value prefix
(`rec:later_read:`) and its TTL come from the config because the seed fixed them and other
systems may read them.
"""

# Internal keys share one prefix so an operator can list them (`SCAN MATCH later_read:*`) and so a
# Redis ACL can grant the job exactly this namespace plus the value prefix.
INTERNAL_PREFIX = "later_read:"

# The prewarm's completion marker. Three days: the push of day D reads it all day D, and an
# on-call engineer looking at yesterday's run the next morning still finds it.
PREWARM_DONE_PREFIX = INTERNAL_PREFIX + "prewarm:done:"
PREWARM_DONE_TTL_SECONDS = 3 * 86400

# Per-hour readiness: every user of that push hour is prewarmed (written as each hour completes, so the
# push of hour H waits only for H). Same TTL as the day's marker, for the same reasons.
PREWARM_READY_PREFIX = INTERNAL_PREFIX + "prewarm:ready:"
PREWARM_READY_TTL_SECONDS = PREWARM_DONE_TTL_SECONDS

# "This user got today's push" markers. Two days: long enough to cover the whole push date in any
# timezone offset between the job host and the configured zone, short enough to expire on their own.
SENT_PREFIX = INTERNAL_PREFIX + "sent:"
SENT_TTL_SECONDS = 2 * 86400

# Where an hour's messages start in the topic: {"topic", "offsets": {"<partition>": int}, "at": epoch}, set
# (NX) by the first push run of that (date, hour). Three days, like the prewarm marker: on-call reads it
# back with `later-read sent` the morning after a complaint.
PUSH_START_PREFIX = INTERNAL_PREFIX + "push:start:"
PUSH_START_TTL_SECONDS = 3 * 86400

# Job locks (`later_read.lock`). Their TTL and how long a run waits for one are config ([lock]): short
# and refreshed, so a job killed with -9 frees the lock within a minute, and the next run takes it over.
LOCK_PREFIX = INTERNAL_PREFIX + "lock:"

# The day ledger: one entry per (date, push hour[, shard]) (later_read/ledger.py has its shape): the hour's
# state (running, done, partial, expired), its users per outcome, when it ran and how late. Catch-up, the
# lateness rule, `later-read day` and alerting read it. Its `clean` field says "every message a run of this
# hour produced was confirmed and marked": a run writes the entry unclean before it produces and clean only
# when it ends so; an entry that is absent or unclean while a start key exists = a run died or lost track
# of deliveries, and the next run first marks what the topic holds (jobs/push/recovery.py). Its own key (not
# a field of the start key) so the start stays write-once (SET NX). Three days, like the start record it is
# read with: a run judges the last 24 h and looks for the ledger's earliest entry over its whole life
# (LEDGER_DAYS dates), so a first deployment neither sends nor alerts on the hours before it.
PUSH_LEDGER_PREFIX = INTERNAL_PREFIX + "push:ledger:"
PUSH_LEDGER_TTL_SECONDS = PUSH_START_TTL_SECONDS
LEDGER_DAYS = PUSH_LEDGER_TTL_SECONDS // 86400 + 1  # dates whose entries can still exist, today included

# Scratch key used by `later-read check` to prove Redis accepts writes; deleted right after.
CHECK_SCRATCH_PREFIX = INTERNAL_PREFIX + "check:"
CHECK_SCRATCH_TTL_SECONDS = 60

# Outcomes stored in the per-user value. "rec" carries a recommendation; the other two tell the push
# that the prewarm looked at the user and decided there is nothing to send (quiet, not a miss).
OUTCOME_REC = "rec"
OUTCOME_NOT_IN_EXPERIMENT = "not_in_experiment"
OUTCOME_NO_RECOMMENDATION = "no_recommendation"
OUTCOMES = (OUTCOME_REC, OUTCOME_NOT_IN_EXPERIMENT, OUTCOME_NO_RECOMMENDATION)

# Fixed request fields of the downstream contracts.
AB_LAYER = "later_read"
AB_DEFAULT = "0"
REC_SCENE = "pre-warming-process"

# Stable words alert rules match on; docs/alerting.md lists them with what to run next.
ALERT_KEYWORD = "LATER_READ_ALERT"
