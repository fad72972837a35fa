"""A cart left in a Shopify shop becomes a reminder in the inbox, through all three services.

Everything is real but the clock: PostgreSQL, the broker, an SMTP server on loopback, the
ingest HTTP server on a port, and the three services' own code. Time is a ManualClock that the
test drives, so 3 hours and 48 hours pass in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from mailcatcher import MailStore

from services.scheduler.domain.journey import parse_journey
from services.scheduler.settings import DEFAULT_JOURNEYS_DIR
from shared.clock import ManualClock
from shared.topics import ENGAGEMENT_RESULTS, SHOP_EVENTS, Topics, dlq
from tests.conftest import Infra, eventually, read_topic
from tests.e2e.system import System, add_journeys, running_system
from tests.unit.ingest.deliveries import (
    CART_TOKEN,
    delivery,
    order_for_checkout_customer,
)

pytestmark = pytest.mark.e2e
CHECKOUT_EMAIL = "example@email.com"


async def _load_abandoned_cart(database_url: str, clock: ManualClock, consent: str) -> None:
    journey = parse_journey((DEFAULT_JOURNEYS_DIR / "abandoned-cart.yaml").read_text())
    await add_journeys(database_url, clock, [journey.model_copy(update={"consent": consent})])


@pytest.fixture(params=["none"])
def journey_consent(request: pytest.FixtureRequest) -> str:
    # The checkout fixture's shopper did not opt in to marketing mail; by default the shop
    # here chose to send cart reminders anyway. The consent test overrides this.
    return str(request.param)


@pytest.fixture
async def system(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    mail: tuple[MailStore, int],
    journey_consent: str,
) -> AsyncIterator[System]:
    await _load_abandoned_cart(database_url, clock, journey_consent)
    async with running_system(infra, database_url, topics, clock, mail) as system:
        yield system


async def _reminder_due(system: System) -> None:
    await eventually(lambda: system.timers(), what="the reminder timer")
    await system.clock.advance(timedelta(hours=3))


async def test_an_abandoned_checkout_gets_one_reminder_and_an_order_stops_the_second(
    system: System,
) -> None:
    response = await system.post(delivery("checkouts.create"))
    assert response.status_code == 200, response.text
    await _reminder_due(system)
    await eventually(lambda: len(system.mail.messages) == 1, what="the reminder e-mail")

    reminder = system.mail.messages[0]
    assert reminder.recipients == [CHECKOUT_EMAIL]
    text = reminder.part("text/plain")
    assert text.count("IPod Nano - 8GB") == 2
    assert "IPod Nano - 8GB" in reminder.part("text/html")
    assert "John" in text

    order = delivery("orders.create", body=order_for_checkout_customer())
    assert (await system.post(order)).status_code == 200
    await eventually(lambda: _no_timers(system), what="the order to cancel the discount timer")
    await system.clock.advance(timedelta(hours=48))
    await system.scheduler.timers.fire_due()
    await asyncio.sleep(0.2)  # let any (wrong) request travel to the dispatcher
    assert len(system.mail.messages) == 1
    assert await system.messages() == [("sent", None)]


async def test_the_same_webhook_delivered_twice_sends_one_email(system: System) -> None:
    checkout = delivery("checkouts.create")
    assert (await system.post(checkout)).status_code == 200
    assert (await system.post(checkout)).status_code == 200
    await _reminder_due(system)
    await eventually(lambda: len(system.mail.messages) == 1, what="the reminder e-mail")
    await system.scheduler.timers.fire_due()
    await asyncio.sleep(0.2)
    assert len(system.mail.messages) == 1
    assert await system.messages() == [("sent", None)]


@pytest.mark.parametrize("journey_consent", ["marketing"], indirect=True)
async def test_without_marketing_consent_nothing_is_sent_and_the_decision_is_recorded(
    system: System,
) -> None:
    assert (await system.post(delivery("checkouts.create"))).status_code == 200
    await _reminder_due(system)
    await eventually(lambda: _messages_recorded(system, 1), what="the dispatcher's decision")
    assert await system.messages() == [("suppressed", "no_marketing_consent")]
    assert system.mail.messages == []
    results = await _read(system, system.topics.name(ENGAGEMENT_RESULTS))
    assert [r.value for r in results if b"message.suppressed" in r.value]


async def test_bad_input_is_refused_or_dead_lettered_and_nothing_is_sent(system: System) -> None:
    forged = delivery("checkouts.create", secret="not-the-shops-secret")
    truncated = delivery("checkouts.create", body=delivery("checkouts.create").body[:-40])
    unknown = delivery("products.create")
    assert (await system.post(forged)).status_code == 401
    assert (await system.post(truncated)).status_code == 400
    assert (await system.post(unknown)).status_code == 200
    producer = AIOKafkaProducer(bootstrap_servers=system.infra.bootstrap, acks="all")
    await producer.start()
    await producer.send_and_wait(
        system.topics.name(SHOP_EVENTS), b"{not a cloud event", key=b"shop-1:c:1"
    )
    await producer.stop()

    dead = await _eventually_read(system, system.topics.name(dlq(SHOP_EVENTS)), 1)
    assert dead[0].value == b"{not a cloud event"
    assert dict(dead[0].headers)["dlq.reason"]
    await system.clock.advance(timedelta(hours=60))
    await system.scheduler.timers.fire_due()
    await asyncio.sleep(0.2)
    assert system.mail.messages == []
    assert await system.timers() == 0 and await system.messages() == []


async def test_reminders_due_while_the_scheduler_was_down_are_sent_once_after_restart(
    system: System,
) -> None:
    for customer_id in ("1001", "1002"):
        body = delivery("checkouts.create").body.replace(
            b"603851970716743400", customer_id.encode()
        )
        body = body.replace(CHECKOUT_EMAIL.encode(), f"c{customer_id}@example.com".encode())
        body = body.replace(CART_TOKEN.encode(), f"cart-{customer_id}".encode())
        assert (
            await system.post(
                delivery("checkouts.create", body=body, webhook_id=f"w-{customer_id}")
            )
        ).status_code == 200
    await eventually(lambda: _timers_at_least(system, 2), what="two reminder timers")

    await system.restart_scheduler(while_down=timedelta(hours=5))

    await eventually(lambda: len(system.mail.messages) == 2, what="both reminders")
    await system.scheduler.timers.fire_due()
    await asyncio.sleep(0.2)
    assert sorted(m.recipients[0] for m in system.mail.messages) == [
        "c1001@example.com",
        "c1002@example.com",
    ]
    assert await system.messages() == [("sent", None), ("sent", None)]


async def _no_timers(system: System) -> bool:
    return await system.timers() == 0


async def _timers_at_least(system: System, n: int) -> bool:
    return await system.timers() >= n


async def _messages_recorded(system: System, n: int) -> bool:
    return len(await system.messages()) >= n


async def _read(system: System, topic: str) -> list[Any]:
    return await read_topic(system.infra.bootstrap, topic)


async def _eventually_read(system: System, topic: str, n: int) -> list[Any]:
    found: list[Any] = []

    async def enough() -> bool:
        found[:] = await _read(system, topic)
        return len(found) >= n

    await eventually(enough, what=f"{n} record(s) on {topic}")
    return found
