"""Folding a batch into facts: the same result as applying its events one by one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from services.ingest.domain.activity import (
    OpenCart,
    activity_events,
    activity_id,
)
from services.ingest.domain.facts import ShopEventIn, fold, order_totals
from shared import events as ev

T0 = datetime(2024, 10, 1, 12, tzinfo=UTC)
KEY = "s:c:1"
LINE = ev.Line(title="Mug", quantity=1, price=Decimal("9.50"))


def cart_event(
    event_id: str,
    updated_at: datetime,
    lines: list[ev.Line],
    *,
    customer: ev.Customer | None = None,
    key: str | None = KEY,
) -> ShopEventIn:
    data = ev.CartUpdated(
        cart_id="c1", customer=customer or ev.Customer(id="1"), lines=lines, updated_at=updated_at
    )
    return ShopEventIn(event_id, ev.CART_UPDATED, "s", T0, key, data)


def order_event(
    event_id: str, event_type: str, order_id: str = "o1", total: str = "10"
) -> ShopEventIn:
    data = ev.OrderEvent(
        order_id=order_id,
        customer=ev.Customer(id="1"),
        lines=[LINE],
        total_price=Decimal(total),
        placed_at=T0,
        cart_id="c1",
    )
    return ShopEventIn(event_id, event_type, "s", T0, KEY, data)


def test_an_older_cart_update_never_overwrites_a_newer_one() -> None:
    newer = cart_event("e2", T0 + timedelta(minutes=5), [LINE, LINE])
    older = cart_event("e1", T0, [LINE])
    [cart] = fold([newer, older]).carts.values()
    assert (len(cart.lines), cart.updated_at, cart.status) == (2, newer.occurred_at, "open")


def test_a_cart_without_lines_is_emptied() -> None:
    [cart] = fold(
        [cart_event("e1", T0, [LINE]), cart_event("e2", T0 + timedelta(1), [])]
    ).carts.values()
    assert cart.status == "emptied"


def test_an_anonymous_update_keeps_the_known_owner() -> None:
    named = cart_event("e1", T0, [LINE])
    anonymous = cart_event("e2", T0 + timedelta(1), [LINE, LINE], customer=ev.Customer(), key=None)
    [cart] = fold([named, anonymous]).carts.values()
    assert (cart.customer_key, len(cart.lines)) == (KEY, 2)
    assert list(fold([anonymous]).customers) == []


def test_order_events_make_one_order_counted_once() -> None:
    changes = fold(
        [
            order_event("e1", ev.ORDER_PLACED),
            order_event("e2", ev.ORDER_PAID),
            order_event("e3", ev.ORDER_PLACED, "o2", "5"),
        ]
    )
    assert {k: o.status for k, o in changes.orders.items()} == {
        ("s", "o1"): "paid",
        ("s", "o2"): "placed",
    }
    [totals] = order_totals(changes.orders.values())
    assert (totals.orders, totals.spent) == (2, Decimal("15"))


def test_a_cancellation_wins_over_payment() -> None:
    changes = fold([order_event("e1", ev.ORDER_CANCELLED), order_event("e2", ev.ORDER_PAID)])
    [order] = changes.orders.values()
    assert order.status == "cancelled"
    assert order.cancelled_at == T0


def test_consent_is_kept_unless_an_event_says_otherwise() -> None:
    consent = ShopEventIn(
        "e1",
        ev.CONSENT_CHANGED,
        "s",
        T0,
        KEY,
        ev.ConsentChanged(customer=ev.Customer(id="1"), state="subscribed"),
    )
    silent = cart_event("e2", T0, [LINE])
    [customer] = fold([consent, silent]).customers.values()
    assert customer.marketing_consent == "subscribed"


def test_activity_needs_a_known_customer_and_has_a_stable_id() -> None:
    profiles = {KEY: ev.Profile(key=KEY, shop_id="s", email="a@b.test")}
    anonymous = cart_event("e2", T0, [LINE], customer=ev.Customer(), key=None)
    named = cart_event("e1", T0, [LINE])
    assert activity_events([anonymous], {}, profiles, {}) == []
    [(key, claimed)] = activity_events([anonymous], {("s", "c1"): KEY}, profiles, {})
    assert (key, ev.decode(claimed).id) == (KEY, activity_id("e2"))
    [(_, first)] = activity_events([named], {}, profiles, {})
    [(_, again)] = activity_events([named], {}, profiles, {})
    assert first == again


def _as_the_contract_encodes_it(
    event: ShopEventIn, profile: ev.Profile, cart: ev.CartSnapshot | None
) -> bytes:
    order = event.data if isinstance(event.data, ev.OrderEvent) else None
    activity = ev.Activity(
        kind=event.type,
        source_event_id=event.event_id,
        occurred_at=event.occurred_at,
        profile=profile,
        cart=cart,
        order_id=order.order_id if order else None,
        order_total=order.total_price if order else None,
    )
    return ev.encode(
        ev.make_event(
            type=ev.CUSTOMER_ACTIVITY,
            source="rebound/ingest/facts",
            id=activity_id(event.event_id),
            time=event.time,
            subject=KEY,
            shop_id=event.shop_id,
            data=activity,
        )
    )


def test_activity_is_encoded_as_its_contract_would_encode_it() -> None:
    at = datetime(2024, 10, 1, 12, 0, 0, 123456, tzinfo=UTC)
    profile = ev.Profile(
        key=KEY,
        shop_id="s",
        email="a@b.test",
        first_name="Zoë",
        marketing_consent="subscribed",
        orders_count=2,
        total_spent=Decimal("19.00"),
        last_order_at=at,
    )
    line = ev.Line(sku="MUG", title='Mug "blue"', quantity=2, price=Decimal("9.50"))
    cart = ev.CartSnapshot(
        cart_id="c1", lines=[line], currency="EUR", total_price=Decimal("19.00"), updated_at=at
    )
    # As PostgreSQL gives jsonb back: other key order, other spacing.
    stored_lines = orjson.dumps([dict(sorted(line.model_dump(mode="json").items()))])
    open_cart = OpenCart(
        "c1", stored_lines.decode().replace(",", ", "), "EUR", Decimal("19.00"), None, at
    )
    order = order_event("o", ev.ORDER_PLACED, total="19.00")
    cart_update = cart_event("c", at, [line])

    [(_, placed)] = activity_events([order], {}, {KEY: profile}, {})
    assert placed == _as_the_contract_encodes_it(order, profile, None)
    [(_, updated)] = activity_events([cart_update], {}, {KEY: profile}, {KEY: open_cart})
    expected = _as_the_contract_encodes_it(cart_update, profile, cart)
    assert orjson.loads(updated) == orjson.loads(expected)
    assert ev.payload(ev.decode(updated), ev.Activity).cart == cart
