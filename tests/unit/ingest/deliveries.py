"""Shopify deliveries from the captured fixtures, re-serialised and signed with the test secret."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.ingest.domain.shops import shopify_signature
from services.ingest.settings import ShopConfig
from tests.conftest import FIXTURES

SHOP_ID = "shop-1"
DOMAIN = "shop.myshopify.com"
SECRET = "test-shopify-secret"
API_TOKEN = "test-api-token"
SHOP = ShopConfig(
    shop_id=SHOP_ID, shopify_domain=DOMAIN, shopify_secret=SECRET, api_token=API_TOKEN
)

# What the checkout fixture's customer id is as serialised (the capture already rounded it).
CHECKOUT_CUSTOMER_ID = "603851970716743400"
CART_TOKEN = "eeafa272cebfd4b22385bc4b645e762c"


@dataclass(frozen=True)
class Delivery:
    topic: str
    headers: dict[str, str]
    body: bytes


def fixture_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())["body"]
    return body


def delivery(
    name: str,
    *,
    body: dict[str, Any] | bytes | None = None,
    secret: str = SECRET,
    webhook_id: str | None = None,
    topic: str | None = None,
) -> Delivery:
    """The fixture `name` (e.g. 'checkouts.create') as Shopify would send it, signed."""
    captured = json.loads((FIXTURES / f"{name}.json").read_text())
    if body is None:
        body = captured["body"]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {k: v for k, v in captured["headers"].items() if k.startswith("x-shopify-")}
    headers["content-type"] = "application/json"
    headers["x-shopify-hmac-sha256"] = shopify_signature(raw, secret.encode())
    if webhook_id is not None:
        headers["x-shopify-webhook-id"] = webhook_id
    if topic is not None:
        headers["x-shopify-topic"] = topic
    return Delivery(topic=headers["x-shopify-topic"], headers=headers, body=raw)


def order_for_checkout_customer(name: str = "orders.create") -> dict[str, Any]:
    """The order fixture, placed by the checkout fixture's customer from that checkout's cart."""
    body = fixture_body(name)
    checkout = fixture_body("checkouts.create")
    body["customer"] = checkout["customer"]
    body["email"] = checkout["customer"]["email"]
    body["cart_token"] = CART_TOKEN
    return body
