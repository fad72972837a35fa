"""A scripted shop for the reports: carts left, the scheduler's own requests read back from the
broker, then the dispatcher's results, opens, clicks, an unsubscribe and orders published the
way the other services publish them. The script counts what the reports must show."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaProducer

from services.scheduler.domain.journey import parse_journey
from services.scheduler.journeys.repository import JourneyRepository
from shared import events as ev
from shared.clock import ManualClock
from shared.db import make_engine
from shared.topics import CUSTOMER_ACTIVITY, ENGAGEMENT_RESULTS, Topics
from tests.conftest import Infra, eventually
from tests.integration.test_scheduler_sets import requests, sql

SHOP = "shop"
JOURNEY = """
id: cart-ab
version: 1
name: Cart reminder with holdout
consent: none
trigger: {event: shop.cart.updated.v1, if: {field: cart.item_count, op: gt, value: 0}}
exit: [{event: shop.order.placed.v1, reason: ordered}]
limits: {holdout_percent: 30}
steps:
  - id: reminder
    send:
      template: abandoned_cart_reminder
      subject: Your cart
      variants: [{id: plain, subject: "Plain"}, {id: warm, subject: "Warm"}]
      winner_by: click
  - id: wait
    wait: {for: 48h}
"""
CUSTOMERS = 40
WINDOW = timedelta(days=7)


@dataclass
class Expected:
    """What the script did, counted by the script."""

    entered: int = 0
    requested: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    human_opens: int = 0
    machine_opens: int = 0
    clicks: int = 0
    unsubscribes: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)
    treated_converted: int = 0
    treated_revenue: Decimal = Decimal(0)
    held_converted: int = 0
    held_revenue: Decimal = Decimal(0)
    variant_sent: Counter[str] = field(default_factory=Counter)
    variant_clicks: Counter[str] = field(default_factory=Counter)
    customers: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)

    @property
    def holdout(self) -> int:
        return len(self.held)


def key(n: int) -> str:
    return f"{SHOP}:c:{n}"


def profile(n: int) -> ev.Profile:
    return ev.Profile(key=key(n), shop_id=SHOP, email=f"c{n}@example.com", first_name=f"C{n}")


async def load_journey(database_url: str, clock: ManualClock) -> None:
    engine = make_engine(database_url, pool_size=1)
    async with engine.begin() as conn:
        await JourneyRepository().add(conn, parse_journey(JOURNEY), clock.now())
    await engine.dispose()


class Script:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics, clock: ManualClock) -> None:
        self.producer, self.topics, self.clock = producer, topics, clock
        self.activities = 0
        self.results = 0

    async def activity(self, n: int, kind: str, at: datetime, **extra: Any) -> None:
        self.activities += 1
        data = ev.Activity(
            kind=kind,
            source_event_id=f"src-{self.activities}",
            occurred_at=at,
            profile=profile(n),
            **extra,
        )
        event = ev.make_event(
            type=ev.CUSTOMER_ACTIVITY,
            source="test",
            id=ev.stable_event_id("activity", str(self.activities)),
            time=at,
            subject=key(n),
            shop_id=SHOP,
            data=data,
        )
        await self._send(CUSTOMER_ACTIVITY, key(n), event)

    async def result(self, request: ev.MessageRequest, status: str, reason: str | None) -> None:
        self.results += 1
        data = ev.MessageResult(
            request_key=request.request_key,
            shop_id=SHOP,
            customer_key=request.customer_key,
            journey_id=request.journey_id,
            step_id=request.step_id,
            status=status,
            reason=reason,
            occurred_at=self.clock.now(),
        )
        event = ev.make_event(
            type={"sent": ev.MESSAGE_SENT, "failed": ev.MESSAGE_FAILED}.get(
                status, ev.MESSAGE_SUPPRESSED
            ),
            source="test",
            id=ev.stable_event_id("result", request.request_key),
            time=self.clock.now(),
            subject=request.customer_key,
            shop_id=SHOP,
            data=data,
        )
        await self._send(ENGAGEMENT_RESULTS, request.customer_key, event)

    async def _send(self, topic: str, partition_key: str, event: ev.CloudEvent) -> None:
        await self.producer.send_and_wait(
            self.topics.name(topic), ev.encode(event), key=partition_key.encode()
        )


def cart(n: int, at: datetime) -> ev.CartSnapshot:
    line = ev.Line(title="Mug", quantity=1, price=Decimal("20.00"))
    return ev.CartSnapshot(cart_id=f"cart-{n}", lines=[line], updated_at=at)


async def run(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    producer: AIOKafkaProducer,
) -> Expected:
    """Carts left by CUSTOMERS customers, then what happened to each, as scripted below."""
    script, expected, now = Script(producer, topics, clock), Expected(), clock.now()
    for n in range(CUSTOMERS):
        await script.activity(n, ev.CART_UPDATED, now, cart=cart(n, now))
        expected.customers.append(key(n))
    expected.entered = CUSTOMERS

    async def all_asked() -> bool:
        rows = await sql(database_url, "SELECT count(*) FROM scheduler.enrollments")
        return bool(rows[0][0] == CUSTOMERS)

    await eventually(all_asked, what="every cart enrolled")
    asked = sorted(await _requests(infra, topics, database_url), key=lambda r: r.customer_key)
    expected.requested = len(asked)
    treated = {r.customer_key for r in asked}
    expected.held = [k for k in expected.customers if k not in treated]
    for i, request in enumerate(asked):
        await _treat(script, expected, i, request, now)
    for j, customer in enumerate(expected.held):
        n = int(customer.rsplit(":", 1)[1])
        if j % 3 == 0:  # a holdout customer orders on their own within the window
            total = Decimal("40.00")
            await _order(script, n, now + timedelta(days=3), total)
            expected.held_converted += 1
            expected.held_revenue += total
        elif j % 3 == 1:  # too late: outside the window from entry
            await _order(script, n, now + WINDOW + timedelta(days=2), Decimal("99.00"))
    await _processed(database_url, script)
    return expected


async def _requests(infra: Infra, topics: Topics, database_url: str) -> list[ev.MessageRequest]:
    rows = await sql(database_url, "SELECT count(*) FROM scheduler.message_requests")
    wanted = int(rows[0][0])
    found: list[ev.MessageRequest] = []

    async def complete() -> bool:
        nonlocal found
        found = await requests(infra, topics)
        return len(found) >= wanted

    await eventually(complete, what="message requests published")
    return found


async def _treat(
    script: Script, expected: Expected, i: int, request: ev.MessageRequest, now: datetime
) -> None:
    """Results, engagement and orders of the i-th treated customer."""
    if i % 10 in (1, 2):
        reason = "no_consent" if i % 10 == 1 else "frequency_cap"
        await script.result(request, "suppressed", reason)
        expected.suppressed[reason] += 1
        return
    if i % 10 == 3:
        await script.result(request, "failed", "smtp_rejected")
        expected.failed += 1
        return
    await script.result(request, "sent", None)
    expected.sent += 1
    variant = request.subject.lower()
    expected.variant_sent[variant] += 1
    n = int(request.customer_key.rsplit(":", 1)[1])
    message = ev.MessageEngagement(
        request_key=request.request_key,
        journey_id=request.journey_id,
        step_id=request.step_id,
        sent_at=now,
    )
    if i % 4 == 0:  # a privacy proxy fetched the pixel
        message = message.model_copy(update={"first_machine_open_at": now, "machine_opens": 1})
        await script.activity(n, ev.EMAIL_OPENED, now, message=message)
        expected.machine_opens += 1
    if i % 2 == 0:  # the customer opened it
        at = now + timedelta(hours=1)
        message = message.model_copy(update={"first_human_open_at": at, "human_opens": 1})
        await script.activity(n, ev.EMAIL_OPENED, at, message=message)
        expected.human_opens += 1
    if i % 6 == 0:  # ... clicked, and ordered: attributed to the message
        at = now + timedelta(hours=2)
        message = message.model_copy(update={"first_click_at": at})
        await script.activity(n, ev.EMAIL_CLICKED, at, message=message)
        expected.clicks += 1
        expected.variant_clicks[variant] += 1
        total = Decimal(50 + i)
        ordered = now + timedelta(days=1)
        await _order(script, n, ordered, total)
        converted = message.model_copy(
            update={"converted_at": ordered, "revenue": total, "order_id": f"o-{n}"}
        )
        await script.activity(n, ev.MESSAGE_CONVERTED, ordered, message=converted)
        expected.conversions += 1
        expected.revenue += total
        expected.treated_converted += 1
        expected.treated_revenue += total
    elif i == 5:  # one reader unsubscribes
        at = now + timedelta(hours=3)
        message = message.model_copy(update={"unsubscribed_at": at})
        await script.activity(n, ev.EMAIL_UNSUBSCRIBED, at, message=message)
        expected.unsubscribes += 1


async def _order(script: Script, n: int, at: datetime, total: Decimal) -> None:
    await script.activity(n, ev.ORDER_PLACED, at, order_id=f"o-{n}", order_total=total)


async def _processed(database_url: str, script: Script) -> None:
    async def done() -> bool:
        activities = await sql(database_url, "SELECT count(*) FROM scheduler.processed_activities")
        results = await sql(database_url, "SELECT count(*) FROM scheduler.message_results")
        return bool(activities[0][0] == script.activities and results[0][0] == script.results)

    await eventually(done, timeout_s=30, what="every activity and result processed")
