"""Which shop a request belongs to: by Shopify domain or WooCommerce site (webhooks), by id
(WooCommerce's per-shop path) or by API token (/events)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Shop:
    shop_id: str
    shopify_domain: str | None = None
    shopify_secret: bytes | None = None
    api_token: str | None = None
    woocommerce_url: str | None = None
    woocommerce_secret: bytes | None = None


def woocommerce_site(url: str | None) -> str | None:
    """A site address compared without case, surrounding space or trailing slashes:
    WooCommerce sends its home URL with a trailing slash, shops configure it either way."""
    site = (url or "").strip().rstrip("/").lower()
    return site or None


def _token_digest(token: str) -> bytes:
    # Looked up by digest, so the lookup's timing says nothing about the token's characters.
    return hashlib.sha256(token.encode()).digest()


class ShopDirectory:
    def __init__(self, shops: Iterable[Shop]) -> None:
        self._by_domain: dict[str, Shop] = {}
        self._by_token: dict[bytes, Shop] = {}
        self._by_site: dict[str, Shop] = {}
        self._by_id: dict[str, Shop] = {}
        for shop in shops:
            self._by_id[shop.shop_id] = shop
            site = woocommerce_site(shop.woocommerce_url)
            if site:
                self._by_site[site] = shop
            if shop.shopify_domain:
                self._by_domain[shop.shopify_domain.strip().lower()] = shop
            if shop.api_token:
                self._by_token[_token_digest(shop.api_token)] = shop

    def by_shopify_domain(self, domain: str | None) -> Shop | None:
        if not domain:
            return None
        return self._by_domain.get(domain.strip().lower())

    def by_woocommerce_site(self, url: str | None) -> Shop | None:
        site = woocommerce_site(url)
        return self._by_site.get(site) if site else None

    def by_id(self, shop_id: str) -> Shop | None:
        return self._by_id.get(shop_id)

    def by_api_token(self, token: str | None) -> Shop | None:
        if not token:
            return None
        return self._by_token.get(_token_digest(token))


def shopify_signature(body: bytes, secret: bytes) -> str:
    """What Shopify sends in X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(raw body, secret))."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def shopify_signature_valid(body: bytes, secret: bytes | None, signature: str | None) -> bool:
    if not secret or not signature:
        return False
    expected = shopify_signature(body, secret).encode()
    return hmac.compare_digest(expected, signature.strip().encode())


def woocommerce_signature_valid(body: bytes, secret: bytes | None, signature: str | None) -> bool:
    """X-WC-Webhook-Signature is computed exactly as Shopify's: base64(HMAC-SHA256(raw body,
    the webhook's secret)), compared in constant time."""
    return shopify_signature_valid(body, secret, signature)
