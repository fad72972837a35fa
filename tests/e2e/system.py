"""The whole system started for one e2e test: ingest (HTTP on a loopback port), dispatcher and
scheduler on the test's database, topics, SMTP catcher and ManualClock. One copy of the
start-up the e2e modules share (journeys_system.py builds its module-wide system from the
same pieces)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from mailcatcher import MailStore

from services.dispatcher.app import DispatcherService
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.shops import ShopMailConfig
from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from services.scheduler.app import SchedulerService
from services.scheduler.domain.journey import Journey
from services.scheduler.journeys.repository import JourneyRepository
from services.scheduler.settings import SchedulerSettings
from shared.clock import ManualClock
from shared.db import make_engine
from shared.topics import Topics
from shared.tracking import TrackingKey
from tests.conftest import Infra, eventually, started_scheduler
from tests.unit.ingest.deliveries import SHOP, SHOP_ID, Delivery


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
        self.scheduler = await started_scheduler(self.scheduler.settings, self.clock)


def common_settings(infra: Infra, database_url: str, topics: Topics) -> dict[str, Any]:
    """What every service's settings share in a test: its database, topics and broker."""
    return {
        "database_url": database_url,
        "topic_prefix": topics.prefix,
        "kafka_bootstrap_servers": infra.bootstrap,
    }


@asynccontextmanager
async def served(app: FastAPI, what: str = "ingest HTTP server") -> AsyncIterator[str]:
    """The app on a free loopback port (its lifespan is the service's own); yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what=what)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving


async def add_journeys(database_url: str, clock: ManualClock, journeys: Sequence[Journey]) -> None:
    engine = make_engine(database_url, pool_size=1)
    async with engine.begin() as conn:
        for journey in journeys:
            await JourneyRepository().add(conn, journey, clock.now())
    await engine.dispose()


def demo_shop_mail(public_base_url: str) -> ShopMailConfig:
    return ShopMailConfig(
        shop_id=SHOP_ID,
        sender_name="Demo Shop",
        sender_address="hello@shop.example",
        footer_address="Demo Shop, 1 Main St, Springfield",
        public_base_url=public_base_url,
    )


@asynccontextmanager
async def running_system(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    mail: tuple[MailStore, int],
    *,
    tracking_keys: Sequence[TrackingKey] = (),
    scheduler: dict[str, Any] | None = None,
) -> AsyncIterator[System]:
    """The three services for the Demo Shop, ingest ready; with tracking keys its mail carries
    the open pixel, click redirects and the unsubscribe link (public URL: ingest's)."""
    store, smtp_port = mail
    common = common_settings(infra, database_url, topics)
    keys = list(tracking_keys)
    ingest = IngestService(IngestSettings(**common, shops=[SHOP], tracking_keys=keys), clock)
    await ingest.start()
    dispatcher: DispatcherService | None = None
    system: System | None = None
    try:
        async with served(ingest.app) as url:
            shops = [demo_shop_mail(url)] if keys else []
            dispatcher = DispatcherService(
                DispatcherSettings(**common, smtp_port=smtp_port, shops=shops, tracking_keys=keys),
                clock,
            )
            await dispatcher.start()
            settings = SchedulerSettings(**common, **(scheduler or {}))
            started = await started_scheduler(settings, clock)
            system = System(
                infra, topics, clock, store, database_url, url, ingest, started, dispatcher
            )
            await eventually(_ready(url), what="ingest ready")
            yield system
    finally:
        if system is not None:
            await system.scheduler.stop()
        if dispatcher is not None:
            await dispatcher.stop()
        await ingest.stop()


def _ready(url: str) -> Any:
    async def check() -> bool:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{url}/readyz")).status_code == 200

    return check
