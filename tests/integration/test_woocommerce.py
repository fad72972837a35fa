"""WooCommerce deliveries, the cart snippet's events and Shopify redeliveries, through the real
broker and PostgreSQL: what the customer facts and customer.activity show."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import IngestService
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import SHOP_EVENTS, Topics
from tests.conftest import Infra, eventually
from tests.integration.test_ingest_consumer import activities, activity_count, rows
from tests.integration.test_ingest_webhooks import ingest_settings, read_topic
from tests.unit.ingest.deliveries import API_TOKEN, SHOP_ID, delivery, order_for_checkout_customer
from tests.unit.ingest.woo_deliveries import (
    WOO_FIXTURES,
    WOO_SHOP,
    WooDelivery,
    woo_body,
    woo_delivery,
)

pytestmark = pytest.mark.integration
CUSTOMER = f"{SHOP_ID}:c:25"
GUEST = f"{SHOP_ID}:e:john.doe@example.com"


@pytest.fixture
async def service(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[IngestService]:
    settings = ingest_settings(infra.bootstrap, database_url, topics, role="all")
    svc = IngestService(settings.model_copy(update={"shops": [WOO_SHOP]}), clock)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def post_woo(client: httpx.AsyncClient, d: WooDelivery) -> None:
    response = await client.post("/webhooks/woocommerce", content=d.body, headers=d.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"


async def test_a_customer_and_their_order_become_one_customers_facts(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    for name in ("customer.created", "order.created", "order.updated"):
        await post_woo(client, woo_delivery(name))
    await eventually(activity_count(infra, topics, 3), what="activity for the three deliveries")

    [customer] = await rows(db, "SELECT * FROM ingest.customers")
    assert customer["customer_key"] == CUSTOMER
    assert (customer["email"], customer["first_name"]) == ("john.doe@example.com", "John")
    assert (customer["orders_count"], customer["total_spent"]) == (1, Decimal("29.35"))
    assert customer["last_order_at"] == datetime(2022, 1, 1, tzinfo=UTC)
    [order] = await rows(db, "SELECT * FROM ingest.orders")
    assert (order["order_id"], order["status"]) == ("1042", "paid")
    kinds = [ev.payload(a, ev.Activity).kind for a in await activities(infra, topics)]
    assert sorted(kinds) == sorted([ev.CUSTOMER_REGISTERED, ev.ORDER_PLACED, ev.ORDER_PAID])


async def test_the_cart_snippets_event_is_a_cart_activity_and_the_order_closes_it(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    """The event docs/woocommerce.md's snippet sends for a guest at checkout, then the order."""
    cart_event = json.loads((WOO_FIXTURES / "cart.event.json").read_text())
    auth = {"authorization": f"Bearer {API_TOKEN}"}
    response = await client.post("/events", json=cart_event, headers=auth)
    assert response.status_code == 202, response.text
    await eventually(activity_count(infra, topics, 1), what="the cart's activity")
    [published] = await activities(infra, topics)
    activity = ev.payload(published, ev.Activity)
    assert activity.kind == ev.CART_UPDATED
    assert published.subject == GUEST
    assert activity.cart is not None
    assert activity.cart.cart_id == "t_5b9d3c0e7f1a2b4c6d8e0f1a2b3c4d"
    assert activity.cart.total_price == Decimal("29.35")
    assert [(line.title, line.quantity) for line in activity.cart.lines] == [
        ("Woo Single #1", 2),
        ("Ship Your Idea - Black, M Test", 1),
    ]

    guest_order = {**woo_body("order.created"), "customer_id": 0}
    await post_woo(client, woo_delivery("order.created", body=guest_order))

    async def closed() -> bool:
        return await rows(db, "SELECT status FROM ingest.carts") == [{"status": "ordered"}]

    await eventually(closed, what="the guest's order to close the cart")


async def test_a_shopify_redelivery_with_the_same_event_id_has_no_second_effect(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    order = delivery("orders.create", body=order_for_checkout_customer())
    for count, webhook_id in enumerate(("subscription-a", "subscription-b"), start=1):
        headers = {
            **order.headers,
            "x-shopify-event-id": "7031321231",
            "x-shopify-webhook-id": webhook_id,
        }
        response = await client.post("/webhooks/shopify", content=order.body, headers=headers)
        assert response.status_code == 200, response.text
        await eventually(activity_count(infra, topics, count), what=f"activity {count}")

    published = await activities(infra, topics)
    assert len({a.id for a in published}) == 1  # the second delivery repeats the first activity
    [customer] = await rows(db, "SELECT orders_count FROM ingest.customers")
    assert customer["orders_count"] == 1


async def test_a_stale_shopify_delivery_is_counted_and_produces_nothing(
    client: httpx.AsyncClient, infra: Infra, topics: Topics, clock: ManualClock
) -> None:
    labels = {"service": "ingest", "platform": "shopify", "reason": "stale"}
    before = REGISTRY.get_sample_value("rebound_webhooks_dropped_total", labels) or 0.0
    order = delivery("orders.create", body=order_for_checkout_customer())
    # The default age is a day; this one was triggered two days before the clock.
    headers = {**order.headers, "x-shopify-triggered-at": "2021-12-30T00:00:00.000000000Z"}
    response = await client.post("/webhooks/shopify", content=order.body, headers=headers)
    assert response.status_code == 200
    assert response.json()["reason"] == "stale"
    assert REGISTRY.get_sample_value("rebound_webhooks_dropped_total", labels) == before + 1
    assert await read_topic(infra.bootstrap, topics.name(SHOP_EVENTS)) == []
