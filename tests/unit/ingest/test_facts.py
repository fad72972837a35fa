"""Folding a batch into facts: the same result as applying its events one by one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.ingest.domain.activity import activity_events, activity_id
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
    profile = ev.Profile(key=KEY, shop_id="s", email="a@b.test")
    anonymous = cart_event("e2", T0, [LINE], customer=ev.Customer(), key=None)
    named = cart_event("e1", T0, [LINE])
    assert activity_events([anonymous], {}, {KEY: profile}, {}) == []
    [(key, claimed)] = activity_events([anonymous], {("s", "c1"): KEY}, {KEY: profile}, {})
    assert (key, claimed.id) == (KEY, activity_id("e2"))
    [(_, first)] = activity_events([named], {}, {KEY: profile}, {})
    [(_, again)] = activity_events([named], {}, {KEY: profile}, {})
    assert first == again
