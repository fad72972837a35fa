"""Operational endpoints every service serves: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

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


class Service(Protocol):
    """What every service's app.py builds: an HTTP app plus background loops."""

    app: FastAPI

    async def start(self) -> None:
        """Start background loops; returns at once, infrastructure may still be coming up."""
        ...

    async def stop(self) -> None: ...


class _Server(uvicorn.Server):
    """uvicorn's own signal handling raises the stop signal again once `serve()` returns, with
    the handler it found: for SIGTERM, the default one, which ends the process at once. The
    service's stop never ran (no mail finished, no consumer left its group). Here the signals
    only ask the server to exit; the process ends when `serve` below has stopped the service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(service: Service, host: str, port: int, reuse_port: bool = False) -> None:
    """Run the service and its HTTP server until SIGINT/SIGTERM, then stop cleanly: the HTTP
    server ends its requests, then the service stops, and then this returns.

    `reuse_port`: several processes listen on the same port (SO_REUSEPORT) and the kernel
    spreads the connections over them.
    """
    config = uvicorn.Config(
        service.app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        http="httptools",
        lifespan="off",
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second SIGINT: stop serving at once
        loop.add_signal_handler(sig, server.handle_exit, sig, None)
    sockets = [_shared_socket(host, port)] if reuse_port else None
    await service.start()
    try:
        await server.serve(sockets=sockets)
    finally:
        await service.stop()


def _shared_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
