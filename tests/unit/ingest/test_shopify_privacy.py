"""Shopify's privacy webhooks as Rebound's data subject requests, and what a service refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.ingest.domain.shopify import MappingError
from services.ingest.domain.shopify_privacy import to_request
from shared import events as ev
from shared.events import InvalidEvent
from shared.privacy import decode_request

NOW = datetime(2024, 10, 20, 9, tzinfo=UTC)
DOMAIN = "shop.myshopify.com"


def _map(topic: str, body: Any) -> tuple[str, ev.PrivacyRequest]:
    return to_request(topic, body, shop_id="s1", shop_domain=DOMAIN, request_id="r1", now=NOW)


def test_customers_redact_names_the_customer_by_key_address_and_orders() -> None:
    body = {
        "shop_id": 954889,
        "shop_domain": DOMAIN,
        "customer": {"id": 191167, "email": " John@Example.com ", "phone": "555-625-1199"},
        "orders_to_redact": [299938, 280263],
    }
    event_type, request = _map("customers/redact", body)
    assert event_type == ev.CUSTOMER_REDACT_REQUESTED
    assert request.scope == "customer" and request.origin == "shopify"
    assert request.customer_keys == ["s1:c:191167"]
    assert request.emails == ["john@example.com"]
    assert request.order_ids == ["299938", "280263"]
    assert request.subject_keys() == {"s1:c:191167", "s1:e:john@example.com"}


def test_a_data_request_is_an_export_that_keeps_shopifys_request_id() -> None:
    body = {
        "shop_domain": DOMAIN,
        "customer": {"id": 191167, "email": "john@example.com"},
        "orders_requested": [299938],
        "data_request": {"id": 9999},
    }
    event_type, request = _map("customers/data_request", body)
    assert event_type == ev.CUSTOMER_EXPORT_REQUESTED
    assert request.platform_request_id == "9999"


def test_shop_redact_erases_the_shop() -> None:
    event_type, request = _map("shop/redact", {"shop_id": 954889, "shop_domain": DOMAIN})
    assert event_type == ev.SHOP_REDACT_REQUESTED
    assert request.scope == "shop" and request.customer_keys == []


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"shop_domain": "other.myshopify.com", "customer": {"id": 1}}, "not this shop"),
        ({"shop_domain": DOMAIN, "customer": {"phone": "555"}}, "neither id nor email"),
        ({"shop_domain": DOMAIN}, "neither id nor email"),
        ({"customer": {"id": 1.5e17}}, "float id"),
        ([], "JSON object"),
    ],
)
def test_a_body_that_names_nobody_here_is_refused(body: Any, complaint: str) -> None:
    with pytest.raises(MappingError, match=complaint):
        _map("customers/redact", body)


def _encoded(event_type: str, **data: Any) -> bytes:
    request = ev.PrivacyRequest(
        request_id="r1", shop_id="s1", origin="control_plane", requested_at=NOW, **data
    )
    event = ev.make_event(
        type=event_type, source="t", id="r1", time=NOW, subject=None, shop_id="s1", data=request
    )
    return ev.encode(event)


def test_services_refuse_a_request_that_contradicts_its_type_or_names_nobody() -> None:
    with pytest.raises(InvalidEvent, match="scope"):
        decode_request(_encoded(ev.SHOP_REDACT_REQUESTED, scope="customer", emails=["a@b.c"]))
    with pytest.raises(InvalidEvent, match="names no key"):
        decode_request(_encoded(ev.CUSTOMER_REDACT_REQUESTED, scope="customer"))
    event_type, request = decode_request(_encoded(ev.SHOP_REDACT_REQUESTED, scope="shop"))
    assert (event_type, request.shop_id) == (ev.SHOP_REDACT_REQUESTED, "s1")
