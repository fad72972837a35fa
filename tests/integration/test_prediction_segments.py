"""Purchase predictions as facts of journeys and segments, on the real scheduler: the CDNOW
calibration period imported and fitted; a journey triggered by `profile.p_alive lt 0.3` enrols,
after each refresh, exactly the customers whose stored P(alive) is below 0.3, and the preview,
the segment's size and the backfill count the same customers in SQL. An event-triggered
journey's condition on P(alive) sees the stored figure too."""

# ruff: noqa: F811  (the fixtures imported from test_predictions are parameters here)
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.app import SchedulerService
from services.scheduler.segments.repository import SegmentRepository
from services.scheduler.segments.service import SegmentTimers
from shared import events as ev
from shared.clock import ManualClock
from shared.events import Activity
from tests.integration.test_predictions import (  # noqa: F401  (api, clock, service: fixtures)
    AS_OF,
    SHOP,
    api,
    calibration_csv,
    clock,
    import_and_announce,
    sample_rows,
    service,
)

# The CDNOW history (23,570 customers) is imported for real: minutes on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
PARTITION = 0  # import_and_announce keeps every customer on partition 0

LAPSING = """
id: lapsing
version: 1
name: Probably lapsed
trigger:
  segment: {field: profile.p_alive, op: lt, value: 0.3}
limits: {reentry: never}
steps:
  - {id: later, wait: {for: 365d}}
  - {id: hello, send: {template: winback_reason, subject: "We miss you"}}
"""

# Event-triggered: a stage change of a customer the model thinks gone.
GONE_ON_EVENT = """
id: gone-on-event
version: 1
name: Stage changed, probably lapsed
trigger:
  event: customer.stage.changed.v1
  if: {all: [{field: profile.p_alive, op: lt, value: 0.3},
             {field: profile.expected_orders_90d, op: lt, value: 1}]}
steps:
  - {id: later, wait: {for: 365d}}
"""


async def stored_below(db: AsyncEngine, p_alive: float) -> set[str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT customer_key FROM scheduler.predictions WHERE shop_id = :s AND p_alive < :p"
            ),
            {"s": SHOP, "p": p_alive},
        )
        return {r[0] for r in rows}


async def enrolled(db: AsyncEngine, journey_id: str) -> set[str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT customer_key FROM scheduler.enrollments WHERE journey_id = :j"),
            {"j": journey_id},
        )
        return {r[0] for r in rows}


async def due_now(db: AsyncEngine, journey_id: str, clock: ManualClock) -> set[str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT customer_key FROM scheduler.segment_timers "
                "WHERE journey_id = :j AND due_at <= :now"
            ),
            {"j": journey_id, "now": clock.now()},
        )
        return {r[0] for r in rows}


async def fire_segment_timers(service: SchedulerService, clock: ManualClock) -> int:
    timers = SegmentTimers(service.engine, service.runner)
    fired = 0
    while True:
        count, _ = await timers.fire_due([PARTITION], clock.now(), 1000)
        fired += count
        if count < 1000:
            return fired


async def test_a_segment_on_p_alive_enrols_exactly_the_stored_lapsed_after_each_refresh(
    db: AsyncEngine,
    api: httpx.AsyncClient,
    service: SchedulerService,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    await import_and_announce(db, calibration_csv(tmp_path / "c.csv", sample_rows()), SHOP, AS_OF)
    put = await api.put("/journeys/lapsing", content=LAPSING)
    assert put.status_code == 201, put.text
    # No fit yet: nobody has a P(alive), so nobody is in the segment.
    assert (await api.get("/journeys/lapsing/segment")).json()["size"] == 0

    refreshed = await api.post(f"/predictions/{SHOP}/refresh")
    assert refreshed.json()["fit"]["status"] == "ok", refreshed.text
    lapsed = await stored_below(db, 0.3)
    assert 100 < len(lapsed) < 2357  # CDNOW: many one-time buyers stay P(alive) 1
    # Counted in SQL over customers joined with their predictions: the same customers.
    assert (await api.get("/journeys/lapsing/segment")).json()["size"] == len(lapsed)
    preview = (await api.get("/journeys/lapsing/preview")).json()
    assert preview["would_enter"] == len(lapsed)
    # The refresh placed an entry timer due now for each of them; the owner fires them.
    assert await due_now(db, "lapsing", clock) == lapsed
    await fire_segment_timers(service, clock)
    assert await enrolled(db, "lapsing") == lapsed
    assert (await api.get("/journeys/lapsing/preview")).json()["would_enter"] == 0

    # The same facts at the same moment: the refresh changes nobody, nobody is re-evaluated.
    assert (await api.post(f"/predictions/{SHOP}/refresh")).json()["changed"] == 0
    assert await due_now(db, "lapsing", clock) == set()

    # Two silent months: repeat buyers' P(alive) falls; those now below 0.3 enter.
    await clock.advance(timedelta(days=60))
    assert (await api.post(f"/predictions/{SHOP}/refresh")).json()["changed"] > 0
    later = await stored_below(db, 0.3)
    assert later > lapsed
    assert await due_now(db, "lapsing", clock) == later - lapsed  # those already in are not
    await fire_segment_timers(service, clock)
    assert await enrolled(db, "lapsing") == later


async def test_an_event_triggered_journey_condition_sees_the_stored_predictions(
    db: AsyncEngine,
    api: httpx.AsyncClient,
    service: SchedulerService,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    await import_and_announce(db, calibration_csv(tmp_path / "c.csv", sample_rows()), SHOP, AS_OF)
    assert (await api.post(f"/predictions/{SHOP}/refresh")).status_code == 200
    assert (await api.put("/journeys/gone-on-event", content=GONE_ON_EVENT)).status_code == 201
    lapsed = sorted(await stored_below(db, 0.3))
    async with db.connect() as conn:
        alive_key = (
            await conn.execute(
                text("SELECT customer_key FROM scheduler.predictions WHERE p_alive > 0.9 LIMIT 1")
            )
        ).scalar_one()
        customers = await SegmentRepository(conn).customers([*lapsed[:3], alive_key])
        await conn.rollback()
    batch = [
        (
            Activity(
                kind=ev.STAGE_CHANGED_KIND,
                source_event_id=f"stage-{key}",
                occurred_at=clock.now(),
                profile=customers[key].profile,
            ),
            PARTITION,
        )
        for key in [*lapsed[:3], alive_key]
    ]
    async with db.begin() as conn:  # one batch: its predictions read in one statement
        await service.runner.apply_activities(conn, batch, clock.now())
    assert await enrolled(db, "gone-on-event") == set(lapsed[:3])
