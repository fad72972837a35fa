"""Shopify's mandatory privacy webhooks -> Rebound's data subject requests (privacy.requests).

customers/data_request asks for an export, customers/redact and shop/redact for erasure
(docs/privacy.md). The bodies name the shop by its Shopify id and domain, the customer by id,
e-mail address and phone, and the orders concerned; Rebound keeps no phone numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from services.ingest.domain.canonical import describe
from services.ingest.domain.shopify import MappingError, ShopifyId
from shared import events as ev
from shared.events import PrivacyRequest

TOPICS: dict[str, str] = {
    "customers/data_request": ev.CUSTOMER_EXPORT_REQUESTED,
    "customers/redact": ev.CUSTOMER_REDACT_REQUESTED,
    "shop/redact": ev.SHOP_REDACT_REQUESTED,
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class _Customer(_Body):
    id: ShopifyId | None = None
    email: str | None = None


class _DataRequest(_Body):
    id: ShopifyId


class _PrivacyBody(_Body):
    shop_domain: str | None = None
    customer: _Customer | None = None
    orders_requested: list[ShopifyId] = []
    orders_to_redact: list[ShopifyId] = []
    data_request: _DataRequest | None = None


def handles(topic: str | None) -> bool:
    return topic in TOPICS


def to_request(
    topic: str, body: Any, *, shop_id: str, shop_domain: str, request_id: str, now: datetime
) -> tuple[str, PrivacyRequest]:
    """(event type, request) for a privacy topic; MappingError says what is wrong."""
    event_type = TOPICS[topic]
    if not isinstance(body, dict):
        raise MappingError(f"{topic}: body must be a JSON object")
    try:
        parsed = _PrivacyBody.model_validate(body)
    except ValidationError as exc:
        raise MappingError(f"{topic}: {describe(exc)}") from exc
    if parsed.shop_domain is not None and parsed.shop_domain.lower() != shop_domain.lower():
        raise MappingError(f"{topic}: shop_domain {parsed.shop_domain!r} is not this shop")
    if topic == "shop/redact":
        return event_type, _request(shop_id, request_id, "shop", now)
    customer = parsed.customer or _Customer()
    if not (customer.id or customer.email):
        raise MappingError(f"{topic}: customer has neither id nor email")
    return event_type, _request(
        shop_id,
        request_id,
        "customer",
        now,
        customer_keys=[ev.customer_key(shop_id, customer.id, None)] if customer.id else [],
        emails=[customer.email.strip().lower()] if customer.email else [],
        order_ids=parsed.orders_requested + parsed.orders_to_redact,
        platform_request_id=parsed.data_request.id if parsed.data_request else None,
    )


def _request(
    shop_id: str,
    request_id: str,
    scope: Literal["customer", "shop"],
    now: datetime,
    **subject: Any,
) -> PrivacyRequest:
    return PrivacyRequest(
        request_id=request_id,
        shop_id=shop_id,
        scope=scope,
        origin="shopify",
        requested_at=now,
        **subject,
    )
