"""Segment-triggered journeys on the real scheduler (PostgreSQL, the broker): customers enter at
the computed moment with no event, leave bounded windows, respect the journey's limits; a
definition error ends its enrolment with a reason; test mode lists whom it would have reached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from services.scheduler.adapters.tables import customers, enrollments, segment_timers
from services.scheduler.app import SchedulerService
from services.scheduler.segments.repository import SegmentRepository, SegmentTimerRow
from services.scheduler.settings import SchedulerSettings
from shared import events
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import Activity, MessageRequest, Profile, RecentOrder
from shared.topics import CUSTOMER_ACTIVITY, MESSAGE_REQUESTS, Topics
from tests.conftest import ADMIN, Infra, eventually, read_topic, started_scheduler
from tests.integration.conftest import scheduler_settings

pytestmark = pytest.mark.integration
DAY = timedelta(days=1)
SHIPPED = Path(__file__).parents[2] / "services" / "scheduler" / "journeys"

WIN_BACK = """
id: win-back
version: 1
name: Win-back after 90 days
trigger:
  segment:
    all:
      - {field: profile.days_since_last_order, op: gte, value: 90}
      - {field: profile.last_order_at, op: within, value: 300d}
exit:
  - {event: shop.order.placed.v1, reason: converted}
limits: {reentry: after_exit}
steps:
  - {id: reason, send: {template: winback_reason, subject: "We miss you"}}
  - {id: wait-1, wait: {for: 30d}}
  - {id: offer, send: {template: winback_offer, subject: "Something for you"}}
  - {id: wait-2, wait: {for: 30d}}
  - {id: last-chance, send: {template: winback_last_chance, subject: "Last chance"}}
"""


def stage_journey(reentry: str, cap: int | None = None) -> str:
    limits = f"{{reentry: {reentry}" + (f", max_enrolments: {cap}}}" if cap else "}")
    return f"""
id: went-quiet
version: 1
name: Went quiet
trigger: {{segment: {{field: profile.stage, op: eq, value: inactive}}}}
exit:
  - {{event: shop.order.placed.v1, reason: converted}}
limits: {limits}
steps:
  - {{id: hello, send: {{template: winback_reason, subject: "Hello"}}}}
  - {{id: wait, wait: {{for: 10d}}}}
"""


@pytest.fixture
async def settings(infra: Infra, database_url: str, topics: Topics) -> SchedulerSettings:
    return scheduler_settings(infra, database_url, topics)


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def scheduler(
    settings: SchedulerSettings, clock: ManualClock
) -> AsyncIterator[SchedulerService]:
    service = await started_scheduler(settings, clock)
    yield service
    await service.stop()


async def put(service: SchedulerService, definition: str) -> dict[str, Any]:
    journey_id = definition.split("id: ", 1)[1].split("\n", 1)[0].strip()
    async with api(service) as client:
        response = await client.put(f"/journeys/{journey_id}", content=definition)
    assert response.status_code == 201, response.text
    return dict(response.json())


def api(service: SchedulerService) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=service.app)
    return httpx.AsyncClient(transport=transport, base_url="http://scheduler", headers=ADMIN)


class Shop:
    """Publishes a customer's activity as ingest would, with the facts after it."""

    def __init__(self, producer: AIOKafkaProducer, topics: Topics, clock: ManualClock) -> None:
        self.producer, self.topics, self.clock = producer, topics, clock
        self.sent = 0

    async def activity(self, customer: int, kind: str = events.ORDER_PLACED, **facts: Any) -> None:
        self.sent += 1
        key = f"shop:c:{customer}"
        profile = Profile(
            key=key,
            shop_id="shop",
            email=f"c{customer}@example.com",
            marketing_consent="subscribed",
            **facts,
        )
        data = Activity(
            kind=kind,
            source_event_id=f"e{self.sent}",
            occurred_at=self.clock.now(),
            profile=profile,
        )
        event = events.make_event(
            type=events.CUSTOMER_ACTIVITY,
            source="test",
            subject=key,
            id=events.stable_event_id("activity", str(self.sent)),
            time=self.clock.now(),
            shop_id="shop",
            data=data,
        )
        await self.producer.send_and_wait(
            self.topics.name(CUSTOMER_ACTIVITY), events.encode(event), key=key.encode()
        )

    async def order(self, customer: int, orders: int = 1) -> None:
        now = self.clock.now()
        await self.activity(
            customer, orders_count=orders, total_spent=Decimal(40), last_order_at=now
        )


async def rows(settings: SchedulerSettings, query: sa.Select[Any]) -> list[dict[str, Any]]:
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]
    finally:
        await engine.dispose()


async def enrolled(settings: SchedulerSettings, journey_id: str) -> list[dict[str, Any]]:
    query = sa.select(enrollments).where(enrollments.c.journey_id == journey_id)
    return await rows(settings, query.order_by(enrollments.c.id))


async def requests(infra: Infra, topics: Topics) -> list[MessageRequest]:
    records = await read_topic(infra.bootstrap, topics.name(MESSAGE_REQUESTS), wait_ms=400)
    return [events.payload(events.decode(r.value), MessageRequest) for r in records]


async def seen(settings: SchedulerSettings, customer: int) -> bool:
    """The scheduler applied this customer's activity (a marker sent after the others)."""
    query = sa.select(customers.c.customer_key).where(
        customers.c.customer_key == f"shop:c:{customer}"
    )
    return bool(await rows(settings, query))


async def timer_due(settings: SchedulerSettings, customer: int) -> datetime | None:
    found = await rows(
        settings,
        sa.select(segment_timers.c.due_at).where(
            segment_timers.c.customer_key == f"shop:c:{customer}"
        ),
    )
    return found[0]["due_at"] if found else None


async def test_inactive_for_90_days_is_enrolled_at_that_moment_and_runs_60_days_in_ms(
    infra: Infra,
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    await put(scheduler, WIN_BACK)
    shop, ordered_at = Shop(producer, topics, clock), clock.now()
    await shop.order(1)
    await eventually(lambda: timer_due(settings, 1), what="segment timer stored")
    assert await timer_due(settings, 1) == ordered_at + 90 * DAY

    await clock.advance(90 * DAY - timedelta(seconds=1))
    await scheduler.timers.fire_due()
    assert await enrolled(settings, "win-back") == []
    await clock.advance(timedelta(seconds=1))  # no event at all: time alone moves them in

    await eventually(lambda: enrolled(settings, "win-back"), what="enrolled by the timer")
    [enrolment] = await enrolled(settings, "win-back")
    assert enrolment["entered_at"] == ordered_at + 90 * DAY
    for _ in range(2):  # the 60-day sequence, by the clock
        await clock.advance(30 * DAY)
        await scheduler.timers.fire_due()
    await eventually(lambda: _count(requests(infra, topics), 3), what="three messages")
    sent = await requests(infra, topics)
    assert [r.step_id for r in sent] == ["reason", "offer", "last-chance"]
    assert {r.customer_key for r in sent} == {"shop:c:1"}


async def _count(found: Any, n: int) -> bool:
    return len(await found) >= n


async def test_an_order_before_the_90_days_moves_the_entry_and_a_left_window_enrols_nobody(
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    await put(scheduler, WIN_BACK)
    shop, start = Shop(producer, topics, clock), clock.now()
    await shop.order(1)
    await shop.activity(2, orders_count=1, last_order_at=start - 310 * DAY)  # left long ago
    await eventually(lambda: timer_due(settings, 1), what="segment timer stored")
    await clock.advance(60 * DAY)
    await shop.order(1, orders=2)  # orders again on day 60
    await eventually(
        lambda: _is(timer_due(settings, 1), start + 150 * DAY), what="timer moved to day 150"
    )

    await clock.advance(31 * DAY)  # day 91: the old entry moment passes
    await scheduler.timers.fire_due()
    assert await enrolled(settings, "win-back") == []
    assert await timer_due(settings, 2) is None  # outside the window: no timer at all

    await clock.advance(59 * DAY)  # day 150
    await eventually(lambda: enrolled(settings, "win-back"), what="enrolled on day 150")
    assert [e["customer_key"] for e in await enrolled(settings, "win-back")] == ["shop:c:1"]


async def _is(found: Any, expected: Any) -> bool:
    return bool(await found == expected)


async def test_an_entry_due_while_down_is_not_made_after_the_window_closed(
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    await put(scheduler, WIN_BACK)
    shop = Shop(producer, topics, clock)
    await shop.activity(1, orders_count=1, last_order_at=clock.now() - 89 * DAY)
    await eventually(lambda: timer_due(settings, 1), what="segment timer stored")
    await scheduler.stop()  # nobody runs until the 300 days are over
    await clock.advance(212 * DAY)
    second = SchedulerService(settings, clock)
    await second.start()
    try:
        await eventually(
            lambda: bool(second.assignment.partitions), timeout_s=60, what="partitions"
        )
        await second.timers.fire_due()
        await eventually(lambda: _is(timer_due(settings, 1), None), what="timer fired")
        assert await enrolled(settings, "win-back") == []
    finally:
        await second.stop()
    await scheduler.start()  # the fixture stops it again


@pytest.mark.parametrize(("reentry", "expected"), [("never", 1), ("after_exit", 2)])
async def test_reentry_decides_whether_a_second_entry_enrols_again(
    reentry: str,
    expected: int,
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    await put(scheduler, stage_journey(reentry))
    shop = Shop(producer, topics, clock)
    await shop.activity(1, kind=events.STAGE_CHANGED_KIND, stage="inactive")  # enters now
    await eventually(lambda: enrolled(settings, "went-quiet"), what="first enrolment")
    await shop.activity(1, stage="active", orders_count=2)  # orders: exits, leaves segment

    async def exited() -> bool:
        return [e["status"] for e in await enrolled(settings, "went-quiet")] == ["exited"]

    await eventually(exited, what="the order ended the enrolment")
    await shop.activity(1, kind=events.STAGE_CHANGED_KIND, stage="inactive")  # enters again
    await shop.activity(9, kind=events.STAGE_CHANGED_KIND, stage="active")  # a marker

    await eventually(lambda: seen(settings, 9), what="all activities applied")
    found = await enrolled(settings, "went-quiet")
    assert [e["exit_reason"] for e in found][:1] == ["converted"]
    assert len(found) == expected


async def test_max_enrolments_caps_the_journey_whatever_the_entries(
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    await put(scheduler, stage_journey("after_exit", cap=2))
    shop = Shop(producer, topics, clock)
    for customer in range(1, 6):
        await shop.activity(customer, kind=events.STAGE_CHANGED_KIND, stage="inactive")
    await eventually(lambda: _count(enrolled(settings, "went-quiet"), 2), what="two enrolled")
    await shop.activity(9, kind=events.STAGE_CHANGED_KIND, stage="active")
    await eventually(lambda: seen(settings, 9), what="all activities applied")
    assert len(await enrolled(settings, "went-quiet")) == 2


async def test_a_definition_error_at_run_time_ends_the_enrolment_with_its_reason(
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    await put(
        scheduler,
        """
id: odd
version: 1
name: Odd
trigger: {event: shop.order.placed.v1}
steps:
  - id: check
    branch: [{if: {field: profile.total_spent, op: gt, ref: profile.first_name}, goto: done}]
  - {id: done, end: true}
""",
    )
    shop = Shop(producer, topics, clock)
    await shop.activity(1, first_name="Ada", total_spent=Decimal(5))
    await shop.order(2)  # the same partition goes on
    async with api(scheduler) as client:

        async def failed() -> list[Any]:
            answer = (await client.get("/customers/shop:c:1/enrollments")).json()
            return [e for e in answer if e["status"] == "failed"]

        await eventually(failed, what="the enrolment ended")
        [ended] = await failed()
        assert ended["exit_reason"].startswith("definition error")
        assert (await client.get("/customers/shop:c:2/enrollments")).json()


async def test_test_mode_sends_to_the_test_recipients_and_lists_whom_it_would_have_reached(
    infra: Infra,
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    await put(
        scheduler,
        WIN_BACK.replace(
            "version: 1", "version: 1\ntest_mode: true\ntest_recipients: [qa@shop.test]"
        ),
    )
    shop, start = Shop(producer, topics, clock), clock.now()
    await shop.order(1)
    await eventually(lambda: timer_due(settings, 1), what="segment timer stored")
    await clock.advance(90 * DAY)
    await eventually(lambda: _count(requests(infra, topics), 1), what="the test message")
    [request] = await requests(infra, topics)
    assert (request.recipient.email, request.test) == ("qa@shop.test", True)
    async with api(scheduler) as client:
        [listed] = (await client.get("/journeys/win-back/test-sends")).json()
    assert listed["would_have_reached"] == "c1@example.com"
    assert listed["sent_to"] == ["qa@shop.test"]
    assert listed["test"] is True
    assert datetime.fromisoformat(listed["requested_at"]) == start + 90 * DAY


ONE_SEND = """
id: one-send
version: 1
name: One message on the 90th day
trigger: {segment: {field: profile.days_since_last_order, op: gte, value: 90}}
limits: {reentry: after_exit}
steps:
  - {id: hello, send: {template: winback_reason, subject: "Hello"}}
"""


async def test_an_entry_timer_placed_again_after_it_fired_enrols_nobody_twice(
    settings: SchedulerSettings,
    topics: Topics,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    """A sweep (or a batch) that read the clock before the timer fired computes the same entry
    moment and writes it back; the enrolment it already made stands alone."""
    await put(scheduler, ONE_SEND)
    shop = Shop(producer, topics, clock)
    await shop.order(1)
    await eventually(lambda: timer_due(settings, 1), what="segment timer stored")
    [row] = await rows(settings, sa.select(segment_timers))
    await clock.advance(90 * DAY)
    await eventually(lambda: enrolled(settings, "one-send"), what="enrolled by the timer")
    stale = SegmentTimerRow(
        row["journey_id"], row["customer_key"], row["partition"], row["due_at"], None
    )
    engine = make_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await SegmentRepository(conn).set_timers([stale], [], sweep_at=row["due_at"] - DAY)
    finally:
        await engine.dispose()
    await scheduler.timers.fire_due()
    assert await timer_due(settings, 1) is None
    assert [e["status"] for e in await enrolled(settings, "one-send")] == ["completed"]


async def test_purchases_fell_by_half_enrols_when_time_alone_slides_the_periods(
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    """The shipped win-back-drop (90-day periods): 100 spent 120 days ago and 100 spent 20 days
    ago is no drop. With no event at all, on day 70 the recent order slides into the previous
    period and the last one is empty: the customer enters then, not a second earlier."""
    shipped = (SHIPPED / "win-back-drop.yaml").read_text()
    await put(scheduler, shipped.replace("active: false", "active: true"))
    start, spent = clock.now(), Decimal(100)
    placed = [start - 120 * DAY, start - 20 * DAY]
    await Shop(producer, topics, clock).activity(
        1,
        kind=events.STAGE_CHANGED_KIND,
        orders_count=2,
        total_spent=2 * spent,
        last_order_at=placed[1],
        orders_last_period=1,
        spent_last_period=spent,
        orders_previous_period=1,
        spent_previous_period=spent,
        recent_orders=[RecentOrder(at=at, total=spent) for at in placed],
    )
    await eventually(lambda: timer_due(settings, 1), what="segment timer stored")
    assert await timer_due(settings, 1) == start + 70 * DAY

    await clock.advance(70 * DAY - timedelta(seconds=1))
    await scheduler.timers.fire_due()
    assert await enrolled(settings, "win-back-drop") == []
    await clock.advance(timedelta(seconds=1))

    await eventually(lambda: enrolled(settings, "win-back-drop"), what="enrolled by the timer")
    [enrolment] = await enrolled(settings, "win-back-drop")
    assert enrolment["entered_at"] == start + 70 * DAY


def backfilled_win_back(bound: str) -> str:
    return WIN_BACK.replace(
        "      - {field: profile.last_order_at, op: within, value: 300d}\n",
        "      - {field: profile.last_order_at, op: within, value: 300d}\n" + bound,
    )


async def test_a_backfill_with_max_enrols_that_many_most_recent_orders_first(
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    """Ten customers already in the win-back segment, `max: 3`: the preview and the backfill
    both take the three whose last order is the most recent (a tie by customer key)."""
    shop, start = Shop(producer, topics, clock), clock.now()
    days = {1: 95, 2: 91, 3: 93, 4: 93, 5: 99, 6: 92, 7: 120, 8: 250, 9: 150, 10: 97}
    for customer, ago in days.items():
        await shop.activity(customer, orders_count=1, last_order_at=start - ago * DAY)
    await shop.activity(11, orders_count=1, last_order_at=start - 10 * DAY)  # not yet in
    await shop.activity(12, orders_count=1, last_order_at=start - 400 * DAY)  # out of bound
    await eventually(lambda: seen(settings, 12), what="the facts at the scheduler")
    definition = backfilled_win_back("  backfill: {max: 3}\n")
    async with api(scheduler) as client:
        preview = (await client.post("/journeys/win-back/preview", content=definition)).json()
    assert preview["would_enter"] == 3
    chosen = ["shop:c:2", "shop:c:6", "shop:c:3"]  # 91, 92 and 93 days (4 also has 93: after)
    assert [s["customer_key"] for s in preview["sample"]] == chosen

    assert (await put(scheduler, definition))["backfill_scheduled"] == 3
    await scheduler.timers.fire_due()
    await eventually(lambda: _count(enrolled(settings, "win-back"), 3), what="three enrolled")
    await shop.activity(13, kind=events.STAGE_CHANGED_KIND, stage="active")  # a marker
    await eventually(lambda: seen(settings, 13), what="all activities applied")
    await scheduler.timers.fire_due()
    assert sorted(e["customer_key"] for e in await enrolled(settings, "win-back")) == sorted(chosen)


async def test_evaluate_every_is_the_interval_of_the_journeys_safety_net_sweep(
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
    scheduler: SchedulerService,
) -> None:
    """A lost segment timer (deleted here) is restored by the sweep of `evaluate_every: 7d`:
    not on days 1 to 6 (the default 1d would have on day 1), on day 7."""
    await put(scheduler, WIN_BACK.replace("  segment:", "  evaluate_every: 7d\n  segment:"))
    await scheduler.segment_sweeper.sweep_due()  # the activation's sweep, on day 0
    shop, start = Shop(producer, topics, clock), clock.now()
    await shop.order(1)
    await eventually(lambda: timer_due(settings, 1), what="segment timer stored")
    engine = make_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.delete(segment_timers))
    finally:
        await engine.dispose()

    for _ in range(6):
        await clock.advance(DAY)
        await scheduler.segment_sweeper.sweep_due()
        assert await timer_due(settings, 1) is None
    await clock.advance(DAY)
    await scheduler.segment_sweeper.sweep_due()
    await eventually(lambda: _is(timer_due(settings, 1), start + 90 * DAY), what="restored")
