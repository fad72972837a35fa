"""customer.merged.v1 in the scheduler against real PostgreSQL and the broker: the person is
enrolled once per journey, their timers move to the account key's partition, and activity
still travelling under the guest key lands on the account (docs/adr/0004-one-customer.md)."""

# The producer fixture is test_scheduler_sets', imported by name; its parameters redefine it.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.scheduler.app import SchedulerService
from shared import events
from shared.clock import ManualClock
from shared.events import Activity, CartSnapshot, CustomerMerged, Line, Profile
from shared.topics import CUSTOMER_ACTIVITY, Topics
from tests.conftest import Infra, eventually
from tests.integration.test_scheduler_sets import (  # noqa: F401
    producer,
    requests,
    running_scheduler,
    sql,
)

pytestmark = pytest.mark.integration
SHOP = "shop"
GUEST = f"{SHOP}:e:ada@example.com"
ACCOUNT = f"{SHOP}:c:7001"


def _profile(key: str) -> Profile:
    return Profile(key=key, shop_id=SHOP, email="ada@example.com", marketing_consent="subscribed")


def _cart(cart_id: str, clock: ManualClock) -> CartSnapshot:
    line = Line(title="Teapot", quantity=1, price=Decimal("30.00"))
    return CartSnapshot(cart_id=cart_id, updated_at=clock.now(), lines=[line])


def _activity(key: str, source_id: str, clock: ManualClock, **fields: Any) -> bytes:
    data = Activity(
        kind=fields.pop("kind", events.CART_UPDATED),
        source_event_id=source_id,
        occurred_at=clock.now(),
        profile=_profile(key),
        **fields,
    )
    return events.encode(
        events.make_event(
            type=events.CUSTOMER_ACTIVITY,
            source="test",
            subject=key,
            id=events.stable_event_id("activity", source_id),
            time=clock.now(),
            shop_id=SHOP,
            data=data,
        )
    )


def _cart_left(key: str, cart_id: str, clock: ManualClock) -> bytes:
    return _activity(key, f"cart-{cart_id}-{clock.now()}", clock, cart=_cart(cart_id, clock))


def _merged(clock: ManualClock) -> bytes:
    merged = CustomerMerged(
        shop_id=SHOP,
        email="ada@example.com",
        surviving_key=ACCOUNT,
        merged_key=GUEST,
        merged_at=clock.now(),
    )
    cart = _cart("guest-cart", clock)
    return _activity(
        ACCOUNT, "merged", clock, kind=events.CUSTOMER_MERGED_KIND, merged=merged, cart=cart
    )


async def _send(producer: AIOKafkaProducer, topics: Topics, key: str, value: bytes) -> None:
    await producer.send_and_wait(topics.name(CUSTOMER_ACTIVITY), value, key=key.encode())


async def _enrollments(database_url: str) -> list[tuple[str, str, str | None]]:
    """In a stable order (the two keys' partitions are consumed in no set order)."""
    rows = await sql(
        database_url, "SELECT customer_key, status, exit_reason FROM scheduler.enrollments"
    )
    return sorted(((r[0], r[1], r[2]) for r in rows), key=str)


def _become(database_url: str, expected: Sequence[tuple[str, str, str | None]]) -> Any:
    async def check() -> bool:
        return await _enrollments(database_url) == sorted(expected, key=str)

    return check


async def _timers_on_the_account_partition(database_url: str) -> list[Any]:
    return await sql(
        database_url,
        "SELECT t.due_at FROM scheduler.timers t JOIN scheduler.enrollments e"
        " ON e.id = t.enrollment_id JOIN scheduler.customers c ON c.customer_key = e.customer_key"
        f" WHERE t.partition = c.partition AND e.partition = c.partition"
        f" AND c.customer_key = '{ACCOUNT}'",
    )


async def test_both_enrolled_before_the_merge_the_account_keeps_its_own_and_asks_once(
    service: SchedulerService,
    producer: AIOKafkaProducer,
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
) -> None:
    await _send(producer, topics, GUEST, _cart_left(GUEST, "guest-cart", clock))
    await _send(producer, topics, ACCOUNT, _cart_left(ACCOUNT, "account-cart", clock))
    active = [(GUEST, "active", None), (ACCOUNT, "active", None)]
    await eventually(_become(database_url, active), what="both enrolled")

    await _send(producer, topics, ACCOUNT, _merged(clock))
    merged = [(ACCOUNT, "exited", "merged"), (ACCOUNT, "active", None)]
    await eventually(_become(database_url, merged), what="the guest's enrolment ended")
    assert len(await sql(database_url, "SELECT 1 FROM scheduler.timers")) == 1
    assert await _scheduler_customers(database_url) == [ACCOUNT]

    # A cart update published under the guest key before the merge (so the merged facts
    # already hold it), seen only now: applied to the account, it enrols nobody again.
    applied = len(await sql(database_url, "SELECT 1 FROM scheduler.processed_activities"))
    await _send(producer, topics, GUEST, _activity(GUEST, "late", clock, cart=_cart("g", clock)))

    async def seen() -> bool:
        done = await sql(database_url, "SELECT 1 FROM scheduler.processed_activities")
        return len(done) > applied

    await eventually(seen, what="the late guest activity applied")
    assert await _enrollments(database_url) == sorted(merged, key=str)
    assert len(await _timers_on_the_account_partition(database_url)) == 1
    assert await _scheduler_customers(database_url) == [ACCOUNT]

    await clock.advance(timedelta(hours=3))
    await service.timers.fire_due()

    async def asked() -> bool:
        return len(await requests(infra, topics)) >= 1

    await eventually(asked, what="the reminder request")
    assert [(r.customer_key, r.step_id) for r in await requests(infra, topics)] == [
        (ACCOUNT, "reminder")
    ]


async def test_a_guest_event_seen_after_the_merge_enrols_the_account_once(
    service: SchedulerService,
    producer: AIOKafkaProducer,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
) -> None:
    await _send(producer, topics, ACCOUNT, _merged(clock))
    await eventually(
        lambda: _has_rows(database_url, "SELECT 1 FROM scheduler.customer_aliases"),
        what="the alias",
    )
    await _send(producer, topics, GUEST, _cart_left(GUEST, "guest-cart", clock))
    await eventually(_become(database_url, [(ACCOUNT, "active", None)]), what="account enrolled")
    assert len(await _timers_on_the_account_partition(database_url)) == 1


async def _has_rows(database_url: str, query: str) -> bool:
    return bool(await sql(database_url, query))


async def _scheduler_customers(database_url: str) -> list[str]:
    return [r[0] for r in await sql(database_url, "SELECT customer_key FROM scheduler.customers")]


async def test_the_guests_orders_count_for_the_account_in_the_reports_after_the_merge(
    service: SchedulerService,
    producer: AIOKafkaProducer,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
) -> None:
    """The guest's order converts the enrolment that moves to the account, and the person is
    one customer in the cohorts; the guest's half-person prediction goes."""
    order = _activity(
        GUEST, "guest-order", clock, kind=events.ORDER_PLACED, order_id="1001", order_total=30
    )
    await _send(producer, topics, GUEST, order)
    orders = "SELECT customer_key FROM scheduler.customer_orders"
    await eventually(lambda: _has_rows(database_url, orders), what="the guest's order")
    await sql(
        database_url,
        "INSERT INTO scheduler.predictions (customer_key, shop_id, as_of, p_alive, orders_30d,"
        f" orders_90d, order_value, changed_at) VALUES ('{GUEST}', '{SHOP}', now(), 0.5, 0.1,"
        " 0.2, 30, now())",
    )

    await _send(producer, topics, ACCOUNT, _merged(clock))
    await eventually(
        lambda: _has_rows(database_url, "SELECT 1 FROM scheduler.customer_aliases"),
        what="the merge",
    )
    assert [r[0] for r in await sql(database_url, orders)] == [ACCOUNT]
    assert await sql(database_url, "SELECT customer_key FROM scheduler.predictions") == []
