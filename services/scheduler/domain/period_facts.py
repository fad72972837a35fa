"""The last and the previous period's orders and spend, as of any moment, from the orders the
profile carries (`profile.recent_orders`; ingest sums them the same way, customer_facts.derive).

Each figure is a step function of time: an order counts in the last period from the moment it
is placed until `period_days` later, then in the previous period for as long again. So a
condition on them holds on whole pieces between those moments, and "purchases fell by half"
becomes true at a computable moment with no event at all. A profile without the orders (an
older publisher) keeps the figures as published, as of `profile.as_of`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

DAY = timedelta(days=1)
# profile fact -> (period: 1 last, 2 previous; what: "orders" count or "spent" sum)
PERIOD_FACTS: dict[str, tuple[int, str]] = {
    "orders_last_period": (1, "orders"),
    "spent_last_period": (1, "spent"),
    "orders_previous_period": (2, "orders"),
    "spent_previous_period": (2, "spent"),
}
PERIOD_PATHS = frozenset(f"profile.{name}" for name in PERIOD_FACTS)

Order = tuple[datetime, Decimal]  # placed at, total
Orders = tuple[Order, ...]


def figures(orders: Iterable[Order], days: int, now: datetime) -> dict[str, Any]:
    """The four figures as of `now`: last period (now - P, now], previous (now - 2P, now - P]."""
    period = days * DAY
    out: dict[str, Any] = {}
    picked = list(orders)
    for name, (which, what) in PERIOD_FACTS.items():
        end = now - (which - 1) * period
        totals = [total for at, total in picked if end - period < at <= end]
        out[name] = len(totals) if what == "orders" else sum(totals, Decimal(0))
    return out


def changes(orders: Iterable[Order], days: int, after: datetime) -> list[datetime]:
    """The moments after `after` at which a figure changes (an order enters the last period,
    moves to the previous one, or leaves both), in order."""
    period = days * DAY
    moments = {at + k * period for at, _ in orders for k in (0, 1, 2)}
    return sorted(m for m in moments if m > after)


def orders_of(profile: Mapping[str, Any]) -> Orders | None:
    """The (at, total) of the profile facts' recent orders; None when it has none listed."""
    listed = profile.get("recent_orders")
    if not isinstance(listed, list):
        return None
    return tuple((o["at"], Decimal(str(o["total"]))) for o in listed)


def at_moment(facts: Mapping[str, Any], moment: datetime) -> Mapping[str, Any]:
    """The facts with the period figures as of `moment` (the rest as they are)."""
    profile = facts.get("profile")
    if not isinstance(profile, Mapping):
        return facts
    orders = orders_of(profile)
    if orders is None:
        return facts
    days = int(profile.get("period_days") or 90)
    return {**facts, "profile": {**profile, **figures(orders, days, moment)}}
