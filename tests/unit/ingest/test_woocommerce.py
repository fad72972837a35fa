"""WooCommerce webhooks at the HTTP edge, without a broker: answers, and the canonical events
compared with those of the equivalent Shopify deliveries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from services.ingest.api import install_error_handlers, shopify_router, woocommerce_router
from services.ingest.app import shop_directory
from shared import events as ev
from shared.clock import ManualClock
from tests.unit.ingest.deliveries import SHOP_ID, delivery, fixture_body
from tests.unit.ingest.test_api import RecordingSink
from tests.unit.ingest.woo_deliveries import (
    PING_BODY,
    PING_HEADERS,
    WOO_SHOP,
    WooDelivery,
    woo_body,
    woo_delivery,
)

NOW = datetime(2024, 10, 1, 12, tzinfo=UTC)
URL = "/webhooks/woocommerce"


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def client(sink: RecordingSink) -> AsyncIterator[httpx.AsyncClient]:
    shops = shop_directory([WOO_SHOP])
    clock = ManualClock(NOW)
    app = FastAPI()
    app.include_router(shopify_router(shops, sink, clock))
    app.include_router(woocommerce_router(shops, sink, clock))
    install_error_handlers(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield client


async def _post(client: httpx.AsyncClient, d: WooDelivery, url: str = URL) -> httpx.Response:
    return await client.post(url, content=d.body, headers=d.headers)


async def _produced(
    client: httpx.AsyncClient, sink: RecordingSink, response: httpx.Response
) -> ev.CloudEvent:
    assert response.status_code == 200, response.text
    event = sink.events[-1].event
    assert response.json() == {"status": "accepted", "event_id": event.id}
    return event


def _woo_order(**changes: Any) -> dict[str, Any]:
    return {**woo_body("order.created"), **changes}


def _shopify_order_like_the_woo_one(*, guest: bool = False, **changes: Any) -> dict[str, Any]:
    """Shopify's orders/create fixture rewritten to be the purchase of the WooCommerce order
    fixture: the same customer, lines, money and moment (written with another offset)."""
    body = fixture_body("orders.create")
    line = body["line_items"][0]
    body.update(
        id=1042,
        email="john.doe@example.com",
        contact_email="john.doe@example.com",
        currency="EUR",
        total_price="29.35",
        created_at="2021-12-31T19:00:00-05:00",  # 2022-01-01T00:00:00 GMT
        cancelled_at=None,
        customer_locale=None,
        buyer_accepts_marketing=False,
        discount_codes=[],
        line_items=[
            {**line, "product_id": 93, "variant_id": None, "sku": None, "quantity": 2}
            | {"title": "Woo Single #1", "variant_title": None, "price": "3.00"},
            {**line, "product_id": 22, "variant_id": 23, "sku": "Bar3", "quantity": 1}
            | {
                "title": "Ship Your Idea \u2013 Color: Black, Size: M Test",
                "variant_title": None,
                "price": "12.00",
            },
        ],
    )
    body["customer"] = None if guest else _shopify_customer_like_the_woo_one(body["customer"])
    return {**body, **changes}


def _shopify_customer_like_the_woo_one(customer: dict[str, Any]) -> dict[str, Any]:
    return {
        **customer,
        "id": 25,
        "email": "john.doe@example.com",
        "first_name": "John",
        "last_name": "Doe",
        "created_at": None,
        "email_marketing_consent": None,
        "default_address": {**customer["default_address"], "country_code": "DE"},
    }


async def _shopify_event(
    client: httpx.AsyncClient, sink: RecordingSink, fixture: str, body: dict[str, Any]
) -> ev.CloudEvent:
    d = delivery(fixture, body=body)
    response = await client.post("/webhooks/shopify", content=d.body, headers=d.headers)
    return await _produced(client, sink, response)


def _same_event(woo: ev.CloudEvent, shopify: ev.CloudEvent, model: type[ev.Contract]) -> None:
    assert woo.type == shopify.type
    assert woo.subject == shopify.subject
    assert woo.shopid == shopify.shopid == SHOP_ID
    # Payloads compare as models: times as instants, money as decimals.
    assert ev.payload(woo, model) == ev.payload(shopify, model)


# --- the same canonical events as Shopify's --------------------------------------------------


async def test_a_signed_order_is_the_event_shopifys_orders_create_gives(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    woo = await _produced(client, sink, await _post(client, woo_delivery("order.created")))
    shopify = await _shopify_event(client, sink, "orders.create", _shopify_order_like_the_woo_one())
    _same_event(woo, shopify, ev.OrderEvent)
    order = ev.payload(woo, ev.OrderEvent)
    assert woo.type == ev.ORDER_PLACED
    assert woo.subject == f"{SHOP_ID}:c:25"
    assert order.total_price == Decimal("29.35") and order.currency == "EUR"
    assert order.placed_at == datetime(2022, 1, 1, tzinfo=UTC)  # date_created_gmt, not local
    assert [(line.product_id, line.quantity, line.price) for line in order.lines] == [
        ("93", 2, Decimal("3.00")),
        ("22", 1, Decimal("12.00")),
    ]


async def test_a_guest_order_is_keyed_by_the_billing_email_as_a_shopify_guest_is(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    body = _woo_order(customer_id=0)
    response = await _post(client, woo_delivery("order.created", body=body))
    woo = await _produced(client, sink, response)
    shopify = await _shopify_event(
        client, sink, "orders.create", _shopify_order_like_the_woo_one(guest=True)
    )
    assert woo.subject == shopify.subject == f"{SHOP_ID}:e:john.doe@example.com"
    woo_order, shopify_order = ev.payload(woo, ev.OrderEvent), ev.payload(shopify, ev.OrderEvent)
    assert woo_order.customer.id is None and shopify_order.customer.id is None
    # A Shopify guest order says no more than the e-mail; WooCommerce's billing adds the name.
    assert woo_order.customer.first_name == "John"
    assert woo_order.model_copy(update={"customer": shopify_order.customer}) == shopify_order


async def test_a_completed_order_is_paid_as_shopifys_orders_paid(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    woo = await _produced(client, sink, await _post(client, woo_delivery("order.updated")))
    shopify = await _shopify_event(client, sink, "orders.paid", _shopify_order_like_the_woo_one())
    assert woo.type == ev.ORDER_PAID
    _same_event(woo, shopify, ev.OrderEvent)


@pytest.mark.parametrize("status", ["cancelled", "refunded", "failed"])
async def test_a_cancelled_refunded_or_failed_order_is_shopifys_orders_cancelled(
    client: httpx.AsyncClient, sink: RecordingSink, status: str
) -> None:
    body = {**woo_body("order.updated"), "status": status}
    response = await _post(client, woo_delivery("order.updated", body=body))
    woo = await _produced(client, sink, response)
    shopify_body = _shopify_order_like_the_woo_one(cancelled_at="2022-01-02T10:30:00+01:00")
    shopify = await _shopify_event(client, sink, "orders.cancelled", shopify_body)
    assert woo.type == ev.ORDER_CANCELLED
    _same_event(woo, shopify, ev.OrderEvent)


@pytest.mark.parametrize(
    ("woo_fixture", "shopify_fixture"),
    [("customer.created", "customers.create"), ("customer.updated", "customers.update")],
)
async def test_a_signed_customer_is_the_event_shopifys_customers_topic_gives(
    client: httpx.AsyncClient, sink: RecordingSink, woo_fixture: str, shopify_fixture: str
) -> None:
    woo_customer = woo_body(woo_fixture)
    woo = await _produced(client, sink, await _post(client, woo_delivery(woo_fixture)))
    shopify_body = {
        **_shopify_customer_like_the_woo_one(fixture_body("orders.create")["customer"]),
        "last_name": woo_customer["last_name"],
        "created_at": "2021-12-20T11:09:28+01:00",  # date_created_gmt 2021-12-20T10:09:28
    }
    shopify = await _shopify_event(client, sink, shopify_fixture, shopify_body)
    _same_event(woo, shopify, ev.CustomerChanged)
    customer = ev.payload(woo, ev.CustomerChanged).customer
    assert woo.subject == f"{SHOP_ID}:c:25"
    assert customer.registered_at == datetime(2021, 12, 20, 10, 9, 28, tzinfo=UTC)
    assert customer.country == "DE"


async def test_products_go_to_the_catalog(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    created = await _produced(client, sink, await _post(client, woo_delivery("product.created")))
    updated = await _produced(client, sink, await _post(client, woo_delivery("product.updated")))
    product = ev.payload(created, ev.ProductUpdated)
    assert created.type == updated.type == ev.PRODUCT_UPDATED
    assert created.subject is None and sink.events[0].key == f"{SHOP_ID}:product:794"
    assert (product.title, product.category, product.tags) == (
        "Premium Quality",
        "Clothing",
        ["Cotton"],
    )
    assert product.price == Decimal("21.99") and product.available
    assert product.url == "https://shop.example/product/premium-quality-19/"
    changed = ev.payload(updated, ev.ProductUpdated)
    assert changed.price == Decimal("17.99") and not changed.available  # out of stock


# --- what is answered --------------------------------------------------------------------------


def _dropped(reason: str) -> float:
    labels = {"service": "ingest", "platform": "woocommerce", "reason": reason}
    return REGISTRY.get_sample_value("rebound_webhooks_dropped_total", labels) or 0.0


@pytest.mark.parametrize("url", [URL, f"{URL}/{SHOP_ID}"])
async def test_the_ping_when_a_webhook_is_saved_gets_200(
    client: httpx.AsyncClient, sink: RecordingSink, url: str
) -> None:
    before = _dropped("ping")
    response = await client.post(url, content=PING_BODY, headers=PING_HEADERS)
    assert response.status_code == 200
    assert _dropped("ping") == before + 1
    assert sink.events == []


async def test_a_ping_to_a_shop_path_nobody_configured_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{URL}/no-such-shop", content=PING_BODY, headers=PING_HEADERS)
    assert response.status_code == 404
    assert "no-such-shop" in response.json()["error"]


@pytest.mark.parametrize(
    "forge",
    [
        lambda d: {**d.headers, "x-wc-webhook-signature": "AAAA"},
        lambda d: {k: v for k, v in d.headers.items() if k != "x-wc-webhook-signature"},
        lambda d: {**d.headers, "x-wc-webhook-source": "https://other.example/"},
        lambda d: woo_delivery("order.created", secret="guess").headers,
    ],
)
async def test_a_forged_or_unknown_delivery_is_401(
    client: httpx.AsyncClient, sink: RecordingSink, forge: Any
) -> None:
    d = woo_delivery("order.created")
    response = await client.post(URL, content=d.body, headers=forge(d))
    assert response.status_code == 401
    assert sink.events == []


async def test_the_shop_in_the_path_needs_no_source_header(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    d = woo_delivery("order.created")
    headers = {**d.headers, "x-wc-webhook-source": "https://behind-a-proxy.internal/"}
    response = await client.post(f"{URL}/{SHOP_ID}", content=d.body, headers=headers)
    assert (await _produced(client, sink, response)).subject == f"{SHOP_ID}:c:25"


async def test_a_signed_topic_rebound_does_not_use_is_200_and_counted(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    before = _dropped("ignored")
    d = woo_delivery("order.created", topic="coupon.created", body={"id": 720, "code": "x"})
    response = await _post(client, d)
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "topic": "coupon.created"}
    assert _dropped("ignored") == before + 1
    assert sink.events == []


@pytest.mark.parametrize("status", ["pending", "on-hold"])
async def test_an_update_to_a_status_rebound_does_not_act_on_is_ignored(
    client: httpx.AsyncClient, sink: RecordingSink, status: str
) -> None:
    body = {**woo_body("order.updated"), "status": status}
    response = await _post(client, woo_delivery("order.updated", body=body))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert sink.events == []


async def test_a_redelivery_is_the_same_event_and_one_delivery_id_can_carry_two_events(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    first = woo_delivery("order.updated", delivery_id="d1")
    for _ in range(2):
        await _post(client, first)
    # WooCommerce's delivery id is only the webhook and the second: a bulk change shares it.
    other_order = woo_delivery("order.updated", delivery_id="d1", body=_woo_order(id=1043))
    await _post(client, other_order)
    ids = [e.id for e in sink.events]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize(
    ("d", "reason"),
    [
        (woo_delivery("order.created", body=b'{"id": 1042, "status"'), "not JSON"),
        (woo_delivery("order.created", body={"id": 1042}), "status: Field required"),
        (woo_delivery("order.created", body=_woo_order(id=10.5)), "id:"),
        (
            woo_delivery("order.created", body=_woo_order(date_created_gmt="0001-01-01T00:00:00")),
            "before 1970",
        ),
    ],
)
async def test_a_body_that_is_not_the_topics_is_400_with_the_reason(
    client: httpx.AsyncClient, sink: RecordingSink, d: WooDelivery, reason: str
) -> None:
    response = await _post(client, d)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert sink.events == []


async def test_a_missing_delivery_id_is_400(client: httpx.AsyncClient) -> None:
    d = woo_delivery("order.created")
    headers = {k: v for k, v in d.headers.items() if k != "x-wc-webhook-delivery-id"}
    response = await client.post(URL, content=d.body, headers=headers)
    assert response.status_code == 400


async def test_only_a_broker_that_cannot_take_the_event_is_5xx(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    sink.down = True
    assert (await _post(client, woo_delivery("order.created"))).status_code == 503
    ping = await client.post(URL, content=PING_BODY, headers=PING_HEADERS)
    ignored = await _post(client, woo_delivery("order.created", topic="order.deleted"))
    assert ping.status_code == ignored.status_code == 200
