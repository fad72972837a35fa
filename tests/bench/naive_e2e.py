"""The naive peer of the end-to-end bench: a webhook endpoint that mails at once.

What a Python shop writes first: a plain FastAPI endpoint that checks the Shopify HMAC of
the body, reads the checkout, renders the cart reminder with the same templates (the
dispatcher's renderer) and sends it with smtplib on a new connection, then answers 200.
The send runs in FastAPI's thread pool (`run_in_threadpool`, 40 threads) so that one slow
SMTP exchange does not stop the event loop; a send that fails is a 500 (Shopify retries).
Nothing is stored: no dedupe of redelivered webhooks, no consent, no journey.

    python -m tests.bench.naive_e2e --port 8101 --smtp-port 2525
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from services.dispatcher.adapters.templates import TemplateRenderer
from shared.events import MessageRequest
from tests.bench.e2e import SHOP_SECRET
from tests.bench.mail import reminder_request, send_naively
from tests.bench.naive_edge import serve_app


def reminder(checkout: dict[str, Any]) -> MessageRequest:
    """The cart reminder for a Shopify checkout, as the templates take it."""
    customer = checkout.get("customer") or {}
    lines = [
        {k: line.get(k) for k in ("title", "variant_title", "quantity", "price")}
        for line in checkout["line_items"]
    ]
    cart = {
        "cart_id": str(checkout["token"]),
        "lines": lines,
        "currency": checkout["currency"],
        "total_price": checkout["total_price"],
        "recovery_url": checkout["abandoned_checkout_url"],
        "updated_at": checkout["updated_at"],
    }
    recipient = {
        "email": checkout["email"],
        "first_name": customer.get("first_name"),
        "last_name": customer.get("last_name"),
    }
    key = f"checkout-{checkout['token']}"
    return reminder_request(
        key, f"bench:c:{customer.get('id')}", recipient, cart, datetime.now(UTC)
    )


def make_app(smtp_port: int) -> FastAPI:
    app = FastAPI()
    renderer = TemplateRenderer()

    @app.post("/webhooks/shopify")
    async def webhook(request: Request) -> Response:
        body = await request.body()
        digest = hmac.new(SHOP_SECRET, body, hashlib.sha256).digest()
        signature = request.headers.get("x-shopify-hmac-sha256", "")
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            return Response(status_code=401)
        message = reminder(orjson.loads(body))
        await run_in_threadpool(send_naively, renderer, message, smtp_port)
        return Response(b'{"status":"sent"}', media_type="application/json")

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    args = parser.parse_args()
    serve_app(make_app(args.smtp_port), args.port)
