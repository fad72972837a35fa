"""The catalog and the lifecycle stage against real PostgreSQL and the real broker: products
from Shopify webhooks and /events, the per-customer recommendation, stage changes published
when an order or time moves them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatcher.adapters.recommendations import IngestRecommendations
from services.ingest.adapters.catalog_repository import CatalogRepository
from services.ingest.app import IngestService
from shared import events as ev
from shared.clock import ManualClock
from shared.errors import Transient
from shared.topics import Topics
from tests.conftest import ADMIN, ADMIN_TOKEN, Infra, eventually
from tests.integration.test_ingest_consumer import activities, rows
from tests.integration.test_ingest_webhooks import ingest_settings, post
from tests.unit.ingest.deliveries import API_TOKEN, SHOP_ID, delivery

pytestmark = pytest.mark.integration
AUTH = {"authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
async def service(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[IngestService]:
    settings = ingest_settings(infra.bootstrap, database_url, topics, role="all")
    # A shop threshold, so the only buyer is not the top 10% by spend.
    shops = [shop.model_copy(update={"high_value_spend": Decimal(1000)}) for shop in settings.shops]
    svc = IngestService(
        settings.model_copy(update={"shops": shops, "admin_token": SecretStr(ADMIN_TOKEN)}), clock
    )
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def submit(client: httpx.AsyncClient, type_: str, id_: str, data: dict[str, Any]) -> None:
    response = await client.post(
        "/events", json={"type": type_, "id": id_, "data": data}, headers=AUTH
    )
    assert response.status_code == 202, response.text


def product(pid: str, category: str, at: datetime, available: bool = True) -> dict[str, Any]:
    return {
        "product_id": pid,
        "title": f"Product {pid}",
        "category": category,
        "price": "10.00",
        "available": available,
        "updated_at": at.isoformat(),
    }


def order(oid: str, customer: str, at: datetime, *lines: tuple[str, int]) -> dict[str, Any]:
    return {
        "order_id": oid,
        "customer": {"id": customer, "email": f"{customer}@example.com"},
        "lines": [
            {"product_id": p, "title": f"Product {p}", "quantity": q, "price": "10.00"}
            for p, q in lines
        ],
        "total_price": str(10 * sum(q for _, q in lines)),
        "placed_at": at.isoformat(),
    }


async def processed(db: AsyncEngine, sql: str, expected: int) -> None:
    async def reached() -> bool:
        return len(await rows(db, sql)) >= expected

    await eventually(reached, what=sql)


async def test_shopify_product_webhooks_create_update_and_delete_the_product(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    for name in ("products.create", "products.update"):
        assert (await post(client, delivery(name))).status_code == 200
    await processed(db, "SELECT 1 FROM ingest.products", 1)
    [stored] = await rows(db, "SELECT title, category, tags, available FROM ingest.products")
    assert stored == {
        "title": "Example T-Shirt",
        "category": "Shirts",
        "tags": ["example", "mens", "t-shirt"],
        "available": True,
    }

    assert (await post(client, delivery("products.delete"))).status_code == 200

    async def gone() -> bool:
        return await rows(db, "SELECT 1 FROM ingest.products") == []

    await eventually(gone, what="product deleted")


async def test_recommendations_are_unbought_available_products_of_the_last_category_best_first(
    client: httpx.AsyncClient, db: AsyncEngine, clock: ManualClock
) -> None:
    now = clock.now()
    for pid, category, available in [
        ("A", "tea", True), ("B", "tea", True), ("C", "tea", False), ("D", "cups", True),
        ("E", "tea", True), ("F", "tea", True),
    ]:  # fmt: skip
        await submit(client, ev.PRODUCT_UPDATED, f"p-{pid}", product(pid, category, now, available))
    await processed(db, "SELECT 1 FROM ingest.products", 6)
    await submit(client, ev.ORDER_PLACED, "o1", order("o1", "other", now, ("B", 3), ("E", 1)))
    await submit(client, ev.ORDER_PLACED, "o2", order("o2", "ada", now, ("A", 1)))
    await processed(db, "SELECT 1 FROM ingest.orders", 2)

    async with db.connect() as conn:
        found = await CatalogRepository(conn).recommendations(f"{SHOP_ID}:c:ada", now, limit=5)

    assert [(r.product_id, r.units_30d) for r in found] == [("B", 3), ("E", 1), ("F", 0)]
    [ada] = await rows(
        db, "SELECT last_order_categories FROM ingest.customers WHERE customer_id = 'ada'"
    )
    assert ada["last_order_categories"] == ["tea"]  # from the catalog: the line had none


async def test_the_read_api_answers_recommendations_for_a_batch_of_customers(
    client: httpx.AsyncClient, db: AsyncEngine, clock: ManualClock
) -> None:
    now = clock.now()
    for pid, category in [("A", "tea"), ("B", "tea"), ("D", "cups"), ("E", "cups")]:
        await submit(client, ev.PRODUCT_UPDATED, f"p-{pid}", product(pid, category, now))
    await processed(db, "SELECT 1 FROM ingest.products", 4)
    await submit(client, ev.ORDER_PLACED, "o1", order("o1", "ada", now, ("A", 1)))
    await submit(client, ev.ORDER_PLACED, "o2", order("o2", "bob", now, ("D", 2)))
    await processed(db, "SELECT 1 FROM ingest.orders", 2)
    keys = [f"{SHOP_ID}:c:ada", f"{SHOP_ID}:c:bob", f"{SHOP_ID}:c:nobody"]

    refused = await client.post("/customers/recommendations", json={"customer_keys": keys})
    answer = await client.post(
        "/customers/recommendations", json={"customer_keys": keys, "limit": 3}, headers=ADMIN
    )

    assert refused.status_code == 401
    assert answer.status_code == 200, answer.text
    products = answer.json()["products"]
    assert [p["product_id"] for p in products[keys[0]]] == ["B"]
    assert [p["product_id"] for p in products[keys[1]]] == ["E"]
    assert products[keys[2]] == []
    assert products[keys[0]][0] == {
        "product_id": "B",
        "title": "Product B",
        "category": "tea",
        "url": None,
        "image_url": None,
        "price": "10.00",
    }


async def test_the_dispatchers_client_gets_the_products_through_the_read_api(
    client: httpx.AsyncClient, db: AsyncEngine, clock: ManualClock
) -> None:
    now = clock.now()
    for pid in ("A", "B"):
        await submit(client, ev.PRODUCT_UPDATED, f"p-{pid}", product(pid, "tea", now))
    await processed(db, "SELECT 1 FROM ingest.products", 2)
    await submit(client, ev.ORDER_PLACED, "o1", order("o1", "ada", now, ("A", 1)))
    await processed(db, "SELECT 1 FROM ingest.orders", 1)
    ada = f"{SHOP_ID}:c:ada"

    allowed = IngestRecommendations(client, "http://ingest", SecretStr(ADMIN_TOKEN))
    found = await allowed.for_customers([ada])
    refused = IngestRecommendations(client, "http://ingest", SecretStr("wrong"))

    assert [p.title for p in found[ada]] == ["Product B"]
    with pytest.raises(Transient, match="401"):
        await refused.for_customers([ada])


async def test_stage_changes_are_published_when_time_or_an_order_moves_them(
    client: httpx.AsyncClient, db: AsyncEngine, clock: ManualClock, infra: Infra, topics: Topics
) -> None:
    await submit(client, ev.ORDER_PLACED, "o1", order("o1", "ada", clock.now(), ("A", 1)))
    await processed(db, "SELECT 1 FROM ingest.customers WHERE stage = 'new'", 1)

    await clock.advance(timedelta(days=31))
    await stage_published(infra, topics, "one_time_buyer")
    cart = {
        "cart_id": "c1",
        "customer": {"id": "ada", "email": "ada@example.com"},
        "lines": [{"product_id": "A", "title": "Product A", "quantity": 1, "price": "10.00"}],
        "updated_at": clock.now().isoformat(),
    }
    await submit(client, ev.CART_UPDATED, "c1", cart)
    await processed(db, "SELECT 1 FROM ingest.carts WHERE status = 'open'", 1)
    await clock.advance(timedelta(days=20))
    asleep = await stage_published(infra, topics, "falling_asleep")
    # Every activity carries all the facts: a stage change does not read as "the cart is gone".
    assert asleep["cart"]["cart_id"] == "c1"
    await submit(client, ev.ORDER_PLACED, "o2", order("o2", "ada", clock.now(), ("A", 1)))
    changed = await stage_published(infra, topics, "active")

    assert changed["previous_stage"] == "falling_asleep"
    assert changed["profile"]["orders_count"] == 2
    assert changed["profile"]["average_days_between_orders"] == 51


async def stage_published(infra: Infra, topics: Topics, stage: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def published() -> bool:
        found[:] = [
            a.data
            for a in await activities(infra, topics)
            if a.data["kind"] == ev.STAGE_CHANGED_KIND and a.data["profile"]["stage"] == stage
        ]
        return bool(found)

    await eventually(published, what=f"stage {stage} published")
    return found[0]


async def test_the_published_profile_carries_rhythm_periods_categories_and_time_zone(
    client: httpx.AsyncClient, clock: ManualClock, infra: Infra, topics: Topics
) -> None:
    now = clock.now()
    await submit(client, ev.PRODUCT_UPDATED, "p-T", product("T", "tea", now))
    customer = {"id": "kiko", "email": "kiko@example.com", "country": "JP",
                "registered_at": (now - timedelta(days=400)).isoformat()}  # fmt: skip
    for n, (days_ago, lines) in enumerate([(120, [("T", 1)]), (60, [("T", 2)]), (10, [("U", 1)])]):
        placed = order(f"k{n}", "kiko", now - timedelta(days=days_ago), *lines)
        await submit(client, ev.ORDER_PLACED, f"k{n}", {**placed, "customer": customer})

    found: list[dict[str, Any]] = []

    async def third_order_published() -> bool:
        found[:] = [
            a.data["profile"]
            for a in await activities(infra, topics)
            if a.subject == f"{SHOP_ID}:c:kiko" and a.data["profile"]["orders_count"] == 3
        ]
        return bool(found)

    await eventually(third_order_published, what="the profile after the third order")
    p = found[-1]
    assert p["time_zone"] == "Asia/Tokyo"  # from the country: no zone was given
    assert p["registered_at"].startswith((now - timedelta(days=400)).date().isoformat())
    assert (p["average_days_between_orders"], p["days_since_last_order"]) == (55, 10)
    assert p["expected_next_order_at"].startswith((now + timedelta(days=45)).date().isoformat())
    assert (p["orders_last_period"], p["orders_previous_period"], p["period_days"]) == (2, 1, 90)
    # the orders the periods are summed from, so the scheduler can slide them with time
    assert [o["at"][:10] for o in p["recent_orders"]] == [
        (now - timedelta(days=d)).date().isoformat() for d in (120, 60, 10)
    ]
    # T's category comes from the catalog; U is unknown, so the last order has no category.
    assert [(c["category"], c["orders"], c["average_days_between_orders"]) for c in
            p["categories"]] == [("tea", 2, 60)]  # fmt: skip
    assert (p["last_order_categories"], p["stage"]) == ([], "active")
