"""Control plane: journeys (list, read, upload a new version) and a customer's enrolments."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.repository import EnrollmentRepository, JourneyRepository
from services.scheduler.domain.journey import Journey
from services.scheduler.segments.service import SegmentQueries
from shared.clock import Clock


def control_router(engine: AsyncEngine, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["control plane"])
    repo = JourneyRepository()

    @router.get("/journeys", summary="Every journey version, newest first")
    async def list_journeys() -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            stored = await repo.all_versions(conn)
        stored.sort(key=lambda item: (item[0].id, -item[0].version))
        return [
            {
                "id": j.id,
                "version": j.version,
                "name": j.name,
                "active": active,
                "trigger": j.trigger.model_dump(by_alias=True, exclude_none=True),
                "steps": [s.id for s in j.steps],
            }
            for j, active in stored
        ]

    @router.get("/journeys/{journey_id}", summary="The active definition of one journey")
    async def get_journey(journey_id: str) -> dict[str, Any]:
        async with engine.connect() as conn:
            stored = await repo.all_versions(conn)
        for journey, active in sorted(stored, key=lambda item: -item[0].version):
            if journey.id == journey_id and active:
                return journey.model_dump(mode="json", by_alias=True, exclude_none=True)
        raise HTTPException(404, f"no active journey {journey_id!r}")

    @router.put(
        "/journeys/{journey_id}",
        status_code=201,
        summary="Store a new version (YAML or JSON body); it becomes the active one",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/yaml": {"schema": {"type": "string"}},
                    "application/json": {"schema": Journey.model_json_schema(by_alias=True)},
                },
                "required": True,
            }
        },
    )
    async def put_journey(journey_id: str, request: Request) -> dict[str, Any]:
        try:
            journey = Journey.model_validate(yaml.safe_load(await request.body()))
        except (yaml.YAMLError, ValidationError) as exc:
            raise HTTPException(422, f"invalid journey definition: {exc}") from exc
        if journey.id != journey_id:
            raise HTTPException(422, f"definition id {journey.id!r} is not {journey_id!r}")
        async with engine.begin() as conn:
            existing = await repo.stored(conn, journey.id, journey.version)
            if existing is not None and existing != journey:
                raise HTTPException(
                    409,
                    f"version {journey.version} exists with another "
                    "definition; versions are immutable, bump it",
                )
            await repo.add(conn, journey, clock.now())
            backfilled = await SegmentQueries(conn).backfill(journey, clock.now())
        answer: dict[str, Any] = {"id": journey.id, "version": journey.version}
        answer["active"] = journey.active
        if backfilled is not None:  # those already in the segment, enrolled by the timer pass
            answer["backfill_scheduled"] = backfilled
        return answer

    @router.get("/customers/{customer_key}/enrollments", summary="A customer's enrolments")
    async def enrollments(customer_key: str) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return await EnrollmentRepository().for_customer(conn, customer_key)

    return router
