"""Segment rules and branch conditions as data: no code is evaluated, only these operators.

A condition is a leaf `{field, op, value}` (or `ref` + `times` to compare with another
fact, e.g. a customer's own buying rhythm) or a combination `{all: [...]}`, `{any: [...]}`,
`{not: ...}`. Fields are dotted paths into the facts: `profile.*`, `cart.*`, `event.*`,
`last_message.*`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.clock import parse_duration

Op = Literal[
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "exists",
    "not_exists",
    "older_than",
    "within",
]
Facts = Mapping[str, Any]
FACT_ROOTS = ("profile", "cart", "event", "last_message", "enrollment")
# The engine fills exactly these; a condition on anything else under them could never hold.
LAST_MESSAGE_FIELDS = frozenset(
    {
        "request_key",
        "step_id",
        "sent_at",
        "opened",
        "human_opened",
        "machine_opened",
        "opened_at",
        "clicked",
        "clicked_at",
        "converted",
        "converted_at",
        "revenue",
    }
)
ENROLLMENT_FIELDS = frozenset({"journey_id", "step_id", "entered_at", "holdout", "messages_sent"})
_CLOSED_ROOTS = {"last_message": LAST_MESSAGE_FIELDS, "enrollment": ENROLLMENT_FIELDS}
_MISSING = object()


class Leaf(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    op: Op
    value: Any = None
    ref: str | None = None  # compare with another fact instead of a literal
    times: float = 1.0  # multiplier for `ref`

    @field_validator("field", "ref")
    @classmethod
    def _known_root(cls, path: str | None) -> str | None:
        if path is None:
            return path
        root, _, rest = path.partition(".")
        if root not in FACT_ROOTS:
            raise ValueError(f"{path!r}: facts start with one of {', '.join(FACT_ROOTS)}")
        known = _CLOSED_ROOTS.get(root)
        if known is not None and rest not in known:
            raise ValueError(f"{path!r}: {root} has {', '.join(sorted(known))}")
        return path

    @model_validator(mode="after")
    def _check_value(self) -> Leaf:
        if self.op in ("older_than", "within"):
            if not isinstance(self.value, str):
                raise ValueError(f"{self.op} needs a duration such as 90d")
            parse_duration(self.value)
        elif self.op not in ("exists", "not_exists") and self.value is None and self.ref is None:
            raise ValueError(f"{self.op} needs a value or a ref")
        return self

    def holds(self, facts: Facts, now: datetime) -> bool:
        actual = lookup(facts, self.field)
        if self.op == "exists":
            return actual is not _MISSING and actual is not None
        if self.op == "not_exists":
            return actual is _MISSING or actual is None
        if actual is _MISSING or actual is None:
            return False
        expected = self._expected(facts)
        if expected is _MISSING:
            return False
        return _compare(self.op, actual, expected, now)

    def _expected(self, facts: Facts) -> Any:
        if self.ref is None:
            return self.value
        other = lookup(facts, self.ref)
        if other is _MISSING or other is None:
            return _MISSING
        return Decimal(str(other)) * Decimal(str(self.times))


def _compare(op: Op, actual: Any, expected: Any, now: datetime) -> bool:
    if op in ("older_than", "within"):
        if not isinstance(actual, datetime):
            return False
        age = now - actual
        limit = parse_duration(expected)
        return age > limit if op == "older_than" else timedelta(0) <= age <= limit
    if isinstance(actual, int | float | Decimal) and not isinstance(actual, bool):
        actual = Decimal(str(actual))
        if isinstance(expected, int | float | str) and op not in ("in", "not_in", "contains"):
            expected = Decimal(str(expected))
    try:
        return _OPERATORS[op](actual, expected)
    except TypeError:
        return False


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, e: bool(a == e),
    "ne": lambda a, e: bool(a != e),
    "gt": lambda a, e: bool(a > e),
    "gte": lambda a, e: bool(a >= e),
    "lt": lambda a, e: bool(a < e),
    "lte": lambda a, e: bool(a <= e),
    "in": lambda a, e: a in e,
    "not_in": lambda a, e: a not in e,
    "contains": lambda a, e: e in a,
}


class All(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    all: list[Condition] = Field(min_length=1)

    def holds(self, facts: Facts, now: datetime) -> bool:
        return all(c.holds(facts, now) for c in self.all)


class Any_(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    any: list[Condition] = Field(min_length=1)

    def holds(self, facts: Facts, now: datetime) -> bool:
        return any(c.holds(facts, now) for c in self.any)


class Not(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    not_: Condition = Field(alias="not")

    def holds(self, facts: Facts, now: datetime) -> bool:
        return not self.not_.holds(facts, now)


Condition = Union[Leaf, All, Any_, Not]  # noqa: UP007 - pydantic needs the runtime Union here
All.model_rebuild()
Any_.model_rebuild()
Not.model_rebuild()


def lookup(facts: Facts, path: str) -> Any:
    current: Any = facts
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current
