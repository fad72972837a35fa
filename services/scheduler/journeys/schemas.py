"""What the journeys API answers (OpenAPI documents these)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class JourneySummary(BaseModel):
    id: str
    version: int
    name: str
    active: bool
    trigger: dict[str, Any] = Field(description="the trigger as written in the definition")
    steps: list[str] = Field(description="the step ids, in order")


class StoredVersion(BaseModel):
    id: str
    version: int
    active: bool
    backfill_scheduled: int | None = Field(
        None,
        description="customers already in the segment whose entry was scheduled now (a "
        "segment journey with `backfill`, on its first activation); absent otherwise",
    )
