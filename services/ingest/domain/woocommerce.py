"""WooCommerce webhook bodies (REST API v3 resources) -> the canonical payloads Shopify's give.

A WooCommerce webhook delivers the resource as its REST API v3 endpoint returns it: ids are
integers, amounts are decimal strings, `*_gmt` times carry no offset and are UTC, and empty
text is "" rather than null. Only what Rebound uses is read; it becomes the same canonical
event the equivalent Shopify delivery becomes, keyed the same way (the customer id when the
order has one, `customer_id` 0 is a guest keyed by the billing e-mail).

Orders have two topics and a status: order.created is the order placed; order.updated acts on
the status it moved to (processing or completed: paid; cancelled, refunded or failed:
cancelled, which takes the order out of the customer's figures as Shopify's orders/cancelled
does). Other statuses on order.updated change nothing Rebound holds and are ignored.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from services.ingest.domain.canonical import describe
from services.ingest.domain.shopify import MappingError
from shared import events as ev
from shared.events import Contract

__all__ = ["MappingError", "handles", "is_ping", "to_canonical"]


def _no_float_ids(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("ids must be integers or strings")
    return value


def _utc(moment: datetime) -> datetime:
    # `date_created_gmt` and its siblings are UTC written without an offset.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


WooId = Annotated[str, BeforeValidator(_no_float_ids)]
Gmt = Annotated[datetime, AfterValidator(_utc)]
Text = Annotated[str | None, BeforeValidator(_blank_is_none)]
Amount = Annotated[Decimal | None, BeforeValidator(_blank_is_none)]
PING = re.compile(rb"webhook_id=\d+")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class _Billing(_Body):
    first_name: Text = None
    last_name: Text = None
    country: Text = None
    email: Text = None


class _Line(_Body):
    name: str
    product_id: WooId | None = None
    variation_id: WooId | None = None
    quantity: int
    subtotal: Decimal  # the line before discounts and tax; `price` is a JSON float
    sku: Text = None


class _CouponLine(_Body):
    code: str


class _Order(_Body):
    id: WooId
    status: str
    currency: Text = None
    date_created_gmt: Gmt
    date_modified_gmt: Gmt | None = None
    total: Decimal
    customer_id: WooId = "0"
    billing: _Billing = _Billing()
    line_items: list[_Line] = []
    coupon_lines: list[_CouponLine] = []


class _Customer(_Body):
    id: WooId
    email: Text = None
    first_name: Text = None
    last_name: Text = None
    date_created_gmt: Gmt | None = None
    billing: _Billing = _Billing()


class _Named(_Body):
    name: str


class _Image(_Body):
    src: Text = None


class _Product(_Body):
    id: WooId
    name: str
    permalink: Text = None
    status: str | None = None
    catalog_visibility: str | None = None
    price: Amount = None
    stock_status: str | None = None
    purchasable: bool | None = None
    categories: list[_Named] = []
    tags: list[_Named] = []
    images: list[_Image] = []
    date_modified_gmt: Gmt | None = None
    date_created_gmt: Gmt | None = None


# --- mapping ----------------------------------------------------------------------------

_PAID = frozenset({"processing", "completed"})
_CANCELLED = frozenset({"cancelled", "refunded", "failed"})


def _unit_price(line: _Line) -> Decimal:
    if line.quantity <= 0:
        return line.subtotal
    exponent = line.subtotal.as_tuple().exponent
    places = Decimal(1).scaleb(exponent) if isinstance(exponent, int) else Decimal("0.01")
    return (line.subtotal / line.quantity).quantize(places)


def _id_or_none(value: str | None) -> str | None:
    # WooCommerce writes "no such thing" as 0: a guest's customer_id, a simple product's variation.
    return None if value in (None, "", "0") else value


def _lines(lines: list[_Line]) -> list[ev.Line]:
    return [
        ev.Line.model_construct(
            product_id=_id_or_none(line.product_id),
            variant_id=_id_or_none(line.variation_id),
            sku=line.sku,
            title=html.unescape(line.name),  # names are stored HTML-escaped ("&ndash;")
            variant_title=None,
            quantity=line.quantity,
            price=_unit_price(line),
        )
        for line in lines
    ]


def _order_event(topic: str, body: dict[str, Any]) -> tuple[str, Contract] | None:
    order = _Order.model_validate(body)
    if order.status in _CANCELLED:
        event_type = ev.ORDER_CANCELLED
    elif topic == "order.created":
        event_type = ev.ORDER_PLACED
    elif order.status in _PAID:
        event_type = ev.ORDER_PAID
    else:
        return None
    billing = order.billing
    cancelled_at = order.date_modified_gmt if event_type == ev.ORDER_CANCELLED else None
    return event_type, ev.OrderEvent.model_construct(
        order_id=order.id,
        customer=ev.Customer.model_construct(
            id=_id_or_none(order.customer_id),
            email=billing.email,
            first_name=billing.first_name,
            last_name=billing.last_name,
            country=billing.country,
        ),
        lines=_lines(order.line_items),
        currency=order.currency,
        total_price=order.total,
        cart_id=None,
        placed_at=order.date_created_gmt,
        cancelled_at=cancelled_at,
        discount_codes=[c.code for c in order.coupon_lines],
    )


def _customer(event_type: str) -> Callable[[str, dict[str, Any]], tuple[str, Contract]]:
    def mapped(topic: str, body: dict[str, Any]) -> tuple[str, Contract]:
        customer = _Customer.model_validate(body)
        return event_type, ev.CustomerChanged.model_construct(
            customer=ev.Customer.model_construct(
                id=customer.id,
                email=customer.email or customer.billing.email,
                first_name=customer.first_name or customer.billing.first_name,
                last_name=customer.last_name or customer.billing.last_name,
                registered_at=customer.date_created_gmt,
                country=customer.billing.country,
            )
        )

    return mapped


def _product(topic: str, body: dict[str, Any]) -> tuple[str, Contract]:
    """Available: published, visible in the catalog, purchasable and not out of stock."""
    product = _Product.model_validate(body)
    updated_at = product.date_modified_gmt or product.date_created_gmt
    if updated_at is None:
        raise MappingError("product has neither date_modified_gmt nor date_created_gmt")
    available = (
        product.status in (None, "publish")
        and product.catalog_visibility != "hidden"
        and product.purchasable is not False
        and product.stock_status != "outofstock"
    )
    return ev.PRODUCT_UPDATED, ev.ProductUpdated(
        product_id=product.id,
        title=html.unescape(product.name),
        category=html.unescape(product.categories[0].name) if product.categories else None,
        tags=[html.unescape(t.name) for t in product.tags],
        url=product.permalink,
        image_url=product.images[0].src if product.images else None,
        price=product.price,
        available=available,
        updated_at=updated_at,
    )


Mapper = Callable[[str, dict[str, Any]], "tuple[str, Contract] | None"]

# X-WC-Webhook-Topic -> mapper; a mapper answers None for a delivery that changes nothing.
TOPICS: dict[str, Mapper] = {
    "order.created": _order_event,
    "order.updated": _order_event,
    "customer.created": _customer(ev.CUSTOMER_REGISTERED),
    "customer.updated": _customer(ev.CUSTOMER_UPDATED),
    "product.created": _product,
    "product.updated": _product,
}


def handles(topic: str | None) -> bool:
    return topic in TOPICS


def is_ping(topic: str | None, body: bytes) -> bool:
    """WooCommerce's test delivery when a webhook is saved: a form body `webhook_id=<id>`,
    no topic and no signature. It must be answered 200 or the webhook is not activated."""
    return not topic and PING.fullmatch(body.strip()) is not None


def to_canonical(topic: str, body: Any) -> tuple[str, Contract] | None:
    """(canonical type, payload) for a handled topic, None when the delivery changes nothing
    Rebound holds; MappingError says what is wrong with the body."""
    if not isinstance(body, dict):
        raise MappingError(f"{topic}: body must be a JSON object")
    try:
        return TOPICS[topic](topic, body)
    except ValidationError as exc:
        raise MappingError(f"{topic}: {describe(exc)}") from exc
    except ArithmeticError as exc:  # e.g. a price that is not a number
        raise MappingError(f"{topic}: {exc!r}") from exc
