"""customer.activity in: decode, dedupe, apply to enrolments in one transaction per batch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.repository import BatchRepository
from services.scheduler.loops import OutboxPublisher, in_lanes
from services.scheduler.merge import join_customers
from services.scheduler.runner import Published, Runner, merge
from services.scheduler.segments.service import SegmentTracker
from shared import events
from shared.clock import Clock
from shared.events import Activity, InvalidEvent
from shared.kafka import Publisher, Record
from shared.logging import Laps, get_logger

log = get_logger(__name__)


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
    lanes: int = 1  # transactions at once, over disjoint groups of the batch's customers

    async def __call__(self, batch: list[Record]) -> None:
        """The batch's customers in `lanes` groups (by the record's key, the customer's), each
        decoded and applied in its own transaction at the same time: one group's statements
        run while another's activities are decoded and computed. A customer's activities stay
        in one group, in order. A lane that fails fails the batch (the consumer's error policy
        hands it again); what the other lanes committed is recognised as already applied."""
        laps = Laps()
        count = max(1, min(self.lanes, len(batch)))
        groups: list[list[Record]] = [[] for _ in range(count)]
        for record in batch:
            groups[hash(record.key or record.partition) % count].append(record)
        groups = [g for g in groups if g]
        count = len(groups)
        if count == 1:
            published = await self._lane(batch, laps)
        else:
            published = merge(
                await in_lanes([self._lane(g) for g in groups], self.outbox.wake_relay)
            )
            laps.lap("lanes_s")
        await self.outbox.publish(published)
        laps.lap("publish_s")
        log.debug("activities_applied", size=len(batch), lanes=count, **laps.laps)

    async def _lane(self, records: list[Record], laps: Laps | None = None) -> Published:
        decoded: list[tuple[str, Activity, int]] = []
        for record in records:
            try:
                event_id, activity = decode_activity(record.value)
                decoded.append((event_id, activity, record.partition))
            except InvalidEvent as exc:
                await self.publisher.dead_letter(record, str(exc))
        if laps is not None:
            laps.lap("decode_s")
        return await self._apply(decoded, laps) if decoded else Published([], [])

    async def _apply(
        self, decoded: list[tuple[str, Activity, int]], laps: Laps | None = None
    ) -> Published:
        laps = laps or Laps()
        now = self.clock.now()
        async with self.engine.begin() as conn:
            laps.lap("checkout_s")
            new_ids = await BatchRepository(conn).claim_new_activities(
                [event_id for event_id, _, _ in decoded], now
            )
            fresh: list[tuple[Activity, int]] = []
            for event_id, activity, partition in decoded:
                if event_id in new_ids:
                    new_ids.discard(event_id)  # the same event twice in one batch counts once
                    fresh.append((activity, partition))
            laps.lap("dedupe_s")
            fresh = await join_customers(conn, fresh, now)  # one key per person
            laps.lap("merge_s")
            # The segment timers of these customers are locked before their enrolments.
            before = await self.segments.before(conn, fresh) if self.segments else None
            laps.lap("segments_s")
            published = await self.runner.apply_activities(conn, fresh, now)
            laps.lap("runner_s")
            if self.segments is not None and before is not None:
                entered = await self.segments.after(conn, fresh, before, now)
                published = merge([published, entered])
            laps.lap("segments_s")
        laps.lap("db_commit_s")
        soon = now + timedelta(seconds=self.poll_interval_s)
        if published.earliest_timer is not None and published.earliest_timer <= soon:
            self.wake_timers.set()  # the timer loop may be asleep past this one's due time
        return published
