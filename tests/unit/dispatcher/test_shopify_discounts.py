"""The DiscountCodeBasicInput the Shopify connector sends for the terms a journey can set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.dispatcher.adapters.shopify_discounts import ShopifyDiscounts, discount_input
from services.dispatcher.domain.offers import Coupon, discount_terms

ISSUED = datetime(2022, 1, 1, tzinfo=UTC)
COUPON = Coupon("rk-1", "shop-1", "K7M2PQ9RT3XZ", "generated", ISSUED + timedelta(days=7), ISSUED)


def test_an_amount_off_some_collections_for_a_guest() -> None:
    offer = {
        "kind": "discount_code",
        "value": "15",
        "valid_for": "7d",
        "applies_to": {"collections": ["4411", "gid://shopify/Collection/9"], "label": "Shoes"},
    }
    terms = discount_terms(offer, "EUR")
    assert terms is not None
    basic = discount_input(COUPON, terms, "shop-1:e:ada@example.com", "Rebound cart/discount")
    assert basic["customerGets"] == {
        "value": {"discountAmount": {"amount": "15", "appliesOnEachItem": False}},
        "items": {
            "collections": {"add": ["gid://shopify/Collection/4411", "gid://shopify/Collection/9"]}
        },
    }
    assert basic["context"] == {"all": "ALL"}  # a guest: Shopify knows no customer to limit to
    assert "minimumRequirement" not in basic
    assert (basic["code"], basic["usageLimit"]) == ("K7M2PQ9RT3XZ", 1)


def _answering(status: int, body: object) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json=body))


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


THROTTLED: dict[str, object] = {
    "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
}
NO_NODE: dict[str, object] = {
    "data": {"discountCodeBasicCreate": {"codeDiscountNode": None, "userErrors": []}}
}


@pytest.mark.parametrize(
    ("transport", "reason"),
    [
        (
            _answering(401, {"errors": "Invalid API key"}),
            "refused to create the discount code: HTTP 401",
        ),
        (
            _answering(200, THROTTLED),
            "refused to create the discount code: [{'message': 'Throttled'",
        ),
        (_answering(200, NO_NODE), "did not confirm the discount code"),
        (httpx.MockTransport(_unreachable), "could not be reached to create the discount code"),
    ],
    ids=["http-error", "graphql-errors", "no-node", "unreachable"],
)
async def test_every_failure_of_shopify_is_a_reason_the_message_fails(
    transport: httpx.MockTransport, reason: str
) -> None:
    async with httpx.AsyncClient(transport=transport) as client:
        shopify = ShopifyDiscounts("https://demo.myshopify.com", "shpat_x", client)
        answer = await shopify.create({"code": "K7M2PQ9RT3XZ"})
    assert answer is not None and reason in answer
