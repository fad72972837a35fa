"""The DiscountCodeBasicInput the Shopify connector sends for the terms a journey can set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.dispatcher.adapters.shopify_discounts import discount_input
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
