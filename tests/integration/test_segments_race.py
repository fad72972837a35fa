"""The safety-net sweep and an activity batch for the same customer, interleaved step by step
on the real database: whichever reads first, the segment timer left behind is the one the
newest facts give (the sweep never writes back an entry moment from facts replaced meanwhile).

The interleaving is forced, not timed: the sweep is held between reading its chunk and writing
its timers (or the batch between locking its customers and writing), and the other side is
let run until it has finished or waits on a row lock in PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from services.scheduler.adapters.tables import segment_timers
from services.scheduler.app import SchedulerService
from services.scheduler.consumer import ActivityHandler
from services.scheduler.segments.repository import SegmentRepository
from services.scheduler.segments.service import SegmentTracker
from shared import events
from shared.clock import ManualClock
from shared.events import Activity, Profile
from shared.topics import Topics
from tests.conftest import Infra, eventually
from tests.integration.conftest import scheduler_settings
from tests.integration.test_segments import WIN_BACK, put

pytestmark = pytest.mark.integration
DAY = timedelta(days=1)
KEY = "shop:c:1"
PARTITION = 0


@pytest.fixture
async def service(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[SchedulerService]:
    """The scheduler's parts, not started: the test drives the sweep and the batches."""
    service = SchedulerService(scheduler_settings(infra, database_url, topics), clock)
    service.assignment.partitions = {PARTITION}
    yield service
    await service.engine.dispose()
    await service.reports_engine.dispose()


class Gate:
    """Holds a coroutine at one point until released, and says when it got there."""

    def __init__(self) -> None:
        self.reached, self.release = asyncio.Event(), asyncio.Event()

    async def hold(self) -> None:
        self.reached.set()
        await self.release.wait()


def order(clock: ManualClock, n: int) -> tuple[str, Activity, int]:
    now = clock.now()
    profile = Profile(
        key=KEY,
        shop_id="shop",
        email="c1@example.com",
        orders_count=n,
        total_spent=Decimal(40 * n),
        last_order_at=now,
    )
    activity = Activity(
        kind=events.ORDER_PLACED, source_event_id=f"o{n}", occurred_at=now, profile=profile
    )
    return f"order-{n}", activity, PARTITION


def handler(service: SchedulerService) -> ActivityHandler:
    found = service.consumer_loop.handler
    assert isinstance(found, ActivityHandler) and isinstance(found.segments, SegmentTracker)
    return found


async def timer_due(service: SchedulerService) -> datetime | None:
    async with service.engine.connect() as conn:
        found = await conn.execute(
            sa.select(segment_timers.c.due_at).where(segment_timers.c.customer_key == KEY)
        )
        return found.scalar_one_or_none()


async def done_or_waiting_on_a_lock(task: asyncio.Task[Any], service: SchedulerService) -> None:
    """Until the task has finished, or one of its statements waits on a row lock."""

    async def settled() -> bool:
        if task.done():
            return True
        async with service.reports_engine.connect() as conn:
            waiting = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
        return bool(waiting)

    await eventually(settled, what="the other side done or waiting on a lock")


async def held(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, gate: Gate
) -> Callable[..., Awaitable[Any]]:
    """Wraps owner.name so that every call stops at the gate once the original returned."""
    original = getattr(owner, name)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        await gate.hold()
        return result

    monkeypatch.setattr(owner, name, wrapped)
    return wrapped


async def settle_first_order(service: SchedulerService, clock: ManualClock) -> datetime:
    await put(service, WIN_BACK)
    ordered_at = clock.now()
    await handler(service)._apply([order(clock, 1)])
    assert await timer_due(service) == ordered_at + 90 * DAY
    await clock.advance(60 * DAY)
    return ordered_at


async def test_a_sweep_that_read_before_an_order_does_not_overwrite_the_orders_timer(
    service: SchedulerService, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep reads customer 1 (last order on day 0: entry on day 90) and is held; the
    customer orders again on day 60 (entry on day 150); then the sweep goes on."""
    ordered_at = await settle_first_order(service, clock)
    journey = next(j for j in service.runner.catalog.active() if j.id == "win-back")
    gate = Gate()
    await held(monkeypatch, SegmentRepository, "partition_chunk", gate)

    sweep = asyncio.create_task(service.segment_sweeper.sweep(journey, PARTITION, clock.now()))
    await gate.reached.wait()
    batch = asyncio.create_task(handler(service)._apply([order(clock, 2)]))
    await done_or_waiting_on_a_lock(batch, service)
    gate.release.set()
    await asyncio.gather(sweep, batch)

    assert await timer_due(service) == ordered_at + 150 * DAY


async def test_a_sweep_that_reads_while_an_order_is_applied_writes_the_orders_timer(
    service: SchedulerService, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch of the day-60 order has taken its locks and is held before it writes; the
    sweep runs meanwhile; then the batch goes on and commits."""
    ordered_at = await settle_first_order(service, clock)
    journey = next(j for j in service.runner.catalog.active() if j.id == "win-back")
    gate = Gate()
    await held(monkeypatch, SegmentTracker, "before", gate)

    batch = asyncio.create_task(handler(service)._apply([order(clock, 2)]))
    await gate.reached.wait()
    sweep = asyncio.create_task(service.segment_sweeper.sweep(journey, PARTITION, clock.now()))
    await done_or_waiting_on_a_lock(sweep, service)
    gate.release.set()
    await asyncio.gather(sweep, batch)

    assert await timer_due(service) == ordered_at + 150 * DAY
