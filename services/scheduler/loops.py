"""The scheduler's background work: fire due timers in sets, publish what commits wrote.

A pass claims up to `batch` due timers in one statement and fires them in one transaction,
then fires due segment timers and lets the contact gate release the held messages the shop's
policy allows now (their own transactions); the events are published from memory right after
the commits (`OutboxPublisher`), and the `OutboxRelay` sends whatever a crash or a broker
outage left. The two side steps cost nothing per pass where nobody uses them: when they last
found nothing, they look again when their next row falls due, or after a poll interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scheduler.adapters.repository import (
    BatchRepository,
    DueTimer,
    OutboxRepository,
    TimerRow,
)
from services.scheduler.runner import Published, Runner, merge
from services.scheduler.segments.service import SegmentTimers
from shared import errors, metrics
from shared.clock import Clock
from shared.driver_errors import translate
from shared.kafka import Assignment, Publisher
from shared.logging import Laps, get_logger
from shared.retry import OUTAGE_RETRY_MAX_S, backoff_s
from shared.runtime import cancel_and_wait, wait_any

log = get_logger(__name__)
SERVICE = "scheduler"
OUTBOX_BATCH = 500
GAUGE_EVERY_S = 5.0  # the due-count gauge is a count over the index: not once per pass
EXIT_REASON_MAX_CHARS = 500
LOCKED_RETRY_S = 0.05
T = TypeVar("T")


async def in_lanes(lanes: Sequence[Awaitable[T]], wake_relay: asyncio.Event) -> list[T]:
    """Lanes (transactions over disjoint customers) at once, each awaited to its end. One that
    failed fails them all once every lane is done; what the others committed is in the outbox,
    so the relay is woken to send it, and is recognised as done when handed again."""
    done = await asyncio.gather(*lanes, return_exceptions=True)
    failed = [d for d in done if isinstance(d, BaseException)]
    if failed:
        wake_relay.set()
        raise failed[0]
    return [d for d in done if not isinstance(d, BaseException)]


@dataclass
class OutboxPublisher:
    """Publishes a committed transaction's outbox rows from memory, then deletes them.

    The rows are deleted (and so locked) in the transaction that sends them: the relay skips
    locked rows and never sends them too; if the broker fails, the deletion rolls back and
    the relay sends them later. Every event has a stable id and every request a stable key,
    so a row sent twice after a crash is deduplicated downstream.
    """

    engine: AsyncEngine
    publisher: Publisher
    wake_relay: asyncio.Event

    async def publish(self, published: Published) -> None:
        if not published.outbox_ids:
            return
        laps = Laps()
        try:
            async with self.engine.begin() as conn:
                laps.lap("checkout_s")
                taken = set(await BatchRepository(conn).take_outbox(published.outbox_ids))
                laps.lap("take_s")
                await self.publisher.publish_raw(
                    [
                        (m.topic, m.key, m.value)
                        for i, m in zip(published.outbox_ids, published.messages, strict=True)
                        if i in taken  # the rest the relay already sent
                    ]
                )
                laps.lap("broker_s")
            laps.lap("db_commit_s")
            log.debug("outbox_published", rows=len(published.outbox_ids), **laps.laps)
        except Exception as exc:  # the rows stay in the outbox: the relay retries them
            metrics.ERRORS.labels(SERVICE, "outbox").inc()
            log.warning("outbox_publish_deferred", rows=len(published.outbox_ids), error=repr(exc))
            self.wake_relay.set()


@dataclass
class TimerLoop:
    """Claims due timers of the partitions this instance owns and fires each exactly once.

    A timer row is deleted in the transaction that acts on it, so a crash before the commit
    leaves it due (fired on restart) and a crash after leaves it gone (never fired twice).
    When nothing is due it sleeps until the next timer of the coming poll interval is due.
    """

    engine: AsyncEngine
    runner: Runner
    clock: Clock
    assignment: Assignment
    outbox: OutboxPublisher
    wake: asyncio.Event
    poll_interval_s: float
    batch: int
    lanes: int = 1  # set passes at once, over disjoint groups of the owned partitions
    max_attempts: int = errors.MAX_UNCLASSIFIED_ATTEMPTS
    segments: SegmentTimers | None = None  # segment entries by time, fired in the same pass
    _attempts: dict[int, int] = field(default_factory=dict)  # failed firings per enrolment
    _publishing: asyncio.Task[None] | None = None
    _gauge_at: float = 0.0
    # When the side steps (segment timers, held messages) look next; None: at the next pass.
    _side_at: datetime | None = None

    def __post_init__(self) -> None:
        self.assignment.on_change.append(self._on_assignment)

    async def _on_assignment(self) -> None:
        self._side_at = None  # partitions taken over may have held messages due
        self.wake.set()

    async def run(self) -> None:
        attempt = 0
        try:
            while True:
                try:
                    fired = await self._pass_and_publish_behind()
                    await self._refresh_gauge()
                    attempt = 0
                except Exception as exc:  # the database is away: wait and try again
                    metrics.ERRORS.labels(SERVICE, "timers").inc()
                    log.warning("timer_pass_failed", error=repr(exc))
                    await asyncio.sleep(backoff_s(attempt, 0.2, OUTAGE_RETRY_MAX_S))
                    attempt += 1
                    continue
                if fired < self.batch:
                    await self._sleep_until_due()
        finally:  # what it did not publish stays in the outbox, for the relay
            if self._publishing is not None:
                await cancel_and_wait([self._publishing])

    async def fire_due(self) -> int:
        """One pass, published before it returns; the number of timers claimed (or of
        customers whose held messages were looked at, if more)."""
        self._side_at = None  # every step, whatever the last one found
        fired, published = await self._pass()
        await self.outbox.publish(published)
        return fired

    async def _pass_and_publish_behind(self) -> int:
        """The next pass runs while the broker acknowledges the previous one's events."""
        laps = Laps()
        fired, published = await self._pass()
        laps.lap("pass_s")
        if self._publishing is not None:
            await self._publishing
        laps.lap("publish_wait_s")
        self._publishing = asyncio.create_task(self.outbox.publish(published))
        if fired:
            log.debug("timer_pass_done", fired=fired, **laps.laps)
        return fired

    async def _pass(self) -> tuple[int, Published]:
        # A revocation waits for the pass in flight: once another instance owns a partition,
        # this one no longer fires its timers.
        async with self.assignment.owned() as partitions:
            if not partitions:
                return 0, Published([], [])
            return await self._pass_on(partitions)

    async def _pass_on(self, partitions: list[int]) -> tuple[int, Published]:
        now = self.clock.now()
        fired, published = await self._lanes(partitions, now)
        if self._side_at is not None and now < self._side_at:
            self._count(fired, now)
            return fired, published
        entered, looked = 0, 0
        if self.segments is not None:
            entered, more = await self.segments.fire_due(partitions, now, self.batch)
            fired, published = fired + entered, merge([published, more])
        self._count(fired, now)
        looked, released = await self._release_held(partitions, now)
        # Found nothing: the sleep's look-ahead or a poll interval says when to look again.
        idle = not entered and not looked
        self._side_at = now + timedelta(seconds=self.poll_interval_s) if idle else None
        return max(fired, looked), merge([published, released])

    async def _lanes(self, partitions: list[int], now: datetime) -> tuple[int, Published]:
        """Set passes over disjoint groups of the partitions at once, each in its own
        transaction: one lane's statements run while another's timers are computed. A customer
        lives in one partition, so no two lanes touch the same customer's rows."""
        groups = [partitions[i :: self.lanes] for i in range(min(self.lanes, len(partitions)))]
        parts = await in_lanes([self._lane(g, now) for g in groups], self.outbox.wake_relay)
        return sum(f for f, _ in parts), merge([p for _, p in parts])

    async def _lane(self, partitions: list[int], now: datetime) -> tuple[int, Published]:
        try:
            return await self._set_pass(partitions, now)
        except Exception as exc:
            error = translate(exc)
            if errors.classify(error) is errors.Transient:
                raise error from exc
            log.warning("timer_pass_failed_firing_one_by_one", error=errors.describe(exc))
            return await self._isolating_pass(partitions, now)

    @staticmethod
    def _count(fired: int, now: datetime) -> None:
        if fired:
            metrics.TIMERS_FIRED.labels(SERVICE).inc(fired)
            log.info("timers_fired", count=fired, at=now.isoformat())

    async def _release_held(self, partitions: list[int], now: datetime) -> tuple[int, Published]:
        """The contact gate's step: held messages whose moment came, into the outbox."""
        try:
            async with self.engine.begin() as conn:
                looked, ids, messages = await self.runner.contact.release_to_outbox(
                    conn, self.runner.topics, partitions, now, self.batch
                )
        except Exception as exc:
            error = translate(exc)
            if errors.classify(error) is errors.Transient:
                raise error from exc
            metrics.ERRORS.labels(SERVICE, "contact_release").inc()
            log.error("contact_release_failed", error=errors.describe(exc))
            return 0, Published([], [])
        if ids:
            log.info("held_messages_released", count=len(ids), at=now.isoformat())
        return looked, Published(ids, messages)

    async def _set_pass(self, partitions: list[int], now: datetime) -> tuple[int, Published]:
        laps = Laps()
        async with self.engine.begin() as conn:
            laps.lap("checkout_s")
            due = await BatchRepository(conn).claim_due(partitions, now, self.batch)
            laps.lap("claim_s")
            if not due:
                return 0, Published([], [])
            published = await self.runner.fire_timers(conn, due, now)
            laps.lap("fire_s")
        laps.lap("db_commit_s")
        log.debug("timer_set_pass", fired=len(due), **laps.laps)
        for timer in due:
            self._attempts.pop(timer.enrollment_id, None)
        return len(due), published

    async def _isolating_pass(self, partitions: list[int], now: datetime) -> tuple[int, Published]:
        """After a failed set pass: each timer in its own savepoint, so one cannot stall all."""
        async with self.engine.begin() as conn:
            repo = BatchRepository(conn)
            due = await repo.claim_due(partitions, now, self.batch)
            parts: list[Published] = []
            for timer in due:
                try:
                    async with conn.begin_nested():
                        parts.append(await self.runner.fire_timers(conn, [timer], now))
                    self._attempts.pop(timer.enrollment_id, None)
                except Exception as exc:
                    await self._failed(conn, timer, exc, now)
        return len(due), merge(parts)

    async def _failed(
        self, conn: AsyncConnection, timer: DueTimer, exc: Exception, now: datetime
    ) -> None:
        """Retry a bounded number of times (the timer goes back), then end the enrolment."""
        error = translate(exc)
        if errors.classify(error) is errors.Transient:
            raise error from exc
        attempts = self._attempts.get(timer.enrollment_id, 0) + 1
        decision = errors.decide(error, attempts, self.max_attempts)
        repo = BatchRepository(conn)
        metrics.ERRORS.labels(SERVICE, "timer_failed").inc()
        if decision.action is not errors.Action.DEAD_LETTER:
            self._attempts[timer.enrollment_id] = attempts
            log.warning(
                "timer_failed_will_retry",
                enrollment_id=timer.enrollment_id,
                attempts=attempts,
                error=decision.reason,
            )
            await repo.restore_timers(
                [TimerRow(timer.enrollment_id, timer.partition, timer.step_id, timer.due_at)]
            )
            return
        self._attempts.pop(timer.enrollment_id, None)
        reason = f"timer {timer.step_id} could not be fired: {decision.reason}"
        log.error("timer_failed_enrollment_ended", enrollment_id=timer.enrollment_id, reason=reason)
        await repo.fail_enrollment(timer.enrollment_id, reason[:EXIT_REASON_MAX_CHARS], now)

    async def _side_due_at(
        self, conn: AsyncConnection, partitions: list[int], horizon: datetime
    ) -> datetime | None:
        """When a segment timer or a held message falls due within the horizon; the side
        steps of the passes until then are skipped (looked at again by the next sleep)."""
        held = await self.runner.contact.next_check(conn, partitions, horizon)
        segment = None
        if self.segments is not None:
            segment = await self.segments.next_due_at(conn, partitions, horizon)
        due = min((t for t in (held, segment) if t is not None), default=None)
        self._side_at = horizon if due is None else due
        return due

    async def _refresh_gauge(self) -> None:
        clock_s = asyncio.get_running_loop().time()
        partitions = sorted(self.assignment.partitions)
        if clock_s < self._gauge_at or not partitions:
            return
        self._gauge_at = clock_s + GAUGE_EVERY_S
        async with self.engine.connect() as conn:
            due = await BatchRepository(conn).count_due(partitions, self.clock.now())
        metrics.TIMERS_DUE.labels(SERVICE).set(due)

    async def _sleep_until_due(self) -> None:
        """Until the next timer of the coming poll interval is due, a wake-up, or a poll.

        Looking one poll ahead makes a timer fire when it is due, not up to a poll late; the
        claim itself waits for the due moment, so no lock is held while sleeping.
        """
        self.wake.clear()
        partitions = sorted(self.assignment.partitions)
        now = self.clock.now()
        next_due = None
        if partitions:
            horizon = now + timedelta(seconds=self.poll_interval_s)
            async with self.engine.connect() as conn:
                timer = await BatchRepository(conn).next_due_at(partitions, horizon)
                side = await self._side_due_at(conn, partitions, horizon)
            next_due = min((t for t in (timer, side) if t is not None), default=None)
        clock_s, real_s = self.poll_interval_s, self.poll_interval_s
        if next_due is not None:
            clock_s = (next_due - now).total_seconds()
            if clock_s <= 0:  # due but held by an activity being applied: look again soon
                clock_s, real_s = self.poll_interval_s, LOCKED_RETRY_S
        await wait_any(
            asyncio.ensure_future(self.clock.sleep(clock_s)),
            asyncio.ensure_future(self.wake.wait()),
            asyncio.ensure_future(asyncio.sleep(real_s)),
        )


@dataclass
class OutboxRelay:
    """Recovery: publishes rows left in the outbox (a crash or a broker outage), deletes them."""

    engine: AsyncEngine
    publisher: Publisher
    wake: asyncio.Event
    poll_interval_s: float
    outbox: OutboxRepository = field(default_factory=OutboxRepository)

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                relayed = await self.relay_once()
                attempt = 0
            except Exception as exc:  # broker or database away
                metrics.ERRORS.labels(SERVICE, "outbox").inc()
                log.warning("outbox_relay_failed", error=repr(exc))
                await asyncio.sleep(backoff_s(attempt, 0.2, OUTAGE_RETRY_MAX_S))
                attempt += 1
                continue
            if relayed < OUTBOX_BATCH:
                self.wake.clear()
                await wait_any(
                    asyncio.ensure_future(self.wake.wait()),
                    asyncio.ensure_future(asyncio.sleep(self.poll_interval_s)),
                )

    async def relay_once(self) -> int:
        async with self.engine.begin() as conn:
            rows = await self.outbox.claim(conn, OUTBOX_BATCH)
            if not rows:
                return 0
            await self.publisher.publish_raw([(r.topic, r.key, r.value) for r in rows])
            await self.outbox.delete(conn, [r.id for r in rows])
        return len(rows)
