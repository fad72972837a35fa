"""Folding a batch of canonical events into the changes of the customer facts, and back out.

The fold is pure and order-insensitive where it can be: a batch is applied as one set of rows
per table, and the SQL in adapters/ merges those rows with what is stored by the same rules
(`merge_*` below), so applying a batch at once equals applying its events one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal, TypeVar

from shared import events as ev

CartStatus = Literal["open", "ordered", "emptied"]
OrderStatus = Literal["placed", "paid", "cancelled"]
ORDER_STATUS_RANK: dict[str, int] = {"placed": 0, "paid": 1, "cancelled": 2}
_ORDER_STATUS: dict[str, OrderStatus] = {
    ev.ORDER_PLACED: "placed",
    ev.ORDER_PAID: "paid",
    ev.ORDER_CANCELLED: "cancelled",
}


def as_utc(moment: datetime) -> datetime:
    """Platform times without an offset are taken as UTC, so every comparison is well defined."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class ShopEventIn:
    """One decoded canonical event off shop.events."""

    event_id: str
    type: str
    shop_id: str
    time: datetime
    customer_key: str | None  # None only for a cart nobody has claimed
    data: ev.Contract

    @property
    def occurred_at(self) -> datetime:
        data = self.data
        if isinstance(data, ev.CartUpdated):
            return as_utc(data.updated_at)
        if isinstance(data, ev.OrderEvent) and self.type == ev.ORDER_PLACED:
            return as_utc(data.placed_at)
        if isinstance(data, ev.OrderEvent) and data.cancelled_at is not None:
            return as_utc(data.cancelled_at)
        if isinstance(data, ev.ConsentChanged) and data.changed_at is not None:
            return as_utc(data.changed_at)
        return as_utc(self.time)


@dataclass(frozen=True)
class CustomerRow:
    """What an event says about a customer; None means 'not said', keep what is stored."""

    customer_key: str
    shop_id: str
    customer_id: str | None
    email: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    marketing_consent: str | None
    registered_at: datetime | None
    updated_at: datetime
    country: str | None = None
    time_zone: str | None = None


@dataclass(frozen=True)
class CartRow:
    shop_id: str
    cart_id: str
    customer_key: str | None
    lines: list[ev.Line]
    currency: str | None
    total_price: Decimal | None
    recovery_url: str | None
    updated_at: datetime
    status: CartStatus


@dataclass(frozen=True)
class OrderRow:
    shop_id: str
    order_id: str
    customer_key: str
    cart_id: str | None
    currency: str | None
    total_price: Decimal
    status: OrderStatus
    placed_at: datetime
    paid_at: datetime | None
    cancelled_at: datetime | None
    lines: list[ev.Line]
    updated_at: datetime


@dataclass
class FactChanges:
    customers: dict[str, CustomerRow] = field(default_factory=dict)
    carts: dict[tuple[str, str], CartRow] = field(default_factory=dict)
    orders: dict[tuple[str, str], OrderRow] = field(default_factory=dict)


# --- merge rules (mirrored by the upserts in adapters/facts_repository.py) -------------------


def merge_customer(old: CustomerRow, new: CustomerRow) -> CustomerRow:
    return CustomerRow(
        customer_key=old.customer_key,
        shop_id=old.shop_id,
        customer_id=new.customer_id or old.customer_id,
        email=new.email or old.email,
        first_name=new.first_name or old.first_name,
        last_name=new.last_name or old.last_name,
        locale=new.locale or old.locale,
        marketing_consent=new.marketing_consent or old.marketing_consent,
        registered_at=new.registered_at or old.registered_at,
        updated_at=max(old.updated_at, new.updated_at),
        country=new.country or old.country,
        time_zone=new.time_zone or old.time_zone,
    )


def merge_cart(old: CartRow, new: CartRow) -> CartRow:
    """The newer update wins; an ordered cart stays ordered; a known owner is never dropped."""
    newer, older = (new, old) if new.updated_at >= old.updated_at else (old, new)
    status: CartStatus = "ordered" if "ordered" in (old.status, new.status) else newer.status
    return replace(newer, customer_key=newer.customer_key or older.customer_key, status=status)


def merge_order(old: OrderRow, new: OrderRow) -> OrderRow:
    status = max(old.status, new.status, key=ORDER_STATUS_RANK.__getitem__)
    return replace(
        old,
        status=status,
        paid_at=old.paid_at or new.paid_at,
        cancelled_at=old.cancelled_at or new.cancelled_at,
        cart_id=old.cart_id or new.cart_id,
        lines=old.lines or new.lines,
        updated_at=max(old.updated_at, new.updated_at),
    )


# --- event -> rows -------------------------------------------------------------------------


def customer_row(event: ShopEventIn, customer: ev.Customer) -> CustomerRow | None:
    if event.customer_key is None:
        return None
    return CustomerRow(
        customer_key=event.customer_key,
        shop_id=event.shop_id,
        customer_id=customer.id,
        email=customer.email.strip() if customer.email else None,
        first_name=customer.first_name,
        last_name=customer.last_name,
        locale=customer.locale,
        marketing_consent=customer.marketing_consent,
        registered_at=as_utc(customer.registered_at) if customer.registered_at else None,
        updated_at=as_utc(event.time),
        country=customer.country.upper() if customer.country else None,
        time_zone=customer.time_zone,
    )


def cart_row(event: ShopEventIn, cart: ev.CartUpdated) -> CartRow:
    return CartRow(
        shop_id=event.shop_id,
        cart_id=cart.cart_id,
        customer_key=event.customer_key,
        lines=cart.lines,
        currency=cart.currency,
        total_price=cart.total_price,
        recovery_url=cart.recovery_url,
        updated_at=as_utc(cart.updated_at),
        status="open" if cart.lines else "emptied",
    )


def order_row(event: ShopEventIn, order: ev.OrderEvent) -> OrderRow:
    assert event.customer_key is not None
    status = _ORDER_STATUS[event.type]
    cancelled_at = order.cancelled_at or (event.time if status == "cancelled" else None)
    return OrderRow(
        shop_id=event.shop_id,
        order_id=order.order_id,
        customer_key=event.customer_key,
        cart_id=order.cart_id,
        currency=order.currency,
        total_price=order.total_price,
        status=status,
        placed_at=as_utc(order.placed_at),
        paid_at=as_utc(event.time) if status == "paid" else None,
        cancelled_at=as_utc(cancelled_at) if cancelled_at else None,
        lines=list(order.lines),
        updated_at=as_utc(event.time),
    )


def _consent_customer(consent: ev.ConsentChanged) -> ev.Customer:
    return consent.customer.model_copy(update={"marketing_consent": consent.state})


def fold(events: Iterable[ShopEventIn]) -> FactChanges:
    """All changes a batch makes, one row per customer, cart and order."""
    changes = FactChanges()
    for event in events:
        data = event.data
        customer = (
            _consent_customer(data)
            if isinstance(data, ev.ConsentChanged)
            else getattr(data, "customer", None)
        )
        if isinstance(customer, ev.Customer):
            _put(
                changes.customers, event.customer_key, customer_row(event, customer), merge_customer
            )
        if isinstance(data, ev.CartUpdated):
            row = cart_row(event, data)
            _put(changes.carts, (row.shop_id, row.cart_id), row, merge_cart)
        elif isinstance(data, ev.OrderEvent):
            order = order_row(event, data)
            _put(changes.orders, (order.shop_id, order.order_id), order, merge_order)
    return changes


K = TypeVar("K")
V = TypeVar("V")


def _put(rows: dict[K, V], key: K | None, row: V | None, merge: Callable[[V, V], V]) -> None:
    if key is None or row is None:
        return
    old = rows.get(key)
    rows[key] = row if old is None else merge(old, row)


@dataclass(frozen=True)
class OrderTotals:
    """What newly seen orders add to their customer: counted once per order."""

    customer_key: str
    orders: int
    spent: Decimal
    first_order_at: datetime
    last_order_at: datetime


def order_totals(new_orders: Iterable[OrderRow]) -> list[OrderTotals]:
    totals: dict[str, OrderTotals] = {}
    for order in new_orders:
        old = totals.get(order.customer_key)
        if old is None:
            totals[order.customer_key] = OrderTotals(
                order.customer_key, 1, order.total_price, order.placed_at, order.placed_at
            )
        else:
            totals[order.customer_key] = OrderTotals(
                order.customer_key,
                old.orders + 1,
                old.spent + order.total_price,
                min(old.first_order_at, order.placed_at),
                max(old.last_order_at, order.placed_at),
            )
    return list(totals.values())
