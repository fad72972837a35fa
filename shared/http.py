"""Operational endpoints every service serves: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse

from shared import metrics

ReadinessCheck = Callable[[], Awaitable[bool]]


def ops_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Database and broker connections work")
    async def readyz() -> JSONResponse:
        results = await asyncio.gather(*(check() for check in checks.values()))
        status = {name: ok for name, ok in zip(checks, results, strict=True)}
        code = 200 if all(results) else 503
        return JSONResponse({"ready": code == 200, "checks": status}, status_code=code)

    @router.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return router


async def serve(app: FastAPI, host: str, port: int,
                background: list[Coroutine[Any, Any, None]]) -> None:
    """Run the HTTP server and the service's loops until a signal stops the server."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            loop="uvloop", http="httptools", lifespan="on")
    server = uvicorn.Server(config)
    tasks = [asyncio.create_task(job) for job in background]
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
