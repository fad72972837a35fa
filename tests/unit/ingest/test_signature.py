"""Shopify webhook signatures: base64 HMAC-SHA256 of the raw body with the shop's secret."""

from __future__ import annotations

import base64
import hashlib
import hmac

from services.ingest.domain.shops import (
    Shop,
    ShopDirectory,
    shopify_signature,
    shopify_signature_valid,
)

SECRET = b"hush"
BODY = b'{"id": 9007199254740993}'


def test_signature_is_what_shopify_computes() -> None:
    expected = base64.b64encode(hmac.new(SECRET, BODY, hashlib.sha256).digest()).decode()
    assert shopify_signature(BODY, SECRET) == expected
    assert shopify_signature_valid(BODY, SECRET, expected)


def test_a_changed_body_or_another_secret_is_refused() -> None:
    signature = shopify_signature(BODY, SECRET)
    assert not shopify_signature_valid(BODY + b" ", SECRET, signature)
    assert not shopify_signature_valid(BODY, b"other", signature)


def test_missing_or_garbage_signatures_are_refused() -> None:
    assert not shopify_signature_valid(BODY, SECRET, None)
    assert not shopify_signature_valid(BODY, SECRET, "")
    assert not shopify_signature_valid(BODY, SECRET, "not base64 at all ☃")
    assert not shopify_signature_valid(BODY, None, shopify_signature(BODY, SECRET))


def test_shops_are_found_by_domain_and_by_token_only() -> None:
    shop = Shop("s1", shopify_domain="S1.myshopify.com", shopify_secret=SECRET, api_token="tok")
    shops = ShopDirectory([shop, Shop("s2")])
    assert shops.by_shopify_domain("s1.myshopify.com") is shop
    assert shops.by_shopify_domain("s2.myshopify.com") is None
    assert shops.by_shopify_domain(None) is None
    assert shops.by_api_token("tok") is shop
    assert shops.by_api_token("tok2") is None
    assert shops.by_api_token("") is None
