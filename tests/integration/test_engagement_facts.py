"""Opens, clicks, unsubscribes and orders after them, through the real tracking endpoints,
broker and PostgreSQL: the facts change, the scheduler is told, conversions are credited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import CUSTOMER_ACTIVITY, ENGAGEMENT_RESULTS, Topics
from shared.tracking import Claims, Link, MessageRef, TokenSigner, TrackingKey
from tests.conftest import Infra, eventually, read_topic
from tests.unit.ingest.deliveries import API_TOKEN, SHOP, SHOP_ID

pytestmark = pytest.mark.integration
KEY = TrackingKey(kid="k1", secret=SecretStr("t" * 40))
SIGNER = TokenSigner([KEY])
CUSTOMER = f"{SHOP_ID}:c:77"
BROWSER = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}
AUTH = {"authorization": f"Bearer {API_TOKEN}"}
LINK = "https://shop.example/new?utm_source=rebound"
PROXY = {"user-agent": "Mozilla/5.0"}  # how a mail privacy proxy fetches the pixel
CONSENT = {"marketing_consent": "subscribed"}


@pytest.fixture
async def service(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[IngestService]:
    settings = IngestSettings(
        kafka_bootstrap_servers=infra.bootstrap,
        database_url=database_url,
        topic_prefix=topics.prefix,
        shops=[SHOP],
        role="all",
        produce_timeout_s=2.0,
        tracking_keys=[KEY],
    )
    svc = IngestService(settings, clock)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def rows(db: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(text(sql))]


async def on_topic(infra: Infra, topic: str) -> list[ev.CloudEvent]:
    return [ev.decode(r.value) for r in await read_topic(infra.bootstrap, topic)]


def message(clock: ManualClock, step: str = "reason") -> MessageRef:
    sent = clock.now() - timedelta(hours=1)
    return MessageRef(SHOP_ID, CUSTOMER, f"win-back:1:{step}", "win-back", step, sent)


async def submit(client: httpx.AsyncClient, type_: str, id_: str, data: dict[str, Any]) -> None:
    response = await client.post(
        "/events", json={"type": type_, "id": id_, "data": data}, headers=AUTH
    )
    assert response.status_code == 202, response.text


async def registered(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    customer = {"id": "77", "email": "ada@example.com", "marketing_consent": "subscribed"}
    await submit(client, ev.CUSTOMER_REGISTERED, "reg-77", {"customer": customer})

    async def known() -> bool:
        return bool(await rows(db, "SELECT 1 FROM ingest.customers"))

    await eventually(known, what="the customer in the facts")


async def order(client: httpx.AsyncClient, order_id: str, placed_at: datetime, total: str) -> None:
    data = {
        "order_id": order_id,
        "customer": {"id": "77", "email": "ada@example.com"},
        "lines": [{"title": "Mug", "quantity": 1, "price": total}],
        "currency": "EUR",
        "total_price": total,
        "placed_at": placed_at.isoformat(),
    }
    await submit(client, ev.ORDER_PLACED, f"order-{order_id}", data)


async def test_a_human_open_and_a_click_become_message_facts_the_scheduler_hears(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics, clock: ManualClock
) -> None:
    await registered(client, db)
    ref = message(clock)
    await client.get(f"/t/o/{SIGNER.sign(Claims('open', ref))}", headers=BROWSER)
    await client.get(
        f"/t/o/{SIGNER.sign(Claims('open', ref))}", headers={"user-agent": "Mozilla/5.0"}
    )
    clicked = await client.get(f"/t/c/{SIGNER.sign(Claims('click', ref, Link(0, 1, LINK)))}")
    assert clicked.status_code == 302 and clicked.headers["location"] == LINK

    async def counted() -> bool:
        found = await rows(db, "SELECT * FROM ingest.messages")
        return (
            bool(found)
            and found[0]["first_click_at"] is not None
            and found[0]["machine_opens"] == 1
        )

    await eventually(counted, what="open and click in the facts")
    [row] = await rows(db, "SELECT * FROM ingest.messages")
    assert (row["human_opens"], row["machine_opens"], row["clicked_links"]) == (1, 1, [LINK])
    assert row["first_human_open_at"] == clock.now()

    async def told() -> list[ev.Activity]:
        published = await on_topic(infra, topics.name(CUSTOMER_ACTIVITY))
        return [
            a for a in (ev.payload(e, ev.Activity) for e in published) if a.kind == ev.EMAIL_CLICKED
        ]

    await eventually(told, what="activity for the click")
    [activity] = await told()
    assert activity.message is not None and activity.message.request_key == ref.request_key
    assert activity.message.first_click_at == clock.now()
    assert activity.profile.last_click_at == clock.now()


async def test_one_click_unsubscribe_changes_the_consent(
    client: httpx.AsyncClient, db: AsyncEngine, clock: ManualClock
) -> None:
    await registered(client, db)
    url = f"/u/{SIGNER.sign(Claims('unsubscribe', message(clock)))}"
    assert (await client.get(url)).status_code == 200
    response = await client.post(url, content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 200

    async def unsubscribed() -> bool:
        found = await rows(db, "SELECT marketing_consent FROM ingest.customers")
        return found == [{"marketing_consent": "unsubscribed"}]

    await eventually(unsubscribed, what="consent unsubscribed")


async def test_an_order_two_days_after_a_click_is_credited_one_ten_days_after_is_not(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics, clock: ManualClock
) -> None:
    await registered(client, db)
    ref = message(clock)
    clicked_at = clock.now()
    await client.get(f"/t/c/{SIGNER.sign(Claims('click', ref, Link(0, 1, LINK)))}")

    async def clicked() -> bool:
        return bool(
            await rows(db, "SELECT 1 FROM ingest.messages WHERE first_click_at IS NOT NULL")
        )

    await eventually(clicked, what="the click in the facts")
    await clock.advance(timedelta(days=2))
    await order(client, "o-2d", clicked_at + timedelta(days=2), "84.90")
    await clock.advance(timedelta(days=8))
    await order(client, "o-10d", clicked_at + timedelta(days=10), "20.00")

    async def converted() -> list[ev.MessageConverted]:
        published = await on_topic(infra, topics.name(ENGAGEMENT_RESULTS))
        return [
            ev.payload(e, ev.MessageConverted) for e in published if e.type == ev.MESSAGE_CONVERTED
        ]

    await eventually(converted, what="message.converted")

    async def both_orders_seen() -> bool:
        return len(await rows(db, "SELECT 1 FROM ingest.orders")) == 2

    await eventually(both_orders_seen, what="both orders")
    await eventually(
        lambda: _attributions_settled(infra, topics), what="attribution of both orders"
    )
    [credited] = await converted()
    assert (credited.order_id, credited.revenue, credited.currency) == (
        "o-2d",
        Decimal("84.90"),
        "EUR",
    )
    assert (credited.request_key, credited.touch) == (ref.request_key, "click")
    assert credited.touched_at == clicked_at
    assert await rows(db, "SELECT order_id FROM ingest.conversions") == [{"order_id": "o-2d"}]
    [row] = await rows(db, "SELECT converted_at, revenue FROM ingest.messages")
    assert row == {"converted_at": clicked_at + timedelta(days=2), "revenue": Decimal("84.90")}


CART = "cart-left"
CART_LINES = [
    {"product_id": "p1", "variant_id": "v1", "title": "Mug", "quantity": 2, "price": "12.00"},
    {"product_id": "p2", "title": "Tea", "quantity": 1, "price": "8.50"},
]
# The cart's items split into other lines, in another order, one naming only the variant.
SAME_LINES = [
    {"product_id": "p2", "title": "Tea", "quantity": 1, "price": "8.50"},
    {"variant_id": "v1", "title": "Mug", "quantity": 1, "price": "12.00"},
    {"product_id": "p1", "variant_id": "v1", "title": "Mug", "quantity": 1, "price": "12.00"},
]
MORE_LINES = [*CART_LINES, {"product_id": "p3", "title": "Spoon", "quantity": 1, "price": "3"}]
FEWER_LINES = [{**CART_LINES[0], "quantity": 1}, CART_LINES[1]]


@pytest.mark.parametrize(
    ("lines", "cart_id", "recovered"),
    [
        (SAME_LINES, None, CART),
        (MORE_LINES, None, None),
        (FEWER_LINES, None, None),
        (CART_LINES, "another-checkout", None),
        (MORE_LINES, CART, CART),
    ],
    ids=["same-lines", "extra-item", "one-mug-less", "another-cart-id", "its-cart-id"],
)
async def test_an_order_without_a_cart_id_recovers_the_reminded_cart_with_the_same_lines(
    client: httpx.AsyncClient,
    db: AsyncEngine,
    infra: Infra,
    topics: Topics,
    clock: ManualClock,
    lines: list[dict[str, Any]],
    cart_id: str | None,
    recovered: str | None,
) -> None:
    await registered(client, db)
    customer = {"id": "77", "email": "ada@example.com"}
    cart = {"cart_id": CART, "customer": customer, "lines": CART_LINES, "currency": "EUR"}
    left_at = clock.now() - timedelta(hours=2)  # the reminder (message) went out an hour later
    await submit(client, ev.CART_UPDATED, "cart-v1", {**cart, "updated_at": left_at.isoformat()})

    async def cart_stored() -> bool:
        return bool(await rows(db, "SELECT 1 FROM ingest.carts"))

    await eventually(cart_stored, what="the abandoned cart in the facts")
    await client.get(f"/t/c/{SIGNER.sign(Claims('click', message(clock), Link(0, 1, LINK)))}")

    async def clicked() -> bool:
        return bool(await rows(db, "SELECT 1 FROM ingest.messages WHERE last_click_at IS NOT NULL"))

    await eventually(clicked, what="the click in the facts")
    await clock.advance(timedelta(hours=3))
    placed = {
        "order_id": "pos-1",
        "customer": customer,
        "lines": lines,
        "currency": "EUR",
        "total_price": "32.50",
        "placed_at": clock.now().isoformat(),
    }
    await submit(client, ev.ORDER_PLACED, "order-pos-1", {**placed, "cart_id": cart_id})

    async def converted() -> list[ev.MessageConverted]:
        published = await on_topic(infra, topics.name(ENGAGEMENT_RESULTS))
        return [
            ev.payload(e, ev.MessageConverted) for e in published if e.type == ev.MESSAGE_CONVERTED
        ]

    await eventually(converted, what="message.converted")
    [credited] = await converted()
    assert (credited.order_id, credited.revenue) == ("pos-1", Decimal("32.50"))
    assert credited.recovered_cart_id == recovered
    stored = await rows(db, "SELECT recovered_cart_id, revenue FROM ingest.conversions")
    assert stored == [{"recovered_cart_id": recovered, "revenue": Decimal("32.50")}]


async def _attributions_settled(infra: Infra, topics: Topics) -> bool:
    """Both order activities were published; the attribution group read past them."""
    published = await on_topic(infra, topics.name(CUSTOMER_ACTIVITY))
    kinds = [ev.payload(e, ev.Activity).kind for e in published]
    return kinds.count(ev.ORDER_PLACED) == 2 and ev.MESSAGE_CONVERTED in kinds


async def test_a_click_tells_the_scheduler_the_whole_profile_not_only_the_touch(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics, clock: ManualClock
) -> None:
    """The scheduler keeps the latest activity's facts: an open or a click that carried a
    thinner profile would erase the customer's rhythm and stage from its segments."""
    await registered(client, db)
    await order(client, "o1", clock.now() - timedelta(days=30), "20.00")
    await order(client, "o2", clock.now() - timedelta(days=10), "30.00")

    async def both_orders() -> bool:
        return bool(await rows(db, "SELECT 1 FROM ingest.customers WHERE orders_count = 2"))

    await eventually(both_orders, what="the two orders in the facts")
    ref = message(clock)
    await client.get(f"/t/c/{SIGNER.sign(Claims('click', ref, Link(0, 1, LINK)))}")

    async def told() -> list[ev.Activity]:
        published = await on_topic(infra, topics.name(CUSTOMER_ACTIVITY))
        return [
            a for a in (ev.payload(e, ev.Activity) for e in published) if a.kind == ev.EMAIL_CLICKED
        ]

    await eventually(told, what="activity for the click")
    [activity] = await told()
    profile = activity.profile
    assert profile.last_click_at == clock.now()
    assert (profile.orders_count, profile.average_days_between_orders) == (2, 20)
    assert profile.expected_next_order_at == clock.now() + timedelta(days=10)
    assert profile.stage == "active" and len(profile.recent_orders or []) == 2


async def test_the_usual_opening_hour_comes_from_human_opens_in_the_customers_zone(
    client: httpx.AsyncClient, db: AsyncEngine, infra: Infra, topics: Topics, clock: ManualClock
) -> None:
    """`send_at: best_hour` sends at profile.usual_open_hour: the local hour this customer's
    own opens happen at most; a privacy proxy fetching the pixel says nothing about them."""
    customer = {"id": "77", "email": "ada@example.com", "time_zone": "Asia/Tokyo"}
    await submit(client, ev.CUSTOMER_REGISTERED, "reg-77", {"customer": customer | CONSENT})

    async def known() -> bool:
        return bool(await rows(db, "SELECT 1 FROM ingest.customers"))

    await eventually(known, what="the customer in the facts")
    await clock.advance(timedelta(hours=3))  # 03:00 UTC, noon in Tokyo: three proxy fetches
    for step in ("m1", "m2", "m3"):
        ref = message(clock, step)
        await client.get(f"/t/o/{SIGNER.sign(Claims('open', ref))}", headers=PROXY)
    await clock.advance(timedelta(hours=7))  # 10:00 UTC, 19:00 in Tokyo: two of her own
    for step in ("h1", "h2"):
        await client.get(
            f"/t/o/{SIGNER.sign(Claims('open', message(clock, step)))}", headers=BROWSER
        )
        await clock.advance(timedelta(days=1))

    async def told() -> list[ev.Activity]:
        published = await on_topic(infra, topics.name(CUSTOMER_ACTIVITY))
        opened = (ev.payload(e, ev.Activity) for e in published)
        return [a for a in opened if a.kind == ev.EMAIL_OPENED and a.profile.opens_90d == 2]

    await eventually(told, what="the second human open told to the scheduler")
    activity = (await told())[-1]
    assert activity.profile.time_zone == "Asia/Tokyo"
    assert activity.profile.usual_open_hour == 19
