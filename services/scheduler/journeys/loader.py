"""Loads journey definitions from YAML files into the database (`load-journeys`).

The files are the shipped defaults; the database holds what the shop chose. A version already
stored is left as it is (its on/off state included), so loading at every start never turns
on a journey shipped off, nor turns off one the shop turned on. A new version in a file is
stored; it takes over (deactivating the others) only when the file marks it active.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.domain.journey import Journey, parse_journey
from services.scheduler.journeys.service import VersionConflict, store_version
from shared.clock import Clock


def read_journeys(directory: Path) -> list[Journey]:
    """Top-level *.yaml files only (README.md says which scenario each one is)."""
    return [parse_journey(path.read_text()) for path in sorted(directory.glob("*.yaml"))]


async def load_journeys(engine: AsyncEngine, directory: Path, clock: Clock) -> list[Journey]:
    journeys = read_journeys(directory)
    async with engine.begin() as conn:
        for journey in journeys:
            try:
                await store_version(conn, journey, clock.now(), keep_stored=True)
            except VersionConflict as exc:
                raise ValueError(f"{exc} in the file") from exc
    return journeys
