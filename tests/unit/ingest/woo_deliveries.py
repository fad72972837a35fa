"""WooCommerce deliveries from tests/fixtures/woocommerce/, re-serialised and signed, and the
test shop (the Shopify test shop, also on WooCommerce)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from services.ingest.domain.shops import shopify_signature
from tests.conftest import ROOT
from tests.unit.ingest.deliveries import SHOP

WOO_FIXTURES = ROOT / "tests" / "fixtures" / "woocommerce"
WOO_SITE = "https://shop.example/"
WOO_SECRET = "test-woocommerce-secret"
WOO_SHOP = SHOP.model_copy(
    update={"woocommerce_url": "https://shop.example", "woocommerce_secret": SecretStr(WOO_SECRET)}
)
PING_BODY = (WOO_FIXTURES / "ping.txt").read_bytes()
PING_HEADERS = {
    "user-agent": "WooCommerce/9.3.3 Hookshot (WordPress/6.6.2)",
    "content-type": "application/x-www-form-urlencoded",
}


@dataclass(frozen=True)
class WooDelivery:
    topic: str
    headers: dict[str, str]
    body: bytes


def woo_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((WOO_FIXTURES / f"{name}.json").read_text())["body"]
    return body


def woo_delivery(
    name: str,
    *,
    body: dict[str, Any] | bytes | None = None,
    secret: str = WOO_SECRET,
    delivery_id: str | None = None,
    topic: str | None = None,
) -> WooDelivery:
    """The fixture `name` (e.g. 'order.created') as WooCommerce would send it, signed."""
    captured = json.loads((WOO_FIXTURES / f"{name}.json").read_text())
    if body is None:
        body = captured["body"]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = dict(captured["headers"])
    # WooCommerce signs the body bytes it sends exactly as Shopify does.
    headers["x-wc-webhook-signature"] = shopify_signature(raw, secret.encode())
    if delivery_id is not None:
        headers["x-wc-webhook-delivery-id"] = delivery_id
    if topic is not None:
        headers["x-wc-webhook-topic"] = topic
    return WooDelivery(topic=headers["x-wc-webhook-topic"], headers=headers, body=raw)
