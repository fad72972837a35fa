"""The CDNOW history through the import, its facts on to the scheduler, the clock at 1998-07-01:
a 90-day win-back's backfill preview and its enrolments both match the count computed here
from the file itself, and the preview mails nobody."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.history_import import import_orders
from services.ingest.history_publish import publish_imported
from services.scheduler.adapters.tables import customers, enrollments
from services.scheduler.app import SchedulerService
from shared.clock import ManualClock
from shared.kafka import Publisher
from shared.topics import CUSTOMER_ACTIVITY, MESSAGE_REQUESTS, Topics
from tests.conftest import ADMIN, Infra, eventually, read_topic
from tests.integration.conftest import scheduler_settings
from tests.integration.test_history_import import cdnow_purchases, generic_csv

# The CDNOW history (23,570 customers) is imported for real: minutes on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
AS_OF = datetime(1998, 7, 1, tzinfo=UTC)
WIN_BACK = """
id: win-back
version: 1
name: Win-back after 90 days
trigger:
  segment: {field: profile.days_since_last_order, op: gte, value: 90}
  backfill:
    if: {field: profile.last_order_at, op: within, value: 300d}   # ten months, not years
exit:
  - {event: shop.order.placed.v1, reason: converted}
limits: {holdout_percent: 10}
steps:
  - {id: reason, send: {template: winback_reason, subject: "We miss you"}}
  - {id: wait, wait: {for: 48h}}
  - {id: offer, send: {template: winback_offer, subject: "Something for you"}}
"""


def expected_win_back() -> int:
    """Customers whose last purchase is 90 to 300 days before 1998-07-01, from the file."""
    last: dict[str, datetime] = {}
    for customer, day, _ in cdnow_purchases():
        at = datetime(day.year, day.month, day.day, tzinfo=UTC)
        last[customer] = max(last.get(customer, at), at)
    return sum(1 for at in last.values() if timedelta(days=90) <= AS_OF - at <= timedelta(days=300))


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    yield producer
    await producer.stop()


async def count(service: SchedulerService, table: sa.Table) -> int:
    async with service.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def test_cdnow_win_back_preview_and_backfill_match_the_file(
    infra: Infra,
    database_url: str,
    topics: Topics,
    producer: AIOKafkaProducer,
    tmp_path: Path,
) -> None:
    clock = ManualClock(AS_OF)
    service = SchedulerService(scheduler_settings(infra, database_url, topics), clock)
    await service.start()
    try:
        await eventually(lambda: bool(service.assignment.partitions), what="partitions")
        report = await import_orders(
            service.engine,
            generic_csv(tmp_path / "cdnow.csv"),
            "cdnow",
            lambda shop: FactsSettings(),
            clock,
        )
        published = await publish_imported(
            service.engine,
            Publisher(producer, "test"),
            topics.name(CUSTOMER_ACTIVITY),
            report.customers,
            lambda shop: FactsSettings(),
            clock.now(),
        )
        assert published == 23_570

        async def all_arrived() -> bool:
            return await count(service, customers) == published

        await eventually(all_arrived, timeout_s=180, what="the facts at the scheduler")
        assert await count(service, enrollments) == 0  # imported history enrols nobody
        expected = expected_win_back()
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://s", headers=ADMIN, timeout=120
        ) as client:
            preview = (await client.post("/journeys/win-back/preview", content=WIN_BACK)).json()
            assert preview["would_enter"] == expected
            assert preview["mailed"] == 0
            sample = preview["sample"]
            assert len(sample) == 20
            assert all(
                s["first_message_at"] is None
                if s["holdout"]
                else datetime.fromisoformat(s["first_message_at"]) == AS_OF
                for s in sample
            )
            assert await read_topic(infra.bootstrap, topics.name(MESSAGE_REQUESTS)) == []
            assert await count(service, enrollments) == 0

            stored = await client.put("/journeys/win-back", content=WIN_BACK)
            assert stored.json()["backfill_scheduled"] == expected

        async def all_enrolled() -> bool:
            await service.timers.fire_due()
            return await count(service, enrollments) >= expected

        await eventually(all_enrolled, timeout_s=180, what="the backfill enrolled")
        assert await count(service, enrollments) == expected
    finally:
        await service.stop()
