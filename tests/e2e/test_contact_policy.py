"""The shop's contact policy across journeys, through the scheduler, the dispatcher and SMTP.

Real PostgreSQL, broker and SMTP server; the policy comes from REBOUND_SCHEDULER_CONTACT_POLICIES
as an operator sets it; time is a ManualClock the test moves from one moment the scheduler has
to look at to the next, so three days pass in a second. When a message went is the scheduler's
own record (scheduler.contact_log), what arrived is what the SMTP server caught.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from mailcatcher import MailStore

from services.dispatcher.app import DispatcherService
from services.dispatcher.settings import DispatcherSettings
from services.scheduler.app import SchedulerService
from services.scheduler.domain.journey import parse_journey
from services.scheduler.settings import SchedulerSettings
from shared import events
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import Activity, CartSnapshot, Line, Profile
from shared.topics import CUSTOMER_ACTIVITY, ENGAGEMENT_RESULTS, Topics
from tests.conftest import Infra, eventually, read_topic, started_scheduler
from tests.e2e.system import add_journeys, common_settings

pytestmark = pytest.mark.e2e
SHOP = "shop-1"
BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
MONDAY_10_BERLIN = datetime(2022, 1, 3, 10, 0, tzinfo=BERLIN)
POLICIES = [
    {
        "shop_id": SHOP,
        "limits": [{"count": 1, "per": "1d"}, {"count": 3, "per": "7d"}],
        "quiet_hours": {"from": "21:00", "to": "08:00"},
        "time_zone": "Europe/Berlin",
    }
]
CART = """
id: cart
version: 1
name: Cart reminders
priority: 100
trigger: {event: shop.cart.updated.v1}
exit: [{event: shop.order.placed.v1, reason: ordered}]
steps:
  - {id: reminder, send: {template: abandoned_cart_reminder, subject: "Cart 1"}}
  - {id: wait, wait: {for: 1h}}
  - {id: second, send: {template: abandoned_cart_reminder, subject: "Cart 2"}}
"""
WIN_BACK = """
id: win-back
version: 1
name: Win-back
priority: 10
trigger: {event: shop.cart.updated.v1}
steps:
  - {id: reason, send: {template: abandoned_cart_reminder, subject: "Win-back"}}
  - id: flash
    send: {template: abandoned_cart_reminder, subject: "Flash sale", expires_after: 12h}
"""
NIGHT = """
id: night
version: 1
name: One mail
trigger: {event: shop.cart.updated.v1}
steps:
  - {id: only, send: {template: abandoned_cart_reminder, subject: "At night"}}
"""
BEST_HOUR = """
id: best
version: 1
name: At the customer's hour
trigger: {event: shop.cart.updated.v1}
steps:
  - {id: only, send: {template: abandoned_cart_reminder, subject: "Best", send_at: best_hour}}
"""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONDAY_10_BERLIN)


@pytest.fixture
def policies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REBOUND_SCHEDULER_CONTACT_POLICIES", orjson.dumps(POLICIES).decode())
    yield


@dataclass
class Shop:
    infra: Infra
    topics: Topics
    clock: ManualClock
    mail: MailStore
    database_url: str
    scheduler: SchedulerService
    producer: AIOKafkaProducer

    async def sql(self, query: str) -> list[Any]:
        engine = make_engine(self.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(query))).all())
        finally:
            await engine.dispose()

    async def activity(
        self,
        kind: str,
        zone: ZoneInfo = BERLIN,
        source_id: str = "e1",
        consent: events.ConsentState = "subscribed",
        usual_open_hour: int | None = None,
    ) -> None:
        now = self.clock.now()
        profile = Profile(
            key=CUSTOMER,
            shop_id=SHOP,
            email="ada@example.com",
            first_name="Ada",
            marketing_consent=consent,
            time_zone=zone.key,
            usual_open_hour=usual_open_hour,
        )
        cart = CartSnapshot(
            cart_id="cart-1",
            updated_at=now,
            lines=[Line(title="Teapot", quantity=1, price=Decimal("30.00"))],
        )
        data = Activity(
            kind=kind,
            source_event_id=source_id,
            occurred_at=now,
            profile=profile,
            cart=cart if kind == events.CART_UPDATED else None,
        )
        event = events.make_event(
            type=events.CUSTOMER_ACTIVITY,
            source="test",
            subject=CUSTOMER,
            id=events.stable_event_id("activity", source_id),
            time=now,
            shop_id=SHOP,
            data=data,
        )
        await self.producer.send_and_wait(
            self.topics.name(CUSTOMER_ACTIVITY), events.encode(event), key=CUSTOMER.encode()
        )

    async def held(self) -> int:
        return int((await self.sql("SELECT count(*) FROM scheduler.contact_queue"))[0][0])

    async def released(self) -> list[tuple[str, datetime]]:
        rows = await self.sql(
            "SELECT request_key, released_at FROM scheduler.contact_log ORDER BY released_at"
        )
        return [(r[0], r[1]) for r in rows]

    async def next_moment(self) -> datetime | None:
        """The next moment the scheduler has to act: a timer or a held message to look at."""
        rows = await self.sql(
            "SELECT min(at) FROM (SELECT min(due_at) AS at FROM scheduler.timers"
            " UNION ALL SELECT min(check_at) FROM scheduler.contact_queue) moments"
        )
        moment: datetime | None = rows[0][0]
        return moment

    async def run_until(self, until: datetime) -> None:
        """Moves the clock to each moment the scheduler has to act, up to `until`, and lets
        each mail it released arrive before time moves on."""
        for _ in range(100):
            moment = await self.next_moment()
            if moment is None or moment > until:
                break
            if moment > self.clock.now():
                await self.clock.advance(moment - self.clock.now())
            await self.scheduler.timers.fire_due()
            went = len(await self.released())
            await eventually(lambda n=went: self._dispatched(n), 30, "released mail dispatched")
        if until > self.clock.now():
            await self.clock.advance(until - self.clock.now())

    async def _dispatched(self, released: int) -> bool:
        """The dispatcher decided on every released request, and what it sent has arrived."""
        rows = await self.sql(
            "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM dispatcher.messages"
            " WHERE status IN ('sent', 'suppressed', 'failed')"
        )
        decided, sent = rows[0]
        return bool(decided >= released and len(self.mail.messages) >= sent)

    def subjects(self) -> list[str]:
        return [str(m.message["Subject"]) for m in self.mail.messages]


CUSTOMER = f"{SHOP}:c:1"


async def _load(database_url: str, clock: ManualClock, *definitions: str) -> None:
    await add_journeys(database_url, clock, [parse_journey(d) for d in definitions])


@pytest.fixture
async def shop(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    mail: tuple[MailStore, int],
    policies_from_the_environment: None,
) -> AsyncIterator[Shop]:
    store, smtp_port = mail
    common = common_settings(infra, database_url, topics)
    dispatcher = DispatcherService(DispatcherSettings(**common, smtp_port=smtp_port), clock)
    await dispatcher.start()
    scheduler = await started_scheduler(SchedulerSettings(**common), clock)
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    shop = Shop(infra, topics, clock, store, database_url, scheduler, producer)
    try:
        yield shop
    finally:
        await producer.stop()
        await shop.scheduler.stop()
        await dispatcher.stop()


async def _suppressed(shop: Shop) -> dict[str, str | None]:
    records = await read_topic(shop.infra.bootstrap, shop.topics.name(ENGAGEMENT_RESULTS))
    found = [events.decode(r.value) for r in records]
    return {
        e.data["request_key"]: e.data["reason"]
        for e in found
        if e.type == events.MESSAGE_SUPPRESSED
    }


async def test_three_mails_of_two_journeys_on_one_day_go_on_three_days_by_priority(
    shop: Shop,
) -> None:
    await _load(shop.database_url, shop.clock, CART, WIN_BACK)
    await shop.activity(events.CART_UPDATED)
    await eventually(lambda: _asked(shop, 3), what="the first mails asked for")

    await shop.run_until(MONDAY_10_BERLIN + timedelta(days=4))
    await eventually(lambda: len(shop.mail.messages) == 3, 30, "three mails")
    await asyncio.sleep(0.3)  # let any (wrong) fourth mail arrive

    assert shop.subjects() == ["Cart 1", "Cart 2", "Win-back"]
    went = [(key, at.astimezone(BERLIN)) for key, at in await shop.released()]
    assert [key.split(":")[0] + ":" + key.split(":")[2] for key, _ in went] == [
        "cart:reminder",
        "cart:second",
        "win-back:reason",
    ]
    assert [at.date().isoformat() for _, at in went] == ["2022-01-03", "2022-01-04", "2022-01-05"]
    assert all(8 <= at.hour < 21 for _, at in went)
    suppressed = await _suppressed(shop)
    assert list(suppressed.values()) == ["frequency_cap_expired"]
    [flash] = suppressed
    assert flash.endswith(":flash") and await shop.held() == 0
    assert await shop.sql("SELECT status FROM dispatcher.messages") == [("sent",)] * 3
    statuses = await shop.sql("SELECT status FROM scheduler.enrollments")
    assert statuses == [("completed",)] * 2  # the cart enrolment waited for its last mail

    async def reported() -> list[Any]:  # the reports read results where the dispatcher's are
        return await shop.sql(
            "SELECT request_key, status, reason FROM scheduler.message_results"
            " WHERE status = 'suppressed'"
        )

    await eventually(reported, what="the expired mail in the reports' facts")
    assert await reported() == [(flash, "suppressed", "frequency_cap_expired")]


@pytest.mark.parametrize("zone", [BERLIN, TOKYO], ids=["Europe/Berlin", "Asia/Tokyo"])
async def test_a_mail_due_at_23_customer_time_goes_at_8_next_morning_their_time(
    shop: Shop, zone: ZoneInfo
) -> None:
    eleven_pm = datetime(2022, 1, 3, 23, 0, tzinfo=zone)
    await _cart_held(shop, NIGHT, eleven_pm)
    await shop.scheduler.timers.fire_due()
    assert shop.mail.messages == [] and await shop.held() == 1

    await shop.run_until(eleven_pm + timedelta(days=1))
    await eventually(lambda: len(shop.mail.messages) == 1, 30, "the morning mail")
    [(_, at)] = await shop.released()
    assert at.astimezone(zone) == datetime(2022, 1, 4, 8, 0, tzinfo=zone)


async def test_a_restart_while_mails_wait_loses_none_and_sends_none_twice(
    shop: Shop, database_url: str
) -> None:
    await _load(shop.database_url, shop.clock, CART, WIN_BACK)
    await shop.activity(events.CART_UPDATED)
    await eventually(lambda: _asked(shop, 3), what="the first mails asked for")
    await shop.run_until(MONDAY_10_BERLIN + timedelta(hours=2))
    assert shop.subjects() == ["Cart 1"] and await shop.held() == 3

    settings = shop.scheduler.settings
    await shop.scheduler.stop()
    await shop.clock.advance(timedelta(days=1))  # Tuesday noon: the scheduler was down
    shop.scheduler = await started_scheduler(settings, shop.clock)
    await shop.activity(events.CART_UPDATED)  # redelivered: changes nothing
    await shop.run_until(MONDAY_10_BERLIN + timedelta(days=4))
    await eventually(lambda: len(shop.mail.messages) == 3, 30, "three mails")
    await asyncio.sleep(0.3)

    assert shop.subjects() == ["Cart 1", "Cart 2", "Win-back"]
    days = [at.astimezone(BERLIN).date().isoformat() for _, at in await shop.released()]
    assert days == ["2022-01-03", "2022-01-04", "2022-01-05"]
    assert await shop.held() == 0


async def test_an_order_while_the_reminder_waits_stops_it(shop: Shop) -> None:
    await _load(shop.database_url, shop.clock, CART)
    await shop.activity(events.CART_UPDATED)
    await eventually(lambda: _asked(shop, 1), what="the first mail asked for")
    await shop.run_until(MONDAY_10_BERLIN + timedelta(hours=2))
    assert shop.subjects() == ["Cart 1"] and await shop.held() == 1

    await shop.activity(events.ORDER_PLACED, source_id="o1")
    await eventually(lambda: _ended(shop), what="the enrolment to exit on the order")
    await shop.run_until(MONDAY_10_BERLIN + timedelta(days=2))
    await asyncio.sleep(0.3)
    assert shop.subjects() == ["Cart 1"] and await shop.held() == 0
    assert list((await _suppressed(shop)).values()) == ["journey_exited"]


async def test_consent_withdrawn_while_a_mail_waits_is_honoured_when_it_goes(shop: Shop) -> None:
    eleven_pm = datetime(2022, 1, 3, 23, 0, tzinfo=BERLIN)
    await _cart_held(shop, NIGHT, eleven_pm)
    await shop.clock.advance(timedelta(minutes=30))
    await shop.activity(events.CONSENT_CHANGED, source_id="c1", consent="not_subscribed")

    async def consent_known() -> bool:
        rows = await shop.sql("SELECT profile ->> 'marketing_consent' FROM scheduler.customers")
        return rows == [("not_subscribed",)]

    await eventually(consent_known, what="the consent change in the scheduler")
    await shop.run_until(eleven_pm + timedelta(days=1))

    async def decided() -> list[Any]:
        return await shop.sql("SELECT status, reason FROM dispatcher.messages")

    await eventually(decided, what="the dispatcher's decision")
    assert await decided() == [("suppressed", "no_marketing_consent")]
    assert shop.mail.messages == []


async def test_a_best_hour_step_goes_at_the_hour_the_customer_usually_opens_mail(
    shop: Shop,
) -> None:
    """send_at: best_hour through the runner: the customer's usual hour comes from the facts
    the activity carried, in their own zone (Tokyo, while the shop's default is Berlin)."""
    ten_am_tokyo = datetime(2022, 1, 4, 10, 0, tzinfo=TOKYO)
    await _cart_held(shop, BEST_HOUR, ten_am_tokyo, usual_open_hour=19)
    await shop.scheduler.timers.fire_due()
    assert shop.mail.messages == [] and await shop.held() == 1

    await shop.run_until(ten_am_tokyo + timedelta(days=1))
    await eventually(lambda: len(shop.mail.messages) == 1, 30, "the evening mail")
    [(_, at)] = await shop.released()
    assert at.astimezone(TOKYO) == datetime(2022, 1, 4, 19, 0, tzinfo=TOKYO)


async def test_an_unsubscribe_while_a_mail_waits_means_it_never_goes(shop: Shop) -> None:
    eleven_pm = datetime(2022, 1, 3, 23, 0, tzinfo=BERLIN)
    await _cart_held(shop, NIGHT, eleven_pm)
    await shop.clock.advance(timedelta(minutes=30))
    await shop.activity(events.CONSENT_CHANGED, source_id="u1", consent="unsubscribed")

    async def left() -> list[Any]:
        return await shop.sql("SELECT status, exit_reason FROM scheduler.enrollments")

    await eventually(lambda: _is(left, [("exited", "unsubscribed")]), what="the journey left")
    await shop.run_until(eleven_pm + timedelta(days=1))
    await asyncio.sleep(0.3)  # let any (wrong) mail arrive
    assert shop.mail.messages == [] and await shop.held() == 0
    assert list((await _suppressed(shop)).values()) == ["journey_exited"]


async def _cart_held(
    shop: Shop, journeys: str, at: datetime, usual_open_hour: int | None = None
) -> None:
    """The journeys loaded and a cart left at `at` by a customer in at's zone: its mail
    waits in the contact queue."""
    await _load(shop.database_url, shop.clock, journeys)
    await shop.clock.advance(at.astimezone(UTC) - shop.clock.now())
    assert isinstance(at.tzinfo, ZoneInfo)
    await shop.activity(events.CART_UPDATED, at.tzinfo, usual_open_hour=usual_open_hour)
    await eventually(lambda: _at_least(shop.held, 1), what="the mail held")


async def _is(read: Any, expected: list[Any]) -> bool:
    return bool(await read() == expected)


async def _ended(shop: Shop) -> bool:
    rows = await shop.sql("SELECT status FROM scheduler.enrollments")
    return rows == [("exited",)]


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def _asked(shop: Shop, n: int) -> bool:
    """Held or already released: the background timer pass may release the first at once."""
    return await shop.held() + len(await shop.released()) >= n
