"""Control plane: segment sizes and members (the default segments and any journey's trigger),
the daily sizes over time, a backfill's dry-run preview, and a test-mode journey's sends."""

from __future__ import annotations

from typing import Annotated

import yaml
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.domain.conditions import Condition
from services.scheduler.domain.journey import Journey, SegmentTrigger
from services.scheduler.domain.segment_defaults import DEFAULT_SEGMENTS
from services.scheduler.segments.schemas import (
    BackfillPreview,
    Member,
    MembersPage,
    PreviewMember,
    SegmentSize,
    SizeOnDay,
    TestSend,
)
from services.scheduler.segments.service import SegmentQueries
from shared.clock import Clock

MAX_PAGE = 1000
Shop = Annotated[str | None, Query(description="only this shop's customers")]


def segments_router(engine: AsyncEngine, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["segments"])

    async def count(name: str, segment: Condition, shop_id: str | None) -> SegmentSize:
        now = clock.now()
        async with engine.begin() as conn:
            queries = SegmentQueries(conn)
            size = await queries.repo.count(queries.candidates(segment, now, shop_id))
        return SegmentSize(segment=name, size=size, as_of=now)

    async def page(
        name: str, segment: Condition, shop_id: str | None, after: str, limit: int
    ) -> MembersPage:
        async with engine.begin() as conn:
            queries = SegmentQueries(conn)
            found = await queries.repo.members(
                queries.candidates(segment, clock.now(), shop_id), after, limit
            )
        members = [
            Member(
                customer_key=c.key,
                shop_id=c.profile.shop_id,
                email=c.profile.email,
                orders_count=c.profile.orders_count,
                last_order_at=c.profile.last_order_at,
                stage=c.profile.stage,
            )
            for c in found
        ]
        more = found[-1].key if len(found) == limit else None
        return MembersPage(segment=name, members=members, next_after=more)

    def default(name: str) -> Condition:
        if name not in DEFAULT_SEGMENTS:
            raise HTTPException(404, f"no segment {name!r}; known: {', '.join(DEFAULT_SEGMENTS)}")
        return DEFAULT_SEGMENTS[name]

    async def trigger_of(journey_id: str) -> Condition:
        async with engine.connect() as conn:
            journey = await SegmentQueries(conn).stored_active(journey_id)
        if journey is None:
            raise HTTPException(404, f"no active journey {journey_id!r}")
        if not isinstance(journey.trigger, SegmentTrigger):
            raise HTTPException(422, f"journey {journey_id!r} is triggered by an event")
        return journey.trigger.segment

    @router.get("/segments", summary="The default segments, each with its size now")
    async def sizes(shop_id: Shop = None) -> list[SegmentSize]:
        return [await count(n, s, shop_id) for n, s in DEFAULT_SEGMENTS.items()]

    @router.get("/segments/history", summary="The default segments' daily sizes over time")
    async def history(
        shop_id: Shop = None, days: Annotated[int, Query(ge=1, le=3660)] = 90
    ) -> list[SizeOnDay]:
        async with engine.connect() as conn:
            rows = await SegmentQueries(conn).size_history(shop_id, days, clock.now().date())
        return [SizeOnDay(day=d, shop_id=s, segment=n, size=z) for d, s, n, z in rows]

    @router.get("/segments/{name}", summary="One default segment's size now")
    async def size(name: str, shop_id: Shop = None) -> SegmentSize:
        return await count(name, default(name), shop_id)

    @router.get("/segments/{name}/members", summary="A page of a default segment's members")
    async def members(
        name: str,
        shop_id: Shop = None,
        after: str = "",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> MembersPage:
        return await page(name, default(name), shop_id, after, limit)

    @router.get("/journeys/{journey_id}/segment", summary="A journey's trigger segment: size now")
    async def journey_size(journey_id: str, shop_id: Shop = None) -> SegmentSize:
        return await count(journey_id, await trigger_of(journey_id), shop_id)

    @router.get("/journeys/{journey_id}/segment/members", summary="A page of its members")
    async def journey_members(
        journey_id: str,
        shop_id: Shop = None,
        after: str = "",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> MembersPage:
        return await page(journey_id, await trigger_of(journey_id), shop_id, after, limit)

    @router.post(
        "/journeys/{journey_id}/preview",
        summary="Dry run of a definition's backfill (YAML or JSON body): nothing is stored or sent",
    )
    async def preview_definition(journey_id: str, request: Request) -> BackfillPreview:
        journey = _definition(await request.body(), journey_id)
        return await _preview(engine, clock, journey)

    @router.get(
        "/journeys/{journey_id}/preview", summary="Dry run of the active version's backfill"
    )
    async def preview_stored(journey_id: str) -> BackfillPreview:
        async with engine.connect() as conn:
            journey = await SegmentQueries(conn).stored_active(journey_id)
        if journey is None:
            raise HTTPException(404, f"no active journey {journey_id!r}")
        return await _preview(engine, clock, journey)

    @router.get(
        "/journeys/{journey_id}/test-sends",
        summary="Whom a test-mode journey would have reached, and when",
    )
    async def test_sends(
        journey_id: str, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
    ) -> list[TestSend]:
        async with engine.begin() as conn:
            queries = SegmentQueries(conn)
            versions = await queries.test_versions(journey_id)
            rows = await queries.repo.test_sends(journey_id, limit)
        return [
            TestSend(
                request_key=r["request_key"],
                journey_version=r["journey_version"],
                step_id=r["step_id"],
                variant=r["variant"],
                customer_key=r["customer_key"],
                would_have_reached=r["email"],
                sent_to=versions[r["journey_version"]],
                requested_at=r["requested_at"],
            )
            for r in rows
            if r["journey_version"] in versions
        ]

    return router


def _definition(body: bytes, journey_id: str) -> Journey:
    try:
        journey = Journey.model_validate(yaml.safe_load(body))
    except (yaml.YAMLError, ValidationError) as exc:
        raise HTTPException(422, f"invalid journey definition: {exc}") from exc
    if journey.id != journey_id:
        raise HTTPException(422, f"definition id {journey.id!r} is not {journey_id!r}")
    if not isinstance(journey.trigger, SegmentTrigger):
        raise HTTPException(422, f"journey {journey_id!r} is triggered by an event: no backfill")
    return journey


async def _preview(engine: AsyncEngine, clock: Clock, journey: Journey) -> BackfillPreview:
    if not isinstance(journey.trigger, SegmentTrigger):
        raise HTTPException(422, f"journey {journey.id!r} is triggered by an event: no backfill")
    async with engine.begin() as conn:
        found = await SegmentQueries(conn).preview(journey, clock.now())
        await conn.rollback()  # a dry run: nothing it touched stays
    return BackfillPreview(
        journey_id=found.journey_id,
        version=found.version,
        as_of=found.as_of,
        would_enter=found.would_enter,
        sample=[PreviewMember(**vars(e)) for e in found.sample],
    )
