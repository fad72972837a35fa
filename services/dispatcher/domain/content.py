"""What a template sees: the request turned into a small, typed rendering context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from pydantic import Field, ValidationError

from shared.events import Contract, Instant, InvalidEvent, Line, MessageRequest, stable_event_id
from shared.recommendations import RecommendedProduct

C = TypeVar("C", bound=Contract)
SECONDS_PER_DAY = 86_400

_PREFIX_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "JPY": "¥"}
_NO_DECIMALS = {"JPY", "KRW", "HUF"}


class CartContext(Contract):
    """request.context["cart"] as the scheduler puts it (a cart snapshot)."""

    lines: list[Line]
    currency: str | None = None
    total_price: Decimal | None = None
    recovery_url: str | None = None


class CustomerContext(Contract):
    """request.context["customer"] as the scheduler puts it (a summary of the profile)."""

    orders_count: int = 0
    total_spent: Decimal = Decimal(0)
    first_order_at: Instant | None = None
    last_order_at: Instant | None = None
    registered_at: Instant | None = None
    last_order_categories: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class ShopView:
    """The shop as its mail names it: display name, storefront link, currency of prices."""

    name: str
    url: str | None = None
    currency: str | None = None


@dataclass(frozen=True)
class CustomerView:
    orders_count: int
    total_spent: str  # formatted in the shop's currency
    spent: Decimal
    last_order_at: datetime | None
    days_since_last_order: int | None
    last_order_categories: list[str]
    category: str | None  # the first category of the last order: "products from ..."
    registered_at: datetime | None
    member_since: str | None  # "March 2025"


@dataclass(frozen=True)
class ProductView:
    title: str
    url: str | None
    image_url: str | None
    price: str | None


@dataclass(frozen=True)
class LoyaltyView:
    """params.threshold against the customer's spend: how close they are."""

    threshold: str
    spent: str
    remaining: str
    reached: bool


@dataclass(frozen=True)
class Extras:
    """What the dispatcher adds to a request's own context: the shop, recommended products."""

    shop: ShopView | None = None
    products: Sequence[RecommendedProduct] = field(default_factory=tuple)


@dataclass(frozen=True)
class RecipientView:
    email: str
    first_name: str | None
    last_name: str | None

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)


@dataclass(frozen=True)
class LineView:
    title: str
    variant_title: str | None
    quantity: int
    price: str  # formatted with the currency, e.g. "$19.99"
    total: str


@dataclass(frozen=True)
class CartView:
    lines: list[LineView]
    currency: str | None
    total_price: str | None
    recovery_url: str | None


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    html: str
    text: str


def format_money(amount: Decimal, currency: str | None) -> str:
    code = (currency or "").upper()
    places = "1" if code in _NO_DECIMALS else "0.01"
    number = f"{amount.quantize(Decimal(places)):,}"
    if code in _PREFIX_SYMBOLS:
        return f"{_PREFIX_SYMBOLS[code]}{number}"
    return f"{number} {code}".strip()


def cart_view(raw: Any) -> CartView | None:
    if raw is None:
        return None
    try:
        cart = CartContext.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidEvent(f"context.cart.{where}: {err['msg']}") from exc
    lines = [
        LineView(
            line.title,
            line.variant_title,
            line.quantity,
            format_money(line.price, cart.currency),
            format_money(line.price * line.quantity, cart.currency),
        )
        for line in cart.lines
    ]
    total = None if cart.total_price is None else format_money(cart.total_price, cart.currency)
    return CartView(lines, cart.currency, total, safe_link(cart.recovery_url))


def safe_link(url: str | None) -> str | None:
    """Only web links become buttons; autoescaping does not stop a javascript: URL."""
    if url and url.strip().lower().startswith(("https://", "http://")):
        return url.strip()
    return None


def render_context(
    request: MessageRequest, offer: object | None = None, extras: Extras | None = None
) -> dict[str, Any]:
    """Everything a template may use; anything else is an error (StrictUndefined). `offer`:
    the discount issued for this request (an OfferView) or the perk it offers (a PerkView),
    else the step's offer as sent."""
    recipient = request.recipient
    extras = extras or Extras()
    shop = extras.shop or ShopView(request.shop_id)
    params = _params(request.context.get("params"))
    customer = customer_view(request.context.get("customer"), request.requested_at, shop)
    return {
        "recipient": RecipientView(recipient.email, recipient.first_name, recipient.last_name),
        "cart": cart_view(request.context.get("cart")),
        "offer": offer if offer is not None else request.context.get("offer"),
        "shop_id": request.shop_id,
        "shop": shop,
        "customer": customer,
        "params": params,
        "products": [product_view(p, shop.currency) for p in extras.products],
        "loyalty": loyalty_view(params, customer, shop.currency),
    }


def _parsed(model: type[C], raw: Any, where: str) -> C:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"])
        raise InvalidEvent(f"context.{where}.{path}: {err['msg']}") from exc


def _params(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidEvent("context.params: not a mapping")
    return {str(k): str(v) for k, v in raw.items()}


def customer_view(raw: Any, now: datetime, shop: ShopView) -> CustomerView | None:
    if raw is None:
        return None
    c = _parsed(CustomerContext, raw, "customer")
    last = c.last_order_at
    days = None if last is None else max(0, int((now - last).total_seconds() // SECONDS_PER_DAY))
    registered = c.registered_at
    return CustomerView(
        orders_count=c.orders_count,
        total_spent=format_money(c.total_spent, shop.currency),
        spent=c.total_spent,
        last_order_at=last,
        days_since_last_order=days,
        last_order_categories=c.last_order_categories,
        category=c.last_order_categories[0] if c.last_order_categories else None,
        registered_at=registered,
        member_since=None if registered is None else f"{registered:%B %Y}",
    )


def product_view(product: RecommendedProduct, currency: str | None) -> ProductView:
    price = None if product.price is None else format_money(product.price, currency)
    return ProductView(product.title, safe_link(product.url), safe_link(product.image_url), price)


def loyalty_view(
    params: Mapping[str, str], customer: CustomerView | None, currency: str | None
) -> LoyaltyView | None:
    if "threshold" not in params or customer is None:
        return None
    try:
        threshold = Decimal(params["threshold"])
    except InvalidOperation as exc:
        raise InvalidEvent(f"context.params.threshold {params['threshold']!r}: no number") from exc
    remaining = max(Decimal(0), threshold - customer.spent)
    return LoyaltyView(
        threshold=format_money(threshold, currency),
        spent=customer.total_spent,
        remaining=format_money(remaining, currency),
        reached=remaining == 0,
    )


def message_id(request_key: str, mail_from: str) -> str:
    """Deterministic, so a human (or a bounce) can trace a mail back to its request."""
    domain = mail_from.rsplit("@", 1)[-1].strip(" >") or "rebound.invalid"
    return f"<{stable_event_id('message', request_key)}@{domain}>"


def one_line(text: str) -> str:
    """A subject is one header line, whatever the template produced."""
    return " ".join(text.split())
