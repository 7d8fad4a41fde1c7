"""The faults and the run that wraps each: prewarm, push, the fault at a random point, reruns, checks.

One run (`run_fault`): a fresh day; the prewarm, then the push, each as its own process. In the faulted
phase the fault is injected at a point drawn from the run's seed (a fraction of the work done, read
from Redis or from the topic's end offsets); the faulty dependency is healed; then the job is rerun at
once, as a person or a Kubernetes retry would, until it exits 0 (at most MAX_RERUNS times). The
schedule's faults (phase "schedule", schedule.py) drive scheduled pushes over three hours instead. The
invariants (checks.py) are then read from the servers. A run replays from its seed:
`python benchmarks/faults.py --fault NAME --run-seed SEED`.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from later_read.core.scope import RunScope
from later_read.store.keys import Keys
from later_read_sandbox.faults import schedule
from later_read_sandbox.faults.checks import Verdict, check_day, check_job, pushable_users, unmarked_deliveries
from later_read_sandbox.faults.lab import DATE, HOUR, KNOBS, Day, Job, Lab
from later_read_sandbox.simulator import SimulatorKnobs

MAX_RERUNS = 4
LOCK_WAIT_SECONDS = 75  # a lock left by a dead run expires within its 60 s TTL


@dataclass(frozen=True)
class Fault:
    name: str
    phase: str  # "prewarm", "push", "both" or "schedule" (schedule.py)
    inject: Callable[..., None]  # (lab, day, job or None, rng); a schedule scenario's: (lab, day, clock, rng, outcome)
    heal: Callable[[Lab], None] = lambda lab: None


@dataclass
class Outcome:
    fault: str
    seed: int
    verdict: Verdict
    codes: list[int] = field(default_factory=list)  # the faulted run's, then each rerun's
    stop_seconds: float | None = None  # from the fault to the faulted job's exit
    exit5_seen: bool = False
    gap: int = 0  # users with a message but no sent marker right after the fault: duplicates without recovery
    detail: str = ""  # what the seed drew, in words (the schedule's faults)

    @property
    def ok(self) -> bool:
        v = self.verdict
        return not (v.lost or v.duplicates or v.unexpected or v.after_expiry or v.problems or self.exit5_seen)


# Trigger points -------------------------------------------------------------------------------------
def _prewarm_progress(lab: Lab, day: Day, job: Job, rng: random.Random) -> bool:
    target = int(day.users * rng.uniform(0.1, 0.9))
    return lab.wait_for(lambda: lab.redis_keys() >= target, job)


def _push_progress(lab: Lab, day: Day, job: Job, rng: random.Random, low=0.05, high=0.9) -> bool:
    target = max(1, int(_pushable(day) * rng.uniform(low, high)))
    return lab.wait_for(lambda: lab.messages(day) >= target, job)


def _pushable(day: Day) -> int:
    return len(pushable_users(day))


# Faults ---------------------------------------------------------------------------------------------
def _signal_at(progress, signum: int, **bounds):
    def inject(lab: Lab, day: Day, job: Job, rng: random.Random) -> None:
        if progress(lab, day, job, rng, **bounds):
            job.signal(signum)

    return inject


def _kill_before_first(lab: Lab, day: Day, job: Job, rng: random.Random) -> None:
    """After the run recorded its start offsets (it holds the lock, recovery done), before any message."""
    key = Keys.push_start(RunScope(DATE, HOUR))
    if lab.wait_for(lambda: bool(lab.redis_client().exists(key)), job):
        time.sleep(rng.uniform(0, 0.03))
        job.signal(signal.SIGKILL)


def _kill_after_last_ack(lab: Lab, day: Day, job: Job, rng: random.Random) -> None:
    total = _pushable(day)
    if lab.wait_for(lambda: lab.messages(day) >= total, job):
        time.sleep(rng.uniform(0, 0.01))
        job.signal(signal.SIGKILL)


def _restart(server_of: Callable[[Lab], Any], progress, down=(0.2, 2.0)):
    def inject(lab: Lab, day: Day, job: Job, rng: random.Random) -> None:
        if progress(lab, day, job, rng):
            server = server_of(lab)
            job.faulted_at = time.monotonic()
            server.stop_process(graceful=server is lab.mariadb)
            time.sleep(rng.uniform(*down))
            server.restart()

    return inject


def _services(change: dict, progress=None):
    def inject(lab: Lab, day: Day, job: Job | None, rng: random.Random) -> None:
        if job is None or progress(lab, day, job, rng):
            if job is not None:
                job.faulted_at = time.monotonic()
            lab.simulator.configure(**change)

    return inject


def _progress_of(job: Job):
    return _prewarm_progress if job.argv[3] == "prewarm" else _push_progress


def _refuse(lab: Lab, day: Day, job: Job, rng: random.Random) -> None:
    if _progress_of(job)(lab, day, job, rng):
        job.faulted_at = time.monotonic()
        lab.simulator.stop()  # the port now refuses connections


def _silence(lab: Lab, day: Day, job: Job, rng: random.Random) -> None:
    if _progress_of(job)(lab, day, job, rng):
        job.faulted_at = time.monotonic()
        lab.simulator.configure(**SILENT, timeout_hold_seconds=600)  # accepted, never answered


def _heal_services(lab: Lab) -> None:
    """The simulator up again, every knob back to the lab's (a partial update would keep fault rates)."""
    if lab.simulator.process is None:
        lab.simulator.start()
    lab.simulator.configure(**SimulatorKnobs.from_dict(KNOBS).to_dict())


FLAKY = {name: {"error_5xx_rate": 0.30, "timeout_rate": 0.05} for name in ("ab", "rec", "material")}
SILENT = {name: {"timeout_rate": 1.0} for name in ("ab", "rec", "material")}

FAULTS = {
    f.name: f
    for f in [
        Fault("prewarm_kill9", "prewarm", _signal_at(_prewarm_progress, signal.SIGKILL)),
        Fault("prewarm_sigterm", "prewarm", _signal_at(_prewarm_progress, signal.SIGTERM)),
        Fault("push_kill9_mid_produce", "push", _signal_at(_push_progress, signal.SIGKILL)),
        Fault("push_kill9_after_last_ack", "push", _kill_after_last_ack),
        Fault("push_kill9_before_first", "push", _kill_before_first),
        Fault("push_sigterm", "push", _signal_at(_push_progress, signal.SIGTERM)),
        Fault("kafka_restart_mid_push", "push", _restart(lambda lab: lab.kafka, _push_progress, (0.5, 3.0))),
        Fault("redis_restart_mid_prewarm", "prewarm", _restart(lambda lab: lab.redis, _prewarm_progress)),
        Fault("redis_restart_mid_push", "push", _restart(lambda lab: lab.redis, _push_progress)),
        Fault(
            "mariadb_restart_between_pages", "prewarm", _restart(lambda lab: lab.mariadb, _prewarm_progress, (0.0, 0.5))
        ),
        Fault("mariadb_restart_mid_push", "push", _restart(lambda lab: lab.mariadb, _push_progress, (0.0, 0.5))),
        Fault("services_5xx_and_timeouts", "both", _services(dict(FLAKY, timeout_hold_seconds=3)), _heal_services),
        Fault("services_refusing_prewarm", "prewarm", _refuse, _heal_services),
        Fault("services_refusing_push", "push", _refuse, _heal_services),
        Fault("services_silent_prewarm", "prewarm", _silence, _heal_services),
        Fault("services_silent_push", "push", _silence, _heal_services),
        *(Fault(name, "schedule", scenario, _heal_services) for name, scenario in schedule.SCENARIOS.items()),
    ]
}


# One run --------------------------------------------------------------------------------------------
def run_fault(lab: Lab, fault: Fault, seed: int, users: int) -> Outcome:
    """The whole run for one fault at one seed: phases, reruns, checks. The day is dropped after."""
    rng = random.Random(seed)
    if fault.phase == "schedule":
        day = lab.new_day(users, schedule.HOURS, **schedule.OVERRIDES.get(fault.name, {}))
    else:
        day = lab.new_day(users)
    outcome = Outcome(fault.name, seed, Verdict())
    try:
        if fault.phase == "both":  # the whole run, reruns included, under the fault
            fault.inject(lab, day, None, rng)
        if fault.phase == "schedule":
            schedule.run_scenario(lab, day, fault.inject, rng, outcome)
        for job_name in ("prewarm", "push") if fault.phase != "schedule" else ():
            _phase(lab, day, job_name, fault if fault.phase == job_name else None, rng, outcome)
        fault.heal(lab)
        outcome.verdict = check_day(lab, day)
        for job in day.jobs:
            outcome.verdict.problems += check_job(job)
    finally:
        fault.heal(lab)
        lab.drop_day(day)
    return outcome


def _phase(lab: Lab, day: Day, job_name: str, fault: Fault | None, rng: random.Random, outcome: Outcome) -> None:
    """The job once (with the fault injected when given), then reruns at once until it exits 0."""
    job = lab.start(day, job_name)
    if fault is not None:
        fault.inject(lab, day, job, rng)
    code = job.wait()
    if fault is not None:
        outcome.stop_seconds = job.stop_seconds
        fault.heal(lab)
        if job_name == "push":
            outcome.gap = unmarked_deliveries(lab, day)
    if fault is not None or code != 0:
        outcome.codes.append(code)
    for _ in range(MAX_RERUNS):
        if code == 0:
            return
        job = lab.start(day, job_name)  # at once, as a person or a Kubernetes retry would
        code = job.wait()
        outcome.codes.append(code)
        if code == 5:
            outcome.exit5_seen = True
            _wait_for_lock(lab, job_name)
    if code != 0:
        outcome.verdict.problems.append(f"{job_name} did not finish after {MAX_RERUNS} reruns (last exit {code})")


def _wait_for_lock(lab: Lab, job_name: str) -> None:
    """Exit 5 is already recorded against the run; wait the lock out so the invariants can be read."""
    key = Keys.lock(job_name, RunScope(DATE, HOUR if job_name == "push" else None))
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while time.monotonic() < deadline and lab.redis_client().exists(key):
        time.sleep(0.5)
