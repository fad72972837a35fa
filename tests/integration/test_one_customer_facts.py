"""A guest and the account with the same e-mail become one customer in ingest's facts, in
whichever order their events arrive, and a redelivery changes nothing (real PostgreSQL and
broker; docs/adr/0004-one-customer.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import IngestService
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import Topics
from tests.conftest import Infra, eventually
from tests.integration.test_ingest_consumer import activities, rows
from tests.integration.test_ingest_webhooks import ingest_settings, post
from tests.unit.ingest.deliveries import SHOP_ID, Delivery
from tests.unit.ingest.guest_deliveries import (
    ACCOUNT_CART,
    ACCOUNT_KEY,
    EMAIL,
    GUEST_CART,
    GUEST_KEY,
    account_checkout,
    guest_checkout,
    order,
    registration,
)

pytestmark = pytest.mark.integration

GUEST_EVENTS = [
    guest_checkout(),
    order("9001", "100.00", "2021-12-01T10:00:00+00:00", guest=True),
]
ACCOUNT_EVENTS = [
    registration(),
    order("9002", "50.00", "2021-12-20T10:00:00+00:00", guest=False),
    account_checkout(updated_at="2022-01-01T01:00:00+00:00"),
]


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


async def _deliver_in_turn(client: httpx.AsyncClient, db: AsyncEngine, ds: list[Delivery]) -> None:
    """Each delivery applied before the next is sent: the order the test names is the order."""
    for d in ds:
        before = await _processed(db)
        assert (await post(client, d)).status_code == 200

        async def applied(before: int = before) -> bool:
            return await _processed(db) > before

        await eventually(applied, what=f"{d.topic} applied")


async def _processed(db: AsyncEngine) -> int:
    return int((await rows(db, "SELECT count(*) AS n FROM ingest.processed_events"))[0]["n"])


async def _one_person(db: AsyncEngine) -> dict[str, Any]:
    """What ingest holds about the shopper; fails unless it is one customer."""
    customers = await rows(
        db,
        "SELECT customer_key, customer_id, email, first_name, orders_count, total_spent,"
        " first_order_at, last_order_at FROM ingest.customers WHERE shop_id = :s",
        s=SHOP_ID,
    )
    assert [c["customer_key"] for c in customers] == [ACCOUNT_KEY]
    carts = await rows(db, "SELECT cart_id, customer_key, status FROM ingest.carts ORDER BY 1")
    orders = await rows(db, "SELECT order_id, customer_key FROM ingest.orders ORDER BY 1")
    return {"customer": customers[0], "carts": carts, "orders": orders}


def _assert_merged(person: dict[str, Any]) -> None:
    customer = person["customer"]
    assert customer["customer_id"] == "7001" and customer["email"].strip().lower() == EMAIL
    assert customer["first_name"] == "Ada"
    assert (customer["orders_count"], customer["total_spent"]) == (2, Decimal("150.00"))
    assert customer["first_order_at"] == datetime(2021, 12, 1, 10, tzinfo=UTC)
    assert customer["last_order_at"] == datetime(2021, 12, 20, 10, tzinfo=UTC)
    assert person["carts"] == [
        {"cart_id": ACCOUNT_CART, "customer_key": ACCOUNT_KEY, "status": "open"},
        {"cart_id": GUEST_CART, "customer_key": ACCOUNT_KEY, "status": "open"},
    ]
    assert person["orders"] == [
        {"order_id": "9001", "customer_key": ACCOUNT_KEY},
        {"order_id": "9002", "customer_key": ACCOUNT_KEY},
    ]


async def _last_profile(infra: Infra, topics: Topics) -> ev.Activity:
    found = [ev.payload(e, ev.Activity) for e in await activities(infra, topics)]
    assert {a.profile.key for a in found} <= {GUEST_KEY, ACCOUNT_KEY}
    return [a for a in found if a.profile.key == ACCOUNT_KEY][-1]


async def test_guest_then_account_become_one_customer_and_the_merge_is_announced(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    await _deliver_in_turn(client, db, GUEST_EVENTS + ACCOUNT_EVENTS)
    _assert_merged(await _one_person(db))

    found = [ev.payload(e, ev.Activity) for e in await activities(infra, topics)]
    merges = [a for a in found if a.kind == ev.CUSTOMER_MERGED_KIND]
    assert len(merges) == 1 and merges[0].merged is not None
    assert (merges[0].merged.surviving_key, merges[0].merged.merged_key) == (
        ACCOUNT_KEY,
        GUEST_KEY,
    )
    last = await _last_profile(infra, topics)
    assert (last.profile.orders_count, last.profile.total_spent) == (2, Decimal("150.00"))
    assert last.cart is not None and last.cart.cart_id == ACCOUNT_CART  # the newest open cart


async def test_account_then_guest_give_the_same_customer_with_nothing_to_merge(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    await _deliver_in_turn(client, db, ACCOUNT_EVENTS + GUEST_EVENTS)
    _assert_merged(await _one_person(db))
    found = [ev.payload(e, ev.Activity) for e in await activities(infra, topics)]
    assert {a.profile.key for a in found} == {ACCOUNT_KEY}  # the guest's events land on it
    assert not [a for a in found if a.kind == ev.CUSTOMER_MERGED_KIND]


async def test_redelivered_and_late_guest_events_after_the_merge_land_on_the_account(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics
) -> None:
    await _deliver_in_turn(client, db, GUEST_EVENTS + ACCOUNT_EVENTS)
    before = await _one_person(db)
    published = len(await activities(infra, topics))

    # The same guest order again (Shopify retried it), then the registration again.
    for again in (GUEST_EVENTS[1], ACCOUNT_EVENTS[0]):
        assert (await post(client, again)).status_code == 200

    async def republished() -> bool:  # a duplicate's activity (and the merge) go out again
        return len(await activities(infra, topics)) >= published + 3

    await eventually(republished, what="the redeliveries' activity")
    assert await _one_person(db) == before

    late = guest_checkout(updated_at="2022-01-01T02:00:00+00:00", hook="late-update")
    await _deliver_in_turn(client, db, [late])
    after = await _one_person(db)
    assert after["customer"] == before["customer"]
    assert {c["customer_key"] for c in after["carts"]} == {ACCOUNT_KEY}
    last = await _last_profile(infra, topics)
    assert last.cart is not None and last.cart.cart_id == GUEST_CART  # now the newest
    merges = [
        e
        for e in await activities(infra, topics)
        if ev.payload(e, ev.Activity).kind == ev.CUSTOMER_MERGED_KIND
    ]
    # The registration merged the guest: its redelivery announces the merge again, same id.
    assert len(merges) == 2 and len({e.id for e in merges}) == 1
