"""The naive peer of Rebound's tracking edge: plain FastAPI routes, one send_and_wait each.

What a Python shop would write first: verify the token with the same library code
(shared/tracking.TokenSigner), await one aiokafka `send_and_wait` (acks=all) of a small JSON
event keyed by the customer, then answer the GIF or the 302. No machine-open check, no
CloudEvent contract. One uvicorn process (uvloop, httptools), the producer settings of
Rebound's api process.

    python -m tests.bench.naive_tracking --port 8102 --bootstrap 127.0.0.1:9092 --topic t
"""

from __future__ import annotations

import time

import orjson
from fastapi import FastAPI, Response

from services.ingest.tracking import NO_CACHE, PIXEL_GIF
from shared.tracking import InvalidToken, TokenSigner
from tests.bench.naive_edge import NaiveEdge, serve
from tests.bench.tracking import BENCH_KEY


def make_app(bootstrap: str, topic: str) -> FastAPI:
    edge = NaiveEdge(bootstrap)
    app = edge.app
    signer = TokenSigner([BENCH_KEY])

    @app.get("/t/o/{token}")
    async def pixel(token: str) -> Response:
        try:
            claims = signer.verify(token, "open")
        except InvalidToken:
            return Response(PIXEL_GIF, media_type="image/gif", headers=NO_CACHE)
        m = claims.message
        event = {"type": "email.opened", "request_key": m.request_key, "at": time.time()}
        await edge.producer.send_and_wait(topic, orjson.dumps(event), key=m.customer_key.encode())
        return Response(PIXEL_GIF, media_type="image/gif", headers=NO_CACHE)

    @app.get("/t/c/{token}")
    async def click(token: str) -> Response:
        try:
            claims = signer.verify(token, "click")
        except InvalidToken:
            return Response(b"not found", status_code=404)
        m, link = claims.message, claims.link
        if link is None:
            return Response(b"not found", status_code=404)
        event = {"type": "email.clicked", "request_key": m.request_key, "url": link.url}
        await edge.producer.send_and_wait(topic, orjson.dumps(event), key=m.customer_key.encode())
        return Response(status_code=302, headers={"location": link.url})

    return app


if __name__ == "__main__":
    serve(make_app, __doc__)
