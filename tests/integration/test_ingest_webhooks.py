"""The webhook edge against the real broker: what is answered and what lands on shop.events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import devstack  # on sys.path through tests/conftest.py
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import SHOP_EVENTS, Topics
from tests.conftest import Infra
from tests.unit.ingest.deliveries import (
    CHECKOUT_CUSTOMER_ID,
    SHOP,
    SHOP_ID,
    Delivery,
    delivery,
    fixture_body,
)

pytestmark = pytest.mark.integration


async def read_topic(
    bootstrap: str, topic: str, settle_s: float = 0.5
) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    """Everything on the topic now: (key, value, headers), read without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            await consumer.client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=int(settle_s * 1000))
            records += [r for rs in batch.values() for r in rs]
        return [(r.key, r.value, dict(r.headers or ())) for r in records]
    finally:
        await consumer.stop()


def ingest_settings(
    bootstrap: str, database_url: str, topics: Topics, role: str = "api"
) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,
        topic_prefix=topics.prefix,
        shops=[SHOP],
        role=role,
        produce_timeout_s=2.0,
    )


@pytest.fixture
async def service(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[IngestService]:
    svc = IngestService(ingest_settings(infra.bootstrap, database_url, topics), clock)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def post(client: httpx.AsyncClient, d: Delivery) -> httpx.Response:
    return await client.post("/webhooks/shopify", content=d.body, headers=d.headers)


async def test_signed_checkout_is_acknowledged_after_one_event_is_on_the_topic(
    client: httpx.AsyncClient, infra: Infra, topics: Topics
) -> None:
    response = await post(client, delivery("checkouts.create"))
    assert response.status_code == 200, response.text
    [(key, value, headers)] = await read_topic(infra.bootstrap, topics.name(SHOP_EVENTS))
    event = ev.decode(value)
    assert key == f"{SHOP_ID}:c:{CHECKOUT_CUSTOMER_ID}".encode()
    assert headers["content-type"] == ev.CONTENT_TYPE.encode()
    assert event.id == response.json()["event_id"]
    assert event.type == ev.CART_UPDATED
    cart = ev.payload(event, ev.CartUpdated)
    assert [line.title for line in cart.lines] == ["IPod Nano - 8GB", "IPod Nano - 8GB"]
    assert cart.customer.id == CHECKOUT_CUSTOMER_ID


# The delivery that once stopped reminders for a third of all customers: refused at the edge.
YEAR_ONE_CHECKOUT = {**fixture_body("checkouts.create"), "updated_at": "0001-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("d", "status"),
    [
        (delivery("checkouts.create", secret="forged"), 401),
        (delivery("checkouts.create", body=delivery("checkouts.create").body[:100]), 400),
        (delivery("checkouts.create", body=YEAR_ONE_CHECKOUT), 400),
        (delivery("checkouts.delete"), 200),
        (delivery("checkouts.create", topic="shop/redact"), 200),
    ],
)
async def test_refused_or_ignored_deliveries_produce_nothing(
    client: httpx.AsyncClient, infra: Infra, topics: Topics, d: Delivery, status: int
) -> None:
    response = await post(client, d)
    assert response.status_code == status, response.text
    assert await read_topic(infra.bootstrap, topics.name(SHOP_EVENTS)) == []


async def test_an_unreachable_broker_is_503(
    topics: Topics, database_url: str, clock: ManualClock
) -> None:
    nobody_listens = f"127.0.0.1:{devstack.free_port()}"
    settings = ingest_settings(nobody_listens, database_url, topics)
    service = IngestService(settings, clock)
    await service.start()
    try:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            response = await post(client, delivery("checkouts.create"))
            assert response.status_code == 503
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await service.stop()
