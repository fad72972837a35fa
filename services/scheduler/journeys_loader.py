"""Loads journey definitions from YAML files into the database (`load-journeys`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.repository import JourneyRepository
from services.scheduler.domain.journey import Journey, parse_journey
from services.scheduler.segments.service import SegmentQueries
from shared.clock import Clock


def read_journeys(directory: Path) -> list[Journey]:
    """Top-level *.yaml files only; examples/ holds templates a shop copies, not defaults."""
    return [parse_journey(path.read_text()) for path in sorted(directory.glob("*.yaml"))]


async def load_journeys(engine: AsyncEngine, directory: Path, clock: Clock) -> list[Journey]:
    journeys = read_journeys(directory)
    repo = JourneyRepository()
    async with engine.begin() as conn:
        for journey in journeys:
            existing = await repo.stored(conn, journey.id, journey.version)
            if existing is not None and existing != journey:
                raise ValueError(
                    f"{journey.id} v{journey.version} is stored with another "
                    "definition; bump `version` in the file"
                )
            await repo.add(conn, journey, clock.now())  # (re)activates this version
            await SegmentQueries(conn).backfill(journey, clock.now())  # once per version
    return journeys
