"""Post a signed Shopify checkout (the real fixture, timestamped now) to the running `make run`.

The demo shopper accepts marketing mail, so the reminder is allowed; watch .local/mail/.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "shopify-2024-10"
URL = "http://127.0.0.1:8001/webhooks/shopify"
SECRET = b"dev-shopify-secret"
SHOP = "shop.myshopify.com"


def post(topic: str, body: dict[str, object]) -> None:
    raw = json.dumps(body).encode()
    signature = base64.b64encode(hmac.new(SECRET, raw, hashlib.sha256).digest()).decode()
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    response = httpx.post(URL, content=raw, headers=headers, timeout=10)
    print(f"{topic}: {response.status_code} {response.text}")
    response.raise_for_status()


def main() -> None:
    checkout = json.loads((FIXTURES / "checkouts.create.json").read_text())["body"]
    now = datetime.now(UTC).isoformat()
    checkout["updated_at"] = checkout["created_at"] = now
    # The fixture's shopper declined marketing mail; the demo shopper accepts it.
    checkout["buyer_accepts_marketing"] = True
    checkout["customer"]["email_marketing_consent"]["state"] = "subscribed"
    post("checkouts/create", checkout)
    print(
        f"Checkout posted for {checkout['email']}; the reminders land in "
        f"{ROOT / '.local' / 'mail'} (3 h and 48 h later, or 10 s and 20 s with "
        "`DEMO_JOURNEYS=1 make run`)."
    )


if __name__ == "__main__":
    main()
