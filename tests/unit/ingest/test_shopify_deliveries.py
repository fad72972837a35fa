"""Shopify deliveries that are the same event (X-Shopify-Event-Id) or stale
(X-Shopify-Triggered-At), at the HTTP edge without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY

from services.ingest.api import IngestApp, shopify_delivery, shopify_router
from services.ingest.app import shop_directory
from shared.clock import ManualClock
from tests.unit.ingest.deliveries import SHOP, Delivery, delivery
from tests.unit.ingest.test_api import RecordingSink

NOW = datetime(2024, 10, 1, 12, tzinfo=UTC)
MAX_AGE = timedelta(hours=24)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture(params=["lean", "route"])
async def client(
    sink: RecordingSink, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    """The lean path (what production answers) and the documented route, both with an age."""
    shops = shop_directory([SHOP])
    clock = ManualClock(NOW)
    app = IngestApp()
    app.include_router(shopify_router(shops, sink, clock, MAX_AGE))
    if request.param == "lean":
        app.lean_posts["/webhooks/shopify"] = shopify_delivery(shops, sink, clock, MAX_AGE)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield client


def _sent(d: Delivery, **headers: str) -> Delivery:
    return Delivery(d.topic, {**d.headers, **headers}, d.body)


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # Shopify writes nanoseconds


async def _post(client: httpx.AsyncClient, d: Delivery) -> httpx.Response:
    return await client.post("/webhooks/shopify", content=d.body, headers=d.headers)


async def test_the_same_event_id_under_another_webhook_id_is_the_same_event(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    order = delivery("orders.paid")
    fresh = _at(NOW - timedelta(minutes=5))
    first = _sent(order, **{"x-shopify-event-id": "98880550", "x-shopify-triggered-at": fresh})
    second = _sent(first, **{"x-shopify-webhook-id": "another-subscription-or-retry"})
    other_event = _sent(first, **{"x-shopify-event-id": "98880551"})
    for d in (first, second, other_event):
        assert (await _post(client, d)).status_code == 200
    ids = [e.id for e in sink.events]
    assert ids[0] == ids[1] != ids[2]


async def test_without_an_event_id_the_webhook_id_decides(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    order = delivery("orders.paid")
    order = _sent(order, **{"x-shopify-triggered-at": _at(NOW)})
    for d in (order, order, _sent(order, **{"x-shopify-webhook-id": "other"})):
        assert (await _post(client, d)).status_code == 200
    ids = [e.id for e in sink.events]
    assert ids[0] == ids[1] != ids[2]


def _stale_count() -> float:
    labels = {"service": "ingest", "platform": "shopify", "reason": "stale"}
    return REGISTRY.get_sample_value("rebound_webhooks_dropped_total", labels) or 0.0


async def test_a_delivery_triggered_longer_ago_than_the_age_is_counted_and_ignored(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    before = _stale_count()
    old = _sent(
        delivery("orders.paid"), **{"x-shopify-triggered-at": _at(NOW - MAX_AGE - timedelta(1))}
    )
    response = await _post(client, old)
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "topic": "orders/paid", "reason": "stale"}
    assert _stale_count() == before + 1
    assert sink.events == []


async def test_a_delivery_within_the_age_or_without_a_time_is_taken(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    order = delivery("orders.paid")
    within = _sent(order, **{"x-shopify-triggered-at": _at(NOW - MAX_AGE + timedelta(minutes=1))})
    untimed = Delivery(
        order.topic, {k: v for k, v in order.headers.items() if "triggered" not in k}, order.body
    )
    for d in (within, untimed):
        assert (await _post(client, d)).json()["status"] == "accepted"
    assert len(sink.events) == 2
