"""A discount code across services: the dispatcher mails it and publishes coupon.issued, ingest
learns it, and an order that uses it (events API `discount_codes`) is that message's
conversion without any open or click; used after expiry (here in Shopify's `discount_codes`
of an orders/create webhook), a late redemption."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from mailcatcher import MailStore
from sqlalchemy import text

from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import ENGAGEMENT_RESULTS, Topics
from tests.conftest import Infra, eventually, read_topic
from tests.integration.test_dispatcher_service import Harness, message_request
from tests.unit.ingest.deliveries import (
    API_TOKEN,
    SHOP,
    SHOP_ID,
    Delivery,
    delivery,
    fixture_body,
)

CUSTOMER = f"{SHOP_ID}:c:77"
AUTH = {"authorization": f"Bearer {API_TOKEN}"}
OFFER = {"kind": "discount_code", "value": "10%", "valid_for": "7d"}


@pytest.fixture
async def ingest(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[IngestService]:
    settings = IngestSettings(
        kafka_bootstrap_servers=infra.bootstrap,
        database_url=database_url,
        topic_prefix=topics.prefix,
        shops=[SHOP],
        role="all",
        produce_timeout_s=2.0,
    )
    service = IngestService(settings, clock)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def dispatcher(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock, mail: tuple[MailStore, int]
) -> AsyncIterator[Harness]:
    store, port = mail
    harness = Harness(infra, database_url, topics, clock, store, port)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.stop()


async def submit(client: httpx.AsyncClient, type_: str, id_: str, data: dict[str, Any]) -> None:
    response = await client.post(
        "/events", json={"type": type_, "id": id_, "data": data}, headers=AUTH
    )
    assert response.status_code == 202, response.text


def order(order_id: str, placed_at: str, codes: list[str]) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer": {"id": "77", "email": "ada@example.com"},
        "lines": [{"title": "Mug", "quantity": 1, "price": "40.00"}],
        "currency": "EUR",
        "total_price": "40.00",
        "placed_at": placed_at,
        "discount_codes": codes,
    }


def shopify_order(order_id: int, placed_at: str, code: str) -> Delivery:
    """Shopify's orders/create webhook of customer 77 with the code in `discount_codes`."""
    body = fixture_body("orders.create")
    body |= {"id": order_id, "created_at": placed_at, "processed_at": placed_at}
    body |= {"email": "ada@example.com", "customer": {"id": 77, "email": "ada@example.com"}}
    body["discount_codes"] = [{"code": code, "amount": "4.00", "type": "percentage"}]
    return delivery("orders.create", body=body, webhook_id=f"order-{order_id}")


async def scalar(harness: Harness, sql: str) -> Any:
    async with harness.engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar()


async def test_an_order_with_the_code_is_the_conversion_of_the_message_that_carried_it(
    ingest: IngestService, dispatcher: Harness, infra: Infra, topics: Topics, clock: ManualClock
) -> None:
    transport = httpx.ASGITransport(app=ingest.app)
    client = httpx.AsyncClient(transport=transport, base_url="http://ingest")
    customer = {"id": "77", "email": "ada@example.com", "marketing_consent": "subscribed"}
    await submit(client, ev.CUSTOMER_REGISTERED, "reg-77", {"customer": customer})

    request = message_request(
        "abandoned-cart:1:discount",
        email="ada@example.com",
        shop_id=SHOP_ID,
        customer_key=CUSTOMER,
        step_id="discount",
        template="abandoned_cart_discount",
        context={"cart": message_request("x").context["cart"], "offer": OFFER},
    )
    await dispatcher.send(request)
    await eventually(lambda: dispatcher.mails_to("ada@example.com"), 30, "the discount mail")
    [mail] = dispatcher.mails_to("ada@example.com")
    found = re.search(r"made just for you:\s+([A-Z0-9]+)", mail.part("text/plain"))
    assert found is not None
    code = found.group(1)

    async def ingest_knows_the_code() -> bool:
        return bool(await scalar(dispatcher, "SELECT count(*) FROM ingest.coupons") == 1)

    await eventually(ingest_knows_the_code, what="coupon.issued in ingest")

    await clock.advance(timedelta(days=2))  # no open, no click: only the code ties them
    await submit(client, ev.ORDER_PLACED, "o-1", order("o-1", "2022-01-03T00:00:00Z", [code]))
    await clock.advance(timedelta(days=8))  # the code expired on 8 January
    late = shopify_order(5002, "2022-01-11T00:00:00Z", code.lower())  # a checkout lowercases
    answer = await client.post("/webhooks/shopify", content=late.body, headers=late.headers)
    assert answer.status_code == 200, answer.text

    async def converted() -> dict[str, ev.MessageConverted]:
        published = await read_topic(infra.bootstrap, topics.name(ENGAGEMENT_RESULTS))
        events = [ev.decode(r.value) for r in published]
        found = [
            ev.payload(e, ev.MessageConverted) for e in events if e.type == ev.MESSAGE_CONVERTED
        ]
        return {c.order_id: c for c in found}

    await eventually(lambda: _both(converted), what="both orders attributed")
    await client.aclose()
    credited = await converted()
    on_time, after_expiry = credited["o-1"], credited["5002"]
    assert (on_time.request_key, on_time.touch, on_time.code) == (request.request_key, "code", code)
    assert (on_time.journey_id, on_time.step_id) == ("abandoned-cart", "discount")
    assert on_time.late_redemption is False
    assert (after_expiry.request_key, after_expiry.late_redemption) == (request.request_key, True)
    redeemed = await scalar(dispatcher, "SELECT redeemed_order_id FROM ingest.coupons")
    assert redeemed == "o-1"


async def _both(converted: Any) -> bool:
    return len(await converted()) == 2
