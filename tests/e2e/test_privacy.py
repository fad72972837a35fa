"""Erasure and export through all three services (docs/privacy.md).

A customer with history (an order, an abandoned checkout, an enrolment, a sent reminder, a
click) is exported through the control plane and then erased by Shopify's customers/redact:
afterwards every text, JSON and byte column of every table of the three schemas is searched
for the address and the name, the report totals are compared, and mail asked for before the
erasure is shown never to leave. shop/redact erases a whole shop. Everything is real but the
clock (a ManualClock the test drives).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from mailcatcher import MailStore

from shared import events as ev
from shared.clock import ManualClock
from shared.topics import MESSAGE_REQUESTS, Topics
from tests.conftest import ADMIN, ADMIN_TOKEN, Infra, eventually
from tests.e2e.system import System, running_system
from tests.e2e.test_abandoned_cart import _load_abandoned_cart
from tests.e2e.test_engagement import BROWSER, KEYS, urls
from tests.unit.ingest.deliveries import (
    CART_TOKEN,
    CHECKOUT_CUSTOMER_ID,
    DOMAIN,
    SHOP_ID,
    delivery,
    fixture_body,
    order_for_checkout_customer,
)

pytestmark = pytest.mark.e2e
EMAIL = "quill.brackwater@privacy.example"
FIRST, LAST = "Quillon", "Brackwater"
KEY = f"{SHOP_ID}:c:{CHECKOUT_CUSTOMER_ID}"
OTHER_EMAIL = "jon@example.com"  # the order fixture's own customer, who stays
SCHEMAS = ("ingest", "scheduler", "dispatcher")


def _as_our_customer(body: dict[str, Any]) -> bytes:
    """The fixture's customer renamed, so the sweep looks for strings only they can leave."""
    raw = json.dumps(body)
    for old, new in (
        ("example@email.com", EMAIL),
        ("john@example.com", EMAIL),
        ("John", FIRST),
        ("Smith", LAST),
    ):
        raw = raw.replace(old, new)
    return raw.encode()


@pytest.fixture
async def system(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    mail: tuple[MailStore, int],
) -> AsyncIterator[System]:
    # The checkout's shopper did not opt in; this shop sends cart reminders regardless.
    await _load_abandoned_cart(database_url, clock, "none")
    admin = {"admin_token": ADMIN_TOKEN}
    async with running_system(
        infra, database_url, topics, clock, mail, tracking_keys=KEYS, scheduler=admin
    ) as system:
        yield system


def control_plane(system: System) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=system.scheduler.app)
    return httpx.AsyncClient(transport=transport, base_url="http://scheduler", headers=ADMIN)


async def _history(system: System) -> None:
    """An earlier order, the other customer's order, an abandoned checkout, a reminder, a click."""
    earlier = order_for_checkout_customer()
    earlier["id"], earlier["cart_token"] = 7001, "an-earlier-cart"
    earlier["created_at"] = "2021-12-01T10:00:00Z"  # a month before the checkout
    order = delivery("orders.create", body=_as_our_customer(earlier), webhook_id="order-ours")
    other = delivery("orders.create", webhook_id="order-other")
    checkout = delivery("checkouts.create", body=_as_our_customer(fixture_body("checkouts.create")))
    for d in (order, other, checkout):
        assert (await system.post(d)).status_code == 200
    await eventually(lambda: system.timers(), what="the reminder timer")
    await system.clock.advance(timedelta(hours=3))
    final = "SELECT count(*) FROM dispatcher.messages WHERE status NOT IN ('claimed', 'data')"
    await eventually(lambda: _count(system, final, 1), what="the reminder's outcome")
    assert await system.messages() == [("sent", None)]
    await eventually(lambda: len(system.mail.messages) == 1, what="the reminder")
    [click] = urls(system.mail.messages[0], "t/c")
    async with httpx.AsyncClient() as client:
        assert (await client.get(click, headers=BROWSER)).status_code == 302
    await eventually(lambda: _count(system, _CLICKED, 1), what="the click in both services")


_CLICKED = (
    "SELECT (SELECT count(*) FROM ingest.messages WHERE first_click_at IS NOT NULL)"
    " + (SELECT count(*) FROM scheduler.message_engagement WHERE clicked_at IS NOT NULL) - 1"
)
# What the reports count: none of it may change when a customer is erased.
REPORT_TOTALS = {
    "sent per journey": "SELECT journey_id, status, count(*) FROM dispatcher.messages"
    " GROUP BY 1, 2 ORDER BY 1, 2",
    "orders": "SELECT count(*), sum(total_price), count(DISTINCT customer_key) FROM ingest.orders",
    "order lines": "SELECT count(*), sum(quantity) FROM ingest.order_lines",
    "carts": "SELECT count(*), sum(total_price) FROM ingest.carts",
    "engagement": "SELECT count(*), count(first_click_at) FROM ingest.messages",
    "enrolments": "SELECT journey_id, count(*) FROM scheduler.enrollments GROUP BY 1",
    "scheduler engagement": "SELECT count(*), count(clicked_at) FROM scheduler.message_engagement",
    "report results": "SELECT status, count(*) FROM scheduler.message_results GROUP BY 1",
    "report orders": "SELECT count(*), sum(total), count(DISTINCT customer_key)"
    " FROM scheduler.customer_orders",
}


async def _count(system: System, query: str, expected: int) -> bool:
    return int((await system.sql(query))[0][0]) == expected


async def _totals(system: System) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(r) for r in await system.sql(q)] for name, q in REPORT_TOTALS.items()}


async def _found_anywhere(system: System, needle: str) -> list[str]:
    """Every table of the three schemas whose text, JSON, array or byte columns hold `needle`."""
    tables = await system.sql(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE' AND table_schema = ANY(ARRAY['ingest', 'scheduler',"
        " 'dispatcher'])"
    )
    assert {t[0] for t in tables} == set(SCHEMAS)
    found = []
    for schema, table in tables:
        binary = await system.sql(
            "SELECT column_name FROM information_schema.columns WHERE data_type = 'bytea'"
            f" AND table_schema = '{schema}' AND table_name = '{table}'"
        )
        texts = [f"t::text ILIKE '%{needle}%'"] + [
            f"convert_from(t.{c[0]}, 'UTF8') ILIKE '%{needle}%'" for c in binary
        ]
        query = f'SELECT count(*) FROM "{schema}"."{table}" AS t WHERE {" OR ".join(texts)}'
        if int((await system.sql(query))[0][0]):
            found.append(f"{schema}.{table}")
    return found


async def _wait_complete(api: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = {}

    async def complete() -> bool:
        response = await api.get(f"/privacy/requests/{request_id}")
        answer.update(response.json() if response.status_code == 200 else {})
        return bool(answer.get("complete"))

    await eventually(complete, what=f"every service to answer {request_id}")
    return answer


async def _export(api: httpx.AsyncClient) -> dict[str, Any]:
    asked = await api.post(f"/privacy/customers/{KEY}/export")
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["request_id"]
    await _wait_complete(api, request_id)
    response = await api.get(f"/privacy/exports/{request_id}")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def _redact_delivery(topic: str, body: dict[str, Any], webhook_id: str) -> Any:
    return delivery("orders.create", body=body, topic=topic, webhook_id=webhook_id)


async def test_an_erased_customer_is_nowhere_the_totals_stay_and_queued_mail_stays_unsent(
    system: System,
) -> None:
    await _history(system)
    async with control_plane(system) as api:
        document = await _export(api)
        services = document["services"]
        assert [c["email"] for c in services["ingest"]["customers"]] == [EMAIL]
        assert {o["order_id"] for o in services["ingest"]["orders"]} == {"7001"}
        assert CART_TOKEN in {c["cart_id"] for c in services["ingest"]["carts"]}
        assert [c["profile"]["first_name"] for c in services["scheduler"]["customers"]] == [FIRST]
        assert [e["journey_id"] for e in services["scheduler"]["enrollments"]] == ["abandoned-cart"]
        assert [(m["email"], m["status"]) for m in services["dispatcher"]["messages"]] == [
            (EMAIL, "sent")
        ]
        export_id = document["request_id"]
        before = await _totals(system)

        body = {
            "shop_id": 954889,
            "shop_domain": DOMAIN,
            "customer": {"id": int(CHECKOUT_CUSTOMER_ID), "email": EMAIL, "phone": "555-625-1199"},
            "orders_to_redact": [7001],
        }
        redact = _redact_delivery("customers/redact", body, "redact-1")
        assert (await system.post(redact)).status_code == 200
        request_id = ev.stable_event_id("shopify", DOMAIN, "redact-1")
        status = await _wait_complete(api, request_id)
        assert sorted(status["answered"]) == ["dispatcher", "ingest", "scheduler"]
        assert (await api.get(f"/privacy/exports/{export_id}")).status_code == 410

    for needle in (EMAIL, FIRST, LAST):
        assert await _found_anywhere(system, needle) == [], needle
    assert await _found_anywhere(system, OTHER_EMAIL) != []  # the other customer stays
    assert await _totals(system) == before
    await _in_flight_request_is_dropped(system)

    await system.clock.advance(timedelta(hours=48))  # the discount reminder was due now
    await system.scheduler.timers.fire_due()
    await asyncio.sleep(0.3)
    assert len(system.mail.messages) == 1
    assert await system.sql("SELECT status, exit_reason FROM scheduler.enrollments") == [
        ("exited", "redacted")
    ]


async def _in_flight_request_is_dropped(system: System) -> None:
    """A request the scheduler asked before the erasure, still on its way, is never sent;
    the other customer's request in the same stream is handled."""
    asked_at = system.clock.now() - timedelta(minutes=5)
    ours = _request("abandoned-cart:900:reminder", KEY, EMAIL, asked_at)
    theirs = _request("abandoned-cart:901:reminder", f"{SHOP_ID}:c:other", OTHER_EMAIL, asked_at)
    producer = AIOKafkaProducer(bootstrap_servers=system.infra.bootstrap, acks="all")
    await producer.start()
    try:
        for request in (ours, theirs):
            event = ev.make_event(
                type=ev.MESSAGE_REQUESTED,
                source="test",
                id=request.request_key,
                time=asked_at,
                subject=request.customer_key,
                shop_id=SHOP_ID,
                data=request,
            )
            await producer.send_and_wait(
                system.topics.name(MESSAGE_REQUESTS),
                ev.encode(event),
                key=request.customer_key.encode(),
            )
    finally:
        await producer.stop()
    handled = "SELECT count(*) FROM dispatcher.messages WHERE request_key = '{}'"
    await eventually(
        lambda: _count(system, handled.format(theirs.request_key), 1), what="their request"
    )
    await asyncio.sleep(0.3)
    assert await _count(system, handled.format(ours.request_key), 0)
    assert [m.recipients for m in system.mail.messages][:1] == [[EMAIL]]
    assert all(m.recipients != [EMAIL] for m in system.mail.messages[1:])


def _request(key: str, customer: str, email: str, at: Any) -> ev.MessageRequest:
    return ev.MessageRequest(
        request_key=key,
        shop_id=SHOP_ID,
        customer_key=customer,
        journey_id="abandoned-cart",
        journey_version=1,
        step_id="reminder",
        template="abandoned_cart_reminder",
        subject="Your cart",
        recipient=ev.Recipient(email=email, first_name=FIRST),
        consent_required=False,
        requested_at=at,
    )


async def test_shop_redact_erases_the_whole_shop(system: System) -> None:
    await _history(system)
    body = {"shop_id": 954889, "shop_domain": DOMAIN}
    assert (await system.post(_redact_delivery("shop/redact", body, "shop-1"))).status_code == 200
    async with control_plane(system) as api:
        await _wait_complete(api, ev.stable_event_id("shopify", DOMAIN, "shop-1"))
    for needle in (EMAIL, FIRST, OTHER_EMAIL, SHOP_ID + ":"):
        assert await _found_anywhere(system, needle) == [], needle
    assert await system.sql("SELECT count(*) FROM ingest.orders") == [(0,)]
    assert await system.sql("SELECT count(*) FROM dispatcher.messages") == [(0,)]


async def test_privacy_webhooks_are_verified_like_every_shopify_webhook(system: System) -> None:
    body = {"shop_id": 954889, "shop_domain": DOMAIN, "customer": {"id": 1, "email": EMAIL}}
    forged = delivery("orders.create", body=body, topic="customers/redact", secret="not-the-secret")
    assert (await system.post(forged)).status_code == 401
    other_shop = {**body, "shop_domain": "another.myshopify.com"}
    refused = _redact_delivery("customers/redact", other_shop, "r-2")
    assert (await system.post(refused)).status_code == 400
    nobody = _redact_delivery("customers/redact", {"shop_domain": DOMAIN}, "r-3")
    assert (await system.post(nobody)).status_code == 400
