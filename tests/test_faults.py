"""The fault suite's short mode: each fault of sandbox/later_read_sandbox/faults/catalogue.py once, at a random
point, against its own real servers (it kills and restarts them, so never the session's shared ones).

The seed is printed and put in every failure message with the command that replays the run; set
LATER_READ_FAULT_SEED to rerun the same plan. The full mode is `python benchmarks/faults.py --runs N --seed S`.
The schedule's four faults (sandbox/later_read_sandbox/faults/schedule.py) take about 7 s (late start), 11 s
(skipped hour), 26 s (catch-up killed) and 60-70 s (overrun, slowed to last past its window) each at
2,500 users; less here.
"""

from __future__ import annotations

import os
import random

import pytest

from later_read_sandbox.faults.catalogue import FAULTS, run_fault
from later_read_sandbox.faults.lab import Lab
from later_read_sandbox.faults.runner import SHORT_USERS, replay_command

SEED = int(os.environ.get("LATER_READ_FAULT_SEED") or random.SystemRandom().randrange(2**31))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    print(f"\nfault suite seed: LATER_READ_FAULT_SEED={SEED}")
    with Lab(tmp_path_factory.mktemp("faults")) as started:
        yield started


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_ends_with_one_message_per_user_and_clean_exits(lab, name):
    seed = random.Random(f"{SEED}:{name}").randrange(2**31)
    outcome = run_fault(lab, FAULTS[name], seed, SHORT_USERS)
    v = outcome.verdict
    print(f"fault={name} seed={seed} codes={outcome.codes} stop_s={outcome.stop_seconds}")
    assert outcome.ok, (
        f"fault {name} (seed {seed}): lost={v.lost} duplicates={v.duplicates} "
        f"unexpected={v.unexpected} exit 5 seen by the caller={outcome.exit5_seen} "
        f"codes={outcome.codes} problems={v.problems}; replay: "
        f"{replay_command(outcome, SHORT_USERS)}"
    )
