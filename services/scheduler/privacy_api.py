"""Control plane: ask for a customer's (or a shop's) erasure or export, and follow it.

For shops not on Shopify (whose privacy webhooks ingest turns into the same requests). A
request goes to privacy.requests through the outbox; every service answers on privacy.results;
a request is complete when all three did (docs/privacy.md).
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.privacy_repository import PrivacyRequests, RequestRecord
from services.scheduler.adapters.repository import BatchRepository, OutboxMessage
from services.scheduler.domain.privacy import export_document, is_complete, missing
from services.scheduler.loops import OutboxPublisher
from services.scheduler.privacy import request_hashes, request_kind
from services.scheduler.runner import Published
from shared import events as ev
from shared.clock import Clock
from shared.events import PrivacyRequest

SOURCE = "rebound/scheduler/control-plane"
_KEY = re.compile(r"^(?P<shop>[^:]+):(?:c|e):.+$")
_EMAIL = sa.text("SELECT lower(profile->>'email') FROM scheduler.customers WHERE customer_key = :k")


def privacy_router(
    engine: AsyncEngine,
    outbox: OutboxPublisher | None,
    requests_topic: str,
    clock: Clock,
    export_retention: timedelta,
) -> APIRouter:
    router = APIRouter(prefix="/privacy", tags=["privacy"])

    async def submit(event_type: str, request: PrivacyRequest) -> dict[str, Any]:
        event = ev.make_event(
            type=event_type,
            source=SOURCE,
            id=request.request_id,
            time=request.requested_at,
            subject=None,
            shop_id=request.shop_id,
            data=request,
        )
        message = OutboxMessage(requests_topic, request.shop_id, ev.encode(event))
        async with engine.begin() as conn:
            ids = await BatchRepository(conn).add_outbox([message], clock.now())
            requests = PrivacyRequests(conn, export_retention)
            await requests.record_request(
                request_kind(event_type), request, request_hashes(request)
            )
        if outbox is not None:  # else the engine's outbox relay sends it
            await outbox.publish(Published(ids, [message]))
        return {
            "request_id": request.request_id,
            "status": f"/privacy/requests/{request.request_id}",
        }

    async def customer_request(key: str) -> PrivacyRequest:
        match = _KEY.match(key)
        if match is None:
            raise HTTPException(
                422, f"{key!r} is not a customer key (<shop>:c:<id> or <shop>:e:<email>)"
            )
        async with engine.connect() as conn:
            email = await conn.scalar(_EMAIL, {"k": key})
        return PrivacyRequest(
            request_id=str(uuid.uuid4()),
            shop_id=match["shop"],
            scope="customer",
            customer_keys=[key],
            emails=[email] if email else [],
            origin="control_plane",
            requested_at=clock.now(),
        )

    @router.post(
        "/customers/{customer_key}/redact",
        status_code=202,
        summary="Erase a customer's personal data in every service",
    )
    async def redact_customer(customer_key: str) -> dict[str, Any]:
        return await submit(ev.CUSTOMER_REDACT_REQUESTED, await customer_request(customer_key))

    @router.post(
        "/customers/{customer_key}/export",
        status_code=202,
        summary="Collect a customer's data from every service as one JSON document",
    )
    async def export_customer(customer_key: str) -> dict[str, Any]:
        return await submit(ev.CUSTOMER_EXPORT_REQUESTED, await customer_request(customer_key))

    @router.post("/shops/{shop_id}/redact", status_code=202, summary="Erase everything of one shop")
    async def redact_shop(shop_id: str) -> dict[str, Any]:
        request = PrivacyRequest(
            request_id=str(uuid.uuid4()),
            shop_id=shop_id,
            scope="shop",
            origin="control_plane",
            requested_at=clock.now(),
        )
        return await submit(ev.SHOP_REDACT_REQUESTED, request)

    @router.get("/requests", summary="Privacy requests, newest first (500 at most)")
    async def list_requests(
        shop_id: str | None = None,
        platform_request_id: str | None = Query(
            default=None, description="Shopify's data_request.id"
        ),
        kind: Literal["redact", "export"] | None = None,
    ) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            found = await PrivacyRequests(conn, export_retention).find(
                shop_id=shop_id, platform_request_id=platform_request_id, kind=kind
            )
        return [_view(record) for record in found]

    @router.get("/requests/{request_id}", summary="One request and which services answered")
    async def get_request(request_id: str) -> dict[str, Any]:
        return _view(await _one(engine, export_retention, request_id))

    @router.get(
        "/exports/{request_id}",
        summary="The export as one JSON document (202 while services are still answering)",
        responses={202: {"description": "not every service answered yet"}, 410: {}},
    )
    async def get_export(request_id: str) -> Any:
        record = await _one(engine, export_retention, request_id)
        if record.kind != "export":
            raise HTTPException(404, f"request {request_id} is not an export")
        if record.erased_at is not None:
            raise HTTPException(410, "the customer was erased since; the export is gone")
        if not is_complete(record.answered):
            return JSONResponse(_view(record), status_code=202)
        async with engine.connect() as conn:
            parts = await PrivacyRequests(conn, export_retention).export_parts(request_id)
        return export_document(
            record.request_id,
            record.shop_id,
            record.requested_at,
            record.platform_request_id,
            parts,
        )

    return router


async def _one(engine: AsyncEngine, retention: timedelta, request_id: str) -> RequestRecord:
    async with engine.connect() as conn:
        found = await PrivacyRequests(conn, retention).find(request_id=request_id)
    if not found:
        raise HTTPException(404, f"no privacy request {request_id}")
    return found[0]


def _view(record: RequestRecord) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "kind": record.kind,
        "scope": record.scope,
        "shop_id": record.shop_id,
        "origin": record.origin,
        "platform_request_id": record.platform_request_id,
        "requested_at": record.requested_at.isoformat(),
        "answered": record.answered,
        "waiting_for": missing(record.answered),
        "complete": is_complete(record.answered),
        "erased": record.erased,
        "export_erased_at": record.erased_at.isoformat() if record.erased_at else None,
    }
