"""All of the scheduler's SQL. Callers own the transaction; nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.adapters.tables import (
    customers,
    enrollments,
    journeys,
    message_requests,
    outbox,
    processed_activities,
    timers,
)
from services.scheduler.domain.engine import Enrollment
from services.scheduler.domain.journey import Journey
from shared.events import CartSnapshot, Profile


@dataclass(frozen=True)
class CustomerFacts:
    key: str
    partition: int
    profile: Profile
    cart: CartSnapshot | None


@dataclass(frozen=True)
class DueTimer:
    enrollment_id: int
    step_id: str
    due_at: datetime


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: str
    value: bytes


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

    async def add(self, conn: AsyncConnection, journey: Journey, now: datetime) -> None:
        """Versions are immutable; activating one version deactivates the others."""
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


class ActivityRepository:
    async def new_event_ids(
        self, conn: AsyncConnection, ids: Sequence[str], now: datetime
    ) -> set[str]:
        if not ids:
            return set()
        stmt = (
            insert(processed_activities)
            .values([{"event_id": i, "processed_at": now} for i in ids])
            .on_conflict_do_nothing()
            .returning(processed_activities.c.event_id)
        )
        return set((await conn.scalars(stmt)).all())

    async def save_customer(
        self, conn: AsyncConnection, facts: CustomerFacts, now: datetime
    ) -> None:
        values = {
            "customer_key": facts.key,
            "shop_id": facts.profile.shop_id,
            "partition": facts.partition,
            "profile": facts.profile.model_dump(mode="json"),
            "cart": None if facts.cart is None else facts.cart.model_dump(mode="json"),
            "updated_at": now,
        }
        stmt = insert(customers).values(values)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["customer_key"],
                set_={k: stmt.excluded[k] for k in ("profile", "cart", "partition", "updated_at")},
            )
        )

    async def customer(self, conn: AsyncConnection, key: str) -> CustomerFacts | None:
        row = (
            await conn.execute(sa.select(customers).where(customers.c.customer_key == key))
        ).first()
        if row is None:
            return None
        cart = None if row.cart is None else CartSnapshot.model_validate(row.cart)
        return CustomerFacts(
            row.customer_key, row.partition, Profile.model_validate(row.profile), cart
        )


class EnrollmentRepository:
    async def active_for_update(self, conn: AsyncConnection, customer_key: str) -> list[Enrollment]:
        rows = await conn.execute(
            sa.select(enrollments)
            .where(enrollments.c.customer_key == customer_key, enrollments.c.status == "active")
            .order_by(enrollments.c.id)
            .with_for_update()
        )
        return [_enrollment(r) for r in rows]

    async def ever_enrolled(
        self, conn: AsyncConnection, journey_id: str, customer_key: str
    ) -> bool:
        found = await conn.scalar(
            sa.select(sa.literal(1))
            .where(
                enrollments.c.journey_id == journey_id, enrollments.c.customer_key == customer_key
            )
            .limit(1)
        )
        return found is not None

    async def get_for_update(self, conn: AsyncConnection, enrollment_id: int) -> Enrollment | None:
        row = (
            await conn.execute(
                sa.select(enrollments).where(enrollments.c.id == enrollment_id).with_for_update()
            )
        ).first()
        return None if row is None else _enrollment(row)

    async def insert(
        self, conn: AsyncConnection, e: Enrollment, partition: int, now: datetime
    ) -> int:
        new_id = await conn.scalar(
            insert(enrollments)
            .values(
                journey_id=e.journey_id,
                journey_version=e.journey_version,
                customer_key=e.customer_key,
                partition=partition,
                status=e.status,
                step_index=e.step_index,
                holdout=e.holdout,
                exit_reason=e.exit_reason,
                entered_at=e.entered_at,
                updated_at=now,
            )
            .returning(enrollments.c.id)
        )
        assert new_id is not None
        return int(new_id)

    async def update(self, conn: AsyncConnection, e: Enrollment, now: datetime) -> None:
        assert e.id is not None
        await conn.execute(
            enrollments.update()
            .where(enrollments.c.id == e.id)
            .values(
                status=e.status, step_index=e.step_index, exit_reason=e.exit_reason, updated_at=now
            )
        )

    async def for_customer(self, conn: AsyncConnection, customer_key: str) -> list[dict[str, Any]]:
        rows = await conn.execute(
            sa.select(enrollments, timers.c.step_id.label("waiting_for"), timers.c.due_at)
            .outerjoin(timers, timers.c.enrollment_id == enrollments.c.id)
            .where(enrollments.c.customer_key == customer_key)
            .order_by(enrollments.c.id)
        )
        return [dict(r._mapping) for r in rows]


class TimerRepository:
    async def schedule(
        self,
        conn: AsyncConnection,
        enrollment_id: int,
        partition: int,
        step_id: str,
        due_at: datetime,
    ) -> None:
        """One pending timer per enrolment: scheduling again replaces it."""
        stmt = insert(timers).values(
            enrollment_id=enrollment_id, partition=partition, step_id=step_id, due_at=due_at
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["enrollment_id"],
                set_={
                    "step_id": stmt.excluded.step_id,
                    "due_at": stmt.excluded.due_at,
                    "partition": stmt.excluded.partition,
                },
            )
        )

    async def cancel(self, conn: AsyncConnection, enrollment_id: int) -> None:
        await conn.execute(timers.delete().where(timers.c.enrollment_id == enrollment_id))

    async def claim_due(
        self, conn: AsyncConnection, partitions: Sequence[int], now: datetime, limit: int
    ) -> list[DueTimer]:
        """Due timers of the partitions this instance owns, locked with their enrolments.

        SKIP LOCKED lets a busy enrolment (an activity being applied) wait for the next pass
        instead of blocking; the timer row is deleted in the same transaction that acts on it.
        """
        rows = await conn.execute(
            sa.select(timers.c.enrollment_id, timers.c.step_id, timers.c.due_at)
            .join(enrollments, enrollments.c.id == timers.c.enrollment_id)
            .where(timers.c.partition.in_(list(partitions)), timers.c.due_at <= now)
            .order_by(timers.c.due_at)
            .limit(limit)
            .with_for_update(of=[timers, enrollments], skip_locked=True)
        )
        due = [DueTimer(r.enrollment_id, r.step_id, r.due_at) for r in rows]
        if due:
            await conn.execute(
                timers.delete().where(timers.c.enrollment_id.in_([t.enrollment_id for t in due]))
            )
        return due

    async def count_due(
        self, conn: AsyncConnection, partitions: Sequence[int], now: datetime
    ) -> int:
        count = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(timers)
            .where(timers.c.partition.in_(list(partitions)), timers.c.due_at <= now)
        )
        return int(count or 0)


class OutboxRepository:
    async def add(
        self, conn: AsyncConnection, topic: str, key: str, value: bytes, now: datetime
    ) -> None:
        await conn.execute(
            outbox.insert().values(topic=topic, key=key, value=value, created_at=now)
        )

    async def record_request(
        self,
        conn: AsyncConnection,
        request_key: str,
        enrollment_id: int,
        step_id: str,
        variant: str | None,
        now: datetime,
    ) -> bool:
        """False when this request was already made (a replayed timer): do not ask twice."""
        inserted = await conn.scalar(
            insert(message_requests)
            .values(
                request_key=request_key,
                enrollment_id=enrollment_id,
                step_id=step_id,
                variant=variant,
                requested_at=now,
            )
            .on_conflict_do_nothing()
            .returning(message_requests.c.request_key)
        )
        return inserted is not None

    async def claim(self, conn: AsyncConnection, limit: int) -> list[OutboxRow]:
        rows = await conn.execute(
            sa.select(outbox).order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True)
        )
        return [OutboxRow(r.id, r.topic, r.key, r.value) for r in rows]

    async def delete(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        await conn.execute(outbox.delete().where(outbox.c.id.in_(list(ids))))


def _enrollment(row: Any) -> Enrollment:
    return Enrollment(
        id=row.id,
        journey_id=row.journey_id,
        journey_version=row.journey_version,
        customer_key=row.customer_key,
        entered_at=row.entered_at,
        step_index=row.step_index,
        status=row.status,
        holdout=row.holdout,
        exit_reason=row.exit_reason,
    )
