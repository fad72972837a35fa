"""A message request leaves the scheduler as exactly the CloudEvent the contract describes."""

from __future__ import annotations

from datetime import UTC, datetime

from services.scheduler.adapters.repository import CustomerFacts
from services.scheduler.runner import SOURCE, _request_event
from shared import events
from shared.events import MessageRequest, Profile, Recipient

NOW = datetime(2022, 1, 1, 3, tzinfo=UTC)


def test_the_fast_encoding_is_byte_for_byte_the_contract_encoding() -> None:
    profile = Profile(key="shop:c:1", shop_id="shop", email="jo@example.com")
    request = MessageRequest(
        request_key="abandoned-cart:7:reminder",
        shop_id="shop",
        customer_key="shop:c:1",
        journey_id="abandoned-cart",
        journey_version=1,
        step_id="reminder",
        template="abandoned_cart_reminder",
        subject="Ünïcode subject",
        recipient=Recipient(email="jo@example.com", first_name="Jo"),
        context={"cart": {"lines": [{"title": "Mug", "price": "9.90"}]}, "note": None},
        requested_at=NOW,
    )
    expected = events.encode(
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
    customer = CustomerFacts("shop:c:1", 0, profile, None)
    assert _request_event(request, customer, NOW) == expected
    decoded = events.payload(events.decode(expected), MessageRequest)
    assert decoded == request
