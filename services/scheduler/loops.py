"""The scheduler's two background loops: fire due timers, relay the outbox to Kafka."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.runner import Runner
from shared import metrics
from shared.clock import Clock
from shared.kafka import Assignment, Publisher
from shared.logging import get_logger
from shared.retry import backoff_s

log = get_logger(__name__)
SERVICE = "scheduler"
OUTBOX_BATCH = 500


async def _wait_any(*waits: asyncio.Future[object] | asyncio.Task[object]) -> None:
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


@dataclass
class TimerLoop:
    """Claims due timers of the partitions this instance owns and fires each exactly once.

    A timer row is deleted in the transaction that acts on it, so a crash before the commit
    leaves it due (fired on restart) and a crash after leaves it gone (never fired twice).
    """

    engine: AsyncEngine
    runner: Runner
    clock: Clock
    assignment: Assignment
    wake_relay: asyncio.Event
    poll_interval_s: float
    batch: int

    def __post_init__(self) -> None:
        self.wake = asyncio.Event()
        self.assignment.on_change.append(self._on_assignment)

    async def _on_assignment(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                fired = await self.fire_due()
                attempt = 0
            except Exception as exc:  # database away: wait and try again, never give up
                metrics.ERRORS.labels(SERVICE, "timers").inc()
                log.warning("timer_pass_failed", error=repr(exc))
                await asyncio.sleep(backoff_s(attempt, 0.2, 10.0))
                attempt += 1
                continue
            if fired < self.batch:
                await self._idle()

    async def fire_due(self) -> int:
        async with self.assignment.owned() as partitions:
            if not partitions:
                return 0
            return await self._fire_due(partitions)

    async def _fire_due(self, partitions: list[int]) -> int:
        now = self.clock.now()
        async with self.engine.begin() as conn:
            due = await self.runner.timers.claim_due(conn, partitions, now, self.batch)
            if due:
                await self.runner.catalog.refresh(conn)
            for timer in due:
                await self.runner.fire_timer(conn, timer.enrollment_id, timer.step_id, now)
            remaining = await self.runner.timers.count_due(conn, partitions, now)
        metrics.TIMERS_DUE.labels(SERVICE).set(remaining)
        if due:
            metrics.TIMERS_FIRED.labels(SERVICE).inc(len(due))
            self.wake_relay.set()
            log.info("timers_fired", count=len(due), at=now.isoformat())
        return len(due)

    async def _idle(self) -> None:
        """Until the clock moves a poll interval, a partition arrives, or real time passes."""
        self.wake.clear()
        await _wait_any(
            asyncio.ensure_future(self.clock.sleep(self.poll_interval_s)),
            asyncio.ensure_future(self.wake.wait()),
            asyncio.ensure_future(asyncio.sleep(self.poll_interval_s)),
        )


@dataclass
class OutboxRelay:
    """Publishes what the transactions wrote to the outbox, then deletes it (at least once)."""

    engine: AsyncEngine
    runner: Runner
    publisher: Publisher
    wake: asyncio.Event
    poll_interval_s: float

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                relayed = await self.relay_once()
                attempt = 0
            except Exception as exc:  # broker or database away
                metrics.ERRORS.labels(SERVICE, "outbox").inc()
                log.warning("outbox_relay_failed", error=repr(exc))
                await asyncio.sleep(backoff_s(attempt, 0.2, 10.0))
                attempt += 1
                continue
            if relayed < OUTBOX_BATCH:
                self.wake.clear()
                await _wait_any(
                    asyncio.ensure_future(self.wake.wait()),
                    asyncio.ensure_future(asyncio.sleep(self.poll_interval_s)),
                )

    async def relay_once(self) -> int:
        async with self.engine.begin() as conn:
            rows = await self.runner.outbox.claim(conn, OUTBOX_BATCH)
            if not rows:
                return 0
            await self.publisher.publish_raw([(r.topic, r.key, r.value) for r in rows])
            await self.runner.outbox.delete(conn, [r.id for r in rows])
        return len(rows)
