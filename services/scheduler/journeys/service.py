"""Storing a journey version with its rules: versions are immutable, the active one takes over,
and a segment journey's backfill is scheduled on activation. Used by the API and the loader."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scheduler.domain.journey import Journey
from services.scheduler.journeys.repository import EnrollmentRepository, JourneyRepository
from services.scheduler.journeys.schemas import JourneySummary, StoredVersion
from services.scheduler.segments.service import SegmentQueries
from shared.clock import Clock


class VersionConflict(ValueError):
    """The version exists with another definition."""


async def store_version(
    conn: AsyncConnection, journey: Journey, now: datetime, *, keep_stored: bool
) -> int | None:
    """Stores `journey` in the caller's transaction; returns how many customers its backfill
    scheduled (None: no backfill ran). `keep_stored` (the shipped files at start) leaves a
    version already stored as it is, its on/off state included, and a new version takes
    over only when it is active; otherwise (the API) storing makes it the active one."""
    repo = JourneyRepository()
    existing = await repo.stored(conn, journey.id, journey.version)
    if existing is not None and existing != journey:
        raise VersionConflict(
            f"{journey.id} v{journey.version} is stored with another definition; versions "
            "are immutable: bump `version`"
        )
    if existing is None or not keep_stored:
        await repo.add(conn, journey, now, takes_over=journey.active or not keep_stored)
    return await SegmentQueries(conn).backfill(journey, now)  # once per version


class JourneyService:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.repo = JourneyRepository()

    async def summaries(self) -> list[JourneySummary]:
        """Every stored version, by id, newest first."""
        async with self.engine.connect() as conn:
            stored = await self.repo.all_versions(conn)
        stored.sort(key=lambda item: (item[0].id, -item[0].version))
        return [
            JourneySummary(
                id=j.id,
                version=j.version,
                name=j.name,
                active=active,
                trigger=j.trigger.model_dump(by_alias=True, exclude_none=True),
                steps=[s.id for s in j.steps],
            )
            for j, active in stored
        ]

    async def active(self, journey_id: str) -> Journey | None:
        async with self.engine.connect() as conn:
            stored = await self.repo.all_versions(conn)
        for journey, active in sorted(stored, key=lambda item: -item[0].version):
            if journey.id == journey_id and active:
                return journey
        return None

    async def put(self, journey: Journey) -> StoredVersion:
        async with self.engine.begin() as conn:
            backfilled = await store_version(conn, journey, self.clock.now(), keep_stored=False)
        return StoredVersion(
            id=journey.id,
            version=journey.version,
            active=journey.active,
            backfill_scheduled=backfilled,
        )

    async def enrollments(self, customer_key: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return await EnrollmentRepository().for_customer(conn, customer_key)
