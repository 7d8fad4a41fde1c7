"""`later-read rerun UID`: the prewarm and/or push path for one user, printing every step as it happens.

For the on-call engineer who got a miss alert or a user's complaint: instead of rerunning a whole job,
walk one user through the same code the jobs use and see where it stops.

    task rows   StarRocks rows of the date under the configured task ids (UserQuery with uids=[UID])
    prewarm     jobs.decide.decide (A/B value and trace_id, then the recommendation), value written
                with Store.put_values and its TTL read back
    recovery    an unfinished push run of the user's hours: its deliveries marked from the topic first
                (jobs/push/recovery.py, the push's own path); the message hour's start is recorded
    push        sent marker (stop unless --force), the value (from the prewarm step, else Redis),
                the material, the message (core/message.py PushMessage.build), produced to Kafka keyed by uid,
                the delivery's partition/offset, then the sent marker

A user without task rows for the date stops at the first step: the jobs would never pick them up, and
the message needs the row's project and task id. `--dry-run` prints what would be written and sent and
writes nothing (no value, no message, no marker). `--hour` only sets the message's push_hour (default:
the user's earliest push_hour, the hour whose push would have sent it). A push step for an hour whose
window has closed (later_read/core/schedule.py, by `--now` or the wall clock) is refused with exit 2 before
anything is written, unless `--allow-late`; the message's `created_at` comes from that clock.

The push step (unless --dry-run) holds that hour's push lock, as the push does, waiting `--lock-wait`
seconds (default [lock] wait_seconds) for a running push of the hour to finish; its start record, ledger
entry and sent marker are fenced by it (lock.py): a lost lock stops the step (exit 8).

Exit codes: 0 done, or stopped for a reason that is no failure (already pushed today, nothing to send);
1 the user could not be completed (no task rows, a service failed, no usable value with --push-only,
material not found, delivery not confirmed); 2 bad input; 3 Redis/StarRocks/Kafka unreachable; 5 the
hour's push lock stayed held for the whole wait.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import confluent_kafka
from anyio.abc import TaskGroup

from later_read import runtime
from later_read.clients.kafka import OVERSIZE_FIX, OVERSIZE_MESSAGE, refused_for_size
from later_read.clients.starrocks import UserQuery
from later_read.config.settings import Settings
from later_read.connections import PushConnections, open_push
from later_read.core import value as value_codec
from later_read.core.clock import Clock
from later_read.core.message import PushMessage, expires_at
from later_read.core.schedule import Hour, Schedule
from later_read.core.scope import RunScope, Shard
from later_read.core.users import TaskUser
from later_read.core.value import CachedValue
from later_read.errors import EXIT_FAILURES, EXIT_OK, ServiceError, UsageError
from later_read.jobs.decide import decide
from later_read.jobs.push import recovery
from later_read.log import printable, quote
from later_read.oncall.show import classify, cut
from later_read.runtime import run
from later_read.store.keys import Keys
from later_read.store.lock import JobLock

ROWS_SHOWN = 20


@dataclass(frozen=True)
class RerunOptions:
    """What `rerun` does for its one user: which steps (prewarm, push), for which date and hour."""

    uid: str
    date: str
    hour: int | None = None
    prewarm: bool = True
    push: bool = True
    dry_run: bool = False
    force: bool = False
    lock_wait: float | None = None  # None: [lock] wait_seconds
    clock: Clock | None = None  # --now; None: the wall clock
    allow_late: bool = False  # push even when the hour's window has closed


class Stop(Exception):
    """The walk ends here, for `reason`, with exit `code`."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


def run_rerun(settings: Settings, options: RerunOptions, echo: Callable[[str], None] = print) -> int:
    """Walk the user; an explicit --hour whose window has closed is refused first (UsageError). Every
    line printed goes through `log.printable` (service and Redis strings cannot start a line or forge an
    alert line), values in it through `log.quote`."""
    if options.hour is not None:
        _refuse_if_closed(settings, options, options.hour)
    return run(_rerun, settings, options, lambda line: echo(printable(line)))


def _refuse_if_closed(settings: Settings, options: RerunOptions, hour: int) -> None:
    if options.push and not options.dry_run:
        clock = options.clock or Clock(settings.zone)
        Schedule.of(settings).refuse_if_closed(Hour(options.date, hour), clock.now(), options.allow_late)


async def _rerun(settings: Settings, options: RerunOptions, echo: Callable[[str], None]) -> int:
    steps = "+".join(name for name, on in (("prewarm", options.prewarm), ("push", options.push)) if on)
    echo(
        f"rerun      uid={quote(options.uid)} date={options.date} steps={steps}"
        + (" (dry run: nothing is written or sent)" if options.dry_run else "")
    )
    kafka = options.push and not options.dry_run
    async with open_push(settings, kafka=kafka, http_connections=4) as conns, runtime.task_group() as tg:
        try:
            await Rerun(settings, conns, options, echo, tg).walk()
        except Stop as stop:
            echo(f"stopped    {stop.reason}")
            return stop.code
        except ServiceError as exc:
            echo(
                f"stopped    {exc} (retries included); nothing more was done; check the service "
                "(`later-read check`), then rerun"
            )
            return EXIT_FAILURES
        finally:
            tg.cancel_scope.cancel()
    echo("done")
    return EXIT_OK


class Rerun:
    def __init__(
        self,
        settings: Settings,
        conns: PushConnections,
        options: RerunOptions,
        echo: Callable[[str], None],
        tg: TaskGroup,
    ) -> None:
        self.settings, self.conns, self.options, self.tg = settings, conns, options, tg
        self.store, self.services = conns.store, conns.services
        self.echo = echo
        self.fence: JobLock | None = None  # the hour's push lock while the push step holds it
        # The user's date and shard: the records (lock, start, ledger entry) the user's shard of the push uses
        self.scope = RunScope(options.date, None, Shard.of(options.uid, settings.shards.count))

    def step(self, name: str, text: str) -> None:
        self.echo(f"{name:<10} {text}")

    async def walk(self) -> None:
        if self.options.prewarm and not self.options.dry_run:
            await self._check_value_date(self.options.uid)
        user, hour = await self.find_user()
        _refuse_if_closed(self.settings, self.options, hour)  # before anything is written
        value = await self.prewarm(user) if self.options.prewarm else None
        if self.options.push:
            async with self._push_lock(hour):
                if self.options.dry_run:
                    await self.push(user, hour, value)
                else:
                    await self.push_recorded(user, hour, value)

    @asynccontextmanager
    async def _push_lock(self, hour: int) -> AsyncIterator[None]:
        """The hour's push lock around the push step (none on a dry run), refreshed from the walk's group."""
        o = self.options
        if o.dry_run:
            yield
            return
        wait = self.settings.lock.wait_seconds if o.lock_wait is None else o.lock_wait
        lock = JobLock(
            self.store.client,
            Keys.lock("push", self.scope.at(Hour(o.date, hour))),
            f"push run for {o.date} hour {hour}",
            dataclasses.replace(self.settings.lock, wait_seconds=wait),
        )
        await lock.acquire(anyio.Event())
        self.step("lock", f"holding {lock.key} (no push of the hour runs meanwhile)")
        lock.refresh_in(self.tg)
        self.fence = lock
        try:
            with lock.guard():
                yield
        finally:
            await lock.release()

    async def push_recorded(self, user: TaskUser, hour: int, value: CachedValue | None) -> None:
        """`push` inside the hour's record, as the push job does (jobs/push/recovery.py): what an
        unfinished run of the user's hours delivered is marked first; the hour stays finished if it was
        and this message's fate is known (confirmed and marked, or never produced)."""
        for other in self.hours:
            if other != hour:
                found = await recovery.recover_if_unfinished(
                    self.store, self.settings.kafka, self.scope.at(Hour(self.options.date, other))
                )
                self._recovered(other, found)
        hour_run = await recovery.begin(
            self.store, self.settings.kafka, self.scope.at(Hour(self.options.date, hour)), fence=self.fence
        )
        self._recovered(hour, hour_run.recovered)
        self.in_doubt = False
        try:
            await self.push(user, hour, value)
        finally:
            if hour_run.was_finished and not self.in_doubt:  # the entry as it was: clean again
                await recovery.end(self.store, hour_run, hour_run.entry)

    def _recovered(self, hour: int, users: int | None) -> None:
        if users is not None:
            self.step(
                "recovery",
                f"hour {hour} had an unfinished push run: {users} user(s) it delivered to marked sent from the topic",
            )

    async def find_user(self) -> tuple[TaskUser, int]:
        """The user's task rows (printed), the job's pick of project/task id, the message's hour."""
        o, table = self.options, self.settings.starrocks.table
        query = UserQuery.of(self.settings, RunScope(o.date), [o.uid])
        task_ids = query.task_ids
        rows = await self.conns.starrocks.query(*query.rows(ROWS_SHOWN))
        if not rows:
            raise Stop(
                f"no task rows for uid {quote(o.uid)} on {o.date} under {', '.join(task_ids)} in {table}: "
                "the jobs never pick this user up for that date; check the uid and --date",
                EXIT_FAILURES,
            )
        for task_id, _, project, push_hour, book_id in rows:
            self.step("task row", f"task_id={task_id} project={project} push_hour={push_hour} book_id={book_id}")
        user = [u async for page in self.conns.starrocks.users(query) for u in page][0]  # noqa: RUF015 - async
        hours = self.hours = sorted({int(row[3]) for row in rows})
        hour = o.hour if o.hour is not None else hours[0]
        self.step("user", f"project={user.project} task_id={user.task_id} push hours={hours}; message push_hour={hour}")
        return user, hour

    async def _check_value_date(self, uid: str) -> None:
        """The user's one value key holds one date: replacing another date's value takes --force."""
        verdict = value_codec.judge((await self.store.get_values([uid]))[0], self.options.date)
        held = verdict.value.date if verdict.state == value_codec.STALE and verdict.value is not None else None
        if held is None:  # absent, corrupt, usable, or of no known date: nothing to keep
            return
        if not self.options.force:
            raise UsageError(
                f"rerun: Redis holds this user's value for {held}; computing {self.options.date} "
                f"would replace it (then the {held} push misses the user); check --date, or "
                "add --force to replace it"
            )
        self.step("value", f"replacing the value for {held} with one for {self.options.date} (--force)")

    async def prewarm(self, user: TaskUser) -> CachedValue:
        """The prewarm's rule (decide) for the user, then the value written with the configured TTL."""
        value = await decide(self.services, user.uid, user.project, self.options.date, on_step=self._decided)
        raw, key = value_codec.encode(value), self.store.keys.rec(user.uid)
        if self.options.dry_run:
            self.step(
                "value",
                f"would write {quote(key)} = {raw.decode()} "
                f"ttl={self.settings.redis.ttl_seconds} s (dry run: not written)",
            )
            return value
        await self.store.put_values([(user.uid, raw)])
        _, ttl = await self.store.inspect(key)
        self.step("value", f"wrote {quote(key)} = {raw.decode()} ttl={ttl} s")
        return value

    def _decided(self, service: str, answer: Any) -> None:
        if service == "ab":
            meaning = "in the experiment" if answer.in_experiment else "the default: not in the experiment"
            self.step("ab", f"value={quote(answer.value)} trace_id={quote(answer.trace_id)} ({meaning})")
        elif answer is None:
            self.step("rec", "no recommendation (empty answer or 404)")
        else:
            self.step(
                "rec",
                f"rec_id={quote(answer.rec_id)} rec_type={quote(answer.rec_type)} "
                f"material_id={quote(answer.material_id)}",
            )

    async def push(self, user: TaskUser, hour: int, value: CachedValue | None) -> None:
        """Sent marker, value, material, message, delivery, marker: the push's path for one user."""
        await self._check_sent(user.uid)
        if value is None:
            value = await self._read_value(user.uid)
        if not value.is_rec:
            raise Stop(f"nothing to send: the value's outcome is {value.outcome} (a quiet skip for the push)", EXIT_OK)
        material = await self.services.material.get(user.uid, value.rec_id, value.rec_type, value.material_id)
        if material is None:
            raise Stop(
                f"material {quote(value.material_id)} not found (HTTP 404): no message; the push counts "
                "this user as material_not_found",
                EXIT_FAILURES,
            )
        self.step("material", f"material_id={quote(material.material_id)} title={quote(material.title, always=True)}")
        clock = self.options.clock or Clock(self.settings.zone)
        late_from = clock.now() if self.options.allow_late else None
        message = PushMessage.build(
            user,
            value,
            material,
            date=self.options.date,
            hour=hour,
            clock=clock,
            expires=expires_at(Schedule.of(self.settings), self.options.date, hour, late_from),
        )
        payload = message.encode()
        self.step("message", cut(payload) or "")
        if self.options.dry_run:
            self.step(
                "kafka",
                f"would produce to topic {self.settings.kafka.topic} key={quote(user.uid)} and mark "
                "the user sent (dry run: not produced, no marker)",
            )
            return
        self.in_doubt = True  # until the marker is written, a crash leaves this message unmarked
        partition, offset = await self._produce(user.uid, payload)
        self.step(
            "kafka",
            f"delivered topic={self.settings.kafka.topic} partition={partition} offset={offset} key={quote(user.uid)}",
        )
        await self.store.put_sent(self.options.date, [(user.uid, message.msg_id)], self.fence)
        key = Keys.sent(self.options.date, user.uid)
        _, ttl = await self.store.inspect(key)
        self.step("sent", f"marked {quote(key)} = {message.msg_id} ttl={ttl} s")
        self.in_doubt = False

    async def _check_sent(self, uid: str) -> None:
        marker = (await self.store.get_sent(self.options.date, [uid]))[0]
        if marker is None:
            self.step("sent", f"no marker for {self.options.date}: not pushed yet")
            return
        msg_id = quote(marker.decode("utf-8", "replace"))
        if not self.options.force:
            raise Stop(
                f"already pushed on {self.options.date} (msg_id {msg_id}); nothing sent. --force "
                "sends again (same msg_id, so consumers can drop the duplicate)",
                EXIT_OK,
            )
        self.step("sent", f"marker present (msg_id {msg_id}): sending again because of --force")

    async def _read_value(self, uid: str) -> CachedValue:
        raw = (await self.store.get_values([uid]))[0]
        verdict = value_codec.judge(raw, self.options.date)
        outcome, detail = classify(verdict, self.options.date)
        shown = cut(raw) if raw is not None else "(absent)"
        self.step("value", f"{quote(self.store.keys.rec(uid))} = {shown} -> {outcome}: {detail}")
        if verdict.state != value_codec.USABLE or verdict.value is None:
            raise Stop(
                f"no usable value for {self.options.date} ({outcome}); rerun without --push-only to compute it first",
                EXIT_FAILURES,
            )
        return verdict.value

    async def _produce(self, uid: str, payload: bytes) -> tuple[int, int]:
        """Produce one message and wait for its delivery report (flush in a worker thread)."""
        producer, timeout = self.conns.producer, self.settings.push.flush_timeout_seconds
        report: dict[str, Any] = {}

        def delivered(error: Any, message: Any) -> None:
            report.update(error=error, message=message)

        try:
            producer.produce(self.settings.kafka.topic, payload, key=uid, on_delivery=delivered)
        except (BufferError, confluent_kafka.KafkaException) as exc:
            if isinstance(exc, confluent_kafka.KafkaException) and refused_for_size(exc):
                raise Stop(
                    f"{OVERSIZE_MESSAGE}: the message is {len(payload):,} bytes, over [kafka.librdkafka] "
                    f"message.max.bytes; nothing sent, no marker written; {OVERSIZE_FIX}",
                    EXIT_FAILURES,
                ) from None
            raise Stop(
                f"Kafka producer refused the message ({exc}); nothing sent, no marker written", EXIT_FAILURES
            ) from None
        await anyio.to_thread.run_sync(producer.flush, timeout)
        if not report:
            producer.purge()
            producer.poll(0)
            raise Stop(
                f"Kafka did not confirm the message within {timeout:g} s; it was withdrawn and no "
                "sent marker was written; check Kafka (`later-read check`), then rerun",
                EXIT_FAILURES,
            )
        if report["error"] is not None:
            raise Stop(
                f"Kafka did not take the message ({report['error'].str()}); no sent marker was "
                "written; check Kafka (`later-read check`), then rerun",
                EXIT_FAILURES,
            )
        return report["message"].partition(), report["message"].offset()
