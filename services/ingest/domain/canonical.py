"""A canonical shop event ready for the broker: its CloudEvent, the record key, the subject."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from services.ingest.domain import limits
from shared.events import (
    CartUpdated,
    CloudEvent,
    Contract,
    ProductDeleted,
    ProductUpdated,
    customer_key,
    decode,
    encode_parts,
)

SOURCE_SHOPIFY = "rebound/ingest/shopify"
SOURCE_API = "rebound/ingest/api"
SOURCE_WOOCOMMERCE = "rebound/ingest/woocommerce"


@dataclass(frozen=True)
class ShopEvent:
    """The record for shop.events: its key, the event's id and the encoded CloudEvent."""

    key: str
    id: str
    value: bytes

    @property
    def event(self) -> CloudEvent:
        return decode(self.value)


def cart_key(shop_id: str, cart_id: str) -> str:
    """Key of a cart nobody has claimed yet: its updates stay ordered until a customer shows up."""
    return f"{shop_id}:cart:{cart_id}"


def subject_and_key(shop_id: str, data: Contract) -> tuple[str | None, str]:
    """The customer key (subject) and the record key; anonymous carts are keyed by the cart."""
    customer = getattr(data, "customer", None)
    if customer is not None and (customer.id or customer.email):
        key = customer_key(shop_id, customer.id, customer.email)
        return key, key
    if isinstance(data, CartUpdated):
        return None, cart_key(shop_id, data.cart_id)
    if isinstance(data, ProductUpdated | ProductDeleted):
        # Catalog events concern no customer; one product's changes stay ordered.
        return None, f"{shop_id}:product:{data.product_id}"
    # Raises InvalidEvent with the reason.
    key = customer_key(shop_id, None, None)
    return key, key


def shop_event(
    *, type: str, source: str, event_id: str, shop_id: str, data: Contract, now: datetime
) -> ShopEvent:
    """Raises InvalidEvent when the payload says what no shop can mean (domain/limits.py)."""
    limits.check(data, now)
    subject, key = subject_and_key(shop_id, data)
    value = encode_parts(
        id=event_id,
        source=source,
        type=type,
        subject=subject,
        time=now,
        shop_id=shop_id,
        data_json=data.model_dump_json().encode(),
    )
    return ShopEvent(key=key, id=event_id, value=value)


def describe(exc: ValidationError) -> str:
    """The first validation error as `where: what`, for a 400 answer or a dead letter."""
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"
