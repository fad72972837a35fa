"""`send_winner`: carts left, the scheduler's requests read back from the broker, then the
dispatcher's results and the readers' clicks published the way the other services publish them.
When one variant clearly wins by clicks, the winner loop (driven by the ManualClock) records it
and every customer who enters afterwards gets that variant's template; when none does, nothing
is recorded and the split goes on."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.scheduler.app import SchedulerService
from services.scheduler.domain.journey import parse_journey
from services.scheduler.journeys.repository import JourneyRepository
from shared import events as ev
from shared.clock import ManualClock
from shared.db import make_engine
from shared.topics import Topics
from tests.conftest import ADMIN, Infra, eventually, started_scheduler
from tests.integration import reports_scenario as scenario
from tests.integration.conftest import scheduler_settings
from tests.integration.test_scheduler_sets import producer, requests, sql  # noqa: F401

JOURNEY = """
id: cart-winner
version: 1
name: Cart reminder, the winner to all
consent: none
trigger: {event: shop.cart.updated.v1, if: {field: cart.item_count, op: gt, value: 0}}
steps:
  - id: reminder
    send:
      template: abandoned_cart_reminder
      subject: Your cart
      variants:
        - {id: plain, template: abandoned_cart_reminder, subject: Plain}
        - {id: warm, template: abandoned_cart_discount, subject: Warm}
      winner_by: click
      send_winner: true
"""
TESTED = 260  # about 130 recipients per variant: the test needs at least 100 each
LATER = 30
CHECK_S = 3_600.0
TEMPLATE_OF = {"abandoned_cart_reminder": "plain", "abandoned_cart_discount": "warm"}


class Batch(scenario.Script):
    """The scenario's script, its events sent together and awaited once."""

    def __init__(self, broker: AIOKafkaProducer, topics: Topics, clock: ManualClock) -> None:
        super().__init__(broker, topics, clock)
        self.pending: list[asyncio.Future[Any]] = []

    async def _send(self, topic: str, partition_key: str, event: ev.CloudEvent) -> None:
        self.pending.append(
            await self.producer.send(
                self.topics.name(topic), ev.encode(event), key=partition_key.encode()
            )
        )

    async def flush(self) -> None:
        await asyncio.gather(*self.pending)
        self.pending.clear()


@pytest.fixture
async def service(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[SchedulerService]:
    engine = make_engine(database_url, pool_size=1)
    async with engine.begin() as conn:
        await JourneyRepository().add(conn, parse_journey(JOURNEY), clock.now())
    await engine.dispose()
    settings = scheduler_settings(
        infra,
        database_url,
        topics,
        winner_check_s=CHECK_S,
        predictions_refresh_s=0,  # the clock moves by hours here: no fit in the background
    )
    service = await started_scheduler(settings, clock)
    yield service
    await service.stop()


async def leave_carts(script: Batch, customers: range, database_url: str) -> None:
    """Customers `customers` leave a cart; customers 0 to the last have asked for a reminder."""
    now = script.clock.now()
    for n in customers:
        await script.activity(n, ev.CART_UPDATED, now, cart=scenario.cart(n, now))
    await script.flush()

    async def asked() -> bool:
        rows = await sql(database_url, "SELECT count(*) FROM scheduler.message_requests")
        return bool(rows[0][0] == customers.stop)

    await eventually(asked, timeout_s=30, what="every cart asked for its reminder")


async def asked_of(infra: Infra, topics: Topics, customers: range) -> list[ev.MessageRequest]:
    wanted = {scenario.key(n) for n in customers}
    found: list[ev.MessageRequest] = []

    async def published() -> bool:
        nonlocal found
        found = [r for r in await requests(infra, topics) if r.customer_key in wanted]
        return len(found) == len(wanted)

    await eventually(published, timeout_s=30, what="the requests published")
    return found


async def engage(
    script: Batch,
    asked: list[ev.MessageRequest],
    clicks: Callable[[str, int], bool],
    database_url: str,
) -> Counter[str]:
    """Every message sent; the i-th reader of a variant clicks when `clicks(variant, i)`."""
    seen: Counter[str] = Counter()
    clicked: Counter[str] = Counter()
    now = script.clock.now()
    for request in asked:
        variant = TEMPLATE_OF[request.template]
        await script.result(request, "sent", None)
        if clicks(variant, seen[variant]):
            at = now + timedelta(minutes=5)
            message = ev.MessageEngagement(
                request_key=request.request_key,
                journey_id=request.journey_id,
                step_id=request.step_id,
                sent_at=now,
                first_click_at=at,
            )
            n = int(request.customer_key.rsplit(":", 1)[1])
            await script.activity(n, ev.EMAIL_CLICKED, at, message=message)
            clicked[variant] += 1
        seen[variant] += 1
    await script.flush()

    async def recorded() -> bool:
        results = await sql(database_url, "SELECT count(*) FROM scheduler.message_results")
        engaged = await sql(
            database_url,
            "SELECT count(*) FROM scheduler.message_engagement WHERE clicked_at IS NOT NULL",
        )
        return bool(results[0][0] == len(asked) and engaged[0][0] == sum(clicked.values()))

    await eventually(recorded, timeout_s=30, what="results and clicks recorded")
    assert min(seen.values()) >= 100  # the test has its minimum sample: it can decide
    return clicked


async def winner_pass(service: SchedulerService, clock: ManualClock) -> None:
    """Move the clock one check interval at a time until the winner loop has looked after
    the data came in (a pass already under way when the clock moves sleeps a full interval)."""
    since = clock.now()
    for _ in range(20):
        await clock.advance(timedelta(seconds=CHECK_S))
        try:
            await eventually(
                lambda: (service.winners.looked_at or since) > since,
                timeout_s=2,
                what="a winner pass",
            )
            return
        except AssertionError:
            continue
    raise AssertionError("the winner loop never looked")


async def winners(database_url: str) -> list[Any]:
    return await sql(
        database_url,
        "SELECT journey_id, journey_version, step_id, variant, metric, figures, declared_at "
        "FROM scheduler.ab_winners",
    )


async def test_a_clear_winner_by_clicks_is_declared_and_sent_to_everyone_who_enters_after(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    producer: AIOKafkaProducer,  # noqa: F811
    service: SchedulerService,
) -> None:
    script = Batch(producer, topics, clock)
    await leave_carts(script, range(TESTED), database_url)
    tested = await asked_of(infra, topics, range(TESTED))
    split = Counter(TEMPLATE_OF[r.template] for r in tested)
    assert set(split) == {"plain", "warm"}  # before a winner: the usual split
    # Three in five readers click the warm reminder, one in twenty-five the plain one.
    clicked = await engage(
        script, tested, lambda v, i: i % 5 < 3 if v == "warm" else i % 25 == 0, database_url
    )

    await winner_pass(service, clock)
    ((journey, version, step, variant, metric, figures, declared_at),) = await winners(database_url)
    assert (journey, version, step, variant, metric) == (
        "cart-winner",
        1,
        "reminder",
        "warm",
        "click",
    )
    assert {v: f["sent"] for v, f in figures.items()} == dict(split)
    assert {v: f["successes"] for v, f in figures.items()} == dict(clicked)

    await clock.advance(timedelta(hours=1))
    await leave_carts(script, range(TESTED, TESTED + LATER), database_url)  # the next 30 customers
    later = await asked_of(infra, topics, range(TESTED, TESTED + LATER))
    assert len(later) == LATER
    assert {(r.template, r.subject) for r in later} == {("abandoned_cart_discount", "Warm")}
    stored = await sql(
        database_url, "SELECT variant, count(*) FROM scheduler.message_requests GROUP BY variant"
    )
    assert dict(stored) == {"warm": split["warm"] + LATER, "plain": split["plain"]}

    await winner_pass(service, clock)  # once declared, it never flips
    assert [w[3] for w in await winners(database_url)] == ["warm"]
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s", headers=ADMIN) as api:
        answer = await api.get(
            "/reports/journeys/cart-winner", params={"from": "2021-12-31", "to": "2022-02-01"}
        )
        page = await api.get("/dashboard", params={"from": "2021-12-31", "to": "2022-02-01"})
    assert answer.status_code == 200, answer.text
    (ab,) = answer.json()["ab_tests"]
    assert ab["declared"]["variant"] == "warm"
    assert datetime.fromisoformat(ab["declared"]["declared_at"]) == declared_at
    assert "everyone who reaches this step since gets it" in ab["declared"]["note"]
    assert ab["declared"]["note"] in page.text


async def test_without_a_clear_winner_nothing_is_declared_and_the_split_goes_on(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    producer: AIOKafkaProducer,  # noqa: F811
    service: SchedulerService,
) -> None:
    script = Batch(producer, topics, clock)
    await leave_carts(script, range(TESTED), database_url)
    tested = await asked_of(infra, topics, range(TESTED))
    await engage(script, tested, lambda v, i: i % 5 == 0, database_url)  # one in five each

    await winner_pass(service, clock)
    assert await winners(database_url) == []

    await leave_carts(script, range(TESTED, TESTED + LATER), database_url)
    later = await asked_of(infra, topics, range(TESTED, TESTED + LATER))
    assert set(Counter(TEMPLATE_OF[r.template] for r in later)) == {"plain", "warm"}
