"""customer.activity in: decode, dedupe, apply to enrolments in one transaction per batch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.runner import Runner
from shared import events
from shared.clock import Clock
from shared.events import Activity, InvalidEvent
from shared.kafka import Publisher, Record


@dataclass
class ActivityHandler:
    engine: AsyncEngine
    runner: Runner
    publisher: Publisher
    clock: Clock
    wake_relay: asyncio.Event

    async def __call__(self, batch: list[Record]) -> None:
        decoded: list[tuple[str, Activity, int]] = []
        for record in batch:
            try:
                event = events.decode(record.value)
                if event.type != events.CUSTOMER_ACTIVITY:
                    raise InvalidEvent(f"unexpected event type {event.type!r}")
                decoded.append((event.id, events.payload(event, Activity), record.partition))
            except InvalidEvent as exc:
                await self.publisher.dead_letter(record, str(exc))
        if decoded:
            await self._apply(decoded)

    async def _apply(self, decoded: list[tuple[str, Activity, int]]) -> None:
        now = self.clock.now()
        async with self.engine.begin() as conn:
            await self.runner.catalog.refresh(conn)
            new_ids = await self.runner.activities.new_event_ids(
                conn, [event_id for event_id, _, _ in decoded], now
            )
            for event_id, activity, partition in decoded:
                if event_id in new_ids:
                    new_ids.discard(event_id)  # the same event twice in one batch counts once
                    await self.runner.apply_activity(conn, activity, partition, now)
        self.wake_relay.set()
