"""What a template sees: the request turned into a small, typed rendering context."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from shared.events import Contract, InvalidEvent, Line, MessageRequest, stable_event_id

_PREFIX_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "JPY": "¥"}
_NO_DECIMALS = {"JPY", "KRW", "HUF"}


class CartContext(Contract):
    """request.context["cart"] as the scheduler puts it (a cart snapshot)."""

    lines: list[Line]
    currency: str | None = None
    total_price: Decimal | None = None
    recovery_url: str | None = None


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


def render_context(request: MessageRequest, offer: object | None = None) -> dict[str, Any]:
    """Everything a template may use; anything else is an error (StrictUndefined). `offer`:
    the discount issued for this request (an OfferView), else the step's offer as sent."""
    recipient = request.recipient
    return {
        "recipient": RecipientView(recipient.email, recipient.first_name, recipient.last_name),
        "cart": cart_view(request.context.get("cart")),
        "offer": offer if offer is not None else request.context.get("offer"),
        "shop_id": request.shop_id,
    }


def message_id(request_key: str, mail_from: str) -> str:
    """Deterministic, so a human (or a bounce) can trace a mail back to its request."""
    domain = mail_from.rsplit("@", 1)[-1].strip(" >") or "rebound.invalid"
    return f"<{stable_event_id('message', request_key)}@{domain}>"


def one_line(text: str) -> str:
    """A subject is one header line, whatever the template produced."""
    return " ".join(text.split())
