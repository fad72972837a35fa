"""Processed-event ids are forgotten once the broker can no longer redeliver their events."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.tables import processed_events
from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from services.scheduler.adapters.tables import processed_activities
from services.scheduler.app import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.clock import ManualClock
from shared.pruning import Pruner
from tests.conftest import Infra, eventually

pytestmark = pytest.mark.integration


async def store(db: AsyncEngine, table: sa.Table, clock: ManualClock, **ages_days: int) -> None:
    async with db.begin() as conn:
        await conn.execute(
            table.insert(),
            [
                {"event_id": event_id, "processed_at": clock.now() - timedelta(days=age)}
                for event_id, age in ages_days.items()
            ],
        )


async def ids(db: AsyncEngine, table: sa.Table) -> set[str]:
    async with db.connect() as conn:
        return set((await conn.scalars(sa.select(table.c.event_id))).all())


async def test_ingest_forgets_ids_older_than_14_days_hour_by_hour(
    infra: Infra, database_url: str, clock: ManualClock, db: AsyncEngine
) -> None:
    settings = IngestSettings(
        database_url=database_url, kafka_bootstrap_servers=infra.bootstrap, role="consumer"
    )
    pruner = IngestService(settings, clock).pruner(db)
    await store(db, processed_events, clock, old=15, recent=13, fresh=0)
    task = asyncio.create_task(pruner.run())
    try:
        await eventually(lambda: _lacks(db, processed_events, "old"), what="15-day-old id gone")
        assert await ids(db, processed_events) == {"recent", "fresh"}
        await clock.advance(timedelta(days=1, hours=1))  # 'recent' is now 14 days and 1 h old
        await eventually(lambda: _lacks(db, processed_events, "recent"), what="next prune")
        assert await ids(db, processed_events) == {"fresh"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_scheduler_forgets_activity_ids_after_its_own_window_in_batches(
    infra: Infra, database_url: str, clock: ManualClock, db: AsyncEngine
) -> None:
    settings = SchedulerSettings(
        database_url=database_url,
        kafka_bootstrap_servers=infra.bootstrap,
        processed_retention_days=30,
    )
    service = SchedulerService(settings, clock)
    try:
        pruner: Pruner = replace(service.pruner, batch_rows=5, engine=db)
        await store(db, processed_activities, clock, **{f"a{i}": 31 for i in range(12)}, kept=29)
        assert await pruner.prune() == 12
        assert await ids(db, processed_activities) == {"kept"}
    finally:
        await service.engine.dispose()


async def _lacks(db: AsyncEngine, table: sa.Table, event_id: str) -> bool:
    return event_id not in await ids(db, table)
