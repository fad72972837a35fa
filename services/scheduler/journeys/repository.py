"""SQL for journey versions and a customer's enrolments. Callers own the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.adapters.tables import enrollments, journeys, timers
from services.scheduler.domain.journey import Journey


class JourneyRepository:
    async def all_versions(self, conn: AsyncConnection) -> list[tuple[Journey, bool]]:
        rows = await conn.execute(sa.select(journeys.c.definition, journeys.c.active))
        return [(Journey.model_validate(r.definition), r.active) for r in rows]

    async def stamp(self, conn: AsyncConnection) -> tuple[int, datetime | None]:
        """Changes whenever a version is added or (re)activated: (rows, newest loaded_at)."""
        row = (
            await conn.execute(sa.select(sa.func.count(), sa.func.max(journeys.c.loaded_at)))
        ).one()
        return int(row[0]), row[1]

    async def stored(self, conn: AsyncConnection, journey_id: str, version: int) -> Journey | None:
        row = await conn.scalar(
            sa.select(journeys.c.definition).where(
                journeys.c.id == journey_id, journeys.c.version == version
            )
        )
        return None if row is None else Journey.model_validate(row)

    async def add(
        self, conn: AsyncConnection, journey: Journey, now: datetime, takes_over: bool = True
    ) -> None:
        """Versions are immutable; a version that takes over deactivates the others (an
        inactive one stored with `takes_over=False` leaves them as they are)."""
        if takes_over:
            await conn.execute(
                journeys.update().where(journeys.c.id == journey.id).values(active=False)
            )
        await conn.execute(
            insert(journeys)
            .values(
                id=journey.id,
                version=journey.version,
                active=journey.active,
                loaded_at=now,
                definition=journey.model_dump(mode="json", by_alias=True, exclude_none=True),
            )
            .on_conflict_do_update(
                index_elements=["id", "version"],
                set_={"active": journey.active, "loaded_at": now},
            )
        )


class EnrollmentRepository:
    async def for_customer(self, conn: AsyncConnection, customer_key: str) -> list[dict[str, Any]]:
        rows = await conn.execute(
            sa.select(enrollments, timers.c.step_id.label("waiting_for"), timers.c.due_at)
            .outerjoin(timers, timers.c.enrollment_id == enrollments.c.id)
            .where(enrollments.c.customer_key == customer_key)
            .order_by(enrollments.c.id)
        )
        return [dict(r._mapping) for r in rows]
