"""What the naive edge peers (naive_webhooks, naive_tracking) share: a plain FastAPI app with
/healthz and one aiokafka producer with the producer settings of Rebound's api process
(shared/kafka.make_producer), so that only the request handling differs, served by one
uvicorn process (uvloop, httptools) from the command line."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI


class NaiveEdge:
    """The app and its producer (started with the app); a peer adds its own routes."""

    producer: AIOKafkaProducer

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self.app = FastAPI(lifespan=self._lifespan)

        @self.app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=0,
            max_batch_size=256 * 1024,
        )
        await self.producer.start()
        yield
        await self.producer.stop()


def serve(make_app: Callable[[str, str], FastAPI], description: str | None) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    serve_app(make_app(args.bootstrap, args.topic), args.port)


def serve_app(app: FastAPI, port: int) -> None:
    """One uvicorn process as a shop would run it: uvloop, httptools, no access log."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
