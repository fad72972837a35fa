"""Shopify webhook bodies -> Rebound's canonical payloads.

The models below read only what Rebound uses. Ids are strings: integers are turned into their
exact decimal text (`coerce_numbers_to_str`), and a float id is refused, because a float has
already lost the last digits of a Shopify id (they exceed 2^53).

A body is validated once, by these models; the canonical payloads are then constructed from
their already-validated fields (`model_construct`), whose types are the canonical field types.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from services.ingest.domain.canonical import describe
from shared import events as ev
from shared.events import ConsentState, Contract


class MappingError(ValueError):
    """The body is not what the webhook topic promises; the answer is 400 with this reason."""


def _no_float_ids(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("ids must be integers or strings; a float id has lost digits")
    return value


ShopifyId = Annotated[str, BeforeValidator(_no_float_ids)]
_CONSENT_STATES: frozenset[str] = frozenset(get_args(ConsentState))


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class _Consent(_Body):
    state: str | None = None
    consent_updated_at: datetime | None = None


class _Customer(_Body):
    id: ShopifyId | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    created_at: datetime | None = None
    email_marketing_consent: _Consent | None = None
    default_address: _Address | None = None


class _Line(_Body):
    product_id: ShopifyId | None = None
    variant_id: ShopifyId | None = None
    sku: str | None = None
    title: str
    variant_title: str | None = None
    quantity: int
    price: Decimal


class _Checkout(_Body):
    token: ShopifyId | None = None
    cart_token: ShopifyId | None = None
    email: str | None = None
    buyer_accepts_marketing: bool | None = None
    customer_locale: str | None = None
    currency: str | None = None
    total_price: Decimal | None = None
    line_items: list[_Line] = []
    abandoned_checkout_url: str | None = None
    updated_at: datetime
    customer: _Customer | None = None


class _Cart(_Body):
    id: ShopifyId | None = None
    token: ShopifyId | None = None
    line_items: list[_Line] = []
    currency: str | None = None
    updated_at: datetime


class _DiscountCode(_Body):
    code: str


class _Order(_Body):
    id: ShopifyId
    email: str | None = None
    contact_email: str | None = None
    buyer_accepts_marketing: bool | None = None
    customer_locale: str | None = None
    cart_token: ShopifyId | None = None
    checkout_token: ShopifyId | None = None
    currency: str | None = None
    total_price: Decimal
    line_items: list[_Line] = []
    discount_codes: list[_DiscountCode] = []
    customer: _Customer | None = None
    created_at: datetime | None = None
    processed_at: datetime | None = None
    cancelled_at: datetime | None = None


class _Address(_Body):
    country_code: str | None = None


class _Variant(_Body):
    price: Decimal | None = None
    inventory_quantity: int | None = None
    inventory_policy: str | None = None
    inventory_management: str | None = None


class _Image(_Body):
    src: str | None = None


class _Product(_Body):
    id: ShopifyId
    title: str
    handle: str | None = None
    product_type: str | None = None
    tags: str | None = None
    status: str | None = None
    published_at: datetime | None = None
    variants: list[_Variant] = []
    image: _Image | None = None
    images: list[_Image] = []
    updated_at: datetime | None = None


class _ProductDelete(_Body):
    id: ShopifyId


class _ConsentUpdate(_Body):
    customer_id: ShopifyId
    email_address: str | None = None
    email_marketing_consent: _Consent | None = None


# --- mapping ----------------------------------------------------------------------------


def _consent(
    consent: _Consent | None, accepts_marketing: bool | None = None
) -> ConsentState | None:
    state = consent.state.lower() if consent and consent.state else None
    if state in _CONSENT_STATES:
        return state  # type: ignore[return-value]  # checked against ConsentState's values
    return "subscribed" if accepts_marketing else None


def _lines(lines: list[_Line]) -> list[ev.Line]:
    return [
        ev.Line.model_construct(
            product_id=line.product_id,
            variant_id=line.variant_id,
            sku=line.sku,
            title=line.title,
            variant_title=line.variant_title,
            quantity=line.quantity,
            price=line.price,
        )
        for line in lines
    ]


def _customer(
    customer: _Customer | None,
    email: str | None,
    locale: str | None,
    accepts_marketing: bool | None = None,
) -> ev.Customer:
    if customer is None:
        return ev.Customer.model_construct(
            email=email, locale=locale, marketing_consent=_consent(None, accepts_marketing)
        )
    return ev.Customer.model_construct(
        id=customer.id,
        email=email or customer.email,
        first_name=customer.first_name,
        last_name=customer.last_name,
        locale=locale or customer.locale,
        marketing_consent=_consent(customer.email_marketing_consent, accepts_marketing),
        registered_at=customer.created_at,
        country=customer.default_address.country_code if customer.default_address else None,
    )


def _checkout(body: dict[str, Any]) -> Contract:
    checkout = _Checkout.model_validate(body)
    cart_id = checkout.cart_token or checkout.token
    if not cart_id:
        raise MappingError("checkout has neither cart_token nor token")
    email = checkout.email or (checkout.customer.email if checkout.customer else None)
    return ev.CartUpdated.model_construct(
        cart_id=cart_id,
        customer=_customer(
            checkout.customer, email, checkout.customer_locale, checkout.buyer_accepts_marketing
        ),
        lines=_lines(checkout.line_items),
        currency=checkout.currency,
        total_price=checkout.total_price,
        recovery_url=checkout.abandoned_checkout_url,
        updated_at=checkout.updated_at,
    )


def _cart(body: dict[str, Any]) -> Contract:
    cart = _Cart.model_validate(body)
    cart_id = cart.token or cart.id
    if not cart_id:
        raise MappingError("cart has neither token nor id")
    total = sum((line.price * line.quantity for line in cart.line_items), Decimal(0))
    return ev.CartUpdated.model_construct(
        cart_id=cart_id,
        customer=ev.Customer.model_construct(),
        lines=_lines(cart.line_items),
        currency=cart.currency,
        total_price=total,
        updated_at=cart.updated_at,
    )


def _order(body: dict[str, Any]) -> Contract:
    order = _Order.model_validate(body)
    placed_at = order.created_at or order.processed_at
    if placed_at is None:
        raise MappingError("order has neither created_at nor processed_at")
    email = order.email or order.contact_email
    return ev.OrderEvent.model_construct(
        order_id=order.id,
        customer=_customer(order.customer, email, order.customer_locale),
        lines=_lines(order.line_items),
        currency=order.currency,
        total_price=order.total_price,
        cart_id=order.cart_token or order.checkout_token,
        placed_at=placed_at,
        cancelled_at=order.cancelled_at,
        discount_codes=[d.code for d in order.discount_codes],
    )


def _customer_changed(body: dict[str, Any]) -> Contract:
    customer = _Customer.model_validate(body)
    if not customer.id:
        raise MappingError("customer has no id")
    return ev.CustomerChanged.model_construct(customer=_customer(customer, customer.email, None))


def _consent_changed(body: dict[str, Any]) -> Contract:
    update = _ConsentUpdate.model_validate(body)
    consent = update.email_marketing_consent
    return ev.ConsentChanged.model_construct(
        customer=ev.Customer.model_construct(id=update.customer_id, email=update.email_address),
        state=_consent(consent),
        changed_at=consent.consent_updated_at if consent else None,
    )


def _in_stock(variant: _Variant) -> bool:
    untracked = variant.inventory_management is None and variant.inventory_quantity is None
    return (
        untracked or variant.inventory_policy == "continue" or (variant.inventory_quantity or 0) > 0
    )


def _product(body: dict[str, Any]) -> Contract:
    """Available: active, published, and some variant in stock (or sold when out of stock)."""
    product = _Product.model_validate(body)
    image = product.image or (product.images[0] if product.images else None)
    prices = [v.price for v in product.variants if v.price is not None]
    updated_at = product.updated_at or product.published_at
    if updated_at is None:
        raise MappingError("product has neither updated_at nor published_at")
    return ev.ProductUpdated(
        product_id=product.id,
        title=product.title,
        category=product.product_type or None,
        tags=[t.strip() for t in (product.tags or "").split(",") if t.strip()],
        url=f"/products/{product.handle}" if product.handle else None,
        image_url=image.src if image else None,
        price=min(prices) if prices else None,
        available=(product.status in (None, "active"))
        and product.published_at is not None
        and any(_in_stock(v) for v in product.variants),
        updated_at=updated_at,
    )


def _product_deleted(body: dict[str, Any]) -> Contract:
    return ev.ProductDeleted(product_id=_ProductDelete.model_validate(body).id)


Mapper = Callable[[dict[str, Any]], Contract]

# Shopify topic -> (canonical event type, mapper). Topics not listed are acknowledged and ignored.
TOPICS: dict[str, tuple[str, Mapper]] = {
    "checkouts/create": (ev.CART_UPDATED, _checkout),
    "checkouts/update": (ev.CART_UPDATED, _checkout),
    "carts/create": (ev.CART_UPDATED, _cart),
    "carts/update": (ev.CART_UPDATED, _cart),
    "orders/create": (ev.ORDER_PLACED, _order),
    "orders/paid": (ev.ORDER_PAID, _order),
    "orders/cancelled": (ev.ORDER_CANCELLED, _order),
    "customers/create": (ev.CUSTOMER_REGISTERED, _customer_changed),
    "customers/update": (ev.CUSTOMER_UPDATED, _customer_changed),
    "customers_email_marketing_consent/update": (ev.CONSENT_CHANGED, _consent_changed),
    "products/create": (ev.PRODUCT_UPDATED, _product),
    "products/update": (ev.PRODUCT_UPDATED, _product),
    "products/delete": (ev.PRODUCT_DELETED, _product_deleted),
}


def handles(topic: str | None) -> bool:
    return topic in TOPICS


def to_canonical(topic: str, body: Any) -> tuple[str, Contract]:
    """(canonical event type, payload) for a handled topic; MappingError says what is wrong."""
    event_type, mapper = TOPICS[topic]
    if not isinstance(body, dict):
        raise MappingError(f"{topic}: body must be a JSON object")
    try:
        return event_type, mapper(body)
    except ValidationError as exc:
        raise MappingError(f"{topic}: {describe(exc)}") from exc
