"""Control plane: journeys (list, read, upload a new version) and a customer's enrolments."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError

from services.scheduler.domain.journey import Journey
from services.scheduler.journeys.schemas import JourneySummary, StoredVersion
from services.scheduler.journeys.service import JourneyService, VersionConflict


def journeys_router(service: JourneyService) -> APIRouter:
    router = APIRouter(tags=["journeys"])

    @router.get("/journeys", summary="Every journey version, newest first")
    async def list_journeys() -> list[JourneySummary]:
        return await service.summaries()

    @router.get("/journeys/{journey_id}", summary="The active definition of one journey")
    async def get_journey(journey_id: str) -> dict[str, Any]:
        journey = await service.active(journey_id)
        if journey is None:
            raise HTTPException(404, f"no active journey {journey_id!r}")
        return journey.model_dump(mode="json", by_alias=True, exclude_none=True)

    @router.put(
        "/journeys/{journey_id}",
        status_code=201,
        summary="Store a new version (YAML or JSON body); it becomes the active one",
        response_model_exclude_none=True,
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
    async def put_journey(journey_id: str, request: Request) -> StoredVersion:
        try:
            journey = Journey.model_validate(yaml.safe_load(await request.body()))
        except (yaml.YAMLError, ValidationError) as exc:
            raise HTTPException(422, f"invalid journey definition: {exc}") from exc
        if journey.id != journey_id:
            raise HTTPException(422, f"definition id {journey.id!r} is not {journey_id!r}")
        try:
            return await service.put(journey)
        except VersionConflict as exc:
            raise HTTPException(409, str(exc)) from exc

    @router.get("/customers/{customer_key}/enrollments", summary="A customer's enrolments")
    async def enrollments(customer_key: str) -> list[dict[str, Any]]:
        return await service.enrollments(customer_key)

    return router
