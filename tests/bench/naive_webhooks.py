"""The naive peer of Rebound's webhook edge: a plain FastAPI endpoint, one send per request.

What a Python shop would write first: check the Shopify HMAC of the body, then await one
aiokafka `send_and_wait` (acks=all) of the body as it came, keyed by the shop, and answer 200.
No mapping to a canonical event, no event id: it does less than Rebound per request. One
uvicorn process (uvloop, httptools) and the producer settings of Rebound's api process.

    python -m tests.bench.naive_webhooks --port 8101 --bootstrap 127.0.0.1:9092 --topic t
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response

from tests.bench.webhooks import SHOP_SECRET


def make_app(bootstrap: str, topic: str) -> FastAPI:
    producer: AIOKafkaProducer

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal producer
        # The producer settings of Rebound's (shared/kafka.make_producer), so that only the
        # request handling differs.
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=0,
            max_batch_size=256 * 1024,
        )
        await producer.start()
        yield
        await producer.stop()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/webhooks/shopify")
    async def webhook(request: Request) -> Response:
        body = await request.body()
        digest = hmac.new(SHOP_SECRET.encode(), body, hashlib.sha256).digest()
        signature = request.headers.get("x-shopify-hmac-sha256", "")
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            return Response(status_code=401)
        domain = request.headers.get("x-shopify-shop-domain", "")
        await producer.send_and_wait(topic, body, key=domain.encode())
        return Response(b'{"status":"accepted"}', media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.bootstrap, args.topic),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
