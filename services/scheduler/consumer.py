"""customer.activity in: decode, dedupe, apply to enrolments in one transaction per batch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.repository import BatchRepository
from services.scheduler.loops import OutboxPublisher
from services.scheduler.merge import join_customers
from services.scheduler.runner import Published, Runner
from services.scheduler.segments.service import SegmentTracker, merge
from shared import events
from shared.clock import Clock
from shared.events import Activity, InvalidEvent
from shared.kafka import Publisher, Record


class _ActivityEvent(events.CloudEvent):
    """The envelope with its payload typed: a record is read in one pass, not two (the
    envelope, then its data again)."""

    data: Activity  # type: ignore[assignment]


def decode_activity(raw: bytes | None) -> tuple[str, Activity]:
    """The event id and the activity; InvalidEvent saying what is wrong with anything else."""
    if raw is not None:
        try:
            event = _ActivityEvent.model_validate_json(raw)
        except ValidationError:
            pass  # the general path below says what is wrong, as it did
        else:
            if event.type == events.CUSTOMER_ACTIVITY:
                return event.id, event.data
    general = events.decode(raw)
    if general.type != events.CUSTOMER_ACTIVITY:
        raise InvalidEvent(f"unexpected event type {general.type!r}")
    return general.id, events.payload(general, Activity)


@dataclass
class ActivityHandler:
    engine: AsyncEngine
    runner: Runner
    publisher: Publisher
    outbox: OutboxPublisher
    clock: Clock
    wake_timers: asyncio.Event
    poll_interval_s: float
    segments: SegmentTracker | None = None  # segment-triggered journeys: entries by activity

    async def __call__(self, batch: list[Record]) -> None:
        decoded: list[tuple[str, Activity, int]] = []
        for record in batch:
            try:
                event_id, activity = decode_activity(record.value)
                decoded.append((event_id, activity, record.partition))
            except InvalidEvent as exc:
                await self.publisher.dead_letter(record, str(exc))
        if decoded:
            await self.outbox.publish(await self._apply(decoded))

    async def _apply(self, decoded: list[tuple[str, Activity, int]]) -> Published:
        now = self.clock.now()
        async with self.engine.begin() as conn:
            new_ids = await BatchRepository(conn).claim_new_activities(
                [event_id for event_id, _, _ in decoded], now
            )
            fresh: list[tuple[Activity, int]] = []
            for event_id, activity, partition in decoded:
                if event_id in new_ids:
                    new_ids.discard(event_id)  # the same event twice in one batch counts once
                    fresh.append((activity, partition))
            fresh = await join_customers(conn, fresh, now)  # one key per person
            # The segment timers of these customers are locked before their enrolments.
            before = await self.segments.before(conn, fresh) if self.segments else None
            published = await self.runner.apply_activities(conn, fresh, now)
            if self.segments is not None and before is not None:
                entered = await self.segments.after(conn, fresh, before, now)
                published = merge([published, entered])
        soon = now + timedelta(seconds=self.poll_interval_s)
        if published.earliest_timer is not None and published.earliest_timer <= soon:
            self.wake_timers.set()  # the timer loop may be asleep past this one's due time
        return published
