"""Offers: the terms a step asks for, unguessable codes, and what the mail shows.

Perks (free shipping, a gift, early access) carry no code of their own: the mail shows what
the customer gets, the conditions and the moment it ends (the request time + `valid_for`).

A request's context carries the step's offer (`kind: discount_code`, `valid_for`, `value`,
`applies_to`, `minimum_order`); the dispatcher issues one code per request key and the
template shows it with its expiry and conditions. Pure: codes come from `secrets`, times from
the caller.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from services.dispatcher.domain.content import format_money
from shared.clock import parse_duration
from shared.events import Contract, InvalidEvent

# No 0/O, 1/I/L: a code is read off a screen and typed at a checkout.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 12  # 31^12 ~ 2^59 codes: guessing one of a shop's live codes is hopeless
MAX_CODE_CHARS = 64
_PERCENT = re.compile(r"^(\d{1,2}(?:\.\d{1,2})?|100)%$")
_AMOUNT = re.compile(r"^\d{1,7}(?:\.\d{1,2})?$")
_CODE = re.compile(r"^[A-Za-z0-9_\-]{3,64}$")

CodeSource = Literal["generated", "pool"]


class Collections(Contract):
    """Only products of these shop collections; `label` is how the mail names them."""

    collections: list[str] = Field(min_length=1)
    label: str = Field(min_length=1)


class OfferTerms(Contract):
    """request.context["offer"] of kind discount_code, as the scheduler sends it."""

    kind: Literal["discount_code"]
    code: str | None = None  # a fixed code the journey names: shown as is, not issued
    valid_for: str
    value: str  # "10%" off, or "15" / "15.00" off in the order's currency
    applies_to: Literal["order"] | Collections = "order"
    minimum_order: Decimal | None = Field(default=None, gt=0)
    currency: str | None = None

    @field_validator("valid_for")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("valid_for must be longer than nothing")
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if not (_PERCENT.match(value) or _AMOUNT.match(value)) or value in ("0", "0%"):
            raise ValueError(f"value {value!r} is neither a percentage (10%) nor an amount (15)")
        return value

    @property
    def percentage(self) -> Decimal | None:
        """The share off as a fraction (0.1 for 10%), None for an amount off."""
        return Decimal(self.value[:-1]) / 100 if self.value.endswith("%") else None

    @property
    def amount(self) -> Decimal | None:
        return None if self.value.endswith("%") else Decimal(self.value)

    def expires_at(self, issued_at: datetime) -> datetime:
        return issued_at + parse_duration(self.valid_for)


def discount_terms(raw: Any, cart_currency: str | None) -> OfferTerms | None:
    """The terms of a discount offer, None for any other offer (or none); bad terms raise
    InvalidEvent, so the message fails with the reason instead of going out wrong."""
    if not isinstance(raw, dict) or raw.get("kind") != "discount_code":
        return None
    try:
        terms = OfferTerms.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidEvent(f"context.offer.{where}: {err['msg']}") from exc
    if terms.currency is None and cart_currency is not None:
        terms = terms.model_copy(update={"currency": cart_currency})
    if terms.amount is not None and terms.currency is None:
        raise InvalidEvent("context.offer: an amount off needs a currency (offer or cart)")
    return terms


def new_code(prefix: str = "") -> str:
    return prefix + "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def pool_code_problem(code: str) -> str | None:
    """Why an uploaded code cannot be handed out, or None."""
    if not _CODE.match(code):
        return f"code {code[:80]!r} is not 3-64 letters, digits, '-' or '_'"
    return None


@dataclass(frozen=True)
class Coupon:
    """A code issued to one request key; the same on every redelivery and re-render."""

    request_key: str
    shop_id: str
    code: str
    source: CodeSource
    expires_at: datetime
    issued_at: datetime


@dataclass(frozen=True)
class OfferView:
    """What a discount template shows: the code, its value, conditions and expiry."""

    kind: str
    code: str
    value: str  # "10% off" / "$15.00 off"
    applies_to: str  # "your whole order" / "Summer shoes"
    minimum_order: str | None  # "$50.00"
    expires_at: datetime
    expires: str  # "8 January 2022, 03:00 UTC"


def expiry_text(moment: datetime) -> str:
    """The end of an offer, e.g. 8 January 2022, 03:00 UTC: the same in every locale."""
    return f"{moment.day} {moment:%B %Y, %H:%M} {moment:%Z}".strip()


PERK_KINDS = ("free_shipping", "gift", "early_access")


class PerkTerms(Contract):
    """request.context["offer"] of kind free_shipping, gift or early_access."""

    kind: Literal["free_shipping", "gift", "early_access"]
    valid_for: str
    code: str | None = None  # the shop's code that unlocks it; none: applied at checkout
    minimum_order: Decimal | None = Field(default=None, gt=0)
    currency: str | None = None
    gift: str | None = None
    access_to: str | None = None

    @field_validator("valid_for")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("valid_for must be longer than nothing")
        return value


@dataclass(frozen=True)
class PerkView:
    """What a perk template shows: a title, one sentence, the conditions, the end."""

    kind: str
    title: str  # "Free shipping"
    summary: str  # "Free shipping on your next order of $50.00 or more."
    conditions: list[str]
    code: str | None
    expires_at: datetime
    expires: str


def perk_terms(raw: Any) -> PerkTerms | None:
    """The terms of a perk offer, None for a discount (or no offer); bad terms raise
    InvalidEvent, so the message fails with the reason instead of promising something wrong."""
    if not isinstance(raw, dict) or raw.get("kind") not in PERK_KINDS:
        return None
    try:
        terms = PerkTerms.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidEvent(f"context.offer.{where}: {err['msg']}") from exc
    needed = {"gift": terms.gift, "early_access": terms.access_to}
    if terms.kind in needed and not needed[terms.kind]:
        raise InvalidEvent(f"context.offer: {terms.kind} needs what it gives (gift/access_to)")
    return terms


def perk_view(terms: PerkTerms, requested_at: datetime, currency: str | None) -> PerkView:
    expires_at = requested_at + parse_duration(terms.valid_for)
    ends = expiry_text(expires_at)
    money = terms.currency or currency
    minimum = None if terms.minimum_order is None else format_money(terms.minimum_order, money)
    over = f" of {minimum} or more" if minimum else ""
    at_least = f" of at least {minimum}" if minimum else ""
    how = (
        f"Enter the code {terms.code} at checkout."
        if terms.code
        else "No code needed: it is applied at checkout."
    )
    if terms.kind == "free_shipping":
        title, summary = "Free shipping", f"Free shipping on your next order{over}."
        conditions = [f"For one order{at_least} placed by {ends}.", how]
    elif terms.kind == "gift":
        title = "A gift for you"
        summary = f"{_capital(terms.gift or '')} with your next order{over}."
        conditions = [f"Added to one order{at_least} placed by {ends}, while stocks last.", how]
    else:
        title = "Early access"
        summary = f"Early access to {terms.access_to}, before everyone else."
        conditions = [f"Your early access is open until {ends}."]
        if terms.code:
            conditions.append(how)
    return PerkView(terms.kind, title, summary, conditions, terms.code, expires_at, ends)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def offer_view(terms: OfferTerms, code: str, expires_at: datetime) -> OfferView:
    percentage = terms.percentage
    if percentage is not None:
        value = f"{(percentage * 100).normalize():f}% off"
    else:
        assert terms.amount is not None
        value = f"{format_money(terms.amount, terms.currency)} off"
    applies = terms.applies_to
    minimum = terms.minimum_order
    return OfferView(
        kind=terms.kind,
        code=code,
        value=value,
        applies_to="your whole order" if applies == "order" else applies.label,
        minimum_order=None if minimum is None else format_money(minimum, terms.currency),
        expires_at=expires_at,
        expires=expiry_text(expires_at),
    )
