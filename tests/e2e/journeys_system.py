"""One running Rebound for the shipped-journey tests: ingest (HTTP server, events API, tracking,
read API), scheduler (shipped journeys loaded, all off but the abandoned cart), dispatcher and
an SMTP catcher, on one database, one set of topics and one ManualClock for a whole module.

A test drives it as a shop would: catalog and customer events through the events API, the
order history through the import, journeys turned on through the control plane; it reads the
caught mail and the control plane's answers. Customers of different tests never share an id,
so a module's tests only ever look at their own customers' mail.
"""

from __future__ import annotations

import asyncio
import csv
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml
from aiokafka import AIOKafkaProducer
from mailcatcher import CaughtMail, MailStore
from pydantic import SecretStr

from services.dispatcher.app import DispatcherService
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.shops import ShopMailConfig
from services.ingest.app import IngestService
from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.domain.history_csv import GENERIC_COLUMNS
from services.ingest.history_import import import_orders
from services.ingest.history_publish import publish_imported
from services.ingest.settings import IngestSettings
from services.scheduler.app import SchedulerService
from services.scheduler.domain.engine import _bucket
from services.scheduler.journeys.loader import load_journeys
from services.scheduler.settings import DEFAULT_JOURNEYS_DIR, SchedulerSettings
from shared import events as ev
from shared.clock import ManualClock
from shared.db import make_engine
from shared.kafka import Publisher
from shared.topics import CUSTOMER_ACTIVITY, Topics
from shared.tracking import TrackingKey
from tests.conftest import ADMIN, ADMIN_TOKEN, Infra, eventually, started_scheduler
from tests.e2e.system import common_settings, served
from tests.unit.ingest.deliveries import API_TOKEN, SHOP, SHOP_ID

KEYS = [TrackingKey(kid="k1", secret=SecretStr("j" * 40))]
INGEST_TOKEN = "test-ingest-read-token"
BROWSER = {"user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/140.0"}
STOREFRONT = "https://tea.shop.example"
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)  # `older_than` is strict: the entry is one tick after the age


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str
    category: str
    price: Decimal

    def line(self, quantity: int = 1) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "title": self.title,
            "quantity": quantity,
            "price": str(self.price),
            "category": self.category,
        }


# The shop's catalog: every test's customers buy from it and mail recommends from it.
DARJEELING = Product("p-darjeeling", "Darjeeling First Flush", "tea", Decimal("24.00"))
SENCHA = Product("p-sencha", "Sencha Kabuse", "tea", Decimal("19.50"))
OOLONG = Product("p-oolong", "Milky Oolong", "tea", Decimal("21.00"))
SERUM = Product("p-serum", "Vitamin C Serum", "cosmetics", Decimal("39.00"))
CREAM = Product("p-cream", "Rose Night Cream", "cosmetics", Decimal("45.00"))
KETTLE = Product("p-kettle", "Gooseneck Kettle", "kitchen", Decimal("89.00"))
CATALOG = (DARJEELING, SENCHA, OOLONG, SERUM, CREAM, KETTLE)


def key_of(customer: int) -> str:
    return f"{SHOP_ID}:c:{customer}"


def email_of(customer: int) -> str:
    return f"c{customer}@example.com"


def in_holdout(customer: int, journey_id: str, percent: float) -> bool:
    """The engine's own stable draw: whether this customer is in the journey's holdout."""
    return _bucket(key_of(customer), journey_id, "holdout") < percent


def customers(start: int, count: int, journey_id: str, holdout: float = 10) -> list[int]:
    """`count` customer ids from `start` on that the journey's holdout does not take."""
    found: list[int] = []
    n = start
    while len(found) < count:
        if not in_holdout(n, journey_id, holdout):
            found.append(n)
        n += 1
    return found


@dataclass
class System:
    infra: Infra
    topics: Topics
    clock: ManualClock
    mail: MailStore
    database_url: str
    ingest_url: str
    scheduler: SchedulerService
    producer: AIOKafkaProducer
    tmp: Path
    _events: int = 0
    _orders: int = 0
    active: set[str] = field(default_factory=set)

    # --- the shop ---------------------------------------------------------------------------

    async def event(self, type_: str, data: dict[str, Any]) -> None:
        self._events += 1
        body = {"type": type_, "id": f"e2e-{self._events}", "data": data}
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{self.ingest_url}/events",
                json=body,
                headers={"authorization": f"Bearer {API_TOKEN}"},
            )
        assert response.status_code == 202, response.text

    async def catalog(self, products: Sequence[Product] = CATALOG) -> None:
        for p in products:
            await self.event(
                ev.PRODUCT_UPDATED,
                {
                    "product_id": p.product_id,
                    "title": p.title,
                    "category": p.category,
                    "url": f"{STOREFRONT}/products/{p.product_id}",
                    "image_url": f"{STOREFRONT}/img/{p.product_id}.jpg",
                    "price": str(p.price),
                    "available": True,
                    "updated_at": self.clock.now().isoformat(),
                },
            )

    def customer(self, n: int, first_name: str | None = None, **more: Any) -> dict[str, Any]:
        found = {"id": str(n), "email": email_of(n), "marketing_consent": "subscribed"}
        if first_name:
            found["first_name"] = first_name
        return found | more

    async def register(
        self, n: int, first_name: str, registered_at: datetime | None = None
    ) -> None:
        at = (registered_at or self.clock.now()).isoformat()
        customer = self.customer(n, first_name, registered_at=at)
        await self.event(ev.CUSTOMER_REGISTERED, {"customer": customer})

    async def update(self, n: int, first_name: str) -> None:
        await self.event(ev.CUSTOMER_UPDATED, {"customer": self.customer(n, first_name)})

    async def order(
        self,
        n: int,
        lines: Sequence[tuple[Product, int]] = ((DARJEELING, 1),),
        first_name: str | None = None,
        paid: bool = True,
    ) -> None:
        """An order placed now (and paid): order.placed, then order.paid."""
        self._orders += 1
        total = sum((p.price * q for p, q in lines), Decimal(0))
        data = {
            "order_id": f"o-{n}-{self._orders}",
            "customer": self.customer(n, first_name),
            "lines": [p.line(q) for p, q in lines],
            "currency": "EUR",
            "total_price": str(total),
            "placed_at": self.clock.now().isoformat(),
        }
        await self.event(ev.ORDER_PLACED, data)
        if paid:
            await self.event(ev.ORDER_PAID, data)

    async def cart(
        self,
        n: int,
        lines: Sequence[tuple[Product, int]],
        first_name: str | None = None,
        updated_at: datetime | None = None,
    ) -> None:
        total = sum((p.price * q for p, q in lines), Decimal(0))
        data = {
            "cart_id": f"cart-{n}",
            "customer": self.customer(n, first_name),
            "lines": [p.line(q) for p, q in lines],
            "currency": "EUR",
            "total_price": str(total),
            "recovery_url": f"{STOREFRONT}/cart/{n}",
            "updated_at": (updated_at or self.clock.now()).isoformat(),
        }
        await self.event(ev.CART_UPDATED, data)

    async def import_history(self, rows: Sequence[tuple[int, datetime, Product, int]]) -> None:
        """Orders of the past through the history import (one line each), then their facts
        published as the import command does."""
        path = self.tmp / f"history-{self._events}.csv"
        self._events += 1
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(GENERIC_COLUMNS)
            for i, (n, at, p, q) in enumerate(rows):
                order = [n, email_of(n), f"h-{n}-{i}", at.isoformat(), p.price * q, "EUR"]
                out.writerow([*order, p.product_id, p.title, p.category, q, p.price])
        engine = make_engine(self.database_url, pool_size=1)
        try:
            report = await import_orders(
                engine, path, SHOP_ID, lambda shop: FactsSettings(), self.clock
            )
            assert not report.rejected, report.rejected
            await publish_imported(
                engine,
                Publisher(self.producer, "tests"),
                self.topics.name(CUSTOMER_ACTIVITY),
                report.customers,
                lambda shop: FactsSettings(),
                self.clock.now(),
            )
        finally:
            await engine.dispose()

    # --- the scheduler ----------------------------------------------------------------------

    def api(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.scheduler.app)
        return httpx.AsyncClient(transport=transport, base_url="http://scheduler", headers=ADMIN)

    async def turn(self, journey_id: str, on: bool = True, **changes: Any) -> dict[str, Any]:
        """The shipped file stored as the journey's next version, turned on (or off)."""
        definition = yaml.safe_load((DEFAULT_JOURNEYS_DIR / f"{journey_id}.yaml").read_text())
        async with self.api() as client:
            listed = (await client.get("/journeys")).json()
            version = max(j["version"] for j in listed if j["id"] == journey_id) + 1
            definition.update(changes, version=version, active=on)
            response = await client.put(
                f"/journeys/{journey_id}",
                content=yaml.safe_dump(definition),
                headers={"content-type": "application/yaml"},
            )
        assert response.status_code == 201, response.text
        (self.active.add if on else self.active.discard)(journey_id)
        return dict(response.json())

    async def timers_placed(self, journey_id: str, n: int) -> None:
        """Waits until the scheduler keeps the customer's next entry moment for the journey
        (a journey turned on finds its customers' moments in a sweep of its own)."""

        async def placed() -> bool:
            rows = await self.sql(
                "SELECT count(*) FROM scheduler.segment_timers"
                " WHERE journey_id = :j AND customer_key = :k",
                j=journey_id,
                k=key_of(n),
            )
            return int(rows[0][0]) == 1

        await eventually(placed, what=f"{journey_id}'s entry moment for customer {n}")

    async def enrolments(self, n: int, journey_id: str | None = None) -> list[dict[str, Any]]:
        async with self.api() as client:
            found = (await client.get(f"/customers/{key_of(n)}/enrollments")).json()
        return [e for e in found if journey_id is None or e["journey_id"] == journey_id]

    async def profile(self, n: int) -> dict[str, Any] | None:
        rows = await self.sql(
            "SELECT profile FROM scheduler.customers WHERE customer_key = :k", k=key_of(n)
        )
        return None if not rows else dict(rows[0][0])

    async def facts_arrived(self, n: int, **expected: Any) -> None:
        """Waits until the scheduler holds this customer's facts with these values."""

        async def arrived() -> bool:
            profile = await self.profile(n)
            return profile is not None and all(
                str(profile.get(k)) == str(v) for k, v in expected.items()
            )

        await eventually(arrived, what=f"customer {n}'s facts {expected} at the scheduler")

    async def sql(self, query: str, **params: Any) -> list[Any]:
        engine = make_engine(self.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(query), params)).all())
        finally:
            await engine.dispose()

    # --- time -------------------------------------------------------------------------------

    async def at(self, moment: datetime) -> None:
        """Moves the clock to `moment` and lets one timer pass run there."""
        assert moment >= self.clock.now(), (moment, self.clock.now())
        await self.clock.advance(moment - self.clock.now())
        await self.scheduler.timers.fire_due()

    # --- the inbox --------------------------------------------------------------------------

    def mails(self, n: int) -> list[CaughtMail]:
        return [m for m in self.mail.messages if email_of(n) in m.recipients]

    def subjects(self, n: int) -> list[str]:
        return [str(m.message["Subject"]) for m in self.mails(n)]

    async def mail_count(self, n: int, count: int) -> list[CaughtMail]:
        await eventually(lambda: len(self.mails(n)) >= count, what=f"{count} mail(s) to {n}")
        await asyncio.sleep(0.05)
        found = self.mails(n)
        assert len(found) == count, [str(m.message["Subject"]) for m in found]
        return found

    async def settled(self) -> None:
        """Lets anything (wrongly) on its way reach the dispatcher and the catcher."""
        await self.scheduler.timers.fire_due()
        await asyncio.sleep(0.3)

    async def outcomes(self, n: int, journey_id: str) -> list[tuple[str, str, str | None]]:
        """(step, status, reason) of the dispatcher's decisions for this customer, in order."""
        rows = await self.sql(
            "SELECT step_id, status, reason FROM dispatcher.messages"
            " WHERE customer_key = :k AND journey_id = :j ORDER BY created_at, step_id",
            k=key_of(n),
            j=journey_id,
        )
        return [(r[0], r[1], r[2]) for r in rows]


def links(mail: CaughtMail, kind: str) -> list[str]:
    """The tracking links (t/o: the open pixel, t/c: click redirects) in the HTML part."""
    return [
        u.rstrip(".")
        for u in re.findall(
            rf"http://127\.0\.0\.1:\d+/{kind}/[A-Za-z0-9_.-]+", mail.part("text/html")
        )
    ]


async def open_mail(system: System, mail: CaughtMail) -> None:
    """A person opens it: the pixel fetched by a browser a while after delivery."""
    [pixel] = links(mail, "t/o")
    async with httpx.AsyncClient() as client:
        response = await client.get(pixel, headers=BROWSER)
    assert response.headers["content-type"] == "image/gif"


async def click_mail(system: System, mail: CaughtMail) -> None:
    first = links(mail, "t/c")[0]
    async with httpx.AsyncClient() as client:
        response = await client.get(first, headers=BROWSER)
    assert response.status_code == 302


async def engagement_arrived(system: System, n: int, column: str, count: int) -> None:
    """The scheduler holds `count` of this customer's messages with `column` set."""

    async def arrived() -> bool:
        rows = await system.sql(
            f"SELECT count(*) FROM scheduler.message_engagement e"
            f" WHERE e.{column} IS NOT NULL AND e.request_key IN (SELECT request_key FROM"
            " scheduler.message_requests r JOIN scheduler.enrollments n"
            " ON n.id = r.enrollment_id WHERE n.customer_key = :k)",
            k=key_of(n),
        )
        return int(rows[0][0]) >= count

    await eventually(arrived, what=f"{column} of customer {n}'s mail at the scheduler")


async def start_system(
    infra: Infra, template_db: str, tmp: Path, start: datetime
) -> AsyncIterator[System]:
    """The whole system for one module; yields it running, stops it after."""
    from devstack import free_port
    from mailcatcher import start_catcher

    from shared.kafka import ensure_topics
    from tests.conftest import TEST_PARTITIONS, _counter

    name = f"test_j{next(_counter)}"
    infra.pg.psql(f'DROP DATABASE IF EXISTS "{name}"')
    infra.pg.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    database_url = infra.database_url(name)
    topics = Topics(prefix=f"tj{next(_counter)}-")
    await ensure_topics(infra.bootstrap, topics.all_with_dlq(), TEST_PARTITIONS)
    store, smtp_port = MailStore(), free_port()
    catcher = start_catcher(store, smtp_port)
    clock = ManualClock(start)
    common = common_settings(infra, database_url, topics)
    engine = make_engine(database_url, pool_size=1)
    await load_journeys(engine, DEFAULT_JOURNEYS_DIR, clock)
    await engine.dispose()
    ingest = IngestService(
        IngestSettings(
            **common, shops=[SHOP], tracking_keys=KEYS, admin_token=SecretStr(INGEST_TOKEN)
        ),
        clock,
    )
    await ingest.start()
    try:
        async with (
            served(ingest.app) as url,
            _with_mail_and_journeys(
                infra, topics, clock, store, database_url, url, smtp_port, tmp
            ) as system,
        ):
            yield system
    finally:
        await ingest.stop()
        catcher.stop()


@asynccontextmanager
async def _with_mail_and_journeys(
    infra: Infra,
    topics: Topics,
    clock: ManualClock,
    store: MailStore,
    database_url: str,
    url: str,
    smtp_port: int,
    tmp: Path,
) -> AsyncIterator[System]:
    """The dispatcher (Tea & Co's mail, tracked through ingest at `url`) and the scheduler."""
    common = common_settings(infra, database_url, topics)
    shop_mail = ShopMailConfig(
        shop_id=SHOP_ID,
        sender_name="Tea & Co",
        sender_address="hello@tea.shop.example",
        footer_address="Tea & Co, 1 Main St, Springfield",
        public_base_url=url,
        storefront_url=STOREFRONT,
        currency="EUR",
    )
    dispatcher = DispatcherService(
        DispatcherSettings(
            **common,
            smtp_port=smtp_port,
            shops=[shop_mail],
            tracking_keys=KEYS,
            ingest_url=url,
            ingest_token=SecretStr(INGEST_TOKEN),
        ),
        clock,
    )
    await dispatcher.start()
    scheduler = await started_scheduler(SchedulerSettings(**common, admin_token=ADMIN_TOKEN), clock)
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    system = System(infra, topics, clock, store, database_url, url, scheduler, producer, tmp)
    try:
        await system.catalog()
        yield system
    finally:
        await producer.stop()
        await scheduler.stop()
        await dispatcher.stop()


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)
