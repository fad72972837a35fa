"""Every handled Shopify topic maps to its canonical payload; ids stay exact strings."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.ingest.domain import shopify
from services.ingest.domain.canonical import shop_event
from services.ingest.domain.shopify import MappingError, to_canonical
from shared import events as ev
from tests.unit.ingest.deliveries import CART_TOKEN, CHECKOUT_CUSTOMER_ID, fixture_body

NOON = datetime(2022, 1, 1, tzinfo=UTC)


def _map(name: str, body: dict[str, Any] | None = None) -> tuple[str, Any]:
    raw = orjson.dumps(body if body is not None else fixture_body(name))
    return to_canonical(name.replace(".", "/"), orjson.loads(raw))


@pytest.mark.parametrize("topic", sorted(shopify.TOPICS))
def test_every_handled_fixture_maps(topic: str) -> None:
    event_type, data = _map(topic.replace("/", "."))
    assert isinstance(data, ev.SHOP_PAYLOADS[event_type])


def test_checkout_becomes_a_cart_of_a_named_customer() -> None:
    event_type, cart = _map("checkouts.create")
    assert event_type == ev.CART_UPDATED
    assert cart.cart_id == CART_TOKEN
    assert cart.customer == ev.Customer(
        id=CHECKOUT_CUSTOMER_ID,
        email="example@email.com",
        first_name="John",
        last_name="Smith",
        marketing_consent="not_subscribed",
        country="CA",  # of the default address: the customer's time zone when none is given
    )
    assert [(line.title, line.variant_title, line.quantity, line.price) for line in cart.lines] == [
        ("IPod Nano - 8GB", "Pink", 1, Decimal("199.00"))
    ] * 2
    line = cart.lines[0]
    assert (line.product_id, line.variant_id, line.sku) == (
        "632910392",
        "808950810",
        "IPOD2008PINK",
    )
    assert cart.total_price == Decimal("421.88")
    assert cart.currency == "USD"
    assert cart.recovery_url.endswith("/checkouts/123123123/recover?key=example-secret-token")
    assert cart.updated_at == NOON


def test_checkout_without_cart_token_uses_its_token_and_accepted_marketing() -> None:
    body = fixture_body("checkouts.create")
    body["cart_token"] = None
    body["buyer_accepts_marketing"] = True
    body["customer"]["email_marketing_consent"] = None
    _, cart = _map("checkouts.create", body)
    assert cart.cart_id == "123123123"
    assert cart.customer.marketing_consent == "subscribed"


def test_a_customer_id_beyond_2_pow_53_survives_exactly() -> None:
    raw = orjson.dumps(fixture_body("checkouts.create")).replace(
        b'"id":603851970716743400', b'"id":9007199254740993'
    )
    _, cart = to_canonical("checkouts/create", orjson.loads(raw))
    assert isinstance(cart, ev.CartUpdated)
    assert cart.customer.id == "9007199254740993"
    event = shop_event(
        type=ev.CART_UPDATED, source="t", event_id="e", shop_id="s", data=cart, now=NOON
    )
    assert event.key == "s:c:9007199254740993"
    assert b'"id":"9007199254740993"' in ev.encode(event.event)


def test_a_float_id_is_refused_rather_than_rounded() -> None:
    body = fixture_body("checkouts.create")
    body["customer"]["id"] = 6.038519707167434e17
    with pytest.raises(MappingError, match=r"customer\.id: .*float"):
        _map("checkouts.create", body)


def test_carts_are_anonymous_and_keyed_by_their_token() -> None:
    event_type, cart = _map("carts.update")
    assert event_type == ev.CART_UPDATED
    assert cart.customer == ev.Customer()
    assert cart.cart_id == CART_TOKEN
    assert [(line.sku, line.product_id, line.variant_id, line.quantity) for line in cart.lines] == [
        ("example-shirt-s", "788032119674292900", "704912205188288500", 3)
    ]
    assert cart.total_price == Decimal("59.97")
    event = shop_event(type=event_type, source="t", event_id="e", shop_id="s", data=cart, now=NOON)
    assert (event.key, event.event.subject) == (f"s:cart:{CART_TOKEN}", None)


@pytest.mark.parametrize(
    ("name", "event_type"),
    [
        ("orders.create", ev.ORDER_PLACED),
        ("orders.paid", ev.ORDER_PAID),
        ("orders.cancelled", ev.ORDER_CANCELLED),
    ],
)
def test_orders(name: str, event_type: str) -> None:
    mapped_type, order = _map(name)
    assert mapped_type == event_type
    assert order.order_id == "820982911946154500"
    assert order.customer.id == "115310627314723950"
    assert order.customer.email == "jon@example.com"
    assert order.total_price == Decimal("388.00")
    assert order.placed_at == NOON
    assert len(order.lines) == 2
    assert all(isinstance(line.price, Decimal) for line in order.lines)


def test_order_cart_id_falls_back_to_checkout_token() -> None:
    body = fixture_body("orders.create")
    body["checkout_token"] = "chk-1"
    assert _map("orders.create", body)[1].cart_id == "chk-1"
    body["cart_token"] = "cart-1"
    assert _map("orders.create", body)[1].cart_id == "cart-1"


def test_customers_and_consent() -> None:
    event_type, changed = _map("customers.create")
    assert event_type == ev.CUSTOMER_REGISTERED
    assert changed.customer.id == "706405506930370000"
    assert changed.customer.email == "bob@biller.com"
    assert changed.customer.registered_at == NOON
    assert _map("customers.update")[0] == ev.CUSTOMER_UPDATED

    body = fixture_body("customers_email_marketing_consent.update")
    body["email_marketing_consent"]["state"] = "unsubscribed"
    event_type, consent = _map("customers_email_marketing_consent.update", body)
    assert event_type == ev.CONSENT_CHANGED
    assert consent.customer.id == "706405506930370000"
    assert consent.state == "unsubscribed"


@pytest.mark.parametrize(
    ("name", "mutate", "reason"),
    [
        ("checkouts.create", lambda b: b.pop("updated_at"), "checkouts/create: updated_at: Field"),
        ("checkouts.create", lambda b: b["line_items"][0].pop("title"), "line_items.0.title"),
        ("checkouts.create", lambda b: b.update(cart_token=None, token=None), "neither cart_token"),
        ("orders.create", lambda b: b.pop("total_price"), "total_price"),
        ("customers.create", lambda b: b.pop("id"), "customer has no id"),
    ],
)
def test_a_body_that_breaks_the_topics_promise_says_why(
    name: str, mutate: Any, reason: str
) -> None:
    body = fixture_body(name)
    mutate(body)
    with pytest.raises(MappingError, match=reason):
        _map(name, body)


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(MappingError, match="JSON object"):
        to_canonical("orders/create", [1, 2])


def test_unhandled_topics_are_not_mapped() -> None:
    assert not shopify.handles("checkouts/delete")
    assert not shopify.handles(None)
    assert shopify.handles("checkouts/update")


def test_the_codes_an_order_used_are_kept_for_attribution() -> None:
    body = dict(fixture_body("orders.create"))
    body["discount_codes"] = [{"code": "SAVE7K3M", "amount": "4.00", "type": "percentage"}]
    _, order = to_canonical("orders/create", body)
    assert isinstance(order, ev.OrderEvent)
    assert order.discount_codes == ["SAVE7K3M"]
