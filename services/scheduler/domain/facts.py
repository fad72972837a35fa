"""What conditions can see: the customer's profile and open cart, the event, derived figures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.events import CartSnapshot, Profile

SECONDS_PER_DAY = 86_400


def build_facts(
    kind: str, occurred_at: datetime, profile: Profile, cart: CartSnapshot | None, now: datetime
) -> dict[str, Any]:
    profile_facts = profile.model_dump()
    profile_facts["days_since_last_order"] = _days_since(profile.last_order_at, now)
    profile_facts["days_since_registration"] = _days_since(profile.registered_at, now)
    cart_facts: dict[str, Any] | None = None
    if cart is not None:
        cart_facts = cart.model_dump()
        cart_facts["item_count"] = sum(line.quantity for line in cart.lines)
    return {
        "event": {"kind": kind, "occurred_at": occurred_at},
        "profile": profile_facts,
        "cart": cart_facts or {"item_count": 0},
    }


def _days_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else (now - moment).total_seconds() / SECONDS_PER_DAY
