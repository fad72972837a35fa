"""The segments every shop has, as conditions over the facts (ingest's default lifecycle
thresholds: active 30 days, falling asleep 50, inactive 90; services/ingest/domain/
customer_facts.py). Counted now and once a day for the sizes over time."""

from __future__ import annotations

from pydantic import TypeAdapter

from services.scheduler.domain.conditions import Condition

ACTIVE_DAYS = 30
FALLING_ASLEEP_DAYS = 50
INACTIVE_DAYS = 90
CART_LEFT_FOR = "1h"  # a cart untouched this long is abandoned

_conditions: TypeAdapter[Condition] = TypeAdapter(Condition)
_DAYS = "profile.days_since_last_order"

DEFAULT_SEGMENTS: dict[str, Condition] = {
    name: _conditions.validate_python(data)
    for name, data in {
        "active_30d": {"field": _DAYS, "op": "lt", "value": ACTIVE_DAYS},
        "falling_asleep_50d": {
            "all": [
                {"field": _DAYS, "op": "gte", "value": FALLING_ASLEEP_DAYS},
                {"field": _DAYS, "op": "lt", "value": INACTIVE_DAYS},
            ]
        },
        "inactive_90d": {"field": _DAYS, "op": "gte", "value": INACTIVE_DAYS},
        "one_time_buyers": {"field": "profile.orders_count", "op": "eq", "value": 1},
        "high_value": {"field": "profile.high_value", "op": "eq", "value": True},
        "cart_abandoners": {
            "all": [
                {"field": "cart.item_count", "op": "gt", "value": 0},
                {"field": "cart.updated_at", "op": "older_than", "value": CART_LEFT_FOR},
            ]
        },
    }.items()
}
