"""A cart left in a Shopify shop becomes a reminder in the inbox, through all three services.

Everything is real but the clock: PostgreSQL, the broker, an SMTP server on loopback, the
ingest HTTP server on a port, and the three services' own code. Time is a ManualClock that the
test drives, so 3 hours and 48 hours pass in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from aiokafka import AIOKafkaProducer
from mailcatcher import MailStore

from services.dispatcher.app import DispatcherService
from services.dispatcher.settings import DispatcherSettings
from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from services.scheduler.adapters.repository import JourneyRepository
from services.scheduler.app import SchedulerService
from services.scheduler.domain.journey import parse_journey
from services.scheduler.settings import DEFAULT_JOURNEYS_DIR, SchedulerSettings
from shared.clock import ManualClock
from shared.db import make_engine
from shared.topics import ENGAGEMENT_RESULTS, SHOP_EVENTS, Topics, dlq
from tests.conftest import Infra, eventually, read_topic
from tests.unit.ingest.deliveries import (
    CART_TOKEN,
    SHOP,
    Delivery,
    delivery,
    order_for_checkout_customer,
)

pytestmark = pytest.mark.e2e
CHECKOUT_EMAIL = "example@email.com"


@dataclass
class System:
    infra: Infra
    topics: Topics
    clock: ManualClock
    mail: MailStore
    database_url: str
    ingest_url: str
    ingest: IngestService
    scheduler: SchedulerService
    dispatcher: DispatcherService

    async def post(self, d: Delivery) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.post(
                f"{self.ingest_url}/webhooks/shopify", content=d.body, headers=d.headers
            )

    async def sql(self, query: str) -> list[Any]:
        engine = make_engine(self.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(query))).all())
        finally:
            await engine.dispose()

    async def timers(self) -> int:
        return int((await self.sql("SELECT count(*) FROM scheduler.timers"))[0][0])

    async def messages(self) -> list[tuple[str, str | None]]:
        rows = await self.sql("SELECT status, reason FROM dispatcher.messages ORDER BY 1")
        return [(r[0], r[1]) for r in rows]

    async def restart_scheduler(self, while_down: timedelta) -> None:
        await self.scheduler.stop()
        await self.clock.advance(while_down)
        self.scheduler = await _start_scheduler(self.scheduler.settings, self.clock)


async def _start_scheduler(settings: SchedulerSettings, clock: ManualClock) -> SchedulerService:
    service = SchedulerService(settings, clock)
    await service.start()
    await eventually(
        lambda: bool(service.assignment.partitions), timeout_s=60, what="scheduler partitions"
    )
    return service


async def _load_abandoned_cart(database_url: str, clock: ManualClock, consent: str) -> None:
    journey = parse_journey((DEFAULT_JOURNEYS_DIR / "abandoned-cart.yaml").read_text())
    engine = make_engine(database_url, pool_size=1)
    async with engine.begin() as conn:
        await JourneyRepository().add(
            conn, journey.model_copy(update={"consent": consent}), clock.now()
        )
    await engine.dispose()


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
    store, smtp_port = mail
    common: dict[str, Any] = {
        "database_url": database_url,
        "topic_prefix": topics.prefix,
        "kafka_bootstrap_servers": infra.bootstrap,
    }
    await _load_abandoned_cart(database_url, clock, journey_consent)
    ingest = IngestService(IngestSettings(**common, shops=[SHOP]), clock)
    dispatcher = DispatcherService(DispatcherSettings(**common, smtp_port=smtp_port), clock)
    await ingest.start()
    await dispatcher.start()
    scheduler = await _start_scheduler(SchedulerSettings(**common), clock)
    server = uvicorn.Server(
        uvicorn.Config(ingest.app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, what="ingest HTTP server")
    port = server.servers[0].sockets[0].getsockname()[1]
    system = System(
        infra,
        topics,
        clock,
        store,
        database_url,
        f"http://127.0.0.1:{port}",
        ingest,
        scheduler,
        dispatcher,
    )
    await eventually(_ready(system), what="ingest ready")
    try:
        yield system
    finally:
        server.should_exit = True
        await serving
        for service in (system.scheduler, dispatcher, ingest):
            await service.stop()


def _ready(system: System) -> Any:
    async def check() -> bool:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{system.ingest_url}/readyz")).status_code == 200

    return check


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
