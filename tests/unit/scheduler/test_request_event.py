"""A message request leaves the scheduler as exactly the CloudEvent the contract describes,
whether its customer came with an activity or was read back from the store for a timer."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from services.scheduler.adapters.repository import CustomerFacts
from services.scheduler.domain import engine
from services.scheduler.domain.journey import parse_journey
from services.scheduler.runner import SOURCE, JourneyCatalog, Runner, _Tracked
from shared import events
from shared.events import CartSnapshot, Line, MessageRequest, Profile, Recipient
from shared.topics import Topics

NOW = datetime(2022, 1, 1, 3, 0, 0, 250_000, tzinfo=UTC)
JOURNEY = parse_journey(
    """
id: abandoned-cart
version: 2
name: Abandoned cart
trigger: {event: shop.cart.updated.v1}
steps:
  - id: reminder
    send:
      template: abandoned_cart_reminder
      subject: "Ünïcode subject"
      params: {threshold: 50}
      offer: {kind: discount_code, value: 10%, valid_for: 7d}
"""
)
PROFILE = Profile(
    key="shop:c:1",
    shop_id="shop",
    email="jo@example.com",
    first_name="Jö",
    marketing_consent="subscribed",
    orders_count=2,
    total_spent=Decimal("59.80"),
    last_order_at=datetime(2021, 12, 1, tzinfo=UTC),
    last_order_categories=["mugs"],
)
CART = CartSnapshot(
    cart_id="cart-1",
    updated_at=datetime(2021, 12, 31, 23, tzinfo=UTC),
    total_price=Decimal("9.90"),
    lines=[Line(title="Mug", quantity=1, price=Decimal("9.90"))],
)


def contract_request() -> MessageRequest:
    """The request as the contract's models build it."""
    summary = {"orders_count", "total_spent", "first_order_at", "last_order_at"}
    summary |= {"registered_at", "last_order_categories"}
    return MessageRequest(
        request_key="abandoned-cart:7:reminder",
        shop_id="shop",
        customer_key="shop:c:1",
        journey_id="abandoned-cart",
        journey_version=2,
        step_id="reminder",
        template="abandoned_cart_reminder",
        subject="Ünïcode subject",
        recipient=Recipient(email="jo@example.com", first_name="Jö"),
        consent_required=True,
        marketing_consent="subscribed",
        context={
            "journey_name": "Abandoned cart",
            "customer": PROFILE.model_dump(mode="json", include=summary),
            "params": {"threshold": "50"},
            "cart": CART.model_dump(mode="json"),
            "offer": {"kind": "discount_code", "valid_for": "7d", "value": "10%"},
        },
        requested_at=NOW,
    )


def contract_bytes(request: MessageRequest) -> bytes:
    return events.encode(
        events.make_event(
            type=events.MESSAGE_REQUESTED,
            source=SOURCE,
            time=NOW,
            id=events.stable_event_id("request", request.request_key),
            subject="shop:c:1",
            shop_id="shop",
            data=request,
        )
    )


def published(customer: CustomerFacts) -> tuple[MessageRequest, bytes]:
    enrollment = engine.Enrollment("abandoned-cart", 2, "shop:c:1", NOW, id=7)
    outcome = engine.advance(JOURNEY, enrollment, {}, NOW)
    (action,) = outcome.decisions
    assert isinstance(action, engine.RequestMessage)
    runner = Runner(JourneyCatalog(), Topics("t."))
    tracked = _Tracked(JOURNEY, enrollment, customer, False)
    made = runner._message_request(tracked, action, customer, NOW)
    assert made is not None
    return made.message(), made.event()


def jsonb(model: Profile | CartSnapshot) -> dict[str, Any]:
    """The JSON as PostgreSQL gives a jsonb column back: keys in its own order."""
    loaded: dict[str, Any] = orjson.loads(
        json.dumps(json.loads(model.model_dump_json()), sort_keys=True)
    )
    return loaded


def test_a_request_is_byte_for_byte_the_contract_encoding() -> None:
    request, value = published(CustomerFacts("shop:c:1", 0, PROFILE, CART))
    assert request == contract_request()
    assert value == contract_bytes(contract_request())
    assert events.payload(events.decode(value), MessageRequest) == contract_request()


def test_a_stored_customer_makes_the_same_request() -> None:
    stored = CustomerFacts.stored("shop:c:1", 0, jsonb(PROFILE), jsonb(CART))
    request, value = published(stored)
    assert request == contract_request()
    assert events.payload(events.decode(value), MessageRequest) == contract_request()
    profile, cart = orjson.loads(PROFILE.model_dump_json()), orjson.loads(CART.model_dump_json())
    in_order = CustomerFacts.stored("shop:c:1", 0, profile, cart)
    assert published(in_order)[1] == contract_bytes(contract_request())
