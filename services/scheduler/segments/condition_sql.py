"""A segment condition as one SQL predicate over scheduler.customers (`c.profile`, `c.cart`)
and, when it reads purchase predictions, scheduler.predictions joined as `pr` (see `source`),
so counting, listing and backfilling a million customers is one set-based statement.

It means exactly what conditions.py means in Python (tests/integration/test_segments_sql.py
runs both over the same customers): a leaf on a missing fact is false, `not` of it is true,
numbers compare as numbers (Decimal facts are JSON strings), days are counted from `now`.
Only what segment_facts.check_segment admits is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from services.scheduler.domain.conditions import All, Any_, Condition, Leaf
from services.scheduler.domain.period_facts import PERIOD_FACTS, PERIOD_PATHS
from services.scheduler.domain.segment_facts import days_fact, fact_kind
from shared.clock import parse_duration

_SQL_OPS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# profile.<fact> -> its column of scheduler.predictions (what facts_for names them)
PREDICTION_COLUMNS = {
    "p_alive": "p_alive",
    "expected_orders_30d": "orders_30d",
    "expected_orders_90d": "orders_90d",
    "predicted_next_order_at": "next_order_at",
    "expected_order_value": "order_value",
    "predictions_as_of": "as_of",
}
CUSTOMERS = "scheduler.customers c"
WITH_PREDICTIONS = (
    "scheduler.customers c LEFT JOIN scheduler.predictions pr ON pr.customer_key = c.customer_key"
)


@dataclass
class Params:
    """asyncpg positional parameters; `now` is always the first one given (`$n` of now)."""

    values: list[Any] = field(default_factory=list)
    now_ref: str = "$1"
    predictions: bool = False  # a leaf reads scheduler.predictions (`pr`)

    def add(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def source(params: Params) -> str:
    """The FROM of a statement over the predicate: customers, with predictions if it reads them."""
    return WITH_PREDICTIONS if params.predictions else CUSTOMERS


def predicate(condition: Condition, params: Params) -> str:
    if isinstance(condition, Leaf):
        return f"COALESCE(({_leaf(condition, params)}), false)"
    if isinstance(condition, All):
        return "(" + " AND ".join(predicate(c, params) for c in condition.all) + ")"
    if isinstance(condition, Any_):
        return "(" + " OR ".join(predicate(c, params) for c in condition.any) + ")"
    return f"(NOT {predicate(condition.not_, params)})"


def _leaf(leaf: Leaf, params: Params) -> str:
    kind = fact_kind(leaf.field)
    value = _value(leaf.field, kind, params)
    if leaf.op == "exists":
        return f"{value} IS NOT NULL"
    if leaf.op == "not_exists":
        return f"{value} IS NULL"
    if kind in ("number", "decimal", "days"):
        return _numeric(leaf, value, params)
    if kind == "time":
        limit = params.add(parse_duration(str(leaf.value)), "interval")
        if leaf.op == "older_than":
            return f"{params.now_ref} - {value} > {limit}"
        return f"{params.now_ref} - {value} BETWEEN interval '0' AND {limit}"
    if kind == "bool":
        return f"{value} {_SQL_OPS[leaf.op]} {params.add(bool(leaf.value), 'bool')}"
    if kind == "list":
        return f"{value} ? {params.add(str(leaf.value), 'text')}"
    return _text(leaf, value, params)


def _numeric(leaf: Leaf, value: str, params: Params) -> str:
    if leaf.op in ("in", "not_in"):
        listed = params.add([Decimal(str(v)) for v in leaf.value], "numeric[]")
        return f"{'' if leaf.op == 'in' else 'NOT '}{value} = ANY({listed})"
    if leaf.ref is None:
        other = params.add(Decimal(str(leaf.value)), "numeric")
    else:
        ref = _value(leaf.ref, fact_kind(leaf.ref), params)
        other = f"({ref} * {params.add(Decimal(str(leaf.times)), 'numeric')})"
    return f"{value} {_SQL_OPS[leaf.op]} {other}"


def _text(leaf: Leaf, value: str, params: Params) -> str:
    if leaf.op in ("in", "not_in"):
        texts = [v for v in leaf.value if isinstance(v, str)]
        listed = params.add(texts, "text[]")
        return f"{'' if leaf.op == 'in' else 'NOT '}{value} = ANY({listed})"
    if leaf.op == "contains":
        return f"strpos({value}, {params.add(str(leaf.value), 'text')}) > 0"
    # Python orders strings by code point: the C collation does the same.
    return f'{value} COLLATE "C" {_SQL_OPS[leaf.op]} {params.add(str(leaf.value), "text")}'


def _value(path: str, kind: str, params: Params) -> str:
    if path in PERIOD_PATHS:
        return _period(path, params)
    moving = days_fact(path)
    if moving is not None:
        anchor, direction = moving
        since = f"extract(epoch FROM {params.now_ref} - {_json(anchor, 'time', params)}) / 86400"
        return f"({since})" if direction == 1 else f"(-({since}))"
    return _json(path, kind, params)


def _period(path: str, params: Params) -> str:
    """A period figure as of `now` from the profile's recent orders (period_facts.figures), or
    as published when the profile lists none."""
    name = path.removeprefix("profile.")
    which, what = PERIOD_FACTS[name]
    period = "make_interval(secs => (c.profile->>'period_days')::numeric * 86400)"
    end = f"({params.now_ref} - {which - 1} * {period})"
    figure = "count(*)::numeric" if what == "orders" else "coalesce(sum((o->>'total')::numeric), 0)"
    at = "(o->>'at')::timestamptz"
    return (
        "(CASE WHEN jsonb_typeof(c.profile->'recent_orders') = 'array' THEN "
        f"(SELECT {figure} FROM jsonb_array_elements(c.profile->'recent_orders') o "
        f"WHERE {at} > {end} - {period} AND {at} <= {end}) "
        f"ELSE (c.profile->>'{name}')::numeric END)"
    )


def _json(path: str, kind: str, params: Params) -> str:
    root, _, rest = path.partition(".")
    parts = rest.split(".")
    if root == "profile" and parts[0] in PREDICTION_COLUMNS and len(parts) == 1:
        params.predictions = True
        cast = "::numeric" if kind == "number" else ""
        return f"pr.{PREDICTION_COLUMNS[parts[0]]}{cast}"
    if root == "cart" and parts == ["item_count"]:
        return (
            "COALESCE((SELECT sum((l->>'quantity')::numeric) "
            "FROM jsonb_array_elements(c.cart->'lines') l), 0)"
        )
    column = f"c.{root}"
    if root == "profile" and parts[0] == "categories":
        name = parts[1].replace("'", "''")
        column = (
            "(SELECT e FROM jsonb_array_elements(c.profile->'categories') e "
            f"WHERE e->>'category' = '{name}' LIMIT 1)"
        )
        parts = parts[2:]
    key = parts[0].replace("'", "''")
    if kind == "list":
        return f"NULLIF({column}->'{key}', 'null'::jsonb)"
    if kind == "bool":
        return f"({column}->>'{key}')::bool"
    text = f"({column}->>'{key}')"
    casts = {"number": "::numeric", "decimal": "::numeric", "time": "::timestamptz"}
    return text + casts.get(kind, "")


def interval(duration: str) -> timedelta:
    return parse_duration(duration)
