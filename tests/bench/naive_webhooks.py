"""The naive peer of Rebound's webhook edge: a plain FastAPI endpoint, one send per request.

What a Python shop would write first: check the Shopify HMAC of the body, then await one
aiokafka `send_and_wait` (acks=all) of the body as it came, keyed by the shop, and answer 200.
No mapping to a canonical event, no event id: it does less than Rebound per request. One
uvicorn process (uvloop, httptools) and the producer settings of Rebound's api process.

    python -m tests.bench.naive_webhooks --port 8101 --bootstrap 127.0.0.1:9092 --topic t
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from fastapi import FastAPI, Request, Response

from tests.bench.naive_edge import NaiveEdge, serve
from tests.bench.webhooks import SHOP_SECRET


def make_app(bootstrap: str, topic: str) -> FastAPI:
    edge = NaiveEdge(bootstrap)
    app = edge.app

    @app.post("/webhooks/shopify")
    async def webhook(request: Request) -> Response:
        body = await request.body()
        digest = hmac.new(SHOP_SECRET.encode(), body, hashlib.sha256).digest()
        signature = request.headers.get("x-shopify-hmac-sha256", "")
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            return Response(status_code=401)
        domain = request.headers.get("x-shopify-shop-domain", "")
        await edge.producer.send_and_wait(topic, body, key=domain.encode())
        return Response(b'{"status":"accepted"}', media_type="application/json")

    return app


if __name__ == "__main__":
    serve(make_app, __doc__)
