"""The facts consumer against real PostgreSQL and the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import IngestService
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import CUSTOMER_ACTIVITY, SHOP_EVENTS, Topics, dlq
from tests.conftest import Infra, eventually
from tests.integration.test_ingest_webhooks import ingest_settings, post, read_topic
from tests.unit.ingest.deliveries import (
    CART_TOKEN,
    CHECKOUT_CUSTOMER_ID,
    SHOP_ID,
    delivery,
    order_for_checkout_customer,
)

pytestmark = pytest.mark.integration
CUSTOMER = f"{SHOP_ID}:c:{CHECKOUT_CUSTOMER_ID}"


@pytest.fixture
async def service(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[IngestService]:
    svc = IngestService(ingest_settings(infra.bootstrap, database_url, topics, role="all"), clock)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def rows(db: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(text(sql), params)]


async def activities(infra: Infra, topics: Topics) -> list[ev.CloudEvent]:
    records = await read_topic(infra.bootstrap, topics.name(CUSTOMER_ACTIVITY))
    return [ev.decode(value) for _, value, _ in records]


def activity_count(infra: Infra, topics: Topics, count: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return len(await activities(infra, topics)) >= count

    return reached


async def test_checkout_then_order_become_facts_once_and_activity(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    checkout = delivery("checkouts.create")
    order = delivery("orders.create", body=order_for_checkout_customer())
    for d in (checkout, order):
        assert (await post(client, d)).status_code == 200

    async def order_counted() -> bool:
        found = await rows(db, "SELECT status FROM ingest.carts")
        return found == [{"status": "ordered"}]

    await eventually(order_counted, what="the order to close the cart")
    await eventually(activity_count(infra, topics, 2), what="activity for both events")
    for d in (checkout, order):  # Shopify redelivers
        assert (await post(client, d)).status_code == 200
    await eventually(activity_count(infra, topics, 4), what="activity for the redeliveries")

    [customer] = await rows(db, "SELECT * FROM ingest.customers")
    assert customer["customer_key"] == CUSTOMER
    assert customer["customer_id"] == CHECKOUT_CUSTOMER_ID
    assert (customer["email"], customer["first_name"]) == ("john@example.com", "John")
    assert customer["marketing_consent"] == "not_subscribed"
    assert (customer["orders_count"], customer["total_spent"]) == (1, Decimal("388.00"))
    assert customer["last_order_at"] == datetime(2022, 1, 1, tzinfo=UTC)
    [cart] = await rows(db, "SELECT * FROM ingest.carts")
    assert (cart["cart_id"], cart["customer_key"]) == (CART_TOKEN, CUSTOMER)
    assert [line["title"] for line in cart["lines"]] == ["IPod Nano - 8GB"] * 2
    assert len(await rows(db, "SELECT * FROM ingest.orders")) == 1
    assert len(await rows(db, "SELECT * FROM ingest.order_lines")) == 2

    published = await activities(infra, topics)
    assert {a.type for a in published} == {ev.CUSTOMER_ACTIVITY}
    assert {a.subject for a in published} == {CUSTOMER}
    assert len({a.id for a in published}) == 2  # a redelivery repeats the same activity id
    kinds = {ev.payload(a, ev.Activity).kind for a in published}
    assert kinds == {ev.CART_UPDATED, ev.ORDER_PLACED}
    placed = next(
        ev.payload(a, ev.Activity)
        for a in published
        if ev.payload(a, ev.Activity).kind == ev.ORDER_PLACED
    )
    assert (placed.order_id, placed.order_total) == ("820982911946154500", Decimal("388.00"))
    assert placed.profile.orders_count == 1
    assert placed.cart is None  # the order closed it


async def test_open_cart_is_in_the_activity(
    client: httpx.AsyncClient, infra: Infra, topics: Topics
) -> None:
    assert (await post(client, delivery("checkouts.create"))).status_code == 200

    async def published() -> bool:
        return len(await activities(infra, topics)) == 1

    await eventually(published, what="activity")
    [activity] = [ev.payload(a, ev.Activity) for a in await activities(infra, topics)]
    assert activity.kind == ev.CART_UPDATED
    assert activity.occurred_at == datetime(2022, 1, 1, tzinfo=UTC)
    assert activity.profile.email == "example@email.com"
    assert activity.cart is not None
    assert activity.cart.cart_id == CART_TOKEN
    assert [line.title for line in activity.cart.lines] == ["IPod Nano - 8GB"] * 2


async def test_an_anonymous_cart_waits_for_its_customer(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    assert (await post(client, delivery("carts.create"))).status_code == 200

    async def cart_stored() -> bool:
        return len(await rows(db, "SELECT * FROM ingest.carts")) == 1

    await eventually(cart_stored, what="the anonymous cart")
    [cart] = await rows(db, "SELECT * FROM ingest.carts")
    assert cart["customer_key"] is None
    assert await activities(infra, topics) == []

    assert (await post(client, delivery("checkouts.create"))).status_code == 200

    async def claimed() -> bool:
        found = await rows(db, "SELECT customer_key FROM ingest.carts")
        return found == [{"customer_key": CUSTOMER}]

    await eventually(claimed, what="the checkout to claim the cart")


async def produce(infra: Infra, topic: str, key: bytes, *values: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def test_poison_messages_go_to_the_dlq_and_the_next_one_is_processed(
    service: IngestService, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    valid_envelope_bad_data = ev.encode(
        ev.CloudEvent(
            id="bad-data",
            source="test",
            type=ev.CART_UPDATED,
            subject=CUSTOMER,
            time=datetime(2022, 1, 1, tzinfo=UTC),
            shopid=SHOP_ID,
            data={"cart_id": "1"},
        )
    )
    unstorable = ev.make_event(  # valid, but no PostgreSQL bigint holds the quantity
        type=ev.ORDER_PLACED,
        source="test",
        id="too-many",
        shop_id=SHOP_ID,
        time=datetime(2022, 1, 1, tzinfo=UTC),
        subject=CUSTOMER,
        data=ev.OrderEvent(
            order_id="9",
            customer=ev.Customer(id="9"),
            total_price=Decimal(1),
            placed_at=datetime(2022, 1, 1, tzinfo=UTC),
            lines=[ev.Line(title="x", quantity=2**63, price=Decimal(1))],
        ),
    )
    good = ev.make_event(
        type=ev.CUSTOMER_REGISTERED,
        source="test",
        id="good",
        shop_id=SHOP_ID,
        time=datetime(2022, 1, 1, tzinfo=UTC),
        subject=f"{SHOP_ID}:c:42",
        data=ev.CustomerChanged(customer=ev.Customer(id="42", email="ada@example.com")),
    )
    await produce(
        infra,
        topics.name(SHOP_EVENTS),
        b"same-partition",
        b"\x00\xffgarbage",
        valid_envelope_bad_data,
        ev.encode(unstorable),
        ev.encode(good),
    )

    async def good_applied() -> bool:
        return len(await rows(db, "SELECT * FROM ingest.customers WHERE customer_id = '42'")) == 1

    await eventually(good_applied, what="the good message after the poison")
    dead = await read_topic(infra.bootstrap, dlq(topics.name(SHOP_EVENTS)))
    assert [value for _, value, _ in dead] == [
        b"\x00\xffgarbage",
        valid_envelope_bad_data,
        ev.encode(unstorable),
    ]
    reasons = [headers["dlq.reason"].decode() for _, _, headers in dead]
    assert reasons[0].startswith("not a CloudEvent")
    assert "shop.cart.updated.v1 data invalid" in reasons[1]
    assert reasons[2].startswith("the database refused it")
    assert all(key == b"same-partition" for key, _, _ in dead)
    stored = await rows(db, "SELECT customer_id FROM ingest.customers ORDER BY customer_id")
    assert stored == [{"customer_id": "42"}]
