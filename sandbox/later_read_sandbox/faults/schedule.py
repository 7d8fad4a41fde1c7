"""The schedule's faults: scheduled pushes (`push --now T`, as a CronJob runs them) over three hours of a day.

Every run seeds users at hours 8, 9 and 10 (and the few under a second task id at the next hour), prewarms
the day, and runs the 08:01 push (so the ledger tracks the day from hour 8); then one of:

    schedule_skipped_hour      hour 9's run never happens; the next run, at a drawn minute of hour 10,
                               catches 9 up inside its window, then pushes 10
    schedule_overrun           the hour-9 run (one card fetch at a time, the card service slowed to a drawn
                               latency) is still producing when hour 10 starts; the 10 run starts beside
                               it (its own lock; 9's lock held, so 9 is skipped or found done); with
                               catch_up_minutes = 61 hour 9's window closes at 10:01: in two runs of three
                               (drawn) the latency makes the run last past it, and the rest of 9 expires
    schedule_late_start        no run until a drawn time of hour 11 or 12: hour 9's (and at 12, 10's)
                               window has closed, it expires with nobody of it sent; the rest is caught up
    schedule_catch_up_killed   the hour-10 run catching 9 up is killed -9 at a drawn point of hour 9's
                               messages; rerun at once (it waits out the dead run's lock, recovers 9 from the
                               topic, finishes 9 and 10)

Time is virtual and consistent: the lab's clock reads `--now` for each run as a start time plus the real
time elapsed since (the runs' own clocks advance the same way), so a window closes mid-run as it would.
Every drawn value comes from the run's seed and is printed with it (`detail`), so a run replays.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from later_read_sandbox.faults.checks import first_hours, oracle
from later_read_sandbox.faults.lab import DATE, Day, Job, Lab

ZONE = ZoneInfo("Asia/Shanghai")  # the lab's configured timezone (the shipped default)
HOURS = (8, 9, 10)
MAX_RERUNS = 4


class LabClock:
    """Virtual time: a start instant plus the real time since; `jump` moves it (hours skipped)."""

    def __init__(self, start: dt.datetime) -> None:
        self.jump(start)

    def jump(self, to: dt.datetime) -> None:
        self.base, self.began = to, time.monotonic()

    def now(self) -> dt.datetime:
        return self.base + dt.timedelta(seconds=time.monotonic() - self.began)

    def arg(self) -> str:
        return self.now().isoformat(timespec="milliseconds")

    def monotonic_at(self, instant: dt.datetime) -> float:
        return self.began + (instant - self.base).total_seconds()


def at(hour: int, minute: int = 0, second: float = 0.0) -> dt.datetime:
    day = dt.datetime.strptime(DATE, "%Y%m%d")
    return day.replace(hour=hour, minute=minute, tzinfo=ZONE) + dt.timedelta(seconds=second)


def run_scenario(lab: Lab, day: Day, scenario: Callable, rng: random.Random, outcome) -> None:
    """The prelude (prewarm, the 08:01 run), then the scenario; each job's exit code in `outcome.codes`."""
    _until_ok(lab, day, lambda: lab.start(day, "prewarm"), outcome, "prewarm")
    clock = LabClock(at(8, 1))
    code = lab.scheduled(day, clock.arg()).wait()
    if code != 0:
        outcome.verdict.problems.append(f"the 08:01 push exited {code}")
    scenario(lab, day, clock, rng, outcome)


def _until_ok(lab: Lab, day: Day, start: Callable[[], Job], outcome, what: str, record: bool = False) -> int:
    """Start the job, then again at once while it fails (a person or a Kubernetes retry), as catalogue does;
    each exit code in `outcome.codes` (with `record`; else only the failed ones)."""
    code = start().wait()
    for attempt in range(MAX_RERUNS + 1):
        if record or code != 0:
            outcome.codes.append(code)
        if code == 0 or attempt == MAX_RERUNS:
            break
        code = start().wait()
    if code != 0:
        outcome.verdict.problems.append(f"{what} did not finish after {MAX_RERUNS} reruns (last exit {code})")
    return code


def skipped_hour(lab: Lab, day: Day, clock: LabClock, rng: random.Random, outcome) -> None:
    """No run at 09; the next at 10:MM:SS (drawn) catches 9 up, then pushes 10: exit 0."""
    clock.jump(at(10, rng.randrange(60), rng.uniform(0, 60)))
    outcome.detail = f"hour 9 skipped; the next run at {clock.now():%H:%M:%S}"
    outcome.codes.append(lab.scheduled(day, clock.arg()).wait())


def late_start(lab: Lab, day: Day, clock: LabClock, rng: random.Random, outcome) -> None:
    """No run until 11:MM or 12:MM (drawn): hour 9 (and at 12, 10) expired unsent, the rest caught up: 7."""
    clock.jump(at(rng.choice((11, 12)), rng.randrange(60), rng.uniform(0, 60)))
    outcome.detail = f"no run after 08:01 until {clock.now():%H:%M:%S}"
    outcome.codes.append(lab.scheduled(day, clock.arg()).wait())


def catch_up_killed(lab: Lab, day: Day, clock: LabClock, rng: random.Random, outcome) -> None:
    """The 10:MM run catching 9 up is killed -9 at a drawn fraction of hour 9's messages; reruns at once."""
    first, sim = first_hours(day), oracle()
    nine = sum(1 for uid, hour in first.items() if hour == 9 and _pushable(sim, uid))
    fraction = rng.uniform(0.05, 0.9)
    target = lab.messages(day) + max(1, int(nine * fraction))
    clock.jump(at(10, rng.randrange(50), rng.uniform(0, 60)))
    outcome.detail = f"catch-up run at {clock.now():%H:%M:%S} killed at {fraction:.0%} of hour 9's {nine} messages"
    job = lab.scheduled(day, clock.arg())
    if lab.wait_for(lambda: lab.messages(day) >= target, job):
        time.sleep(rng.uniform(0, 0.02))
        job.signal(signal.SIGKILL)
    outcome.codes.append(job.wait())
    outcome.stop_seconds = job.stop_seconds
    _until_ok(lab, day, lambda: lab.scheduled(day, clock.arg()), outcome, "the rerun after the kill", record=True)


def overrun(lab: Lab, day: Day, clock: LabClock, rng: random.Random, outcome) -> None:
    """Hour 9's run still producing at 10:00; the 10 run beside it; 9's window (61 min) may close mid-run."""
    cards = _cards(day, 9)
    lead, beside, closes = rng.uniform(2, 6), rng.uniform(0, 3), rng.random() < 2 / 3
    # Past lead + 60 s the window closes (10:01) while it still sends; else it finishes inside, overrunning.
    lasts = lead + (rng.uniform(66, 95) if closes else rng.uniform(8, 50))
    latency = int(lasts * 1000 / max(cards, 1))
    slow = lab.write_config(day, day.logs / "slow.toml", push={"concurrency": 1})
    lab.simulator.configure(material={"latency_ms": latency})
    clock.jump(at(10) - dt.timedelta(seconds=lead))
    outcome.detail = (
        f"hour 9's run from {clock.now():%H:%M:%S.%f}"[:-3] + f", {cards} cards at {latency} ms "
        f"(~{lasts:.0f} s: {'past' if closes else 'inside'} its window, which closes at 10:01), "
        f"the 10 run {beside:.1f} s after 10:00"
    )
    nine = lab.scheduled(day, clock.arg(), config=slow)
    nine.faulted_at = clock.monotonic_at(at(10, 1))  # time to stop: from the window's close to its exit
    while clock.now() < at(10) + dt.timedelta(seconds=beside) and nine.alive():
        time.sleep(0.02)
    if not nine.alive():
        outcome.verdict.problems.append("hour 9's run ended before hour 10 started: nothing overran")
    ten = lab.scheduled(day, clock.arg())
    outcome.codes += [nine.wait(), ten.wait()]
    outcome.stop_seconds = nine.stop_seconds if nine.ended_at and nine.ended_at > nine.faulted_at else None


def _pushable(sim, uid: str) -> bool:
    e = sim.expected(uid)
    return e["in_experiment"] and e["has_rec"] and e["material_found"]


def _cards(day: Day, hour: int) -> int:
    """Distinct cards the push of `hour` fetches: those of its own users with a recommendation."""
    sim = oracle()
    return len(
        {
            e["material_id"]
            for uid, first in first_hours(day).items()
            if first == hour and (e := sim.expected(uid))["in_experiment"] and e["has_rec"]
        }
    )


SCENARIOS = {
    "schedule_skipped_hour": skipped_hour,
    "schedule_overrun": overrun,
    "schedule_late_start": late_start,
    "schedule_catch_up_killed": catch_up_killed,
}
OVERRIDES = {"schedule_overrun": {"push": {"catch_up_minutes": 61}}}
