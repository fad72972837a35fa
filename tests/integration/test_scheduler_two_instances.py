"""Two schedulers share the partitions and with them the timers; one dies, the other takes over.

Like `kill -9`: the crashed instance sends no LeaveGroup, so the broker notices only when its
session times out (shortened here so the test waits seconds, not the production default).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from services.scheduler.adapters.tables import timers
from services.scheduler.app import SchedulerService
from services.scheduler.journeys.loader import load_journeys
from services.scheduler.settings import DEFAULT_JOURNEYS_DIR, SchedulerSettings
from shared import events
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import Activity, CartSnapshot, Line, MessageRequest, Profile
from shared.topics import CUSTOMER_ACTIVITY, MESSAGE_REQUESTS, Topics
from tests.conftest import TEST_PARTITIONS, Infra, eventually, read_topic

CUSTOMERS = 24
SESSION_TIMEOUT_MS = 2_000


def cart_left(clock: ManualClock, n: int) -> tuple[str, events.CloudEvent]:
    key = f"shop:c:{n}"
    profile = Profile(
        key=key, shop_id="shop", email=f"c{n}@example.com", marketing_consent="subscribed"
    )
    cart = CartSnapshot(
        cart_id=f"cart-{n}",
        updated_at=clock.now(),
        lines=[Line(title="IPod Nano - 8GB", quantity=1, price=Decimal("199.00"))],
    )
    activity = Activity(
        kind=events.CART_UPDATED,
        source_event_id=f"e{n}",
        occurred_at=clock.now(),
        profile=profile,
        cart=cart,
    )
    event = events.make_event(
        type=events.CUSTOMER_ACTIVITY,
        source="test",
        subject=key,
        id=events.stable_event_id("activity", f"e{n}"),
        time=clock.now(),
        shop_id="shop",
        data=activity,
    )
    return key, event


@pytest.fixture
def settings(infra: Infra, database_url: str, topics: Topics) -> SchedulerSettings:
    return SchedulerSettings(
        database_url=database_url,
        topic_prefix=topics.prefix,
        kafka_bootstrap_servers=infra.bootstrap,
        kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
        poll_interval_s=0.2,
    )


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


async def crash(service: SchedulerService) -> None:
    """What kill -9 leaves behind: loops gone, sockets closed, and no LeaveGroup sent."""

    async def stay_in_group() -> None:
        return None

    await service._loops.stop()
    service.consumer._coordinator._maybe_leave_group = stay_in_group
    await service.consumer.stop()
    await service.producer.stop()
    await service.engine.dispose()


async def request_counts(infra: Infra, topics: Topics) -> Counter[str]:
    records = await read_topic(infra.bootstrap, topics.name(MESSAGE_REQUESTS), wait_ms=500)
    requests = [events.payload(events.decode(r.value), MessageRequest) for r in records]
    return Counter(request.customer_key for request in requests)


async def timer_partitions(settings: SchedulerSettings) -> list[int]:
    engine = make_engine(settings.database_url)
    async with engine.connect() as conn:
        found = [int(p) for p in await conn.scalars(sa.select(timers.c.partition))]
    await engine.dispose()
    return found


async def test_when_one_of_two_schedulers_dies_every_due_timer_fires_exactly_once(
    infra: Infra,
    topics: Topics,
    settings: SchedulerSettings,
    clock: ManualClock,
    producer: AIOKafkaProducer,
) -> None:
    survivor, victim = SchedulerService(settings, clock), SchedulerService(settings, clock)
    running = [survivor, victim]
    for service in running:
        await service.start()
    try:

        async def shared() -> bool:
            owned = (survivor.assignment.partitions, victim.assignment.partitions)
            return all(owned) and set.union(*owned) == set(range(TEST_PARTITIONS))

        await eventually(shared, timeout_s=30, what="partitions split between the two")
        await load_journeys(survivor.engine, DEFAULT_JOURNEYS_DIR, clock)
        keys = []
        for n in range(CUSTOMERS):
            key, event = cart_left(clock, n)
            keys.append(key)
            await producer.send_and_wait(
                topics.name(CUSTOMER_ACTIVITY), events.encode(event), key=key.encode()
            )

        async def timers_on_every_partition() -> bool:
            stored = await timer_partitions(settings)
            return len(stored) == CUSTOMERS and set(stored) == set(range(TEST_PARTITIONS))

        await eventually(timers_on_every_partition, what="a timer per customer")
        orphaned = set(victim.assignment.partitions)
        running.remove(victim)
        await crash(victim)
        await clock.advance(timedelta(hours=4))  # every reminder is due now

        async def all_fired() -> bool:
            return set(await request_counts(infra, topics)) == set(keys)

        await eventually(all_fired, timeout_s=30, what="every due timer fired")
        assert orphaned <= survivor.assignment.partitions
        await survivor.timers.fire_due()  # another pass finds nothing left to fire
        assert await request_counts(infra, topics) == Counter(dict.fromkeys(keys, 1))
    finally:
        for service in running:
            await service.stop()
