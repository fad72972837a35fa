"""The profile on customer.activity grown by the order facts, as of the moment it is published:
figures that depend on "now" are derived here from what is stored, never stored themselves."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.ingest.domain import customer_facts as cf
from shared import events as ev

ENGAGEMENT_WINDOW = timedelta(days=90)


@dataclass(frozen=True)
class EngagementSummary:
    opens_90d: int = 0
    clicks_90d: int = 0
    open_times: tuple[datetime, ...] = ()  # first human open of each message


@dataclass(frozen=True)
class Place:
    country: str | None
    explicit_zone: str | None


def order_fact_fields(
    facts: cf.OrderFacts,
    place: Place,
    engagement: EngagementSummary,
    settings: cf.FactsSettings,
    high_value_from: Decimal | None,
    now: datetime,
) -> dict[str, Any]:
    """The profile's fields from the order facts, engagement and place, as of `now` (values
    of the fields' types, for ev.construct)."""
    derived = cf.derive(facts, now, settings, high_value_from)
    zone = cf.time_zone(place.explicit_zone, place.country, settings.time_zone)
    return {
        "as_of": now,
        "first_order_at": facts.first_order_at,
        "average_order_value": derived.average_order_value,
        "average_days_between_orders": derived.average_days_between_orders,
        "expected_next_order_at": derived.expected_next_order_at,
        "days_since_last_order": derived.days_since_last_order,
        "period_days": settings.period_days,
        "orders_last_period": derived.orders_last_period,
        "spent_last_period": derived.spent_last_period,
        "orders_previous_period": derived.orders_previous_period,
        "spent_previous_period": derived.spent_previous_period,
        "recent_orders": [_recent_order(at, total) for at, total in facts.recent],
        "categories": _categories(facts.categories.values()),
        "last_order_categories": list(facts.last_categories),
        "country": place.country,
        "time_zone": zone,
        "opens_90d": engagement.opens_90d,
        "clicks_90d": engagement.clicks_90d,
        "usual_open_hour": cf.usual_hour(_local_hours(engagement.open_times, zone)),
        "stage": derived.stage,
        "high_value": derived.high_value,
        # None (recounted in the same transaction) never reaches a profile; 0 is safe.
        "purchase_days": facts.purchase_days or 0,
        "first_day_spent": facts.first_day_spent,
    }


def _recent_order(at: datetime, total: Decimal) -> ev.RecentOrder:
    # Both fields already of their types (stored timestamptz and numeric, aware times).
    return ev.construct(ev.RecentOrder, at=at, total=total)


def _categories(categories: Iterable[cf.CategoryFacts]) -> list[ev.CategoryFacts]:
    return [
        ev.CategoryFacts.model_construct(
            category=c.category,
            orders=c.orders,
            spent=c.spent,
            last_order_at=c.last_order_at,
            average_days_between_orders=c.average_days_between,
        )
        for c in sorted(categories, key=lambda c: c.category)
    ]


def _local_hours(moments: Iterable[datetime], zone: str) -> list[int]:
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return [m.hour for m in moments]  # an unknown zone name: UTC hours
    return [m.astimezone(tz).hour for m in moments]
