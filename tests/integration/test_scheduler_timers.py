"""The scheduler on real PostgreSQL and the real broker: activity in, message requests out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from services.scheduler.adapters.tables import enrollments, processed_activities, timers
from services.scheduler.app import SchedulerService
from services.scheduler.journeys.loader import load_journeys
from services.scheduler.settings import DEFAULT_JOURNEYS_DIR, SchedulerSettings
from shared import events
from shared.clock import ManualClock
from shared.events import Activity, CartSnapshot, Line, MessageRequest, Profile
from shared.topics import CUSTOMER_ACTIVITY, MESSAGE_REQUESTS, Topics, dlq
from tests.conftest import Infra, eventually, read_topic, started_scheduler

KEY = "shop:c:603851970716743400"


def activity(
    clock: ManualClock, kind: str = events.CART_UPDATED, source_id: str = "e1", lines: int = 2
) -> events.CloudEvent:
    profile = Profile(
        key=KEY,
        shop_id="shop",
        email="john@example.com",
        first_name="John",
        marketing_consent="subscribed",
    )
    cart = CartSnapshot(
        cart_id="cart-1",
        updated_at=clock.now(),
        currency="USD",
        lines=[Line(title="IPod Nano - 8GB", quantity=1, price=Decimal("199.00"))] * lines,
    )
    data = Activity(
        kind=kind,
        source_event_id=source_id,
        occurred_at=clock.now(),
        profile=profile,
        cart=cart if kind == events.CART_UPDATED else None,
    )
    return events.make_event(
        type=events.CUSTOMER_ACTIVITY,
        source="test",
        subject=KEY,
        id=events.stable_event_id("activity", source_id),
        time=clock.now(),
        shop_id="shop",
        data=data,
    )


@pytest.fixture
async def scheduler_settings(infra: Infra, database_url: str, topics: Topics) -> SchedulerSettings:
    return SchedulerSettings(
        database_url=database_url,
        topic_prefix=topics.prefix,
        kafka_bootstrap_servers=infra.bootstrap,
    )


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


async def send(producer: AIOKafkaProducer, topics: Topics, event: events.CloudEvent) -> None:
    await producer.send_and_wait(
        topics.name(CUSTOMER_ACTIVITY), events.encode(event), key=KEY.encode()
    )


async def requests(infra: Infra, topics: Topics) -> list[MessageRequest]:
    records = await read_topic(infra.bootstrap, topics.name(MESSAGE_REQUESTS), wait_ms=500)
    return [events.payload(events.decode(r.value), MessageRequest) for r in records]


async def count(settings: SchedulerSettings, table: sa.Table) -> int:
    from shared.db import make_engine

    engine = make_engine(settings.database_url)
    async with engine.connect() as conn:
        n = await conn.scalar(sa.select(sa.func.count()).select_from(table))
    await engine.dispose()
    return int(n or 0)


async def scheduler_waiting_for_a_cart(
    settings: SchedulerSettings, clock: ManualClock, producer: AIOKafkaProducer, topics: Topics
) -> SchedulerService:
    """A running scheduler with the default journeys that has enrolled one abandoned cart."""
    service = await started_scheduler(settings, clock)
    await load_journeys(service.engine, DEFAULT_JOURNEYS_DIR, clock)
    await send(producer, topics, activity(clock))
    await eventually(lambda: count(settings, timers), what="timer stored")
    return service


async def test_a_cart_becomes_two_requests_three_and_fifty_one_hours_later(
    infra: Infra,
    topics: Topics,
    scheduler_settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
) -> None:
    service = await scheduler_waiting_for_a_cart(scheduler_settings, clock, producer, topics)
    try:
        await send(producer, topics, activity(clock))  # redelivered: no second enrolment
        await clock.advance(timedelta(hours=2, minutes=59))
        assert await requests(infra, topics) == []
        await clock.advance(timedelta(minutes=1))
        await eventually(lambda: _has(infra, topics, 1), what="first request")
        await clock.advance(timedelta(hours=48))
        await eventually(lambda: _has(infra, topics, 2), what="second request")
        first, second = await requests(infra, topics)
        assert first.template == "abandoned_cart_reminder"
        assert first.recipient.email == "john@example.com"
        assert len(first.context["cart"]["lines"]) == 2
        # no code: the dispatcher issues one per request key
        offer = {"kind": "discount_code", "value": "10%", "valid_for": "7d"}
        assert second.context["offer"] == offer
        assert await count(scheduler_settings, enrollments) == 1
    finally:
        await service.stop()


async def test_an_order_before_the_reminder_means_no_request(
    infra: Infra,
    topics: Topics,
    scheduler_settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
) -> None:
    service = await scheduler_waiting_for_a_cart(scheduler_settings, clock, producer, topics)
    try:
        await send(producer, topics, activity(clock, events.ORDER_PLACED, "order-1"))
        await eventually(lambda: _no_timers(scheduler_settings), what="timer cancelled")
        await clock.advance(timedelta(hours=60))
        await service.timers.fire_due()
        assert await requests(infra, topics) == []
    finally:
        await service.stop()


async def test_timers_due_while_the_scheduler_was_down_fire_once_after_restart(
    infra: Infra,
    topics: Topics,
    scheduler_settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
) -> None:
    first = await scheduler_waiting_for_a_cart(scheduler_settings, clock, producer, topics)
    await first.stop()
    await clock.advance(timedelta(hours=4))  # due while nobody was running
    second = await started_scheduler(scheduler_settings, clock)
    try:
        await eventually(lambda: _has(infra, topics, 1), what="request after restart")
        await second.timers.fire_due()
        assert len(await requests(infra, topics)) == 1
    finally:
        await second.stop()


async def _has(infra: Infra, topics: Topics, n: int) -> bool:
    return len(await requests(infra, topics)) >= n


async def _no_timers(settings: SchedulerSettings) -> bool:
    return await count(settings, timers) == 0


async def test_a_poison_activity_is_dead_lettered_and_the_next_on_its_partition_is_applied(
    infra: Infra,
    topics: Topics,
    scheduler_settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
) -> None:
    service = await started_scheduler(scheduler_settings, clock)
    await load_journeys(service.engine, DEFAULT_JOURNEYS_DIR, clock)
    try:
        # What an older ingest published for the year-1 checkout: naive times, year 1.
        year_one = orjson.loads(events.encode(activity(clock, source_id="year-1")))
        year_one["data"]["occurred_at"] = "0001-01-01T00:00:00"
        year_one["data"]["cart"]["updated_at"] = "0001-01-01T00:00:00"
        # A name PostgreSQL cannot store (jsonb refuses \u0000): it can never succeed.
        unstorable = orjson.loads(events.encode(activity(clock, source_id="nul")))
        unstorable["data"]["profile"]["first_name"] = "Jo\u0000hn"
        for value in (orjson.dumps(year_one), orjson.dumps(unstorable)):
            await producer.send_and_wait(topics.name(CUSTOMER_ACTIVITY), value, key=KEY.encode())
        await send(producer, topics, activity(clock, source_id="good"))

        async def applied() -> bool:
            return await count(scheduler_settings, processed_activities) == 2

        await eventually(applied, what="the year-1 and the good activity applied")
        [dead] = await read_topic(infra.bootstrap, topics.name(dlq(CUSTOMER_ACTIVITY)), 500)
        assert dead.value == orjson.dumps(unstorable)
        headers = {k: v.decode() for k, v in dead.headers}
        assert headers["dlq.reason"].startswith("the database refused it: ")
        assert headers["dlq.topic"] == topics.name(CUSTOMER_ACTIVITY)
        assert headers["dlq.offset"] == "1"
        assert await count(scheduler_settings, timers) == 1  # the cart is waiting for its reminder
    finally:
        await service.stop()
