"""Segment-triggered journeys at work: entries by activity (SegmentTracker), by time (segment
timers fired in the timer pass), the safety-net sweep and the daily sizes (SegmentSweeper),
and the control plane's sets (SegmentQueries: counts, members, preview, backfill).

Nobody is evaluated on a schedule to find entries: an activity recomputes its customer's
next entry moment per segment journey (domain/segment_time.py) and keeps it as a timer row
owned by the customer's partition; the row is deleted by the transaction that fires it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scheduler.adapters.repository import CustomerFacts
from services.scheduler.domain.conditions import All, Condition
from services.scheduler.domain.facts import build_facts
from services.scheduler.domain.journey import Backfill, Journey, SegmentTrigger
from services.scheduler.domain.preview import first_message
from services.scheduler.domain.segment_defaults import DEFAULT_SEGMENTS
from services.scheduler.domain.segment_facts import reads_predictions
from services.scheduler.domain.segment_time import (
    Entry,
    entered_by_change,
    next_entry,
    on_timer,
    timeline,
)
from services.scheduler.journeys.repository import JourneyRepository
from services.scheduler.predictions.repository import PredictionRepository
from services.scheduler.predictions.service import Refreshed
from services.scheduler.runner import SEGMENT_ENTERED, JourneyCatalog, Published, Runner, merge
from services.scheduler.segments.repository import (
    Candidates,
    SegmentRepository,
    SegmentTimerRow,
)
from shared import errors, metrics
from shared.clock import Clock, parse_duration
from shared.driver_errors import translate
from shared.events import HISTORY_IMPORTED_KIND, Activity
from shared.kafka import Assignment
from shared.logging import get_logger
from shared.runtime import wait_any

log = get_logger(__name__)
SERVICE = "scheduler"
SWEEP_CHUNK = 2_000  # customers per sweep transaction
PREVIEW_SAMPLE = 20
SNAPSHOT_PARTITION = 0  # the owner of partition 0 keeps the daily sizes (one instance does)


def segment_journeys(catalog: JourneyCatalog) -> list[Journey]:
    return [j for j in catalog.active() if isinstance(j.trigger, SegmentTrigger)]


def segment_of(journey: Journey) -> Condition:
    assert isinstance(journey.trigger, SegmentTrigger)
    return journey.trigger.segment


def segment_facts(customer: CustomerFacts, now: datetime) -> dict[str, Any]:
    return build_facts(
        SEGMENT_ENTERED, now, customer.profile, customer.cart, now,
        predictions=customer.predictions,
    )  # fmt: skip


# --- entries by activity ----------------------------------------------------------------------


@dataclass(frozen=True)
class Before:
    """A batch's customers as they were, with their pending segment timers (locked)."""

    journeys: list[Journey]
    previous: dict[str, CustomerFacts]
    pending: dict[tuple[str, str], datetime]


@dataclass
class SegmentTracker:
    """Called by the activity handler around Runner.apply_activities, in its transaction."""

    runner: Runner

    async def before(
        self, conn: AsyncConnection, batch: Sequence[tuple[Activity, int]]
    ) -> Before | None:
        await self.runner.catalog.refresh(conn)
        journeys = segment_journeys(self.runner.catalog)
        if not journeys or not batch:
            return None
        repo = SegmentRepository(conn)
        keys = sorted({a.profile.key for a, _ in batch})
        # The customers, then their timers: the order the sweep locks them in.
        previous = await repo.customers(keys, lock=True)
        pending = await repo.lock_timers(keys, [j.id for j in journeys])
        return Before(journeys, previous, pending)

    async def after(
        self,
        conn: AsyncConnection,
        batch: Sequence[tuple[Activity, int]],
        before: Before,
        now: datetime,
    ) -> Published:
        """Each activity in order against the facts before it: a customer who leaves and
        enters again within one batch enters again."""
        latest: dict[str, CustomerFacts] = {}
        facts_before = {k: segment_facts(c, now) for k, c in before.previous.items()}
        entered: set[tuple[str, str]] = set()
        entrants: list[tuple[Journey, CustomerFacts]] = []
        for activity, partition in batch:
            key = activity.profile.key
            known = before.previous.get(key)  # an activity leaves the predictions as they were
            predictions = None if known is None else known.predictions
            customer = CustomerFacts(key, partition, activity.profile, activity.cart, predictions)
            facts = segment_facts(customer, now)
            previous = facts_before.get(key)
            if activity.kind == HISTORY_IMPORTED_KIND:
                previous = facts  # imported history is facts, not an entry
            for journey in before.journeys:
                pending = None if key in latest else before.pending.get((journey.id, key))
                if entered_by_change(segment_of(journey), previous, facts, pending, now):
                    entrants.append((journey, customer))
                    entered.add((journey.id, key))
            latest[key], facts_before[key] = customer, facts
        rows: list[SegmentTimerRow] = []
        gone: list[tuple[str, str]] = []
        for key, customer in latest.items():
            for journey in before.journeys:
                pending = before.pending.get((journey.id, key))
                if (journey.id, key) not in entered and pending is not None and pending <= now:
                    continue  # due and not fired yet (a backfill): the timer pass enrols
                entry = next_entry(segment_of(journey), facts_before[key], now)
                _place(rows, gone, journey, customer, entry)
        published = await self.runner.enter(conn, entrants, now)
        await SegmentRepository(conn).set_timers(rows, gone)
        metrics_entered(len(entrants), "activity")
        return published


def _place(
    rows: list[SegmentTimerRow],
    gone: list[tuple[str, str]],
    journey: Journey,
    customer: CustomerFacts,
    entry: Any,
) -> None:
    if entry.at is None:
        gone.append((journey.id, customer.key))
    else:
        rows.append(
            SegmentTimerRow(journey.id, customer.key, customer.partition, entry.at, entry.leaves_at)
        )


def metrics_entered(count: int, how: str) -> None:
    if count:
        log.info("segment_entries", count=count, by=how)


# --- entries by time --------------------------------------------------------------------------


@dataclass
class SegmentTimers:
    """Fires due segment timers of owned partitions; the TimerLoop calls it every pass."""

    engine: AsyncEngine
    runner: Runner

    async def fire_due(
        self, partitions: Sequence[int], now: datetime, limit: int
    ) -> tuple[int, Published]:
        try:
            async with self.engine.begin() as conn:
                return await self._fire(conn, partitions, now, limit, isolate=False)
        except Exception as exc:
            error = translate(exc)
            if errors.classify(error) is errors.Transient:
                raise error from exc
            log.warning("segment_pass_failed_firing_one_by_one", error=errors.describe(exc))
        async with self.engine.begin() as conn:
            return await self._fire(conn, partitions, now, limit, isolate=True)

    async def next_due_at(
        self, conn: AsyncConnection, partitions: Sequence[int], until: datetime
    ) -> datetime | None:
        return await SegmentRepository(conn).next_due_at(partitions, until)

    async def _fire(
        self,
        conn: AsyncConnection,
        partitions: Sequence[int],
        now: datetime,
        limit: int,
        isolate: bool,
    ) -> tuple[int, Published]:
        repo = SegmentRepository(conn)
        due = await repo.claim_due(partitions, now, limit)
        if not due:
            return 0, Published([], [])
        await self.runner.catalog.refresh(conn)
        journeys = {j.id: j for j in segment_journeys(self.runner.catalog)}
        keys = sorted({t.customer_key for t in due})
        customers = await repo.customers(keys)
        latest = await repo.latest_entries(keys, sorted({t.journey_id for t in due}))
        entrants: list[tuple[Journey, CustomerFacts]] = []
        rows: list[SegmentTimerRow] = []
        for timer in due:
            journey, customer = journeys.get(timer.journey_id), customers.get(timer.customer_key)
            if journey is None or customer is None:
                continue  # the journey is off or replaced, the customer gone: the timer goes
            holds, following = on_timer(segment_of(journey), segment_facts(customer, now), now)
            entered = latest.get((timer.journey_id, timer.customer_key))
            if holds and (entered is None or entered < timer.due_at):
                # An enrolment at or after the due moment already entered this stay: a sweep
                # or an activity batch that read the clock before it fired placed it again.
                entrants.append((journey, customer))
            _place(rows, [], journey, customer, following)
        published = await self._enter(conn, entrants, now, isolate)
        await repo.set_timers(rows, [])
        metrics_entered(len(entrants), "time")
        return len(due), published

    async def _enter(
        self,
        conn: AsyncConnection,
        entrants: list[tuple[Journey, CustomerFacts]],
        now: datetime,
        isolate: bool,
    ) -> Published:
        if not isolate:
            return await self.runner.enter(conn, entrants, now)
        parts = []
        for entrant in entrants:  # after a failed set: one savepoint each, a poison one skipped
            try:
                async with conn.begin_nested():
                    parts.append(await self.runner.enter(conn, [entrant], now))
            except Exception as exc:
                if errors.classify(translate(exc)) is errors.Transient:
                    raise
                metrics.ERRORS.labels(SERVICE, "segment_entry").inc()
                log.error("segment_entry_failed", journey=entrant[0].id, error=repr(exc))
        return merge(parts)


# --- entries by a refresh of the predictions --------------------------------------------------


@dataclass
class PredictionEntries:
    """A refresh moved some customers' predictions (PredictionRefresher.on_refreshed): for each
    segment journey that reads them, those the new figures put into the segment (out of it on
    the figures before) get an entry timer due now; everyone changed gets their next entry
    moment. As with a backfill, the owner of each customer's partition fires the timer and
    enrols, so the instance that ran the fit writes no enrolment of a partition it does not
    own, and nobody is evaluated who did not change."""

    engine: AsyncEngine
    runner: Runner
    clock: Clock
    chunk: int = SWEEP_CHUNK

    async def on_refreshed(self, refreshed: Refreshed) -> None:
        async with self.engine.connect() as conn:
            await self.runner.catalog.refresh(conn)
            journeys = [
                j for j in segment_journeys(self.runner.catalog) if reads_predictions(segment_of(j))
            ]
            if not journeys:
                return
            changes = await PredictionRepository(conn).changes_since(
                refreshed.shop_id, refreshed.fitted_at
            )
        now, entered = self.clock.now(), 0
        for start in range(0, len(changes), self.chunk):
            async with self.engine.begin() as conn:
                part = dict(changes[start : start + self.chunk])
                entered += await self._place(conn, journeys, part, now)
        log.info("prediction_entries_scheduled", shop=refreshed.shop_id, entered=entered)

    async def _place(
        self,
        conn: AsyncConnection,
        journeys: list[Journey],
        previous: dict[str, dict[str, Any] | None],
        now: datetime,
    ) -> int:
        repo = SegmentRepository(conn)
        customers = await repo.customers(sorted(previous), lock=True)  # before their timers
        pending = await repo.lock_timers(sorted(previous), [j.id for j in journeys])
        rows: list[SegmentTimerRow] = []
        gone: list[tuple[str, str]] = []
        entered = 0
        for customer in customers.values():
            after = segment_facts(customer, now)
            before = segment_facts(customer.with_predictions(previous[customer.key]), now)
            for journey in journeys:
                segment = segment_of(journey)
                due = pending.get((journey.id, customer.key))
                if entered_by_change(segment, before, after, due, now):
                    entry = Entry(now, _stay_end(segment, after, now))
                    entered += 1
                else:
                    entry = next_entry(segment, after, now)
                _place(rows, gone, journey, customer, entry)
        await repo.set_timers(rows, gone, sweep_at=now)  # a timer already due stays due
        return entered


def _stay_end(segment: Condition, facts: dict[str, Any], now: datetime) -> datetime | None:
    spans = timeline(segment, facts, now)
    return spans[0].end if spans and spans[0].contains(now) else None


# --- the safety net and the daily sizes -------------------------------------------------------


@dataclass
class SegmentSweeper:
    """Per owned partition and segment journey version: recompute every customer's segment
    timer when the version is new (activation) and again every `evaluate_every`. It restores
    timers and enrols nobody. The owner of partition 0 also stores the day's segment sizes."""

    engine: AsyncEngine
    runner: Runner
    clock: Clock
    assignment: Assignment
    poll_interval_s: float
    chunk: int = SWEEP_CHUNK
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_due()
                await self.snapshot_sizes()
            except Exception as exc:  # the database is away: the next poll tries again
                metrics.ERRORS.labels(SERVICE, "segment_sweep").inc()
                log.warning("segment_sweep_failed", error=repr(exc))
            await wait_any(
                asyncio.ensure_future(self.clock.sleep(self.poll_interval_s)),
                asyncio.ensure_future(asyncio.sleep(self.poll_interval_s)),
            )

    async def sweep_due(self) -> int:
        """Sweeps every (journey version, owned partition) that is due; customers seen."""
        now = self.clock.now()
        async with self.engine.connect() as conn:
            await self.runner.catalog.refresh(conn)
            journeys = segment_journeys(self.runner.catalog)
            partitions = sorted(self.assignment.partitions)
            swept = await SegmentRepository(conn).swept(partitions) if journeys else {}
        seen = 0
        for journey in journeys:
            assert isinstance(journey.trigger, SegmentTrigger)
            every = parse_duration(journey.trigger.evaluate_every)
            for partition in partitions:
                last = swept.get((journey.id, journey.version, partition))
                if last is None or last + every <= now:
                    seen += await self.sweep(journey, partition, now)
        return seen

    async def sweep(self, journey: Journey, partition: int, now: datetime) -> int:
        after, seen = "", 0
        segment = segment_of(journey)
        while True:
            async with self.assignment.owned() as owned, self.engine.begin() as conn:
                if partition not in owned:
                    return seen
                repo = SegmentRepository(conn)
                chunk = await repo.partition_chunk(partition, after, self.chunk)
                rows: list[SegmentTimerRow] = []
                gone: list[tuple[str, str]] = []
                for customer in chunk:
                    entry = next_entry(segment, segment_facts(customer, now), now)
                    _place(rows, gone, journey, customer, entry)
                await repo.set_timers(rows, gone, sweep_at=now)
                if len(chunk) < self.chunk:
                    await repo.mark_swept(journey.id, journey.version, partition, now)
                    return seen + len(chunk)
            seen += len(chunk)
            after = chunk[-1].key

    async def snapshot_sizes(self) -> bool:
        """Today's sizes of the default segments, once a day, by one instance."""
        if SNAPSHOT_PARTITION not in self.assignment.partitions:
            return False
        now = self.clock.now()
        async with self.engine.begin() as conn:
            repo = SegmentRepository(conn)
            if await repo.size_history(None, now.date()):
                return False
            await repo.save_sizes(now.date(), await repo.sizes_by_shop(DEFAULT_SEGMENTS, now), now)
        return True


# --- the control plane's sets -----------------------------------------------------------------


@dataclass(frozen=True)
class PreviewEntry:
    customer_key: str
    email: str | None
    last_order_at: datetime | None
    holdout: bool
    first_message_at: datetime | None
    first_step: str | None


@dataclass(frozen=True)
class Preview:
    journey_id: str
    version: int
    as_of: datetime
    would_enter: int
    sample: list[PreviewEntry]


def backfill_segment(journey: Journey) -> tuple[Condition, Backfill]:
    """The segment a backfill enrols from: the trigger's, within the backfill's bound."""
    assert isinstance(journey.trigger, SegmentTrigger)
    rule = journey.trigger.backfill_rule or Backfill()
    segment = journey.trigger.segment
    return (segment if rule.if_ is None else All(all=[segment, rule.if_])), rule


class SegmentQueries:
    """Set-based reads and the backfill, in the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.repo = SegmentRepository(conn)

    def candidates(self, segment: Condition, now: datetime, shop_id: str | None) -> Candidates:
        return self.repo.candidates(segment, now, shop_id)

    async def _limit(self, journey: Journey, rule: Backfill) -> int | None:
        limits = [n for n in (rule.max, await self._cap_left(journey)) if n is not None]
        return min(limits, default=None)

    async def _cap_left(self, journey: Journey) -> int | None:
        cap = journey.limits.max_enrolments
        if cap is None:
            return None
        return max(0, cap - await self.repo.enrolled(journey.id))

    async def preview(
        self, journey: Journey, now: datetime, sample: int = PREVIEW_SAMPLE
    ) -> Preview:
        """How many a backfill would enrol now, a sample, and when each one's first message
        would go out. Nothing is written, nobody is mailed."""
        segment, rule = backfill_segment(journey)
        candidates = self.repo.candidates(segment, now)
        never = journey.limits.reentry == "never"
        limit = await self._limit(journey, rule)
        count = await self.repo.count_entrants(candidates, journey.id, never, limit)
        keys = await self.repo.sample_entrants(candidates, journey.id, never, limit, sample)
        customers = await self.repo.customers(keys)
        entries = [self._first(journey, customers[k], now) for k in keys if k in customers]
        return Preview(journey.id, journey.version, now, count, entries)

    def _first(self, journey: Journey, customer: CustomerFacts, now: datetime) -> PreviewEntry:
        first = first_message(journey, customer.key, lambda at: segment_facts(customer, at), now)
        return PreviewEntry(
            customer.key,
            customer.profile.email,
            customer.profile.last_order_at,
            first.holdout,
            first.at,
            first.step_id,
        )

    async def backfill(self, journey: Journey, now: datetime) -> int | None:
        """On activation: entry timers due now for those already in the segment, once per
        version (None when this version was backfilled before, or has no backfill)."""
        if not journey.active or not isinstance(journey.trigger, SegmentTrigger):
            return None
        if journey.trigger.backfill_rule is None:
            return None
        segment, rule = backfill_segment(journey)
        never = journey.limits.reentry == "never"
        limit = await self._limit(journey, rule)
        candidates = self.repo.candidates(segment, now)
        scheduled = await self.repo.schedule_backfill(
            candidates, journey.id, journey.version, never, limit, now
        )
        if scheduled is not None:
            log.info("segment_backfill_scheduled", journey=journey.id, customers=scheduled)
        return scheduled

    async def stored_active(self, journey_id: str) -> Journey | None:
        for journey, active in await JourneyRepository().all_versions(self.conn):
            if journey.id == journey_id and active:
                return journey
        return None

    async def test_versions(self, journey_id: str) -> dict[int, list[str]]:
        """The journey's versions that run in test mode, with their test recipients."""
        return {
            journey.version: journey.test_recipients
            for journey, _ in await JourneyRepository().all_versions(self.conn)
            if journey.id == journey_id and journey.test_mode
        }

    async def size_history(self, shop_id: str | None, days: int, today: date) -> list[Any]:
        return await self.repo.size_history(shop_id, today - timedelta(days=days))
