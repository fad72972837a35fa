"""The scheduler fires timers in sets: thousands at once, each exactly once, on time, and one
timer that cannot be fired ends its own enrolment instead of stalling everyone else's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.scheduler.app import SchedulerService
from services.scheduler.journeys.loader import load_journeys
from services.scheduler.settings import DEFAULT_JOURNEYS_DIR
from shared import events
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import Activity, CartSnapshot, Line, MessageRequest, Profile
from shared.topics import CUSTOMER_ACTIVITY, MESSAGE_REQUESTS, Topics
from tests.conftest import ADMIN, Infra, eventually, started_scheduler
from tests.integration.conftest import scheduler_settings

REMINDER_DELAY = timedelta(hours=3)


def key(n: int) -> str:
    return f"shop:c:{1000 + n}"


def cart_left(clock: ManualClock, n: int) -> events.CloudEvent:
    profile = Profile(
        key=key(n),
        shop_id="shop",
        email=f"customer{n}@example.com",
        first_name=f"First{n}",
        marketing_consent="subscribed",
    )
    cart = CartSnapshot(
        cart_id=f"cart-{n}",
        updated_at=clock.now(),
        lines=[Line(title=f"Item {n}", quantity=1, price=Decimal("10.00"))],
    )
    data = Activity(
        kind=events.CART_UPDATED,
        source_event_id=f"e{n}",
        occurred_at=clock.now(),
        profile=profile,
        cart=cart,
    )
    return _activity_event(clock, n, "activity", data)


def _activity_event(clock: ManualClock, n: int, what: str, data: Activity) -> events.CloudEvent:
    return events.make_event(
        type=events.CUSTOMER_ACTIVITY,
        source="test",
        subject=key(n),
        id=events.stable_event_id(what, str(n)),
        time=clock.now(),
        shop_id="shop",
        data=data,
    )


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    yield producer
    await producer.stop()


async def scheduler(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock, **options: Any
) -> SchedulerService:
    service = await started_scheduler(
        scheduler_settings(infra, database_url, topics, **options), clock
    )
    await load_journeys(service.engine, DEFAULT_JOURNEYS_DIR, clock)
    return service


@pytest.fixture(name="service")
async def running_scheduler(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[SchedulerService]:
    """`service`: a started scheduler with the shipped journeys, stopped after the test."""
    svc = await scheduler(infra, database_url, topics, clock)
    try:
        yield svc
    finally:
        await svc.stop()


async def leave_carts(
    producer: AIOKafkaProducer, topics: Topics, clock: ManualClock, customers: range
) -> None:
    sent = [
        await producer.send(
            topics.name(CUSTOMER_ACTIVITY), events.encode(cart_left(clock, n)), key=key(n).encode()
        )
        for n in customers
    ]
    await asyncio.gather(*sent)


async def sql(database_url: str, query: str) -> list[Any]:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(sa.text(query))
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def pending_timers(database_url: str) -> int:
    return int((await sql(database_url, "SELECT count(*) FROM scheduler.timers"))[0][0])


async def requests(infra: Infra, topics: Topics) -> list[MessageRequest]:
    """Every record on message.requests so far, read to the end of each partition."""
    consumer = AIOKafkaConsumer(
        topics.name(MESSAGE_REQUESTS),
        bootstrap_servers=infra.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await eventually(lambda: bool(consumer.assignment()), what="topic assigned")
        ends = await consumer.end_offsets(list(consumer.assignment()))
        records: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=200)
            records.extend(r for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    return [events.payload(events.decode(r.value), MessageRequest) for r in records]


async def test_three_thousand_timers_due_at_once_each_ask_for_one_message(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock, producer: AIOKafkaProducer
) -> None:
    service = await scheduler(infra, database_url, topics, clock)
    try:
        await leave_carts(producer, topics, clock, range(3000))
        await eventually(
            lambda: _equals(pending_timers(database_url), 3000), timeout_s=60, what="3000 timers"
        )
        await clock.advance(REMINDER_DELAY)

        async def all_asked() -> bool:
            return len(await requests(infra, topics)) >= 3000

        await eventually(all_asked, timeout_s=60, what="3000 requests")
        assert await service.timers.fire_due() == 0  # nothing is due twice
        asked = await requests(infra, topics)
        assert len(asked) == 3000
        assert {r.customer_key for r in asked} == {key(n) for n in range(3000)}
        for request in asked:
            n = int(request.customer_key.rsplit(":", 1)[1]) - 1000
            assert request.recipient.email == f"customer{n}@example.com"
            assert request.template == "abandoned_cart_reminder"
            assert request.context["cart"]["lines"][0]["title"] == f"Item {n}"
        # every enrolment now waits for the discount: one timer each, 48 h on
        assert await pending_timers(database_url) == 3000
        assert (await sql(database_url, "SELECT count(*) FROM scheduler.outbox"))[0][0] == 0
    finally:
        await service.stop()


async def test_a_timer_fires_when_due_not_a_poll_interval_later(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock, producer: AIOKafkaProducer
) -> None:
    # A poll interval far longer than the test: only sleeping until the due time can fire it.
    service = await scheduler(infra, database_url, topics, clock, poll_interval_s=60.0)
    try:
        await leave_carts(producer, topics, clock, range(1))
        await eventually(lambda: _equals(pending_timers(database_url), 1), what="timer stored")
        await clock.advance(REMINDER_DELAY - timedelta(seconds=20))
        await asyncio.sleep(0.5)  # real time for the loop to look ahead and go to sleep
        assert await requests(infra, topics) == []
        await clock.advance(timedelta(seconds=20))

        async def asked() -> bool:
            return len(await requests(infra, topics)) == 1

        await eventually(asked, timeout_s=10, what="the reminder at its due time")
    finally:
        await service.stop()


async def test_a_timer_that_cannot_fire_ends_its_enrolment_and_the_others_fire(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock, producer: AIOKafkaProducer
) -> None:
    service = await scheduler(infra, database_url, topics, clock)
    try:
        await leave_carts(producer, topics, clock, range(3))
        await eventually(lambda: _equals(pending_timers(database_url), 3), what="3 timers")
        # The stored facts of one customer no longer read as a profile (say, a bad migration).
        broken = """UPDATE scheduler.customers SET profile = '{"x": 1}' WHERE customer_key = '%s'"""
        await sql(database_url, broken % key(1))
        await clock.advance(REMINDER_DELAY)

        async def failed() -> list[dict[str, Any]]:
            transport = httpx.ASGITransport(app=service.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
                answer = await client.get(f"/customers/{key(1)}/enrollments", headers=ADMIN)
            return [e for e in answer.json() if e["status"] == "failed"]

        await eventually(failed, timeout_s=30, what="the poisoned enrolment to end")
        [ended] = await failed()
        assert "could not be fired" in ended["exit_reason"]
        assert "ValidationError" in ended["exit_reason"]
        assert ended["waiting_for"] is None  # its timer is gone: it is not retried forever
        asked = await requests(infra, topics)
        assert sorted(r.customer_key for r in asked) == [key(0), key(2)]
    finally:
        await service.stop()


def ordered(clock: ManualClock, n: int) -> events.CloudEvent:
    """Customer n's order: the abandoned-cart journey's exit."""
    profile = Profile(
        key=key(n), shop_id="shop", email=f"customer{n}@example.com", marketing_consent="subscribed"
    )
    data = Activity(
        kind=events.ORDER_PLACED,
        source_event_id=f"o{n}",
        occurred_at=clock.now(),
        profile=profile,
        order_id=f"order-{n}",
        order_total=Decimal("10.00"),
    )
    return _activity_event(clock, n, "order", data)


async def test_a_customers_cart_and_order_in_one_batch_keep_their_order_across_lanes(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock, producer: AIOKafkaProducer
) -> None:
    """A batch is applied in lanes at once; each customer's records stay in one lane, in
    order: every cart is followed by its order, so every enrolment ends as ordered and no
    reminder is due (an order applied before its cart would leave the reminder waiting)."""
    engine = make_engine(database_url, pool_size=1)
    try:  # the journeys first: the scheduler then takes the whole backlog in one batch
        await load_journeys(engine, DEFAULT_JOURNEYS_DIR, clock)
    finally:
        await engine.dispose()
    customers = range(600)
    sent = []
    for n in customers:  # cart then order, per customer; the batch mixes all of them
        for event in (cart_left(clock, n), ordered(clock, n)):
            sent.append(
                await producer.send(
                    topics.name(CUSTOMER_ACTIVITY), events.encode(event), key=key(n).encode()
                )
            )
    await asyncio.gather(*sent)
    service = await scheduler(infra, database_url, topics, clock, lanes=3)
    try:
        done = "SELECT count(*) FROM scheduler.enrollments WHERE exit_reason = 'ordered'"

        async def all_exited() -> bool:
            return int((await sql(database_url, done))[0][0]) == len(customers)

        await eventually(all_exited, timeout_s=60, what="every enrolment ended by its order")
        assert await pending_timers(database_url) == 0
        await clock.advance(REMINDER_DELAY)
        assert await service.timers.fire_due() == 0
        assert await requests(infra, topics) == []
    finally:
        await service.stop()


async def _equals(count: Any, expected: int) -> bool:
    return bool(await count == expected)
